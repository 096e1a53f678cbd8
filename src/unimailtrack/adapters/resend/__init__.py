"""Resend: ``POST /emails`` and ``/emails/batch``, and webhooks signed the Standard Webhooks way.

The rooms: :mod:`.send` builds requests and reads answers (Resend's error table),
:mod:`.events` holds Resend's event vocabulary and maps it, :mod:`.signing` verifies and signs
webhooks. This module is the adapter: its constructor and its DSN.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Final, Self

import httpx

from unimailtrack import _constants as C
from unimailtrack._version import __version__
from unimailtrack.adapters.base import Adapter, Call, Recipient
from unimailtrack.adapters.resend import events, send, signing
from unimailtrack.adapters.resend.signing import SECRET_ENV, ResendWebhookSigner
from unimailtrack.errors import ConfigurationError
from unimailtrack.model import Email, EmailEvent, EventType

if TYPE_CHECKING:
    from unimailtrack.config import Dsn

__all__ = ["SECRET_ENV", "ResendAdapter", "ResendWebhookSigner"]

PROVIDER: Final = "resend"
_log = logging.getLogger("unimailtrack.send")
_LIST_CHANGES: Final = {"suppression.added": "added", "suppression.removed": "lifted"}


def _split(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


class ResendAdapter(Adapter):
    """Send through Resend and read its webhooks (contract).

    ``api_key`` may be omitted by an application that only receives webhooks; sending then
    raises ``ConfigurationError``. ``webhook_secrets``: the endpoint's ``whsec_...`` signing
    secrets (several while rotating). ``tolerance``: how far a webhook's timestamp may be from
    the clock, either way. ``base_url`` replaces Resend's API host (a local emulator). The other
    keyword options are the base adapter's.
    """

    name: ClassVar[str] = PROVIDER
    dsn_options: ClassVar[frozenset[str]] = frozenset({"webhook_secret", "tolerance", "base_url"})

    def __init__(
        self,
        api_key: str | None = None,
        *,
        webhook_secrets: str | Iterable[str] = (),
        tolerance: timedelta = C.DEFAULT_WEBHOOK_TOLERANCE,
        base_url: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.base_url = (base_url or send.API_BASE_URL).rstrip("/")
        self.tolerance = tolerance
        secrets = [webhook_secrets] if isinstance(webhook_secrets, str) else list(webhook_secrets)
        self._verifier = signing.verifier(secrets, tolerance)
        self._secret_count = len(secrets)
        self._warned_tracking = False
        host = httpx.URL(self.base_url).netloc.decode("ascii")
        self._headers = (
            httpx.Headers(
                {
                    "Host": host,
                    "Authorization": f"Bearer {api_key}",
                    "Content-Type": "application/json",
                    "Accept": "application/json",
                    "User-Agent": f"unimailtrack/{__version__}",
                }
            )
            if api_key
            else None
        )

    @classmethod
    def from_dsn(cls, dsn: Dsn, *, env: Mapping[str, str] | None = None) -> Self:
        """``resend://API_KEY@default?webhook_secret=whsec_A,whsec_B`` (the key may be left out
        by a webhook-only application); ``UNIMAILTRACK_RESEND_WEBHOOK_SECRET`` in ``env`` adds
        comma-separated secrets."""
        if dsn.host != "default":
            raise ConfigurationError(
                f"a Resend DSN's host is 'default' (use ?base_url= for another host): "
                f"{dsn.redacted()}"
            )
        if dsn.password is not None:
            raise ConfigurationError(
                f"a Resend DSN takes only an API key, resend://API_KEY@default: {dsn.redacted()}"
            )
        # A query string turns '+' into ' ', and base64 never contains a space.
        secrets = _split(dsn.options.get("webhook_secret", "").replace(" ", "+"))
        secrets += _split((env or {}).get(SECRET_ENV, ""))
        options = cls.common_options(dsn)
        if "base_url" in dsn.options:
            options["base_url"] = dsn.options["base_url"]
        if "tolerance" in dsn.options:
            options["tolerance"] = timedelta(seconds=dsn.float_option("tolerance"))
        return cls(dsn.user or None, webhook_secrets=secrets, **options)

    def build_calls(self, email: Email, recipients: Sequence[Recipient]) -> list[Call]:
        """One ``/emails/batch`` request per 100 recipients, or one ``/emails`` request per
        recipient when the e-mail has attachments or ``send_at``."""
        if self._headers is None:
            raise ConfigurationError(
                "sending through Resend needs an API key: resend://API_KEY@default",
                provider=PROVIDER,
            )
        if (email.track_opens or email.track_clicks) and not self._warned_tracking:
            self._warned_tracking = True
            _log.warning(
                "resend: open and click tracking are settings of the sending domain at Resend; "
                "track_opens/track_clicks on an e-mail cannot turn them on or off"
            )
        return send.build_calls(email, recipients, base_url=self.base_url, headers=self._headers)

    def verify_webhook(
        self, body: bytes, headers: Mapping[str, str], *, now: datetime | None = None
    ) -> None:
        """Raise ``SignatureError`` unless ``body`` carries a fresh Standard Webhooks signature
        by a configured secret (contract). ``body`` is the raw body as received."""
        if self._verification_disabled():
            return
        self._verifier.verify(body, headers, now=now)

    @classmethod
    def parse_webhook_body(
        cls, body: bytes, headers: Mapping[str, str] | None = None
    ) -> list[EmailEvent]:
        """Map a Resend webhook body onto canonical events (pure; raises only
        ``PayloadError``)."""
        return events.parse_events(body)

    @classmethod
    def list_change(cls, provider_event: str, type: EventType) -> str | None:
        """``suppression.added`` and ``suppression.removed`` are Resend's own list changing
        (after a hard bounce, a complaint, or by hand in Resend)."""
        del type
        return _LIST_CHANGES.get(provider_event)

    def __repr__(self) -> str:
        return f"<ResendAdapter base_url={self.base_url!r} webhook_secrets={self._secret_count}>"
