"""The canonical model: what a send is and what a provider event becomes.

Nothing here does I/O or knows a provider. ``EmailEvent`` is a slotted frozen dataclass because
webhook parsing builds thousands of them a second; pydantic validates and serialises it through
a ``TypeAdapter``. ``Email`` is a pydantic model because it is built by hand and must reject bad
input with a precise message.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from dataclasses import dataclass, field, fields, make_dataclass
from datetime import datetime
from enum import StrEnum
from functools import cache
from hashlib import blake2b
from typing import TYPE_CHECKING, Annotated, Any, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from unimailtrack.errors import InvalidAddress

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "DEFAULT_STREAM",
    "TRACKING_KEY",
    "Address",
    "Attachment",
    "BounceKind",
    "DeliveryStatus",
    "Email",
    "EmailEvent",
    "EventType",
    "RecipientResult",
    "SendResult",
    "Suppression",
    "SuppressionSource",
    "make_event",
    "new_tracking_id",
    "settle",
    "storable_text",
    "suppression_key",
]


class EventType(StrEnum):
    """What a provider reported about one recipient of one message (contract)."""

    ACCEPTED = "accepted"
    PROCESSED = "processed"
    DEFERRED = "deferred"
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    DROPPED = "dropped"
    REJECTED = "rejected"
    FAILED = "failed"
    OPENED = "opened"
    CLICKED = "clicked"
    COMPLAINED = "complained"
    UNSUBSCRIBED = "unsubscribed"
    RESUBSCRIBED = "resubscribed"
    UNKNOWN = "unknown"


class DeliveryStatus(StrEnum):
    """The badge of one (message, recipient): an ``EventType`` or a library-side outcome."""

    ACCEPTED = "accepted"
    PROCESSED = "processed"
    DEFERRED = "deferred"
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    DROPPED = "dropped"
    REJECTED = "rejected"
    FAILED = "failed"
    OPENED = "opened"
    CLICKED = "clicked"
    COMPLAINED = "complained"
    UNSUBSCRIBED = "unsubscribed"
    RESUBSCRIBED = "resubscribed"
    UNKNOWN = "unknown"
    SUPPRESSED = "suppressed"
    """The address is on the suppression list; the library refused the send."""
    DUPLICATE = "duplicate"
    """The address appeared earlier in the same send; this copy was not sent."""


class BounceKind(StrEnum):
    """Why a bounce happened: the address (``hard``), the mailbox for now (``soft``), the
    sender's reputation or a policy (``block``), or nobody can tell (``undetermined``)."""

    HARD = "hard"
    SOFT = "soft"
    BLOCK = "block"
    UNDETERMINED = "undetermined"


# --------------------------------------------------------------------------- addresses

_CRLF = re.compile(r"[\r\n]")


@cache
def _validate_email() -> Any:
    # email-validator is imported on first use: it is only needed when an Email is built.
    from email_validator import EmailNotValidError, validate_email

    return validate_email, EmailNotValidError


@dataclass(frozen=True, slots=True)
class Address:
    """An e-mail address with an optional display name. ``str()`` gives the header form."""

    email: str
    name: str | None = None

    @classmethod
    def parse(cls, value: str | Address) -> Address:
        """Parse ``"Name <local@domain>"`` or ``"local@domain"``; raise ``InvalidAddress``."""
        if isinstance(value, Address):
            return value
        if not isinstance(value, str):
            raise InvalidAddress(repr(value), "an address must be a string")
        text = value.strip()
        if not text:
            raise InvalidAddress(value, "the address is empty")
        if _CRLF.search(text):
            raise InvalidAddress(value, "line breaks are not allowed in an address")
        if "<" in text or '"' in text:
            from email.utils import getaddresses  # only for the "Name <addr>" form

            found = getaddresses([text])
            if len(found) != 1:
                raise InvalidAddress(value, "expected one address, found several")
            name, addr = found[0]
        else:
            name, addr = "", text
        if not addr:
            raise InvalidAddress(value, "no address found; expected 'Name <local@domain>'")
        validate, not_valid = _validate_email()
        try:
            info = validate(addr, check_deliverability=False, allow_smtputf8=True)
        except not_valid as exc:
            raise InvalidAddress(value, str(exc)) from None
        return cls(email=info.normalized, name=name or None)

    @property
    def domain(self) -> str:
        return self.email.rpartition("@")[2]

    def __str__(self) -> str:
        if not self.name:
            return self.email
        from email.headerregistry import Address as _HeaderAddress  # only when formatting

        local, _, domain = self.email.rpartition("@")
        try:
            return str(_HeaderAddress(display_name=self.name, username=local, domain=domain))
        except (ValueError, IndexError):  # pragma: no cover - defensive for odd local parts
            return f'"{self.name}" <{self.email}>'


