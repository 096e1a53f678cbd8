"""Resend webhook verification: the Standard Webhooks scheme, under ``svix-*`` header names.

Resend delivers webhooks through Svix: ``svix-id``, ``svix-timestamp`` and ``svix-signature``
headers, a ``whsec_`` signing secret per endpoint (shown on the webhook's page in Resend). The
one Standard Webhooks verifier (:mod:`unimailtrack.standard_webhooks`) does the checking;
``webhook-*`` names are accepted too. :class:`ResendWebhookSigner` signs bodies the same way,
for tests and the emulator.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime, timedelta

from unimailtrack import _constants as C
from unimailtrack.adapters.base import event_digest
from unimailtrack.standard_webhooks import StandardWebhooks, new_secret

__all__ = ["SECRET_ENV", "ResendWebhookSigner", "verifier"]

PROVIDER = "resend"
SECRET_ENV = "UNIMAILTRACK_RESEND_WEBHOOK_SECRET"  # noqa: S105 - a variable name
"""Comma-separated ``whsec_`` secrets, read by ``from_dsn`` besides the DSN's
``webhook_secret``."""


def verifier(
    secrets: str | Iterable[str], tolerance: timedelta = C.DEFAULT_WEBHOOK_TOLERANCE
) -> StandardWebhooks:
    """The verifier of Resend's webhooks signed with ``secrets``."""
    return StandardWebhooks(secrets, tolerance=tolerance, provider=PROVIDER)


class ResendWebhookSigner:
    """Signs webhook bodies exactly as Resend does, so that tests and the emulator post
    requests :meth:`ResendAdapter.verify_webhook` accepts. ``secret``: a ``whsec_`` secret
    (a fresh one when omitted); give :attr:`secret` to the adapter as ``webhook_secrets``."""

    def __init__(self, secret: str | None = None) -> None:
        self.secret = secret or new_secret()
        self._signer = StandardWebhooks(self.secret, provider=PROVIDER)

    def sign(
        self,
        body: bytes,
        *,
        msg_id: str | None = None,
        timestamp: int | datetime | None = None,
    ) -> dict[str, str]:
        """The three ``svix-*`` headers Resend sends with ``body``. The message id is derived
        from the body unless given (Resend keeps it across retries of one event); the timestamp
        is now unless given."""
        msg = msg_id or "msg_" + event_digest(PROVIDER, body)[:27]
        when = int(time.time()) if timestamp is None else timestamp
        return self._signer.headers(msg, when, body, prefix="svix")
