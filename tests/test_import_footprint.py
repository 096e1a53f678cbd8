"""What importing the package, parsing a webhook and sending load, in a fresh interpreter.

Each check runs in a subprocess of its own, so that nothing this test session imported hides
an import. The lists name what the step has no use for: the store, the event loop, the web
stack, the optional extras, and the package-metadata machinery of entry points.
"""

from __future__ import annotations

import json
import subprocess
import sys

NEVER_ON_IMPORT = (
    "asyncio",
    "sqlite3",
    "importlib.metadata",
    "h11",
    "httpx",
    "cryptography",
    "unimailtrack.adapters",
    "unimailtrack.mailer",
    "unimailtrack.tracking",
    "unimailtrack.webhooks",
    "unimailtrack.web",
    "unimailtrack.cli",
    "aiohttp",
    "psycopg",
    "starlette",
    "uvicorn",
    "boto3",
    "botocore",
)
NEVER_ON_PARSE = (
    "asyncio",
    "sqlite3",
    "importlib.metadata",
    "h11",
    "unimailtrack._asyncio_http",
    "unimailtrack._http1",
    "unimailtrack.mailer",
    "unimailtrack.tracking",
    "unimailtrack.webhooks",
    "unimailtrack.web",
    "aiohttp",
    "psycopg",
    "starlette",
    "uvicorn",
    "boto3",
    "botocore",
)
NEVER_ON_SYNC_SEND = (
    "asyncio",
    "sqlite3",
    "h11",
    "unimailtrack._asyncio_http",
    "unimailtrack._http1",
    "unimailtrack.tracking",
    "unimailtrack.webhooks",
    "aiohttp",
    "psycopg",
    "starlette",
    "uvicorn",
)


def loaded_after(code: str) -> set[str]:
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_importing_the_package_loads_none_of_what_it_does_not_use() -> None:
    loaded = loaded_after("import unimailtrack")
    assert "unimailtrack.model" in loaded
    assert loaded.isdisjoint(NEVER_ON_IMPORT), sorted(loaded & set(NEVER_ON_IMPORT))


def test_parsing_a_webhook_loads_no_store_no_event_loop_and_no_web_stack() -> None:
    loaded = loaded_after(
        "import unimailtrack\n"
        "events = unimailtrack.parse_webhook('sendgrid', "
        'b\'[{"email": "a@example.com", "event": "delivered", "timestamp": 1}]\')\n'
        "assert len(events) == 1"
    )
    assert "unimailtrack.adapters.sendgrid" in loaded
    assert loaded.isdisjoint(NEVER_ON_PARSE), sorted(loaded & set(NEVER_ON_PARSE))


def test_a_sync_send_loads_no_store_and_no_event_loop() -> None:
    loaded = loaded_after(
        "import httpx\n"
        "from unimailtrack import Email\n"
        "from unimailtrack._http import HttpxTransport\n"
        "from unimailtrack.adapters.sendgrid import SendGridAdapter\n"
        "from unimailtrack.mailer import Mailer\n"
        "answer = lambda request: httpx.Response(202, headers={'X-Message-Id': 'm'})\n"
        "client = httpx.Client(transport=httpx.MockTransport(answer))\n"
        "adapter = SendGridAdapter('SG.key', transport=HttpxTransport(client))\n"
        "result = Mailer(adapter).send(Email(sender='a@example.com', to=['b@example.com'], "
        "subject='s', text='t'))\n"
        "assert result.recipients[0].message_id == 'm'"
    )
    assert "unimailtrack.mailer" in loaded
    assert loaded.isdisjoint(NEVER_ON_SYNC_SEND), sorted(loaded & set(NEVER_ON_SYNC_SEND))
