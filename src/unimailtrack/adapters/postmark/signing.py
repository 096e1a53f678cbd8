"""Postmark webhook verification: Postmark signs nothing, so credentials stand in.

A Postmark webhook is protected by what it carries: HTTP Basic credentials in its URL
(``https://user:password@app.example.com/webhooks/postmark``, or the webhook's ``HttpAuth``
setting) or a custom ``Authorization: Bearer`` header (``HttpHeaders``), and optionally by the
networks Postmark sends from. :class:`~unimailtrack.webhook_auth.WebhookCredentials` does the
checking (several secrets, constant time, an optional network allow-list, fail closed).
:class:`PostmarkWebhookSigner` produces the header Postmark sends, for tests and the emulator.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from unimailtrack.webhook_auth import WebhookCredentials, authorization_header

__all__ = ["SECRET_ENV", "PostmarkWebhookSigner", "verifier"]

PROVIDER = "postmark"
SECRET_ENV = "UNIMAILTRACK_POSTMARK_WEBHOOK_SECRET"  # noqa: S105 - a variable name
"""Comma-separated credentials, read by ``from_dsn`` besides the DSN's ``webhook_secret``."""


def verifier(
    secrets: str | Iterable[str],
    *,
    allowed_networks: str | Iterable[str] = (),
    trusted_proxies: str | Iterable[str] = (),
    forwarded_header: str = "x-forwarded-for",
) -> WebhookCredentials:
    """The checker of Postmark's webhooks for ``secrets`` (``"user:password"`` or a token)."""
    return WebhookCredentials(
        secrets,
        allowed_networks=allowed_networks,
        trusted_proxies=trusted_proxies,
        forwarded_header=forwarded_header,
        provider=PROVIDER,
    )


class PostmarkWebhookSigner:
    """The ``Authorization`` header Postmark sends for a webhook configured with ``secret``
    (``"user:password"`` for Basic, a token for Bearer; a fresh one when omitted)."""

    def __init__(self, secret: str | None = None) -> None:
        self.secret = secret or f"postmark:{secrets.token_urlsafe(18)}"

    def sign(self, body: bytes = b"") -> dict[str, str]:
        """The headers of a webhook request (the body does not enter them: nothing is signed)."""
        del body
        return authorization_header(self.secret)
