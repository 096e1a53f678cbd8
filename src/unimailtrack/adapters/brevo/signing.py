"""Brevo webhook verification: Brevo signs nothing, so credentials stand in.

A Brevo webhook is protected by what it carries: HTTP Basic credentials in its URL
(``https://user:password@app.example.com/webhooks/brevo``) or a bearer token set as the
webhook's ``auth`` (``{"type": "bearer", "token": ...}``), and optionally by the networks Brevo
sends from. :class:`~unimailtrack.webhook_auth.WebhookCredentials` does the
checking (several secrets, constant time, an optional network allow-list, fail closed).
:class:`BrevoWebhookSigner` produces the header Brevo sends, for tests and the emulator.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from unimailtrack.webhook_auth import WebhookCredentials, authorization_header

__all__ = ["SECRET_ENV", "BrevoWebhookSigner", "verifier"]

PROVIDER = "brevo"
SECRET_ENV = "UNIMAILTRACK_BREVO_WEBHOOK_SECRET"  # noqa: S105 - a variable name
"""Comma-separated credentials, read by ``from_dsn`` besides the DSN's ``webhook_secret``."""


def verifier(
    secrets: str | Iterable[str],
    *,
    allowed_networks: str | Iterable[str] = (),
    trusted_proxies: str | Iterable[str] = (),
    forwarded_header: str = "x-forwarded-for",
) -> WebhookCredentials:
    """The checker of Brevo's webhooks for ``secrets`` (``"user:password"`` or a token)."""
    return WebhookCredentials(
        secrets,
        allowed_networks=allowed_networks,
        trusted_proxies=trusted_proxies,
        forwarded_header=forwarded_header,
        provider=PROVIDER,
    )


class BrevoWebhookSigner:
    """The ``Authorization`` header Brevo sends for a webhook configured with ``secret``
    (``"user:password"`` for Basic, a token for Bearer; a fresh one when omitted)."""

    def __init__(self, secret: str | None = None) -> None:
        self.secret = secret or secrets.token_urlsafe(24)

    def sign(self, body: bytes = b"") -> dict[str, str]:
        """The headers of a webhook request (the body does not enter them: nothing is signed)."""
        del body
        return authorization_header(self.secret)
