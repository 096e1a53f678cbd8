"""DSN options of the adapters whose webhooks carry credentials instead of a signature."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from unimailtrack.config import Dsn

__all__ = ["CREDENTIAL_OPTIONS", "credential_options"]

CREDENTIAL_OPTIONS: Final = frozenset(
    {"webhook_secret", "allowed_networks", "trusted_proxies", "forwarded_header"}
)


def _split(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def credential_options(dsn: Dsn, env: Mapping[str, str] | None, secret_env: str) -> dict[str, Any]:
    """Keyword arguments from ``?webhook_secret=A,B&allowed_networks=...&trusted_proxies=...``
    and the comma-separated secrets in ``env[secret_env]``."""
    secrets = _split(dsn.options.get("webhook_secret", ""))
    secrets += _split((env or {}).get(secret_env, ""))
    options: dict[str, Any] = {"webhook_secrets": secrets}
    if "allowed_networks" in dsn.options:
        options["allowed_networks"] = dsn.list_option("allowed_networks")
    if "trusted_proxies" in dsn.options:
        options["trusted_proxies"] = dsn.list_option("trusted_proxies")
    if "forwarded_header" in dsn.options:
        options["forwarded_header"] = dsn.options["forwarded_header"]
    return options