def _parse_address(value: Any) -> Address:
    if isinstance(value, dict):
        return Address(email=Address.parse(value["email"]).email, name=value.get("name"))
    return Address.parse(value)


AddressField = Annotated[
    Address, BeforeValidator(_parse_address), PlainSerializer(str, return_type=str)
]


def suppression_key(address: str) -> str:
    """The key the suppression list compares addresses by: the domain is case-insensitive,
    the local part is kept as written (RFC 5321 lets it be case-sensitive)."""
    local, at, domain = address.strip().rpartition("@")
    if not at:
        return address.strip()
    return f"{local}@{domain.lower()}"


def dedupe_key(address: str) -> str:
    """The key two addresses of one send are compared by to find duplicates."""
    return address.strip().casefold()


TRACKING_KEY = "unimailtrack_id"
"""The name under which an adapter sends a recipient's tracking id to the provider (a custom
arg, a ``v:`` variable, a message tag) and finds it again in that provider's events. Adapters
remove it from ``EmailEvent.metadata`` and put it in ``EmailEvent.tracking_id``."""

_TRACKING_RANDOM_BITS = 80


def new_tracking_id() -> str:
    """A new tracking id: 32 hex digits, time-ordered (48 bits of milliseconds, then 80 random
    bits), so that ids sort by creation and index well."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(_TRACKING_RANDOM_BITS // 8), "big")
    return f"{(millis << _TRACKING_RANDOM_BITS) | rand:032x}"


# --------------------------------------------------------------------------- sending


class Attachment(BaseModel):
    """A file attached to an e-mail; ``inline`` with a ``content_id`` makes it an inline image
    that the HTML refers to as ``cid:<content_id>``."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        ser_json_bytes="base64",
        val_json_bytes="base64",
        defer_build=True,
    )

    filename: str
    content: bytes
    content_type: str = "application/octet-stream"
    inline: bool = False
    content_id: str | None = None

    @model_validator(mode="after")
    def _inline_needs_cid(self) -> Self:
        if self.inline and not self.content_id:
            raise ValueError("an inline attachment needs a content_id")
        if _CRLF.search(self.filename) or (self.content_id and _CRLF.search(self.content_id)):
            raise ValueError("line breaks are not allowed in a filename or content_id")
        return self

    @property
    def base64(self) -> str:
        return base64.b64encode(self.content).decode("ascii")


_RESERVED_HEADERS = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "reply-to",
        "subject",
        "content-type",
        "mime-version",
        "content-transfer-encoding",
    }
)


