"""SendGrid: v3 Mail Send, the Signed Event Webhook, and every event SendGrid documents.

Sending
    One ``POST /v3/mail/send`` per 1,000 recipients (SendGrid's limit on personalizations per
    request). Every recipient is a personalization of its own whose ``custom_args`` carry its
    tracking id, so each webhook event names exactly one (send, recipient). The e-mail's
    ``metadata`` travels once per request as message-level ``custom_args``, which SendGrid merges
    into every personalization; ``tags`` and ``category`` become SendGrid ``categories``. Open and
    click tracking are always set explicitly, off unless the e-mail asks for them.

Verifying
    SendGrid signs ``timestamp header + raw body`` with ECDSA P-256/SHA-256 and sends the DER
    signature in base64. The account's verification key is a base64 DER SubjectPublicKeyInfo
    (PEM is accepted too); several keys may be configured for rotation. Keys are decoded once,
    when the adapter is built. :class:`SendGridWebhookSigner` signs the same way, for tests and
    local emulators.

Parsing
    A body is a JSON array of events. Each known event maps through :data:`EVENT_TYPES`; an
    event this version does not know, or an item that cannot be mapped, becomes ``unknown`` with
    a reason and its raw item, never an exception. Only a body that is not a JSON array raises
    ``PayloadError``. Custom args come back as top-level keys beside SendGrid's own, so every key
    SendGrid itself sets (:data:`SENDGRID_KEYS`) is kept out of ``metadata``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Final, Self

import httpx
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from unimailtrack import _constants as C
from unimailtrack._http import read_request
from unimailtrack._json import load_untrusted
from unimailtrack._version import __version__
from unimailtrack.adapters.base import (
    Adapter,
    Call,
    PushCall,
    Recipient,
    RemoteSuppression,
    SuppressionPage,
    error_for_status,
    event_digest,
    is_fresh,
    lower_headers,
    signature_failure,
    unknown_event,
)
from unimailtrack.errors import (
    ConfigurationError,
    FieldError,
    InvalidRequest,
    PayloadError,
    SignatureCause,
)
from unimailtrack.model import (
    TRACKING_KEY,
    Address,
    Attachment,
    BounceKind,
    DeliveryStatus,
    Email,
    EmailEvent,
    EventType,
    RecipientResult,
    make_event,
)

if TYPE_CHECKING:
    from unimailtrack.config import Dsn

__all__ = [
    "API_BASE_URLS",
    "EVENT_TYPES",
    "MAX_PERSONALIZATIONS",
    "SENDGRID_KEYS",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WEBHOOK_KEY_ENV",
    "SendGridAdapter",
    "SendGridWebhookSigner",
    "load_webhook_key",
]

PROVIDER: Final = "sendgrid"

API_BASE_URLS: Final[Mapping[str, str]] = MappingProxyType(
    {"global": "https://api.sendgrid.com", "eu": "https://api.eu.sendgrid.com"}
)
"""The v3 API host for each data residency region."""

MAIL_SEND_PATH: Final = "/v3/mail/send"

MAX_PERSONALIZATIONS: Final = 1000
"""SendGrid takes at most 1,000 personalizations (and 1,000 recipients) per Mail Send request."""

SIGNATURE_HEADER: Final = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER: Final = "X-Twilio-Email-Event-Webhook-Timestamp"
_SIGNATURE_KEY: Final = SIGNATURE_HEADER.lower()
_TIMESTAMP_KEY: Final = TIMESTAMP_HEADER.lower()

WEBHOOK_KEY_ENV: Final = "UNIMAILTRACK_SENDGRID_WEBHOOK_KEY"
"""Comma-separated verification keys, read by ``from_dsn`` besides the DSN's ``webhook_key``."""

_MAX_STAMP_DIGITS: Final = 12
"""Unix seconds have 10 digits until the year 2286; anything much longer is not a time."""

_ECDSA_SHA256: Final = ec.ECDSA(hashes.SHA256())
_ECDSA_PREHASHED: Final = ec.ECDSA(Prehashed(hashes.SHA256()))

