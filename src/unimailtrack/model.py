"""The canonical model: what a send is and what a provider event becomes.

Nothing here does I/O or knows a provider. ``EmailEvent`` is a slotted frozen dataclass because
webhook parsing builds thousands of them a second; pydantic validates and serialises it through
a ``TypeAdapter``. ``Email`` is a pydantic model because it is built by hand and must reject bad
input with a precise message.
"""

from __future__ import annotations

import base64
import os
import re
import time
from dataclasses import dataclass, field, fields, make_dataclass
from datetime import datetime
from enum import StrEnum
from functools import cache
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
    constructor, it validates nothing.
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
    _set_class(event, "__class__", EmailEvent)
    built: EmailEvent = event
    return built


_code = make_event.__code__
if _code.co_varnames[: _code.co_argcount] != EmailEvent.__slots__:  # pragma: no cover
    raise ImportError("make_event's parameters no longer follow EmailEvent's fields")
del _code
