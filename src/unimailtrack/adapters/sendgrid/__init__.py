"""SendGrid: v3 Mail Send, the Signed Event Webhook, and every event SendGrid documents.

The rooms: :mod:`.send` builds Mail Send requests and reads the answers, :mod:`.events` holds
SendGrid's event vocabulary and maps it, :mod:`.signing` verifies webhooks (and signs them for
tests and the emulator), :mod:`.suppressions` reads and writes SendGrid's suppression lists,
:mod:`.backfill` reads the Email Activity API. This module is the adapter: its constructor and
its DSN.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Final, Self

import httpx

from unimailtrack import _constants as C
from unimailtrack._version import __version__
from unimailtrack.adapters.base import (
    Adapter,
    Call,
    PushCall,
    Recipient,
    RemoteSuppression,
    SuppressionPage,
)
from unimailtrack.adapters.sendgrid import events, send, signing
from unimailtrack.adapters.sendgrid.events import EVENT_TYPES, EVENTS, SENDGRID_KEYS, parse_events
from unimailtrack.adapters.sendgrid.send import API_BASE_URLS, MAX_PERSONALIZATIONS
from unimailtrack.adapters.sendgrid.signing import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WEBHOOK_KEY_ENV,
    SendGridWebhookSigner,
    WebhookKey,
    load_webhook_key,
    load_webhook_keys,
)
from unimailtrack.errors import ConfigurationError
from unimailtrack.model import Email, EmailEvent

if TYPE_CHECKING:
    from unimailtrack.config import Dsn

__all__ = [
    "API_BASE_URLS",
    "EVENTS",
    "EVENT_TYPES",
    "MAX_PERSONALIZATIONS",
    "SENDGRID_KEYS",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WEBHOOK_KEY_ENV",
    "SendGridAdapter",
    "SendGridWebhookSigner",
    "WebhookKey",
    "load_webhook_key",
    "parse_events",
]

PROVIDER: Final = "sendgrid"


def _split_keys(text: str) -> list[str]:
    return [k.strip() for k in text.split(",") if k.strip()]


class SendGridAdapter(Adapter):
    """Send through SendGrid's v3 Mail Send API and read its Signed Event Webhook (contract).

    ``api_key`` may be omitted by an application that only receives webhooks; sending then
    raises ``ConfigurationError``. ``webhook_keys`` are the account's verification keys (one or
    several, for rotation). ``region="eu"`` uses SendGrid's EU API host; ``base_url`` replaces the
    host altogether (a local emulator). The remaining keyword options are the base adapter's.
    """

    name: ClassVar[str] = PROVIDER
    dsn_options: ClassVar[frozenset[str]] = frozenset(
        {"region", "webhook_key", "tolerance", "base_url"}
    )

    def __init__(
        self,
        api_key: str | None = None,
        *,
        webhook_keys: WebhookKey | Iterable[WebhookKey] = (),
        tolerance: timedelta = C.DEFAULT_WEBHOOK_TOLERANCE,
        region: str = "global",
        base_url: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if region not in API_BASE_URLS:
            raise ConfigurationError(
                f"unknown SendGrid region {region!r}; use one of: {', '.join(API_BASE_URLS)}"
            )
        if tolerance <= timedelta(0):
            raise ConfigurationError("the webhook tolerance must be a positive duration")
        self.region = region
        self.base_url = (base_url or API_BASE_URLS[region]).rstrip("/")
        self.tolerance = tolerance
        self._webhook_keys = tuple(load_webhook_keys(webhook_keys))
        # Parsed once: URL parsing and header normalisation cost more than building the body.
        self._send_url = httpx.URL(self.base_url + send.MAIL_SEND_PATH)
        self._send_headers = (
            httpx.Headers(
                {
                    "Host": self._send_url.netloc.decode("ascii"),
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
        """``sendgrid://API_KEY@default?region=eu&webhook_key=KEY1,KEY2`` (the key may be left
        out for a webhook-only application); ``UNIMAILTRACK_SENDGRID_WEBHOOK_KEY`` in ``env``
        adds comma-separated keys."""
        if dsn.host != "default":
            raise ConfigurationError(
                f"a SendGrid DSN's host is 'default' (use ?base_url= for another host): "
                f"{dsn.redacted()}"
            )
        if dsn.password is not None:
            raise ConfigurationError(
                f"a SendGrid DSN takes only an API key, sendgrid://API_KEY@default: "
                f"{dsn.redacted()}"
            )
        # A query string turns '+' into ' ', and base64 never contains a space.
        keys = _split_keys(dsn.options.get("webhook_key", "").replace(" ", "+"))
        keys += _split_keys((env or {}).get(WEBHOOK_KEY_ENV, ""))
        options = cls.common_options(dsn)
        if "region" in dsn.options:
            options["region"] = dsn.options["region"]
        if "base_url" in dsn.options:
            options["base_url"] = dsn.options["base_url"]
        if "tolerance" in dsn.options:
            options["tolerance"] = timedelta(seconds=dsn.float_option("tolerance"))
        return cls(dsn.user or None, webhook_keys=keys, **options)

    # ------------------------------------------------------------------ sending

    def build_calls(self, email: Email, recipients: Sequence[Recipient]) -> list[Call]:
        """One Mail Send request per 1,000 recipients, each with a pure ``interpret``."""
        if self._send_headers is None:
            raise ConfigurationError(
                "sending through SendGrid needs an API key: sendgrid://API_KEY@default",
                provider=PROVIDER,
            )
        return send.build_calls(email, recipients, url=self._send_url, headers=self._send_headers)

    # Suppression lists (.suppressions holds the wire format).

    def _api_headers(self) -> dict[str, str]:
        if self._send_headers is None:
            raise ConfigurationError(
                "SendGrid's suppression lists need an API key: sendgrid://API_KEY@default"
            )
        return {"Authorization": self._send_headers["Authorization"], "Accept": "application/json"}

    def suppression_page_request(self, cursor: str | None) -> httpx.Request:
        from unimailtrack.adapters.sendgrid import suppressions as lists

        return lists.page_request(self.base_url, self._api_headers(), cursor)

    def read_suppression_page(
        self, cursor: str | None, response: httpx.Response
    ) -> SuppressionPage:
        from unimailtrack.adapters.sendgrid import suppressions as lists

        return lists.read_page(cursor, response)

    def suppression_push_calls(
        self, entries: Sequence[RemoteSuppression]
    ) -> tuple[list[PushCall], list[tuple[RemoteSuppression, str]]]:
        from unimailtrack.adapters.sendgrid import suppressions as lists

        return lists.push_calls(self.base_url, self._api_headers(), entries)

    def backfill(
        self, since: datetime, until: datetime | None = None
    ) -> Iterator[list[EmailEvent]]:
        """The events SendGrid's Email Activity API (a paid add-on) implies from ``since``
        to ``until`` (now), a request at a time, for ``Tracker.ingest``; see
        :mod:`.backfill`."""
        from unimailtrack.adapters.sendgrid import backfill

        return backfill.events(self, since, until or datetime.now(UTC))

    @classmethod
    def message_key(cls, message_id: str) -> str:
        """An event's ``sg_message_id`` is the send's ``X-Message-Id`` followed by ``.`` and a
        filter suffix; the part before the first ``.`` joins the two."""
        return message_id.partition(".")[0]

    # ------------------------------------------------------------------ webhooks

    def verify_webhook(
        self, body: bytes, headers: Mapping[str, str], *, now: datetime | None = None
    ) -> None:
        """Raise ``SignatureError`` unless ``body`` carries a fresh SendGrid signature by one of
        the configured keys (contract). ``body`` must be the raw bytes as received."""
        if self._verification_disabled():
            return
        signing.verify(body, headers, self._webhook_keys, self.tolerance, now)

    @classmethod
    def parse_webhook_body(
        cls, body: bytes, headers: Mapping[str, str] | None = None
    ) -> list[EmailEvent]:
        """Map an Event Webhook body onto canonical events (pure; raises only
        ``PayloadError``)."""
        return events.parse_events(body)

    def __repr__(self) -> str:
        return f"<SendGridAdapter region={self.region!r} webhook_keys={len(self._webhook_keys)}>"