# --------------------------------------------------------------------------- vocabulary

EVENT_TYPES: Final[Mapping[str, EventType]] = MappingProxyType(
    {
        "processed": EventType.PROCESSED,
        "deferred": EventType.DEFERRED,
        "delivered": EventType.DELIVERED,
        "bounce": EventType.BOUNCED,
        "dropped": EventType.DROPPED,
        "spamreport": EventType.COMPLAINED,
        "unsubscribe": EventType.UNSUBSCRIBED,
        "group_unsubscribe": EventType.UNSUBSCRIBED,
        "group_resubscribe": EventType.RESUBSCRIBED,
        "open": EventType.OPENED,
        "click": EventType.CLICKED,
    }
)
"""SendGrid's event names and what each becomes; any other name becomes ``unknown``."""

BOUNCE_KINDS: Final[Mapping[str, BounceKind]] = MappingProxyType(
    {"bounce": BounceKind.HARD, "blocked": BounceKind.BLOCK}
)
"""A ``bounce`` event's ``type``: ``bounce`` is the address, ``blocked`` is the sender's
reputation or the receiver's policy (never a reason to suppress the address)."""

CLASSIFIED_KINDS: Final[Mapping[str, BounceKind]] = MappingProxyType(
    {
        "Reputation": BounceKind.BLOCK,
        "Content": BounceKind.BLOCK,
        "Frequency or Volume Too High": BounceKind.BLOCK,
        "Technical": BounceKind.UNDETERMINED,
    }
)
"""``bounce_classification`` values that overrule ``type=bounce``: SendGrid reports a refusal
for the sender's reputation, the content or the sending rate as a bounce, yet the address is
fine, and a technical failure of the receiving server says nothing about the address either.
"Invalid Address", "Mailbox Unavailable" and "Unclassified" leave ``type`` to decide."""

# Plain dicts for the parser: a mappingproxy's get() costs three times a dict's.
_EVENT_TYPES: Final = dict(EVENT_TYPES)
_BOUNCE_KINDS: Final = dict(BOUNCE_KINDS)
_CLASSIFIED_KINDS: Final = dict(CLASSIFIED_KINDS)
_UNKNOWN: Final = EventType.UNKNOWN
_BOUNCED: Final = EventType.BOUNCED
_OPENED: Final = EventType.OPENED

_GROUP_EVENTS: Final = frozenset({"group_unsubscribe", "group_resubscribe"})

_UNMAPPED_REASONS: Final[Mapping[str, str]] = MappingProxyType(
    {"account_status_change": "the SendGrid account status changed"}
)

SENDGRID_KEYS: Final = frozenset(
    {
        # every event
        "email",
        "timestamp",
        "event",
        "smtp-id",
        "sg_event_id",
        "sg_message_id",
        "category",
        "unique_args",
        "asm_group_id",
        "sg_user_id",
        # delivery
        "reason",
        "response",
        "status",
        "attempt",
        "type",
        "bounce_classification",
        "ip",
        "tls",
        "cert_err",
        "pool",
        "send_at",
        # engagement
        "useragent",
        "url",
        "url_offset",
        "sg_machine_open",
        "sg_content_type",
        "post_type",
        # templates and Marketing Campaigns
        "sg_template_id",
        "sg_template_name",
        "template_id",
        "template_name",
        "template_version_id",
        "template_hash",
        "marketing_campaign_id",
        "marketing_campaign_name",
        "marketing_campaign_version",
        "marketing_campaign_split_id",
        "singlesend_id",
        "singlesend_name",
        "mc_stats",
        "mc_auto_id",
        "mc_auto_name",
        "mc_auto_step_id",
        "phase_id",
        "variation",
        "ab_variation",
        "ab_phase_id",
        "newsletter",
        "nlvx_campaign_id",
        "nlvx_campaign_split_id",
        "nlvx_user_id",
    }
)
"""Keys SendGrid itself sets on events. Custom args arrive beside them as top-level keys, so
these never reach ``EmailEvent.metadata``, and a send whose metadata uses one is refused (it
would overwrite SendGrid's own field in every event)."""