class Email(BaseModel):
    """One e-mail to one or many recipients (contract).

    Every recipient (``to``, ``cc`` and ``bcc`` alike) receives a copy addressed to them alone
    and is tracked on its own with its own ``tracking_id``: that is what lets a provider's
    events be attributed to exactly one person. A send to many recipients is a bulk send.

    Open and click tracking are off unless ``track_opens`` / ``track_clicks`` turn them on.
    ``category`` (e.g. ``"rsvp_invite"``) and ``metadata`` are recorded with the send and travel
    with it to the provider, so that every event carries them back. ``stream`` names the kind
    of mail (``"transactional"``, ``"marketing"``; None is the default stream, which
    suppression scopes call ``"default"``): an unsubscribe stops only the stream it came
    from. ``tracked=False`` sends without recording anything in the tracker.
    """

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        ser_json_bytes="base64",
        val_json_bytes="base64",
        defer_build=True,
    )

    sender: AddressField
    to: list[AddressField] = Field(default_factory=list)
    cc: list[AddressField] = Field(default_factory=list)
    bcc: list[AddressField] = Field(default_factory=list)
    reply_to: AddressField | None = None
    subject: str = ""
    text: str | None = None
    html: str | None = None
    attachments: list[Attachment] = Field(default_factory=list)
    headers: dict[str, str] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, str] = Field(default_factory=dict)
    category: str | None = None
    stream: str | None = None
    track_opens: bool = False
    track_clicks: bool = False
    send_at: datetime | None = None
    tracked: bool = True

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            # A malformed address is an InvalidAddress (a ValueError), not a ValidationError.
            for err in exc.errors():
                cause = (err.get("ctx") or {}).get("error")
                if isinstance(cause, InvalidAddress):
                    raise cause from None
            raise

    @field_validator("subject")
    @classmethod
    def _one_line_subject(cls, value: str) -> str:
        if _CRLF.search(value):
            raise ValueError("line breaks are not allowed in the subject")
        return value

    @field_validator("headers")
    @classmethod
    def _safe_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, val in value.items():
            if not re.fullmatch(r"[!-9;-~]+", name):
                raise ValueError(f"header name {name!r} is not a valid header field name")
            if name.lower() in _RESERVED_HEADERS:
                raise ValueError(f"header {name!r} is set from the Email's own fields")
            if _CRLF.search(val):
                raise ValueError(f"line breaks are not allowed in header {name!r}")
        return value

    @field_validator("stream")
    @classmethod
    def _stream_name(cls, value: str | None) -> str | None:
        return None if value is None else check_stream(value)

    @field_validator("send_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("send_at must be timezone-aware")
        return value

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if not (self.to or self.cc or self.bcc):
            raise ValueError("an e-mail needs at least one recipient in to, cc or bcc")
        if self.text is None and self.html is None:
            raise ValueError("an e-mail needs a text or an html body")
        return self

    def recipients(self) -> Iterator[Address]:
        """Every recipient in order: ``to``, then ``cc``, then ``bcc``."""
        yield from self.to
        yield from self.cc
        yield from self.bcc


class RecipientResult(BaseModel):
    """What happened to one recipient of a send."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    recipient: str
    tracking_id: str
    status: DeliveryStatus
    message_id: str | None = None
    provider: str | None = None
    error: str | None = None


class SendResult(BaseModel):
    """The outcome of a send: one entry per recipient, in the order they were given."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    bulk_id: str
    recipients: list[RecipientResult]

    @property
    def accepted(self) -> list[RecipientResult]:
        return [r for r in self.recipients if r.status is DeliveryStatus.ACCEPTED]

    def for_recipient(self, address: str) -> RecipientResult:
        key = dedupe_key(address)
        for r in self.recipients:
            if dedupe_key(r.recipient) == key:
                return r
        raise KeyError(address)


DEFAULT_STREAM = "default"
"""The name suppression scopes give the default stream (``Email(stream=None)``)."""

_STREAM = re.compile(r"[^\x00-\x20*\x7f][^\x00-\x1f\x7f]{0,99}")


def check_stream(value: str) -> str:
    """``value`` if it can name a stream (1 to 100 characters, no control characters, not
    starting with a space or ``*``); ``ValueError`` otherwise."""
    if not isinstance(value, str) or not _STREAM.fullmatch(value):
        raise ValueError(
            f"{value!r} cannot name a stream: use 1 to 100 printable characters, "
            "not starting with a space or '*'"
        )
    return value


class SuppressionSource(StrEnum):
    """Where a suppression came from."""

    EVENT = "event"
    """A provider event we received (a hard bounce, a complaint, an unsubscribe)."""
    MANUAL = "manual"
    """``tracker.suppress`` / ``unsuppress`` by the application or an operator."""
    IMPORT = "import"
    """A file or rows given to ``tracker.import_suppressions``."""
    PROVIDER_SYNC = "provider-sync"
    """A provider's own suppression list: pulled from its API, or an event saying it changed."""


class Suppression(BaseModel):
    """An address the library refuses to send to, and why (contract).

    ``scope`` is None when every stream is refused (hard bounces, complaints, provider
    blocks), otherwise the one stream refused (an unsubscribe; ``"default"`` for the default
    stream). ``cause`` is the event type that caused it (``bounced``, ``complained``,
    ``unsubscribed``, ...), or ``manual``, ``imported``, ``soft-bounce-limit``. ``reason`` is
    the remote server's or the provider's text; ``source`` says how it reached the list
    (``SuppressionSource``), ``provider`` which provider reported it and ``event_id`` which
    event, when there is one. ``expires_at`` is when it lifts by itself (None: never).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    address: str
    reason: str | None
    cause: str
    created_at: datetime
    scope: str | None = None
    source: str = SuppressionSource.EVENT.value
    provider: str | None = None
    event_id: str | None = None
    tracking_id: str | None = None
    expires_at: datetime | None = None


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True, kw_only=True)
class EmailEvent:
    """One provider event about one recipient, in canonical form (contract).

    ``raw`` is the provider's event as it arrived, so nothing is ever lost; ``event_id`` is the
    provider's unique id or a deterministic digest, so a retried webhook yields the same ids.

    Every event is storable as built, whatever a provider sent: construction (and
    ``make_event``) settles each field within the bounds below, so that no store refuses it.
    Text has NUL characters and lone surrogates replaced by U+FFFD and is cut to its bound
    (ending in ``…``); a number or boolean where text belongs becomes its text, an object or a
    list is dropped (``raw`` keeps it). Ids longer than ``ID_MAX_BYTES`` (UTF-8) are replaced by
    a digest of themselves (``blake2b:`` and 32 hex digits), so that they stay unique and stable.
    ``attempt`` outside ``0 ..  ATTEMPT_MAX`` becomes None. An event whose recipient cannot be an
    address (not text, or over ``RECIPIENT_MAX_BYTES``) becomes ``unknown`` with
    ``recipient=""`` and the reason. ``tags`` keeps the first ``TAGS_MAX``, ``metadata`` the
    first ``METADATA_MAX`` entries. A ``type`` or ``bounce`` given as a plain string is taken
    as that enum member, or refused with ``ValueError``.
    """

    provider: str
    type: EventType
    provider_event: str
    recipient: str
    event_id: str
    timestamp: datetime
    message_id: str | None = None
    tracking_id: str | None = None
    reason: str | None = None
    bounce: BounceKind | None = None
    smtp_status: str | None = None
    attempt: int | None = None
    url: str | None = None
    user_agent: str | None = None
    machine: bool | None = None
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return _event_adapter().dump_json(self)

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = _event_adapter().dump_python(self, mode="json")
        return result

    @classmethod
    def from_json(cls, data: bytes | str) -> EmailEvent:
        event: EmailEvent = _event_adapter().validate_json(data)
        return event.checked()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EmailEvent:
        event: EmailEvent = _event_adapter().validate_python(data)
        return event.checked()

    def __post_init__(self) -> None:
        settle(self)

    def checked(self) -> EmailEvent:
        if self.timestamp.tzinfo is None:
            raise ValueError("EmailEvent.timestamp must be timezone-aware")
        return self


@cache
def _event_adapter() -> TypeAdapter[EmailEvent]:
    return TypeAdapter(EmailEvent)


# A mutable twin of EmailEvent with the same slots in the same order, generated from its fields
# so that the two cannot drift apart.
_EventDraft: Any = make_dataclass("_EventDraft", [f.name for f in fields(EmailEvent)], slots=True)
_set_class = object.__setattr__


def make_event(
    provider: str,
    type: EventType,
    provider_event: str,
    recipient: str,
    event_id: str,
    timestamp: datetime,
    message_id: str | None = None,
    tracking_id: str | None = None,
    reason: str | None = None,
    bounce: BounceKind | None = None,
    smtp_status: str | None = None,
    attempt: int | None = None,
    url: str | None = None,
    user_agent: str | None = None,
    machine: bool | None = None,
    tags: list[str] | None = None,
    metadata: dict[str, str] | None = None,
    raw: dict[str, Any] | None = None,
) -> EmailEvent:
    """``EmailEvent(...)`` for webhook parsers' hot paths, in about a quarter of the time.

    A frozen dataclass's ``__init__`` sets each of its 18 slots through ``object.__setattr__``,
    which costs more than the rest of mapping a provider event. This fills the mutable twin
    instead and turns it into an ``EmailEvent`` by class assignment (CPython allows it between
    classes of identical layout): the result is an ordinary frozen ``EmailEvent``. Like the
    constructor, it settles every field within the storable bounds (see ``EmailEvent``).

    Parsers call it with all 18 arguments by position, in the order of the fields: passing
    them by keyword costs about 0.7 µs an event, half as much again as the rest of the call.
    """
    event = _EventDraft(
        provider,
        type,
        provider_event,
        recipient,
        event_id,
        timestamp,
        message_id,
        tracking_id,
        reason,
        bounce,
        smtp_status,
        attempt,
        url,
        user_agent,
        machine,
        [] if tags is None else tags,
        {} if metadata is None else metadata,
        {} if raw is None else raw,
    )
    if not _sane(
        type,
        provider,
        provider_event,
        recipient,
        event_id,
        message_id,
        tracking_id,
        reason,
        bounce,
        smtp_status,
        attempt,
        url,
        user_agent,
        machine,
        event.tags,
        event.metadata,
        event.raw,
    ):
        _repair(event)
    _set_class(event, "__class__", EmailEvent)
    built: EmailEvent = event
    return built


_code = make_event.__code__
if _code.co_varnames[: _code.co_argcount] != EmailEvent.__slots__:  # pragma: no cover
    raise ImportError("make_event's parameters no longer follow EmailEvent's fields")
del _code


# --------------------------------------------------------------------------- storable bounds
#
# What any store can hold, chosen so that the keys fit PostgreSQL's B-tree index rows (about
# 2,700 bytes, for the widest key: provider, message key and recipient key together) and the
# numbers its columns: ``attempt`` is a 32-bit INTEGER.

ID_MAX_BYTES = 255
"""``event_id``, ``message_id``, ``tracking_id``: longer ones are replaced by a digest."""
RECIPIENT_MAX_BYTES = 320
"""64 for the local part, 1 for ``@``, 255 for the domain (RFC 3696): longer is no address."""
NAME_MAX = 255
"""``provider``, ``provider_event``, ``smtp_status``, each tag, each metadata key."""
REASON_MAX = 16 * 1024
"""The remote server's reply: an SMTP reply line is at most 512 octets and multi-line replies
run to a few of them, so a real reason is never cut."""
URL_MAX = 8 * 1024
USER_AGENT_MAX = 2 * 1024
METADATA_VALUE_MAX = 8 * 1024
TAGS_MAX = 100
METADATA_MAX = 256
ATTEMPT_MAX = 2**31 - 1

_S = str
_ET = EventType
_BK = BounceKind
_BAD_CHARS = re.compile("[\x00\ud800-\udfff]")
_CUT = "\u2026"


def _digest(text: str) -> str:
    return "blake2b:" + blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _as_text(value: Any) -> str | None:
    """A scalar where text belongs as its text; None for anything else."""
    if value.__class__ is bool:
        return "true" if value else "false"
    if isinstance(value, int | float):
        try:
            return str(value)
        except ValueError:  # an integer of more digits than str() will write
            return None
    return None


def storable_text(value: Any, limit: int) -> str | None:
    """``value`` as text any store holds: NUL characters and lone surrogates replaced by
    U+FFFD, at most ``limit`` characters (cut text ends in ``…``); a number or boolean as its
    text; None for None or anything else."""
    if not isinstance(value, str):
        return _as_text(value)
    text = value if value.__class__ is _S else _S(value)
    if "\x00" in text or not text.isascii():
        text = _BAD_CHARS.sub("\ufffd", text)
    if len(text) > limit:
        text = text[: limit - 1] + _CUT
    return text


def _fits(value: str, limit: int) -> bool:
    return len(value) <= limit and (value.isascii() or len(value.encode()) <= limit)


def _id(value: Any) -> str | None:
    text = storable_text(value, 1 << 62)
    if text is None and value is not None:  # an object or a list: no id, but a stable one
        text = _digest(repr(value))
    if text is None or _fits(text, ID_MAX_BYTES):
        return text
    return _digest(text)


def _label(value: Any) -> str:
    """Text for a tag or a metadata value: a string as it is, anything else as its JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    text = _as_text(value)
    if text is not None:
        return text
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    except (TypeError, ValueError, RecursionError):
        return repr(value)


def _attempt(value: Any) -> int | None:
    if value.__class__ is int:
        return value if 0 <= value <= ATTEMPT_MAX else None
    if value.__class__ is _S and value.isascii() and value.isdigit() and len(value) <= 10:
        number = int(value)
        return number if number <= ATTEMPT_MAX else None
    if value.__class__ is float and value.is_integer() and 0 <= value <= ATTEMPT_MAX:
        return int(value)
    return None


def settle(event: Any) -> None:
    """Bring an event (an ``EmailEvent`` or its draft) within the storable bounds, in place."""
    if not _sane(
        event.type,
        event.provider,
        event.provider_event,
        event.recipient,
        event.event_id,
        event.message_id,
        event.tracking_id,
        event.reason,
        event.bounce,
        event.smtp_status,
        event.attempt,
        event.url,
        event.user_agent,
        event.machine,
        event.tags,
        event.metadata,
        event.raw,
    ):
        _repair(event)


def _sane(
    kind: Any,
    provider: Any,
    name: Any,
    recipient: Any,
    event_id: Any,
    message_id: Any,
    tracking_id: Any,
    reason: Any,
    bounce: Any,
    status: Any,
    attempt: Any,
    url: Any,
    agent: Any,
    machine: Any,
    tags: Any,
    metadata: Any,
    raw: Any,
) -> bool:
    """Whether every field is within the storable bounds already: the hot path, which only
    reads. One join of the text fields (which refuses anything but strings) and one of the
    tags and of the metadata, one scan of each for NUL and non-ASCII characters, and length
    checks only when the whole is longer than the smallest bound. Anything outside goes to
    :func:`_repair`, which checks and fixes each field on its own."""
    if not (
        kind.__class__ is _ET
        and (bounce is None or bounce.__class__ is _BK)
        and (attempt is None or (attempt.__class__ is int and 0 <= attempt <= ATTEMPT_MAX))
        and (machine is None or machine.__class__ is bool)
        and tags.__class__ is list
        and metadata.__class__ is dict
        and raw.__class__ is dict
        and len(tags) <= TAGS_MAX
        and len(metadata) <= METADATA_MAX
    ):
        return False
    try:
        text = "".join(
            (
                provider,
                name,
                recipient,
                event_id,
                "" if message_id is None else message_id,
                "" if tracking_id is None else tracking_id,
                "" if reason is None else reason,
                "" if status is None else status,
                "" if url is None else url,
                "" if agent is None else agent,
            )
        )
        labels = "".join(tags) if tags else ""
        keys = values = ""
        if metadata:
            keys = "".join(metadata)
            values = "".join(metadata.values())
    except TypeError:  # something that is not a string
        return False
    if "\x00" in text or not text.isascii():
        return False
    if labels and (
        "\x00" in labels
        or not labels.isascii()
        or (len(labels) > NAME_MAX and max(map(len, tags)) > NAME_MAX)
    ):
        return False
    if keys and (
        "\x00" in keys
        or "\x00" in values
        or not keys.isascii()
        or not values.isascii()
        or (len(keys) > NAME_MAX and max(map(len, metadata)) > NAME_MAX)
        or (
            len(values) > METADATA_VALUE_MAX
            and max(map(len, metadata.values())) > METADATA_VALUE_MAX
        )
    ):
        return False
    if len(text) <= NAME_MAX:
        return True
    return not (
        len(provider) > NAME_MAX
        or len(name) > NAME_MAX
        or len(recipient) > RECIPIENT_MAX_BYTES
        or len(event_id) > ID_MAX_BYTES
        or (message_id is not None and len(message_id) > ID_MAX_BYTES)
        or (tracking_id is not None and len(tracking_id) > ID_MAX_BYTES)
        or (reason is not None and len(reason) > REASON_MAX)
        or (status is not None and len(status) > NAME_MAX)
        or (url is not None and len(url) > URL_MAX)
        or (agent is not None and len(agent) > USER_AGENT_MAX)
    )


def _repair(event: Any) -> None:
    """Check and fix every field of ``event`` on its own (see ``EmailEvent``)."""
    put = object.__setattr__
    kind = event.type
    if kind.__class__ is not _ET:
        put(event, "type", _ET(kind))  # a plain string: that member, or ValueError
    bounce = event.bounce
    if bounce is not None and bounce.__class__ is not _BK:
        put(event, "bounce", _BK(bounce))
    put(event, "provider", storable_text(event.provider, NAME_MAX) or "")
    put(event, "provider_event", storable_text(event.provider_event, NAME_MAX) or "")
    event_id = _id(event.event_id)
    put(event, "event_id", _digest(repr(event.raw)) if event_id is None else event_id)
    put(event, "message_id", _id(event.message_id))
    put(event, "tracking_id", _id(event.tracking_id))
    put(event, "reason", storable_text(event.reason, REASON_MAX))
    put(event, "smtp_status", storable_text(event.smtp_status, NAME_MAX))
    put(event, "url", storable_text(event.url, URL_MAX))
    put(event, "user_agent", storable_text(event.user_agent, USER_AGENT_MAX))
    attempt = event.attempt
    put(event, "attempt", None if attempt is None else _attempt(attempt))
    machine = event.machine
    if machine is not None and machine.__class__ is not bool:
        put(event, "machine", bool(machine) if machine in (0, 1) else None)
    tags = event.tags
    if isinstance(tags, str):
        tags = [tags]
    elif not isinstance(tags, list | tuple):
        tags = []
    put(
        event,
        "tags",
        [storable_text(_label(t), NAME_MAX) or "" for t in tags[:TAGS_MAX]],
    )
    metadata = event.metadata
    entries = list(metadata.items())[:METADATA_MAX] if isinstance(metadata, dict) else []
    put(
        event,
        "metadata",
        {
            storable_text(_label(k), NAME_MAX) or "": storable_text(_label(v), METADATA_VALUE_MAX)
            or ""
            for k, v in entries
        },
    )
    raw = event.raw
    if raw.__class__ is not dict:
        put(event, "raw", dict(raw) if isinstance(raw, dict) else {"value": raw})
    recipient = event.recipient
    text = storable_text(recipient, 1 << 62)
    if text is None or not _fits(text, RECIPIENT_MAX_BYTES):
        put(event, "recipient", "")
        put(event, "type", _ET.UNKNOWN)
        put(event, "bounce", None)
        what = "is not text" if text is None else f"is longer than {RECIPIENT_MAX_BYTES} bytes"
        put(event, "reason", f"the recipient {what}, so it cannot be an address (see raw)")
    else:
        put(event, "recipient", text)
