"""Mailgun: sending through the messages API, and its webhooks verified and mapped.

Sending posts ``/v3/{domain}/messages`` as a form (multipart when there are files). Every send is
a *batch send*: each recipient (to, cc and bcc alike) is a ``to`` of the batch and
``recipient-variables`` gives each their own tracking id, which Mailgun substitutes into the
``v:unimailtrack_id`` variable of their copy. Mailgun then sends one message per recipient that
shows only that recipient's address, and every event about that copy carries the id back in
``user-variables``. A batch holds at most 1,000 recipients, Mailgun's documented limit, so
larger sends become several requests.

Webhooks: Mailgun signs ``timestamp + token`` with HMAC-SHA256 under the account's webhook
signing key (not the API key). Verification checks every configured key (rotation, several
accounts), accepts only an all-digits timestamp and a token of Mailgun's documented shape (50
letters and digits), so that the signed string cannot be cut differently, refuses stale or
future timestamps, and spends the exact signed string once. The body is not signed, so the
replay check also remembers a digest of what the request says: the retry of the same request
is admitted (and stored as duplicates), a different request under a spent token is refused.
Behind a receiver with a tracker the token is spent in the transaction that stores the
events (``unwrap_unspent``); otherwise through a ``NonceStore``. JSON webhooks and the legacy
form-encoded and multipart ones are verified and parsed; before the signature holds, only the
three signing fields of a form are decoded, by a bounded scanner.

Mailgun's whole vocabulary is in the tables below; nothing outside this module knows it.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import hashlib
import hmac
import json
import math
import re
import secrets
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parseaddr
from functools import partial
from typing import Any, ClassVar, Final, Self
from urllib.parse import parse_qsl, unquote_plus, urlencode

import httpx

from unimailtrack import _constants as C
from unimailtrack._json import load_untrusted
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
    error_for_status,
    event_digest,
    is_fresh,
    lower_headers,
    signature_failure,
    spend_token,
    unknown_event,
)
from unimailtrack.config import Dsn
from unimailtrack.errors import ConfigurationError, PayloadError, SignatureCause
from unimailtrack.model import (
    TRACKING_KEY,
    BounceKind,
    DeliveryStatus,
    Email,
    EmailEvent,
    EventType,
    RecipientResult,
    make_event,
)

__all__ = [
    "BATCH_LIMIT",
    "REGIONS",
    "WEBHOOK_KEY_ENV",
    "MailgunAdapter",
    "MailgunWebhookSigner",
]

PROVIDER: Final = "mailgun"

BATCH_LIMIT: Final = 1000
"""Recipients per batch request, Mailgun's documented maximum."""

REGIONS: Final[Mapping[str, str]] = {
    "us": "https://api.mailgun.net",
    "eu": "https://api.eu.mailgun.net",
}
"""API base URL per region: a domain lives in one region and must be sent from there."""

WEBHOOK_KEY_ENV: Final = "UNIMAILTRACK_MAILGUN_WEBHOOK_KEY"
"""Environment variable holding webhook signing keys (comma-separated) for ``from_dsn``."""

_RECIPIENT_TRACKING: Final = f"%recipient.{TRACKING_KEY}%"

# --------------------------------------------------------------------------- vocabulary

_EVENT_TYPES: Final[Mapping[str, EventType]] = {
    "accepted": EventType.ACCEPTED,
    "delivered": EventType.DELIVERED,
    "rejected": EventType.REJECTED,
    "opened": EventType.OPENED,
    "clicked": EventType.CLICKED,
    "unsubscribed": EventType.UNSUBSCRIBED,
    "complained": EventType.COMPLAINED,
}
"""Events whose meaning does not depend on severity or reason (``failed`` does)."""

_PERMANENT_FAILURES: Final[Mapping[str, tuple[EventType, BounceKind | None]]] = {
    "bounce": (EventType.BOUNCED, BounceKind.HARD),
    "generic": (EventType.BOUNCED, BounceKind.HARD),
    "delayed-bounce": (EventType.BOUNCED, BounceKind.HARD),
    "espblock": (EventType.BOUNCED, BounceKind.BLOCK),
    "old": (EventType.FAILED, None),
    # Mailgun never tried these: the address is on one of its suppression lists.
    "suppress-bounce": (EventType.DROPPED, None),
    "suppress-unsubscribe": (EventType.DROPPED, None),
    "suppress-complaint": (EventType.DROPPED, None),
}
"""``failed`` with ``severity=permanent``, by ``reason``."""

_UNLISTED_PERMANENT: Final = (EventType.BOUNCED, BounceKind.UNDETERMINED)

_LEGACY_EVENT_TYPES: Final[Mapping[str, EventType]] = {
    "delivered": EventType.DELIVERED,
    "bounced": EventType.BOUNCED,
    "dropped": EventType.DROPPED,
    "complained": EventType.COMPLAINED,
    "unsubscribed": EventType.UNSUBSCRIBED,
    "opened": EventType.OPENED,
    "clicked": EventType.CLICKED,
}
"""The legacy (form-encoded) webhooks' event names."""

_LEGACY_DROP_REASONS: Final[Mapping[str, EventType]] = {
    "hardfail": EventType.DROPPED,  # previously bounced, unsubscribed or complained
    "maxfails": EventType.FAILED,  # too many soft failures
    "old": EventType.FAILED,  # retried for too long
}

_LEGACY_KNOWN_FIELDS: Final = frozenset(
    {
        "event",
        "recipient",
        "domain",
        "message-headers",
        "Message-Id",
        "message-id",
        "X-Mailgun-Sid",
        "X-Mailgun-Tag",
        "X-Mailgun-Variables",
        "timestamp",
        "token",
        "signature",
        "code",
        "error",
        "notification",
        "description",
        "reason",
        "ip",
        "country",
        "region",
        "city",
        "user-agent",
        "device-type",
        "client-type",
        "client-name",
        "client-os",
        "campaign-id",
        "campaign-name",
        "tag",
        "mailing-list",
        "url",
        "attachment-count",
        "body-plain",
        "h",
    }
)
"""Fields of a legacy webhook that are Mailgun's; any other field is a custom variable."""