_NOT_METADATA: Final = SENDGRID_KEYS | {TRACKING_KEY}

# --------------------------------------------------------------------------- keys and signing


WebhookKey = str | bytes | ec.EllipticCurvePublicKey
"""A verification key: base64 DER (as SendGrid shows it), PEM, or a loaded key."""


def load_webhook_key(value: WebhookKey) -> ec.EllipticCurvePublicKey:
    """A verification key from its base64 DER form (as SendGrid shows it) or PEM.

    Raises ``ConfigurationError`` for anything that is not a P-256 public key.
    """
    if isinstance(value, ec.EllipticCurvePublicKey):
        key: object = value
    else:
        try:
            text = value.decode("ascii") if isinstance(value, bytes) else value
            text = text.strip()
            if text.startswith("-----BEGIN"):
                key = serialization.load_pem_public_key(text.encode("ascii"))
            else:
                der = base64.b64decode("".join(text.split()), validate=True)
                key = serialization.load_der_public_key(der)
        except (ValueError, UnsupportedAlgorithm):
            raise ConfigurationError(
                "a SendGrid webhook verification key must be the base64 DER public key shown in "
                "the Event Webhook settings (or its PEM form); this one cannot be decoded"
            ) from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ConfigurationError("a SendGrid webhook verification key must be a P-256 ECDSA key")
    return key


def _public_key_text(key: ec.EllipticCurvePublicKey) -> str:
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode("ascii")


class SendGridWebhookSigner:
    """Signs webhook bodies exactly as SendGrid does, so tests and local emulators can post
    requests that :meth:`SendGridAdapter.verify_webhook` accepts.

    ``private_key`` is a P-256 private key object or its PEM; a fresh key is generated when it
    is omitted. Give :attr:`public_key` to the adapter as its ``webhook_keys``.
    """

    def __init__(self, private_key: ec.EllipticCurvePrivateKey | str | bytes | None = None) -> None:
        if private_key is None:
            private_key = ec.generate_private_key(ec.SECP256R1())
        elif not isinstance(private_key, ec.EllipticCurvePrivateKey):
            pem = private_key.encode("ascii") if isinstance(private_key, str) else private_key
            try:
                loaded = serialization.load_pem_private_key(pem, password=None)
            except (ValueError, TypeError, UnsupportedAlgorithm):
                raise ConfigurationError(
                    "a SendGrid signing key must be an unencrypted PEM"
                ) from None
            if not isinstance(loaded, ec.EllipticCurvePrivateKey):
                raise ConfigurationError("a SendGrid signing key must be a P-256 ECDSA key")
            private_key = loaded
        if not isinstance(private_key.curve, ec.SECP256R1):
            raise ConfigurationError("a SendGrid signing key must be a P-256 ECDSA key")
        self._private_key = private_key
        self.public_key = _public_key_text(private_key.public_key())
        """The verification key in SendGrid's own form: base64 DER SubjectPublicKeyInfo."""

    @property
    def private_key_pem(self) -> str:
        """The signing key as unencrypted PKCS#8 PEM, to keep it across runs."""
        return self._private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii")

    def signature(self, body: bytes, timestamp: str) -> str:
        """The signature header value for ``body`` sent with ``timestamp``."""
        der = self._private_key.sign(timestamp.encode("utf-8") + body, _ECDSA_SHA256)
        return base64.b64encode(der).decode("ascii")

    def sign(self, body: bytes, *, timestamp: int | datetime | None = None) -> dict[str, str]:
        """The two headers SendGrid sends with ``body`` (timestamp: now unless given)."""
        if timestamp is None:
            seconds = int(time.time())
        elif isinstance(timestamp, datetime):
            seconds = int(timestamp.timestamp())
        else:
            seconds = int(timestamp)
        stamp = str(seconds)
        return {SIGNATURE_HEADER: self.signature(body, stamp), TIMESTAMP_HEADER: stamp}


# --------------------------------------------------------------------------- sending


