"""Mailgun: sending through the messages API, and its webhooks verified and mapped.

The rooms: :mod:`.send` builds batch sends and reads the answers, :mod:`.events` holds Mailgun's
event vocabulary and maps it, :mod:`.signing` verifies webhooks (and signs them for tests and
the emulator), :mod:`.body` reads a webhook body (JSON, or a legacy form by a bounded scanner),
:mod:`.suppressions` reads and writes Mailgun's suppression lists, :mod:`.backfill` reads the
Events API. This module is the adapter: its constructor and DSN, and the spending of webhook
tokens.

The body is not signed, so the replay check remembers a digest of what the request says: the
retry of the same request is admitted (and stored as duplicates), a different request under a
spent token is refused. Behind a receiver with a tracker the token is spent in the transaction
that stores the events (``unwrap_unspent``); otherwise through a ``NonceStore``. Before the
signature holds, only the three signing fields of a form are decoded.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Final, Self

import httpx

from unimailtrack import _constants as C
from unimailtrack.adapters.base import (
    Adapter,
    Call,
    InMemoryNonceStore,
    NonceStore,
    PushCall,
    Recipient,
    RemoteSuppression,
    ReplayToken,
    SuppressionPage,
    signature_failure,
    spend_token,
)
from unimailtrack.adapters.mailgun import events, send, signing
from unimailtrack.adapters.mailgun.body import (
    MAX_BOUNDARY,
    MAX_FORM_FIELDS,
    MAX_PART_HEADER,
    Form,
    SigningFields,
    decode_body,
)
from unimailtrack.adapters.mailgun.events import EVENTS, event_from
from unimailtrack.adapters.mailgun.send import BATCH_LIMIT, REGIONS, batches
from unimailtrack.adapters.mailgun.signing import WEBHOOK_KEY_ENV, MailgunWebhookSigner
from unimailtrack.config import Dsn
from unimailtrack.errors import ConfigurationError, PayloadError, SignatureCause
from unimailtrack.model import Email, EmailEvent

__all__ = [
    "BATCH_LIMIT",
    "EVENTS",
    "MAX_BOUNDARY",
    "MAX_FORM_FIELDS",
    "MAX_PART_HEADER",
    "REGIONS",
    "WEBHOOK_KEY_ENV",
    "Form",
    "MailgunAdapter",
    "MailgunWebhookSigner",
    "batches",
    "decode_body",
    "event_from",
]

PROVIDER: Final = "mailgun"


class MailgunAdapter(Adapter):
    """Mailgun (contract): ``MailgunAdapter(api_key, domain, webhook_keys=..., region="us")``.

    ``webhook_keys`` are the webhook signing keys (one string or several); ``nonce_store``
    remembers tokens so that a replayed request is refused (share one across processes to
    refuse replays between them). Without ``api_key`` and ``domain`` the adapter can still
    verify and parse webhooks; sending raises ``ConfigurationError``.
    """

    name: ClassVar[str] = PROVIDER
    dsn_options: ClassVar[frozenset[str]] = frozenset({"region", "webhook_key", "base_url"})

    def __init__(
        self,
        api_key: str | None = None,
        domain: str | None = None,
        *,
        webhook_keys: str | Iterable[str] = (),
        tolerance: timedelta = C.DEFAULT_WEBHOOK_TOLERANCE,
        region: str = "us",
        nonce_store: NonceStore | None = None,
        base_url: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        region = region.lower()
        if region not in REGIONS:
            raise ConfigurationError(
                f"unknown Mailgun region {region!r}; use one of: {', '.join(REGIONS)}"
            )
        self.domain = domain or None
        self.region = region
        self.tolerance = tolerance
        self.nonce_store: NonceStore = nonce_store or InMemoryNonceStore()
        self.base_url = (base_url or REGIONS[region]).rstrip("/")
        self._authorization = send.basic_auth(api_key) if api_key else None
        self._verifier = signing.WebhookVerifier(webhook_keys, tolerance)

    @classmethod
    def from_dsn(cls, dsn: Dsn, *, env: Mapping[str, str] | None = None) -> Self:
        """``mailgun://API_KEY:DOMAIN@default?region=eu&webhook_key=K1,K2``; signing keys also
        come from ``UNIMAILTRACK_MAILGUN_WEBHOOK_KEY`` (comma-separated). A host other than
        ``default`` replaces the API host; ``?base_url=`` replaces the whole base URL, scheme
        included (a local emulator over plain HTTP)."""
        keys = dsn.list_option("webhook_key") + tuple(
            k.strip() for k in (env or {}).get(WEBHOOK_KEY_ENV, "").split(",") if k.strip()
        )
        base_url = dsn.option("base_url")
        if base_url is None and dsn.host != "default":
            base_url = f"https://{dsn.host}" + (f":{dsn.port}" if dsn.port else "")
        return cls(
            api_key=dsn.user or None,
            domain=dsn.password or None,
            webhook_keys=keys,
            region=dsn.option("region") or "us",
            base_url=base_url,
            **cls.common_options(dsn),
        )

    def __repr__(self) -> str:
        return f"<MailgunAdapter domain={self.domain!r} region={self.region!r}>"

    # Suppression lists (.suppressions holds the wire format).

    def _api_place(self) -> tuple[str, dict[str, str]]:
        if self._authorization is None or self.domain is None:
            raise ConfigurationError(
                "Mailgun's suppression lists need an API key and a domain: "
                "mailgun://API_KEY:example.com@default"
            )
        return self.domain, {"Authorization": self._authorization, "Accept": "application/json"}

    def suppression_page_request(self, cursor: str | None) -> httpx.Request:
        from unimailtrack.adapters.mailgun import suppressions as lists

        domain, headers = self._api_place()
        return lists.page_request(self.base_url, domain, headers, cursor)

    def read_suppression_page(
        self, cursor: str | None, response: httpx.Response
    ) -> SuppressionPage:
        from unimailtrack.adapters.mailgun import suppressions as lists

        return lists.read_page(cursor, response)

    def suppression_push_calls(
        self, entries: Sequence[RemoteSuppression]
    ) -> tuple[list[PushCall], list[tuple[RemoteSuppression, str]]]:
        from unimailtrack.adapters.mailgun import suppressions as lists

        domain, headers = self._api_place()
        return lists.push_calls(self.base_url, domain, headers, entries)

    # ------------------------------------------------------------------ sending

    def build_calls(self, email: Email, recipients: Sequence[Recipient]) -> list[Call]:
        """One batch request per chunk of at most ``BATCH_LIMIT`` recipients."""
        if self._authorization is None or self.domain is None:
            raise ConfigurationError(
                "sending through Mailgun needs an API key and a sending domain: "
                "mailgun://API_KEY:DOMAIN@default"
            )
        return send.build_calls(
            email,
            recipients,
            base_url=self.base_url,
            domain=self.domain,
            authorization=self._authorization,
        )

    # ------------------------------------------------------------------ webhooks

    def verify_webhook(
        self, body: bytes, headers: Mapping[str, str], *, now: datetime | None = None
    ) -> None:
        """Raise ``SignatureError`` unless the request is signed by a configured key, fresh,
        and its token not spent by another request (contract)."""
        if self._verification_disabled():
            return
        decoded = self._verifier.verified_body(body, headers)
        signed, stamp = self._verifier.checked(decoded, now)
        content: dict[str, Any] | Form | bytes = decoded
        if isinstance(decoded, SigningFields):
            try:
                content = decode_body(body, headers)
            except PayloadError:
                content = body  # authentic but unreadable: the bytes are what it says
        self._spend(self._verifier.replay_token(signed, stamp, content))

    def unwrap(
        self, body: bytes, headers: Mapping[str, str], *, now: datetime | None = None
    ) -> list[EmailEvent]:
        """Verify, then parse: the token is spent in ``nonce_store``."""
        events, tokens = self.unwrap_unspent(body, headers, now=now)
        for token in tokens:
            self._spend(token)
        return events

    def unwrap_unspent(
        self, body: bytes, headers: Mapping[str, str], *, now: datetime | None = None
    ) -> tuple[list[EmailEvent], tuple[ReplayToken, ...]]:
        """Verify the signature and the freshness, then parse; the token is returned, not
        spent, for the caller to spend in the transaction that stores the events. Nothing
        but the signing fields is decoded before the signature holds."""
        if self._verification_disabled():
            return events.events_from(decode_body(body, headers)), ()
        decoded = self._verifier.verified_body(body, headers)
        signed, stamp = self._verifier.checked(decoded, now)
        if isinstance(decoded, SigningFields):
            decoded = decode_body(body, headers)  # the signature holds: now read the rest
        return events.events_from(decoded), (self._verifier.replay_token(signed, stamp, decoded),)

    def _spend(self, token: ReplayToken) -> None:
        if not spend_token(self.nonce_store, token):
            raise signature_failure(
                PROVIDER, "the token was spent by another request (a replay)", SignatureCause.REPLAY
            )

    @classmethod
    def parse_webhook_body(
        cls, body: bytes, headers: Mapping[str, str] | None = None
    ) -> list[EmailEvent]:
        """Map a Mailgun webhook body (JSON, or legacy form-encoded) onto one event."""
        return events.events_from(decode_body(body, headers))

    def backfill(
        self, since: datetime, until: datetime | None = None
    ) -> Iterator[list[EmailEvent]]:
        """The events Mailgun's Events API holds from ``since`` to ``until`` (now), a page at a
        time, for ``Tracker.ingest``; see :mod:`.backfill`."""
        from unimailtrack.adapters.mailgun import backfill

        return backfill.events(self, since, until or datetime.now(UTC))