_SIGNING_FIELDS: Final = frozenset({"token", "signature"})
_SIGNED_FIELDS: Final = frozenset({"timestamp", "token", "signature"})
"""The fields of a form the signature check reads: the only ones decoded before it holds."""

_TIMESTAMP: Final = re.compile(r"[0-9]{1,15}")
_TOKEN: Final = re.compile(r"[0-9A-Za-z]{50}")
"""Mailgun documents the token as a random string of length 50 (it sends lower-case hex);
with digits only in the timestamp, ``timestamp + token`` can be cut in one way only."""

MAX_FORM_FIELDS: Final = 1000
"""Fields (or multipart parts, files included) a legacy webhook body may have."""
MAX_BOUNDARY: Final = 70
"""RFC 2046's longest multipart boundary."""
MAX_PART_HEADER: Final = 4096
"""Bytes of one multipart part's header block."""
_MAX_PREAMBLE: Final = 1024
_MAX_CONTENT_TYPE: Final = 512
_BOUNDARY: Final = re.compile(rb"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
_PARAM: Final = re.compile(
    r';\s*([A-Za-z0-9_\-*]{1,64})\s*=\s*("(?:[^"\\]|\\.){0,1024}"|[^;\s"]{0,1024})'
)

_KIND_BY_DETAIL: Final[Mapping[str, BounceKind | None]] = {
    "1.7": BounceKind.BLOCK,  # the sender's address, not the recipient's
    "1.8": BounceKind.BLOCK,
    "2.0": None,
    "2.1": BounceKind.HARD,  # mailbox disabled
    "2.2": BounceKind.SOFT,  # mailbox full
    "4.4": BounceKind.HARD,  # unable to route: the domain does not take mail
}
"""RFC 3463 ``subject.detail`` codes whose meaning differs from their subject's."""

_KIND_BY_SUBJECT: Final[Mapping[str, BounceKind]] = {
    "1": BounceKind.HARD,  # addressing
    "2": BounceKind.SOFT,  # mailbox status
    "3": BounceKind.SOFT,  # mail system
    "4": BounceKind.SOFT,  # network and routing
    "6": BounceKind.BLOCK,  # message content
    "7": BounceKind.BLOCK,  # security or policy
}
"""RFC 3463 subjects; ``0`` (other) and ``5`` (protocol) say nothing about the bounce."""

_ENGAGEMENT: Final = frozenset({EventType.OPENED, EventType.CLICKED})
_REJECTED: Final = EventType.REJECTED

_STATUS_PATHS: Final[Mapping[str, str]] = {
    key: f"event-data.delivery-status.{key}"
    for key in ("code", "message", "description", "enhanced-code", "bounce-code", "attempt-no")
}
_HEADERS_PATH: Final = "event-data.message.headers"
_MESSAGE_ID_PATH: Final = "event-data.message.headers.message-id"
_USER_AGENT_PATH: Final = "event-data.client-info.user-agent"

_ENHANCED_STATUS: Final = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")

_PROXY_USER_AGENTS: Final = ("GoogleImageProxy", "YahooMailProxy", "ggpht.com")
_APPLE_PROXY_USER_AGENT: Final = "Mozilla/5.0"
"""Apple Mail Privacy Protection fetches images with exactly this user agent."""


# --------------------------------------------------------------------------- signing


class MailgunWebhookSigner:
    """Signs webhook requests exactly as Mailgun does, so that tests and a local emulator can
    produce requests the adapter verifies for real."""

    def __init__(self, key: str) -> None:
        if not key:
            raise ConfigurationError("a Mailgun webhook signing key cannot be empty")
        self._key = key.encode("utf-8")

    def signature(self, timestamp: str | int, token: str) -> str:
        """hex(HMAC-SHA256(key, timestamp + token))."""
        return hmac.new(self._key, f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()

    def signature_block(
        self, *, timestamp: str | int | None = None, token: str | None = None
    ) -> dict[str, str]:
        """A fresh ``{"timestamp", "token", "signature"}`` block (now, random token)."""
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        nonce = token if token is not None else secrets.token_hex(25)
        return {"timestamp": stamp, "token": nonce, "signature": self.signature(stamp, nonce)}

    def json_body(
        self,
        event_data: Mapping[str, Any],
        *,
        timestamp: str | int | None = None,
        token: str | None = None,
    ) -> bytes:
        """A signed JSON webhook body carrying ``event_data``."""
        block = self.signature_block(timestamp=timestamp, token=token)
        return json.dumps({"signature": block, "event-data": event_data}).encode()

    def form_body(
        self,
        fields: Mapping[str, str],
        *,
        timestamp: str | int | None = None,
        token: str | None = None,
    ) -> bytes:
        """A signed legacy form-encoded webhook body carrying ``fields``."""
        block = self.signature_block(timestamp=timestamp, token=token)
        return urlencode({**fields, **block}).encode()


# --------------------------------------------------------------------------- the adapter


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
        self._authorization = _basic_auth(api_key) if api_key else None
        keys = [webhook_keys] if isinstance(webhook_keys, str) else list(webhook_keys)
        self._macs = tuple(
            hmac.new(key.strip().encode("utf-8"), digestmod=hashlib.sha256)
            for key in keys
            if key.strip()
        )

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

    # Suppression lists (adapters/_suppressions_mailgun.py holds the wire format).

    def _api_place(self) -> tuple[str, dict[str, str]]:
        if self._authorization is None or self.domain is None:
            raise ConfigurationError(
                "Mailgun's suppression lists need an API key and a domain: "
                "mailgun://API_KEY:example.com@default"
            )
        return self.domain, {"Authorization": self._authorization, "Accept": "application/json"}

    def suppression_page_request(self, cursor: str | None) -> httpx.Request:
        from unimailtrack.adapters import _suppressions_mailgun as lists

        domain, headers = self._api_place()
        return lists.page_request(self.base_url, domain, headers, cursor)

    def read_suppression_page(
        self, cursor: str | None, response: httpx.Response
    ) -> SuppressionPage:
        from unimailtrack.adapters import _suppressions_mailgun as lists

        return lists.read_page(cursor, response)

    def suppression_push_calls(
        self, entries: Sequence[RemoteSuppression]
    ) -> tuple[list[PushCall], list[tuple[RemoteSuppression, str]]]:
        from unimailtrack.adapters import _suppressions_mailgun as lists

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
        url = f"{self.base_url}/v3/{self.domain}/messages"
        headers = {"Authorization": self._authorization, "Accept": "application/json"}
        fields = message_fields(email)
        files = message_files(email)
        return [
            Call(
                request=httpx.Request(
                    "POST",
                    url,
                    headers=headers,
                    data={**fields, **batch_fields(chunk)},
                    files=files or None,
                ),
                recipients=chunk,
                interpret=partial(interpret_response, chunk),
            )
            for chunk in batches(recipients, BATCH_LIMIT)
        ]

    # ------------------------------------------------------------------ webhooks

    def verify_webhook(
        self, body: bytes, headers: Mapping[str, str], *, now: datetime | None = None
    ) -> None:
        """Raise ``SignatureError`` unless the request is signed by a configured key, fresh,
        and its token not spent by another request (contract)."""
        if self._verification_disabled():
            return
        decoded = self._verified_body(body, headers)
        signed, stamp = self._checked(decoded, now)
        content: dict[str, Any] | Form | bytes = decoded
        if isinstance(decoded, _SigningFields):
            try:
                content = decode_body(body, headers)
            except PayloadError:
                content = body  # authentic but unreadable: the bytes are what it says
        self._spend(self._replay_token(signed, stamp, content))

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
            return events_from(decode_body(body, headers)), ()
        decoded = self._verified_body(body, headers)
        signed, stamp = self._checked(decoded, now)
        if isinstance(decoded, _SigningFields):
            decoded = decode_body(body, headers)  # the signature holds: now read the rest
        return events_from(decoded), (self._replay_token(signed, stamp, decoded),)

    def _verified_body(self, body: bytes, headers: Mapping[str, str]) -> dict[str, Any] | Form:
        """The body decoded as far as the signature check needs: a JSON object, or the
        signing fields of a form. Any failure to read it is a ``SignatureError``."""
        if not self._macs:
            raise signature_failure(
                PROVIDER, "no webhook signing key is configured", SignatureCause.NO_KEY
            )
        try:
            return decode_body(body, headers, signing_only=True)
        except PayloadError as exc:
            raise signature_failure(
                PROVIDER, f"the body cannot be read: {exc.message}", SignatureCause.MALFORMED
            ) from None

    def _checked(self, decoded: dict[str, Any] | Form, now: datetime | None) -> tuple[str, int]:
        """The exact signed string and the timestamp, once the signature and the freshness
        are checked."""
        if not self._macs:
            raise signature_failure(
                PROVIDER, "no webhook signing key is configured", SignatureCause.NO_KEY
            )
        timestamp, token, signatures = signature_fields(decoded)
        if not _TIMESTAMP.fullmatch(timestamp):
            raise signature_failure(
                PROVIDER, "the timestamp is not a whole number of seconds", SignatureCause.MALFORMED
            )
        if not _TOKEN.fullmatch(token):
            raise signature_failure(
                PROVIDER, "the token is not 50 letters and digits", SignatureCause.MALFORMED
            )
        signed = f"{timestamp}{token}"
        if not any(self._matches(signed.encode(), candidate) for candidate in signatures):
            raise signature_failure(
                PROVIDER,
                "the signature matches no configured signing key",
                SignatureCause.BAD_SIGNATURE,
            )
        stamp = int(timestamp)
        if not is_fresh(stamp, now, self.tolerance):
            raise signature_failure(
                PROVIDER, "the timestamp is outside the tolerance", SignatureCause.STALE
            )
        return signed, stamp

    def _replay_token(
        self, signed: str, stamp: int, decoded: dict[str, Any] | Form | bytes
    ) -> ReplayToken:
        # Remember the token for as long as a replay could pass the freshness check; the
        # store's clock is the real one even when ``now`` replays an old request.
        horizon = max(stamp, time.time()) + self.tolerance.total_seconds()
        return ReplayToken(
            key=f"{PROVIDER}:{signed}",
            digest=content_digest(decoded),
            expires_at=datetime.fromtimestamp(horizon, UTC),
        )

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
        return events_from(decode_body(body, headers))

    def backfill(
        self, since: datetime, until: datetime | None = None
    ) -> Iterator[list[EmailEvent]]:
        """The events Mailgun's Events API holds from ``since`` to ``until`` (now), a page at a
        time, for ``Tracker.ingest``; see ``adapters/_backfill_mailgun.py``."""
        from unimailtrack.adapters import _backfill_mailgun

        return _backfill_mailgun.events(self, since, until or datetime.now(UTC))

    def _matches(self, signed: bytes, candidate: bytes) -> bool:
        """Whether ``candidate`` is the signature under any configured key. Every key is tried,
        so the time taken does not tell which key matched, or how many were tried."""
        matched = False
        for mac in self._macs:
            digest = mac.copy()
            digest.update(signed)
            matched |= hmac.compare_digest(digest.hexdigest().encode(), candidate)
        return matched


# --------------------------------------------------------------------------- sending parts


def _basic_auth(api_key: str) -> str:
    return "Basic " + base64.b64encode(f"api:{api_key}".encode()).decode("ascii")


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def message_fields(email: Email) -> dict[str, str | list[str]]:
    """The form fields every batch of ``email`` shares (pure)."""
    fields: dict[str, str | list[str]] = {"from": str(email.sender), "subject": email.subject}
    if email.text is not None:
        fields["text"] = email.text
    if email.html is not None:
        fields["html"] = email.html
    if email.reply_to is not None:
        fields["h:Reply-To"] = str(email.reply_to)
    for name, value in email.headers.items():
        fields[f"h:{name}"] = value
    tags = list(dict.fromkeys([email.category, *email.tags] if email.category else email.tags))
    if tags:
        fields["o:tag"] = tags
    for key, value in email.metadata.items():
        fields[f"v:{key}"] = value
    fields[f"v:{TRACKING_KEY}"] = _RECIPIENT_TRACKING
    fields["o:tracking-opens"] = _yes_no(email.track_opens)
    fields["o:tracking-clicks"] = _yes_no(email.track_clicks)
    if email.send_at is not None:
        fields["o:deliverytime"] = format_datetime(email.send_at.astimezone(UTC), usegmt=True)
    return fields


def message_files(email: Email) -> list[tuple[str, tuple[str, bytes, str]]]:
    """Attachments, and inline images named by their content id (Mailgun's ``cid:``)."""
    return [
        (
            "inline" if a.inline else "attachment",
            (a.content_id if a.inline and a.content_id else a.filename, a.content, a.content_type),
        )
        for a in email.attachments
    ]


def batch_fields(chunk: Sequence[Recipient]) -> dict[str, str | list[str]]:
    """The recipients of one batch and each one's tracking id."""
    variables = {r.address.email: {TRACKING_KEY: r.tracking_id} for r in chunk}
    return {
        "to": [str(r.address) for r in chunk],
        "recipient-variables": json.dumps(variables, separators=(",", ":")),
    }


def batches(recipients: Iterable[Recipient], limit: int) -> list[tuple[Recipient, ...]]:
    """Recipients split into batches of at most ``limit``; an address met twice starts a new
    batch, since recipient variables are keyed by address."""
    chunks: list[tuple[Recipient, ...]] = []
    current: list[Recipient] = []
    seen: set[str] = set()
    for recipient in recipients:
        key = recipient.address.email.casefold()
        if len(current) >= limit or key in seen:
            chunks.append(tuple(current))
            current, seen = [], set()
        current.append(recipient)
        seen.add(key)
    if current:
        chunks.append(tuple(current))
    return chunks


def interpret_response(
    chunk: Sequence[Recipient], response: httpx.Response
) -> list[RecipientResult]:
    """Every recipient of the batch accepted under the batch's message id, or the error."""
    if not response.is_success:
        raise error_for_status(
            PROVIDER, response, _error_text(response), forbidden_is_permission=True
        )
    message_id = _response_id(response)
    return [
        RecipientResult(
            recipient=r.address.email,
            tracking_id=r.tracking_id,
            status=DeliveryStatus.ACCEPTED,
            message_id=message_id,
            provider=PROVIDER,
        )
        for r in chunk
    ]


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _response_id(response: httpx.Response) -> str | None:
    value = _json_object(response).get("id")
    return bare_message_id(value) if isinstance(value, str) else None


def _error_text(response: httpx.Response) -> str:
    message = _json_object(response).get("message")
    if isinstance(message, str):
        return message
    return response.text.strip()[:500]


def bare_message_id(value: str) -> str:
    """A Message-Id without whitespace and angle brackets, as sends and events both use it."""
    return value.strip().removeprefix("<").removesuffix(">")


# --------------------------------------------------------------------------- webhook bodies


class Form:
    """The fields of a legacy form-encoded webhook, in order, with repeated names kept."""

    __slots__ = ("fields",)

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self.fields: dict[str, list[str]] = {}
        for name, value in pairs:
            self.fields.setdefault(name, []).append(value)

    def first(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[0] if values else None

    def last(self, name: str) -> str | None:
        # Mailgun appends its signature fields after the custom variables, so a variable
        # that happens to be named like one cannot shadow the real field.
        values = self.fields.get(name)
        return values[-1] if values else None

    def getlist(self, name: str) -> list[str]:
        return list(self.fields.get(name, ()))

    def raw(self) -> dict[str, Any]:
        return {k: v[0] if len(v) == 1 else list(v) for k, v in self.fields.items()}


def _payload_error(why: str) -> PayloadError:
    return PayloadError(f"unreadable Mailgun webhook: {why}", provider=PROVIDER)


def _media_type(headers: Mapping[str, str] | None) -> tuple[str, str]:
    """``(media type, whole header)`` of the Content-Type; the usual spellings are looked up
    directly before any other spelling is searched for."""
    if not headers:
        return "", ""
    content_type = headers.get("content-type") or headers.get("Content-Type")
    if content_type is None:
        content_type = lower_headers(headers).get("content-type", "")
    return content_type.partition(";")[0].strip().lower(), content_type


class _SigningFields(Form):
    """The signing fields of a form, decoded alone before the signature is checked."""

    __slots__ = ()


def decode_body(
    body: bytes, headers: Mapping[str, str] | None, *, signing_only: bool = False
) -> dict[str, Any] | Form:
    """The JSON object of a webhook body, or the fields of a legacy form body. The content
    type decides; without one, the body's first bytes do. ``signing_only`` decodes only the
    signing fields of a form (a JSON body is read whole: its signature block is inside)."""
    media, content_type = _media_type(headers)
    if media == "application/json":
        return _json_body(body)
    if media == "application/x-www-form-urlencoded":
        return _form_body(body, signing_only)
    if media == "multipart/form-data":
        return _multipart_body(body, content_type, signing_only)
    start = body.lstrip()[:2]
    if start.startswith(b"{"):
        return _json_body(body)
    if start == b"--":
        return _multipart_body(body, "", signing_only)
    return _form_body(body, signing_only)


def _json_body(body: bytes) -> dict[str, Any]:
    try:
        data = load_untrusted(body)
    except (ValueError, RecursionError) as exc:
        raise _payload_error(f"not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise _payload_error("the body is not a JSON object")
    return data


def _form_body(body: bytes, signing_only: bool = False) -> Form:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _payload_error("the form body is not UTF-8") from None
    if not signing_only:
        try:
            return Form(parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS))
        except ValueError:
            raise _payload_error(f"the form has more than {MAX_FORM_FIELDS} fields") from None
    if text.count("&") >= MAX_FORM_FIELDS:
        raise _payload_error(f"the form has more than {MAX_FORM_FIELDS} fields")
    pairs = []
    for field_text in text.split("&"):
        name, _, value = field_text.partition("=")
        name = unquote_plus(name) if "%" in name or "+" in name else name
        if name in _SIGNED_FIELDS:
            pairs.append((name, unquote_plus(value)))
    return _SigningFields(pairs)


@dataclass(frozen=True, slots=True)
class _Part:
    """Where one field of a multipart body is, and how its bytes are encoded."""

    name: str
    start: int
    end: int
    charset: str
    encoding: str


def _boundary(body: bytes, content_type: str) -> bytes:
    """The boundary the Content-Type gives, or the body's first line when it gives none;
    refused unless it has RFC 2046's shape (1 to 70 characters of a small set)."""
    if len(content_type) > _MAX_CONTENT_TYPE:
        raise _payload_error(f"the Content-Type is longer than {_MAX_CONTENT_TYPE} characters")
    boundary: bytes | None = None
    for found in _PARAM.finditer(content_type):
        if found[1].lower() == "boundary":
            boundary = _unquote_param(found[2]).encode("latin-1", "replace")
    if boundary is None:
        if "boundary" in content_type.lower():
            raise _payload_error("the multipart boundary is malformed")
        start = len(body) - len(body.lstrip())
        if body[start : start + 2] != b"--":
            raise _payload_error("the multipart body has no boundary")
        line = body[start + 2 : start + 2 + MAX_BOUNDARY + 2]
        end = min(i for i in (line.find(b"\r"), line.find(b"\n"), len(line)) if i >= 0)
        boundary = line[:end]
    if not _BOUNDARY.fullmatch(boundary):
        raise _payload_error(
            f"the multipart boundary is not 1 to {MAX_BOUNDARY} of the characters RFC 2046 allows"
        )
    return boundary


def _unquote_param(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def _line_end(body: bytes, at: int) -> int:
    """The offset after the line break at ``at`` (transport padding allowed before it)."""
    limit = min(len(body), at + 64)
    while at < limit and body[at] in b" \t":
        at += 1
    if body.startswith(b"\r\n", at):
        return at + 2
    if body.startswith(b"\n", at):
        return at + 1
    raise _payload_error("a multipart delimiter is not followed by a line break")


def _part_header(block: bytes) -> tuple[str | None, bool, str, str]:
    """``(name, is a file, charset, transfer encoding)`` of one part's header block."""
    name: str | None = None
    is_file = False
    charset, encoding = "utf-8", "8bit"
    lines = block.decode("latin-1").replace("\r\n", "\n").split("\n")
    if len(lines) > 16:
        raise _payload_error("a multipart part has more than 16 header lines")
    for line in lines:
        field, colon, value = line.partition(":")
        if not colon:
            if line.strip():
                raise _payload_error("a multipart part header is malformed")
            continue
        field = field.strip().lower()
        params = {m[1].lower(): _unquote_param(m[2]) for m in _PARAM.finditer(value)}
        if field == "content-disposition":
            name = params.get("name")
            is_file = "filename" in params or "filename*" in params
        elif field == "content-type":
            charset = params.get("charset", charset)
        elif field == "content-transfer-encoding":
            encoding = value.strip().lower()
    return name, is_file, charset, encoding


def _multipart_parts(body: bytes, content_type: str) -> list[_Part]:
    """The form fields of a multipart body, located in one bounded pass: a boundary of RFC
    2046's shape, at most ``MAX_FORM_FIELDS`` parts of at most ``MAX_PART_HEADER`` bytes of
    headers each, every search a linear scan. Files are passed over."""
    boundary = _boundary(body, content_type)
    delimiter = b"--" + boundary
    if body.count(b"\n" + delimiter) > MAX_FORM_FIELDS:  # one scan at C speed, before any work
        raise _payload_error(f"the multipart body has more than {MAX_FORM_FIELDS} parts")
    first = body.find(delimiter)
    if first < 0 or first > _MAX_PREAMBLE or (first and body[first - 1 : first] != b"\n"):
        raise _payload_error("the multipart body does not start with its boundary")
    parts: list[_Part] = []
    at = first + len(delimiter)
    for _ in range(MAX_FORM_FIELDS + 1):
        if body.startswith(b"--", at):
            return parts  # the closing delimiter
        if len(parts) >= MAX_FORM_FIELDS:
            break
        at = _line_end(body, at)
        window = body[at : at + MAX_PART_HEADER + 4]
        crlf, lf = window.find(b"\r\n\r\n"), window.find(b"\n\n")
        if crlf < 0 and lf < 0:
            raise _payload_error(
                f"a multipart part header is longer than {MAX_PART_HEADER} bytes or unended"
            )
        head_end, gap = (crlf, 4) if crlf >= 0 and (lf < 0 or crlf <= lf) else (lf, 2)
        name, is_file, charset, encoding = _part_header(window[:head_end])
        content = at + head_end + gap
        following = body.find(b"\n" + delimiter, content - 1)
        if following < 0:
            raise _payload_error("the multipart body is not closed by its boundary")
        end = following - 1 if body[following - 1 : following] == b"\r" else following
        if name is not None and not is_file:
            parts.append(_Part(name, content, max(content, end), charset, encoding))
        at = following + 1 + len(delimiter)
    raise _payload_error(f"the multipart body has more than {MAX_FORM_FIELDS} parts")


def _part_text(body: bytes, part: _Part) -> str:
    data = body[part.start : part.end]
    try:
        if part.encoding == "base64":
            data = binascii.a2b_base64(data)
        elif part.encoding == "quoted-printable":
            data = binascii.a2b_qp(data)
        elif part.encoding not in ("7bit", "8bit", "binary"):
            raise _payload_error(f"unknown transfer encoding {part.encoding[:32]!r}")
    except binascii.Error:
        raise _payload_error(f"the field {part.name[:64]!r} is not valid {part.encoding}") from None
    try:
        codecs.lookup(part.charset)
        charset = part.charset
    except LookupError:
        charset = "utf-8"
    return data.decode(charset, "replace")


def _multipart_body(body: bytes, content_type: str, signing_only: bool = False) -> Form:
    parts = _multipart_parts(body, content_type)
    if signing_only:
        return _SigningFields(
            (p.name, _part_text(body, p)) for p in parts if p.name in _SIGNED_FIELDS
        )
    if not parts:
        raise _payload_error("the multipart body has no form fields")
    return Form((p.name, _part_text(body, p)) for p in parts)


def content_digest(decoded: dict[str, Any] | Form | bytes) -> str:
    """A digest of what a request says (its JSON object, its form fields in order), not of
    how it is framed: a retry that re-encodes the same request keeps the digest."""
    if isinstance(decoded, bytes):
        text = decoded
    elif isinstance(decoded, Form):
        pairs = [[k, v] for k, values in decoded.fields.items() for v in values]
        text = json.dumps(pairs, separators=(",", ":")).encode("utf-8", "surrogatepass")
    else:
        text = json.dumps(decoded, sort_keys=True, separators=(",", ":")).encode(
            "utf-8", "surrogatepass"
        )
    return hashlib.sha256(text).hexdigest()


def signature_fields(decoded: dict[str, Any] | Form) -> tuple[str, str, list[bytes]]:
    """``(timestamp, token, signatures)`` of a webhook; a subaccount's event also carries the
    parent account's ``parent-signature``. Refuses (``SignatureError``) a body without them."""
    if isinstance(decoded, Form):
        timestamp, token = decoded.last("timestamp"), decoded.last("token")
        signatures: list[Any] = [decoded.last("signature")]
    else:
        block = decoded.get("signature")
        if not isinstance(block, dict):
            raise signature_failure(
                PROVIDER, "the body has no signature block", SignatureCause.MISSING_HEADER
            )
        timestamp, token = block.get("timestamp"), block.get("token")
        signatures = [block.get("signature"), block.get("parent-signature")]
    if isinstance(timestamp, int) and not isinstance(timestamp, bool):
        timestamp = str(timestamp)
    if not (isinstance(timestamp, str) and isinstance(token, str) and timestamp and token):
        raise signature_failure(
            PROVIDER, "the timestamp or token is missing", SignatureCause.MISSING_HEADER
        )
    found = [s.encode("utf-8") for s in signatures if isinstance(s, str) and s]
    if not found:
        raise signature_failure(PROVIDER, "the signature is missing", SignatureCause.MISSING_HEADER)
    return timestamp, token, found


# --------------------------------------------------------------------------- field access
#
# Webhook parsing is a hot path: each check below is a type test on a value already fetched,
# with the error built only on the way out.


def _field_error(path: str, expected: str) -> PayloadError:
    return PayloadError(
        f"unreadable Mailgun webhook: {path} is missing or is not {expected}", provider=PROVIDER
    )


def _text(value: Any, path: str) -> str:
    if type(value) is str:
        return value
    raise _field_error(path, "a string")


def _optional_text(value: Any, path: str) -> str | None:
    if value is None or type(value) is str:
        return value
    raise _field_error(path, "a string")


def _object(value: Any, path: str) -> dict[str, Any]:
    if type(value) is dict:
        return value
    if value is None or value == []:  # Mailgun sends an empty list for no user-variables
        return {}
    raise _field_error(path, "an object")


def _number(value: Any, path: str) -> float:
    if type(value) is float or type(value) is int:
        number = float(value)
    elif type(value) is str:
        try:
            number = float(value)
        except ValueError:
            raise _field_error(path, "a number") from None
    else:
        raise _field_error(path, "a number")
    if not math.isfinite(number):
        raise _field_error(path, "a finite number")
    return number


def _timestamp(value: Any, path: str) -> datetime:
    try:
        return datetime.fromtimestamp(_number(value, path), UTC)
    except (OverflowError, OSError, ValueError):
        raise _field_error(path, "a unix time") from None


def _optional_int(value: Any, path: str) -> int | None:
    if type(value) is int or value is None:
        return value
    if value == "":
        return None
    number = _number(value, path)
    if not number.is_integer():
        raise _field_error(path, "a whole number")
    return int(number)


def _string_list(value: Any, path: str) -> list[str]:
    if value is None:
        return []
    if type(value) is not list:
        raise _field_error(path, "a list of strings")
    for item in value:
        if type(item) is not str:
            raise _field_error(path, "a list of strings")
    return list(value)


def _as_text(value: Any) -> str:
    return value if type(value) is str else json.dumps(value, separators=(",", ":"))


# --------------------------------------------------------------------------- mapping


def events_from(decoded: dict[str, Any] | Form) -> list[EmailEvent]:
    """The canonical event of a decoded webhook body (Mailgun posts one event per request)."""
    if isinstance(decoded, Form):
        return [legacy_event(decoded)]
    event_data = decoded.get("event-data")
    if type(event_data) is not dict:
        raise _field_error("event-data", "an object")
    return [event_from(event_data)]


def enhanced_status(*texts: str | None) -> str | None:
    """The first RFC 3463 enhanced status code (``5.1.1``) found in ``texts``."""
    for text in texts:
        if text:
            found = _ENHANCED_STATUS.search(text)
            if found:
                return found.group(0)
    return None


def bounce_kind(status: str | None) -> BounceKind | None:
    """What an enhanced status code says about a bounce, or None when it says nothing."""
    if status is None:
        return None
    klass, subject, detail = status.split(".")
    key = f"{subject}.{detail}"
    kind = _KIND_BY_DETAIL[key] if key in _KIND_BY_DETAIL else _KIND_BY_SUBJECT.get(subject)
    if klass == "4" and kind is BounceKind.HARD:
        return BounceKind.SOFT  # a transient status cannot make an address bad
    return kind if klass in ("4", "5") else None


def smtp_reason(code: int | None, message: str | None) -> str | None:
    """The remote server's reply as one line: ``"550 5.1.1 user unknown"``."""
    text = (message or "").strip()
    if code and text and not text.startswith(str(code)):
        return f"{code} {text}"
    return text or (str(code) if code else None)


def machine_flag(client_info: Mapping[str, Any], user_agent: str | None) -> bool | None:
    """True for an automated open or click: Mailgun's own ``client-info.bot`` verdict where it
    gives one, else a privacy proxy recognised by its user agent; None when unknown."""
    bot = client_info.get("bot")
    if type(bot) is str:
        return bool(bot)
    if user_agent is None:
        return None
    if user_agent == _APPLE_PROXY_USER_AGENT or any(p in user_agent for p in _PROXY_USER_AGENTS):
        return True
    return None


def _headers(message: Any) -> dict[str, Any]:
    """``message.headers`` of an event (empty when absent)."""
    return _object(_object(message, "event-data.message").get("headers"), _HEADERS_PATH)


def _recipient(value: Any, headers: Mapping[str, Any], required: bool) -> str:
    if type(value) is str and value:
        return value
    if required or not (value is None or type(value) is str):
        raise _field_error("event-data.recipient", "a string")
    to = headers.get("to")  # a rejected request names its recipient only in the headers
    return parseaddr(to)[1] if type(to) is str else ""


def _failure(
    severity: Any, reason: str | None, enhanced: str | None
) -> tuple[EventType, BounceKind | None] | None:
    """What a ``failed`` event is, from its severity, its reason and the enhanced status."""
    severity = _text(severity, "event-data.severity")
    refined = bounce_kind(enhanced)
    if severity == "temporary":  # Mailgun keeps retrying, whatever the code says
        return EventType.DEFERRED, (
            BounceKind.BLOCK if refined is BounceKind.BLOCK else BounceKind.SOFT
        )
    if severity != "permanent":
        return None
    kind, default = _PERMANENT_FAILURES.get(reason or "", _UNLISTED_PERMANENT)
    return kind, (refined or default) if kind is EventType.BOUNCED else default


def _delivery_status(
    status: Mapping[str, Any],
) -> tuple[str | None, str | None, str | None, int | None]:
    """``(reason, enhanced status, smtp status, attempt)`` from ``delivery-status``."""
    get = status.get
    code = _optional_int(get("code"), _STATUS_PATHS["code"])
    message = _optional_text(get("message"), _STATUS_PATHS["message"])
    description = _optional_text(get("description"), _STATUS_PATHS["description"])
    enhanced = enhanced_status(
        _optional_text(get("enhanced-code"), _STATUS_PATHS["enhanced-code"])
        or _optional_text(get("bounce-code"), _STATUS_PATHS["bounce-code"]),
        message,
        description,
    )
    attempt = _optional_int(get("attempt-no"), _STATUS_PATHS["attempt-no"])
    reason = smtp_reason(code, message or description)
    return reason, enhanced, enhanced or (str(code) if code else None), attempt


def _variables(value: Any) -> tuple[dict[str, str], str | None]:
    """``user-variables`` as metadata, and the tracking id taken out of it."""
    variables = _object(value, "event-data.user-variables")
    if not variables:
        return {}, None
    metadata = {k: v if type(v) is str else _as_text(v) for k, v in variables.items()}
    return metadata, metadata.pop(TRACKING_KEY, None)


def event_from(data: dict[str, Any]) -> EmailEvent:
    """Map one ``event-data`` object onto a canonical event."""
    get = data.get
    name = _text(get("event"), "event-data.event")
    stamp = _number(get("timestamp"), "event-data.timestamp")
    timestamp = _timestamp(stamp, "event-data.timestamp")
    headers = _headers(get("message"))
    event_type = _EVENT_TYPES.get(name)
    known = event_type is not None or name == "failed"
    recipient = _recipient(get("recipient"), headers, known and event_type is not _REJECTED)
    provider_id = _optional_text(get("id"), "event-data.id") or ""
    # Mailgun's ids are unique only within a day: the recipient and the time pin them down.
    event_id = event_digest(f"{PROVIDER}\x1f{provider_id}\x1f{recipient}\x1f{round(stamp * 1e6)}")
    if not known:
        return _unmapped(data, f"Mailgun event {name!r}", name, recipient, timestamp, event_id)

    status = _object(get("delivery-status"), "event-data.delivery-status")
    reason, enhanced, smtp_status, attempt = (
        _delivery_status(status) if status else (None, None, None, None)
    )
    bounce: BounceKind | None = None
    user_agent = url = None
    machine: bool | None = None
    if event_type is None:  # failed: severity and reason decide
        mailgun_reason = _optional_text(get("reason"), "event-data.reason")
        failure = _failure(get("severity"), mailgun_reason, enhanced)
        if failure is None:
            what = f"Mailgun failure severity {get('severity')!r}"
            return _unmapped(data, what, name, recipient, timestamp, event_id)
        event_type, bounce = failure
        # A drop is Mailgun's own decision: its reason (suppress-bounce ...) is the why.
        reason = mailgun_reason if event_type is EventType.DROPPED else reason or mailgun_reason
    elif event_type is _REJECTED:
        reject = _object(get("reject"), "event-data.reject")
        reason = (
            _optional_text(reject.get("reason"), "event-data.reject.reason")
            or _optional_text(reject.get("description"), "event-data.reject.description")
            or reason
        )
    elif event_type in _ENGAGEMENT:
        client_info = _object(get("client-info"), "event-data.client-info")
        user_agent = _optional_text(client_info.get("user-agent"), _USER_AGENT_PATH)
        machine = machine_flag(client_info, user_agent)
        if event_type is EventType.CLICKED:
            url = _optional_text(get("url"), "event-data.url")

    metadata, tracking_id = _variables(get("user-variables"))
    message_id = _optional_text(headers.get("message-id"), _MESSAGE_ID_PATH)
    return make_event(
        PROVIDER,
        event_type,
        name,
        recipient,
        event_id,
        timestamp,
        bare_message_id(message_id) if message_id else None,
        tracking_id,
        reason,
        bounce,
        smtp_status,
        attempt,
        url,
        user_agent,
        machine,
        _string_list(get("tags"), "event-data.tags"),
        metadata,
        data,
    )


def _unmapped(
    raw: dict[str, Any],
    what: str,
    name: str,
    recipient: str,
    timestamp: datetime,
    event_id: str,
) -> EmailEvent:
    return unknown_event(
        PROVIDER,
        raw,
        f"{what} is not one this version maps",
        provider_event=name,
        recipient=recipient,
        timestamp=timestamp,
        digest_source=event_id,
    )


def _legacy_variables(form: Form) -> dict[str, str]:
    """Custom variables of a legacy webhook: the ``X-Mailgun-Variables`` headers of the
    original message where Mailgun includes them, and every field that is not Mailgun's."""
    variables: dict[str, str] = {}
    headers = form.first("message-headers")
    if headers:
        try:
            pairs = load_untrusted(headers)
        except (ValueError, RecursionError):
            raise _field_error("message-headers", "a JSON list of headers") from None
        for pair in pairs if isinstance(pairs, list) else ():
            if isinstance(pair, list) and len(pair) == 2 and pair[0] == "X-Mailgun-Variables":
                try:
                    found = load_untrusted(pair[1])
                except (TypeError, ValueError, RecursionError):
                    continue
                if isinstance(found, dict):
                    variables.update({k: _as_text(v) for k, v in found.items()})
    for name, values in form.fields.items():
        if name not in _LEGACY_KNOWN_FIELDS and not name.startswith("attachment-"):
            variables[name] = values[-1]
    return variables


def legacy_event(form: Form) -> EmailEvent:
    """Map a legacy (form-encoded) webhook onto a canonical event."""
    name = form.first("event")
    if not name:
        raise _field_error("event", "a string")
    timestamp = _timestamp(form.last("timestamp"), "timestamp")
    recipient = form.first("recipient") or ""
    message_id = form.first("Message-Id") or form.first("message-id")
    # No id of its own: a digest of every field but the signature's, so a re-signed
    # delivery of the same event keeps its id.
    identity = sorted(
        f"{k}={v}" for k, values in form.fields.items() if k not in _SIGNING_FIELDS for v in values
    )
    event_id = event_digest(PROVIDER, "legacy", "\x1f".join(identity))
    raw = form.raw()
    event_type = _LEGACY_EVENT_TYPES.get(name)
    if event_type is None:
        return _unmapped(
            raw, f"legacy Mailgun event {name!r}", name, recipient, timestamp, event_id
        )
    if not recipient:
        raise _field_error("recipient", "a string")

    code_text = form.first("code")
    error = form.first("error") or form.first("notification")
    description = form.first("description")
    enhanced = enhanced_status(code_text, error, description)
    code = int(code_text) if code_text and code_text.isdigit() else None
    reason = smtp_reason(code, error or description)
    bounce: BounceKind | None = None
    if event_type is EventType.BOUNCED:
        bounce = bounce_kind(enhanced) or BounceKind.HARD
    elif event_type is EventType.DROPPED:
        drop_reason = form.first("reason") or ""
        event_type = _LEGACY_DROP_REASONS.get(drop_reason, EventType.DROPPED)
        reason = reason or drop_reason or None

    user_agent = form.first("user-agent")
    variables = _legacy_variables(form)
    tracking_id = variables.pop(TRACKING_KEY, None)
    return EmailEvent(
        provider=PROVIDER,
        type=event_type,
        provider_event=name,
        recipient=recipient,
        event_id=event_id,
        timestamp=timestamp,
        message_id=bare_message_id(message_id) if message_id else None,
        tracking_id=tracking_id,
        reason=reason,
        bounce=bounce,
        smtp_status=enhanced or (str(code) if code else None),
        url=form.first("url") if event_type is EventType.CLICKED else None,
        user_agent=user_agent,
        machine=machine_flag({}, user_agent) if event_type in _ENGAGEMENT else None,
        tags=form.getlist("tag") or form.getlist("X-Mailgun-Tag"),
        metadata=variables,
        raw=raw,
    )