def _address(address: Address) -> dict[str, str]:
    if address.name:
        return {"email": address.email, "name": address.name}
    return {"email": address.email}


def _categories(email: Email) -> list[str]:
    """Tags then the category, each once (SendGrid refuses repeated categories)."""
    names = [*email.tags, email.category] if email.category else email.tags
    return list(dict.fromkeys(names))


def _attachment(attachment: Attachment) -> dict[str, str]:
    item = {
        "content": attachment.base64,
        "type": attachment.content_type,
        "filename": attachment.filename,
        "disposition": "inline" if attachment.inline else "attachment",
    }
    if attachment.content_id:
        item["content_id"] = attachment.content_id
    return item


def _check_metadata(email: Email) -> None:
    if _NOT_METADATA.isdisjoint(email.metadata):
        return
    raise InvalidRequest(
        "metadata keys must not be names SendGrid uses in its events; rename them",
        provider=PROVIDER,
        field_errors=[
            FieldError("is a name SendGrid uses in its events", field=f"metadata.{key}")
            for key in sorted(_NOT_METADATA.intersection(email.metadata))
        ],
    )


def mail_send_message(email: Email) -> dict[str, Any]:
    """The Mail Send body for ``email``, without its personalizations (pure)."""
    content = []
    if email.text is not None:  # SendGrid wants text/plain before text/html
        content.append({"type": "text/plain", "value": email.text})
    if email.html is not None:
        content.append({"type": "text/html", "value": email.html})
    message: dict[str, Any] = {
        "from": _address(email.sender),
        "subject": email.subject,
        "content": content,
        "tracking_settings": {
            "open_tracking": {"enable": email.track_opens},
            "click_tracking": {"enable": email.track_clicks, "enable_text": email.track_clicks},
        },
    }
    if email.reply_to is not None:
        message["reply_to"] = _address(email.reply_to)
    if email.attachments:
        message["attachments"] = [_attachment(a) for a in email.attachments]
    if email.headers:
        message["headers"] = dict(email.headers)
    categories = _categories(email)
    if categories:
        message["categories"] = categories
    if email.metadata:
        message["custom_args"] = dict(email.metadata)
    if email.send_at is not None:
        message["send_at"] = int(email.send_at.timestamp())
    return message


_stdlib_encoder: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _stdlib_dumps(body: dict[str, Any]) -> bytes:
    return _stdlib_encoder.encode(body).encode()


def _json_dumps() -> Callable[[dict[str, Any]], bytes]:
    """Compact UTF-8 JSON for a request body: orjson's encoder when installed
    (``unimailtrack[fast]``), a fifteenth of the standard library's time and the same bytes.
    Whatever orjson refuses (a lone surrogate, an integer beyond 64 bits) goes to the standard
    library, which encodes it or fails exactly as it always did."""
    try:
        from orjson import dumps
    except ImportError:  # pragma: no cover - exercised where the fast extra is absent
        return _stdlib_dumps

    def encode(body: dict[str, Any]) -> bytes:
        try:
            return dumps(body)
        except TypeError:  # orjson.JSONEncodeError
            return _stdlib_dumps(body)

    return encode


_dumps: Final = _json_dumps()


def _personalization(recipient: Recipient) -> dict[str, Any]:
    return {
        "to": [_address(recipient.address)],
        "custom_args": {TRACKING_KEY: recipient.tracking_id},
    }


def _error_details(response: httpx.Response) -> tuple[str, list[FieldError]]:
    """SendGrid's ``{"errors": [{"message", "field", "help"}]}`` as text and field errors."""
    try:
        errors = response.json().get("errors")
    except (ValueError, AttributeError):
        return response.text.strip()[:500], []
    if not isinstance(errors, list):
        return response.text.strip()[:500], []
    found = [
        FieldError(
            str(e.get("message") or "").strip() or "no message",
            field=e["field"] if isinstance(e.get("field"), str) else None,
        )
        for e in errors
        if isinstance(e, dict)
    ]
    return "; ".join(f.message for f in found), found


