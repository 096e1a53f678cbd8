from __future__ import annotations

import json
import subprocess
import sys
import types

import unimailtrack
from unimailtrack import adapters


def test_public_surface_is_exactly_all() -> None:
    assert sorted(unimailtrack.__all__) == sorted(set(unimailtrack.__all__))
    for name in unimailtrack.__all__:
        assert getattr(unimailtrack, name) is not None, name
    public = {
        n
        for n in dir(unimailtrack)
        if not n.startswith("_") and not isinstance(getattr(unimailtrack, n), types.ModuleType)
    }
    assert public - {"annotations"} - set(unimailtrack.__all__) == set()


def test_error_tree() -> None:
    e = unimailtrack
    assert issubclass(e.InvalidAddress, ValueError)
    for cls in (e.ConfigurationError, e.InvalidAddress, e.SendError, e.WebhookError):
        assert issubclass(cls, e.UnimailtrackError)
    for cls in (
        e.InvalidRequest,
        e.AuthenticationError,
        e.RateLimited,
        e.ProviderUnavailable,
        e.RecipientSuppressed,
        e.AllProvidersFailed,
    ):
        assert issubclass(cls, e.SendError)
    assert issubclass(e.SignatureError, e.WebhookError)
    assert issubclass(e.PayloadError, e.WebhookError)


def test_registry_names() -> None:
    assert {"sendgrid", "ses", "mailgun", "memory"} <= set(adapters.available())
    assert adapters.get_adapter_class("memory").name == "memory"


def test_import_is_light() -> None:
    code = (
        "import sys, json, unimailtrack;"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('boto3','botocore','psycopg','aiohttp','starlette','uvicorn','email_validator',"
        "'cryptography'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_the_kit_and_the_new_providers_load_only_when_asked() -> None:
    code = (
        "import sys, json, unimailtrack;"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(("
        "'unimailtrack.testing', 'unimailtrack.adapters.resend', 'unimailtrack.adapters.postmark',"
        "'unimailtrack.adapters.brevo', 'unimailtrack.standard_webhooks', 'pytest')))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