def interpret_response(
    recipients: Sequence[Recipient], response: httpx.Response
) -> list[RecipientResult]:
    """Every recipient accepted with the request's ``X-Message-Id``, or the ``SendError`` that
    says why SendGrid refused the request (pure)."""
    if response.is_success:
        message_id = response.headers.get("x-message-id")
        return [
            RecipientResult(
                recipient=r.address.email,
                tracking_id=r.tracking_id,
                status=DeliveryStatus.ACCEPTED,
                message_id=message_id,
                provider=PROVIDER,
            )
            for r in recipients
        ]
    message, field_errors = _error_details(response)
    # SendGrid answers 403 both for a key without the Mail Send permission and for a sender
    # that is not a verified Sender Identity; only the latter names the "from" field.
    unverified_sender = any(f.field == "from" for f in field_errors)
    raise error_for_status(
        PROVIDER,
        response,
        message,
        field_errors=field_errors,
        forbidden_is_permission=unverified_sender,
    )


# --------------------------------------------------------------------------- parsing


def _text(value: Any) -> str | None:
    if type(value) is str:
        return value or None
    if type(value) is int or type(value) is float:
        return str(value)
    return None


def _metadata_value(value: Any) -> str:
    return value if type(value) is str else json.dumps(value, ensure_ascii=False)


def _whole_number(value: Any) -> int | None:
    if type(value) is int:
        return value
    if type(value) is str and value.isascii() and value.isdigit():
        return int(value)
    return None


def _flag(value: Any) -> bool | None:
    if type(value) is bool:
        return value
    if value in ("true", "false", 1, 0, "1", "0"):
        return value in ("true", 1, "1")
    return None


def _tags(value: Any) -> list[str]:
    """Tags from a ``category`` that is not a list: one string, or nothing."""
    return [value] if type(value) is str else []


def _bounce_kind(item: dict[str, Any]) -> BounceKind:
    """``type`` decides, refined by what says the address is not at fault: a classification
    (reputation, content, rate, technical) or an RFC 3463 status of a full mailbox (x.2.2) or
    a transient class (4.x.x), which make a bounce soft."""
    value = item.get("type")
    kind = _BOUNCE_KINDS.get(value) if type(value) is str else None
    if kind is not BounceKind.HARD:
        return kind or BounceKind.UNDETERMINED
    classification = item.get("bounce_classification")
    if type(classification) is str and classification in _CLASSIFIED_KINDS:
        return _CLASSIFIED_KINDS[classification]
    status = item.get("status")
    if type(status) is str and (status.startswith("4.") or status[1:] == ".2.2"):
        return BounceKind.SOFT
    return kind


def _canonical(item: Any) -> str:
    return json.dumps(item, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _timestamp(value: Any) -> datetime | None:
    if type(value) is bool:
        return None
    try:
        return datetime.fromtimestamp(value if type(value) is int else float(value), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _reason(name: str, event_type: EventType, recipient: str, item: dict[str, Any]) -> str | None:
    """The reason of an event that is unknown, names no recipient, or concerns a group."""
    if event_type is EventType.UNKNOWN:
        return _UNMAPPED_REASONS.get(name) or f"SendGrid event {name!r} is not mapped"
    if not recipient:
        return "the SendGrid event names no recipient ('email')"
    group = _text(item.get("asm_group_id"))
    return f"unsubscribe group {group}" if group else None


def _malformed(item: Any, why: str) -> EmailEvent:
    name = item.get("event") if type(item) is dict else None
    email = item.get("email") if type(item) is dict else None
    return unknown_event(
        PROVIDER,
        item,
        why,
        provider_event=name if type(name) is str else "",
        recipient=email if type(email) is str else "",
        digest_source=_canonical(item),
    )


def _map_event(item: Any, times: dict[int, datetime]) -> EmailEvent:
    """One batch item as a canonical event; an item that cannot be mapped becomes ``unknown``
    with the reason why (pure, never raises). ``times`` holds the unix seconds of the batch
    already converted: its events share a few seconds between them."""
    if type(item) is not dict:
        return _malformed(item, "the batch item is not a JSON object")
    name = item.get("event")
    stamp = item.get("timestamp")
    timestamp = times.get(stamp) if type(stamp) is int else None
    if timestamp is None:
        timestamp = _timestamp(stamp)
        if timestamp is None:
            return _malformed(item, "the SendGrid event has no valid unix 'timestamp'")
        if type(stamp) is int:
            times[stamp] = timestamp
    if type(name) is not str:
        return _malformed(item, "the SendGrid event has no 'event' name")
    email = item.get("email")
    recipient = email if type(email) is str else ""
    event_type = _EVENT_TYPES.get(name, _UNKNOWN)
    if event_type is _UNKNOWN or not recipient or name in _GROUP_EVENTS:
        reason = _reason(name, event_type, recipient, item)
        if not recipient:
            event_type = _UNKNOWN
    else:
        reason = item.get("reason") or item.get("response")
        if reason is not None and type(reason) is not str:
            reason = _text(reason)
    event_id = item.get("sg_event_id")
    if type(event_id) is not str or not event_id:
        event_id = event_digest(PROVIDER, _canonical(item), recipient)
    message_id = item.get("sg_message_id") or None
    tracking_id = item.get(TRACKING_KEY) or None
    status = item.get("status")
    attempt = item.get("attempt")
    url = item.get("url")
    user_agent = item.get("useragent")
    category = item.get("category")
    return make_event(
        PROVIDER,
        event_type,
        name,
        recipient,
        event_id,
        timestamp,
        message_id if message_id is None or type(message_id) is str else None,
        tracking_id if tracking_id is None or type(tracking_id) is str else None,
        reason,
        _bounce_kind(item) if event_type is _BOUNCED else None,
        status if status is None or type(status) is str else _text(status),
        attempt if attempt is None or type(attempt) is int else _whole_number(attempt),
        url if url is None or type(url) is str else _text(url),
        user_agent if user_agent is None or type(user_agent) is str else _text(user_agent),
        _flag(item.get("sg_machine_open")) if event_type is _OPENED else None,
        [c if type(c) is str else _metadata_value(c) for c in category]
        if type(category) is list
        else _tags(category),
        {
            k: v if type(v) is str else _metadata_value(v)
            for k, v in item.items()
            if k not in _NOT_METADATA
        },
        item,
    )


def parse_events(
    body: bytes | str, *, loads: Callable[[bytes | str], Any] | None = None
) -> list[EmailEvent]:
    """A SendGrid Event Webhook body as canonical events, in body order.

    Raises ``PayloadError`` only when the body is not a JSON array. ``loads`` decodes the body:
    orjson's when ``unimailtrack[fast]`` is installed, else the standard library's.
    """
    try:
        items = load_untrusted(body, decode=loads)
    except (ValueError, RecursionError) as exc:
        raise PayloadError(
            "the SendGrid webhook body is not valid JSON", provider=PROVIDER, detail=str(exc)
        ) from None
    if type(items) is not list:
        raise PayloadError(
            "a SendGrid webhook body must be a JSON array of events",
            provider=PROVIDER,
            detail=type(items).__name__,
        )
    times: dict[int, datetime] = {}
    return [_map_event(item, times) for item in items]


# --------------------------------------------------------------------------- the adapter


def _split_keys(text: str) -> list[str]:
    return [k.strip() for k in text.split(",") if k.strip()]


def _key_list(keys: WebhookKey | Iterable[WebhookKey]) -> list[ec.EllipticCurvePublicKey]:
    if isinstance(keys, str | bytes | ec.EllipticCurvePublicKey):
        keys = [keys]
    return [load_webhook_key(k) for k in keys]


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
        self._webhook_keys = tuple(_key_list(webhook_keys))
        # Parsed once: URL parsing and header normalisation cost more than building the body.
        self._send_url = httpx.URL(self.base_url + MAIL_SEND_PATH)
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
        headers = self._send_headers
        if headers is None:
            raise ConfigurationError(
                "sending through SendGrid needs an API key: sendgrid://API_KEY@default",
                provider=PROVIDER,
            )
        _check_metadata(email)
        message = mail_send_message(email)
        url = self._send_url
        calls = []
        for start in range(0, len(recipients), MAX_PERSONALIZATIONS):
            chunk = tuple(recipients[start : start + MAX_PERSONALIZATIONS])
            body = {"personalizations": [_personalization(r) for r in chunk], **message}
            content = _dumps(body)
            calls.append(
                Call(
                    read_request("POST", url, headers, content),
                    chunk,
                    partial(interpret_response, chunk),
                )
            )
        return calls

    # Suppression lists (adapters/_suppressions_sendgrid.py holds the wire format).

    def _api_headers(self) -> dict[str, str]:
        if self._send_headers is None:
            raise ConfigurationError(
                "SendGrid's suppression lists need an API key: sendgrid://API_KEY@default"
            )
        return {"Authorization": self._send_headers["Authorization"], "Accept": "application/json"}

    def suppression_page_request(self, cursor: str | None) -> httpx.Request:
        from unimailtrack.adapters import _suppressions_sendgrid as lists

        return lists.page_request(self.base_url, self._api_headers(), cursor)

    def read_suppression_page(
        self, cursor: str | None, response: httpx.Response
    ) -> SuppressionPage:
        from unimailtrack.adapters import _suppressions_sendgrid as lists

        return lists.read_page(cursor, response)

    def suppression_push_calls(
        self, entries: Sequence[RemoteSuppression]
    ) -> tuple[list[PushCall], list[tuple[RemoteSuppression, str]]]:
        from unimailtrack.adapters import _suppressions_sendgrid as lists

        return lists.push_calls(self.base_url, self._api_headers(), entries)

    def backfill(
        self, since: datetime, until: datetime | None = None
    ) -> Iterator[list[EmailEvent]]:
        """The events SendGrid's Email Activity API (a paid add-on) implies from ``since``
        to ``until`` (now), a request at a time, for ``Tracker.ingest``; see
        ``adapters/_backfill_sendgrid.py``."""
        from unimailtrack.adapters import _backfill_sendgrid

        return _backfill_sendgrid.events(self, since, until or datetime.now(UTC))

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
        if not self._webhook_keys:
            raise signature_failure(
                PROVIDER, "no webhook verification key is configured", SignatureCause.NO_KEY
            )
        found = lower_headers(headers)
        signature = found.get(_SIGNATURE_KEY)
        stamp = found.get(_TIMESTAMP_KEY)
        if not signature or not stamp:
            raise signature_failure(
                PROVIDER,
                "the signature or timestamp header is missing",
                SignatureCause.MISSING_HEADER,
            )
        if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= _MAX_STAMP_DIGITS):
            raise signature_failure(
                PROVIDER, "the timestamp header is not a unix time", SignatureCause.MALFORMED
            )
        if not is_fresh(int(stamp), now, self.tolerance):
            raise signature_failure(
                PROVIDER, f"the timestamp {stamp} is outside the tolerance", SignatureCause.STALE
            )
        try:
            der = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError):
            raise signature_failure(
                PROVIDER, "the signature header is not base64", SignatureCause.MALFORMED
            ) from None
        digest = hashlib.sha256(stamp.encode("ascii"))
        digest.update(body)  # no copy of the body; hashed once for every key
        signed = digest.digest()
        for key in self._webhook_keys:
            try:
                key.verify(der, signed, _ECDSA_PREHASHED)
            except InvalidSignature:
                continue
            return
        raise signature_failure(
            PROVIDER, "the signature matches no configured key", SignatureCause.BAD_SIGNATURE
        )

    @classmethod
    def parse_webhook_body(
        cls, body: bytes, headers: Mapping[str, str] | None = None
    ) -> list[EmailEvent]:
        """Map an Event Webhook body onto canonical events (pure; raises only
        ``PayloadError``)."""
        return parse_events(body)

    def __repr__(self) -> str:
        return f"<SendGridAdapter region={self.region!r} webhook_keys={len(self._webhook_keys)}>"
