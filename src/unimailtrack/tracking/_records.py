"""What the tracker answers with: plain frozen records, built straight from rows.

These are slotted dataclasses rather than pydantic models because a bulk send's side panel
maps a hundred thousand rows at a time; nothing here needs validating, it comes from our own
tables. Times are timezone-aware UTC datetimes; the tables keep them as integer microseconds.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, overload

from unimailtrack.errors import InvalidQuery
from unimailtrack.model import DeliveryStatus

__all__ = [
    "Badge",
    "BulkStats",
    "DeadLetter",
    "DomainAlert",
    "IngestResult",
    "Page",
    "SendRecord",
    "StateChange",
    "decode_cursor",
    "encode_cursor",
    "from_micros",
    "to_micros",
]

T = TypeVar("T")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def to_micros(moment: datetime) -> int:
    """Integer microseconds since the epoch: exact, and ordered the same on every backend."""
    return (moment - _EPOCH) // _MICROSECOND


def from_micros(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


def optional_time(value: int | None) -> datetime | None:
    return None if value is None else from_micros(value)


@dataclass(frozen=True, slots=True)
class StateChange:
    """A recipient's state moved: a new event now decides it, or a deferral expired.

    ``previous`` is the badge shown before (None for a message the tracker had never seen),
    ``status`` the badge now. ``event_id`` is the deciding event (None for an expiry) and
    ``timestamp`` when the deciding event happened (the expiry time for an expiry).
    ``recipient`` and ``bulk_id`` are None while the send itself is not recorded yet.
    """

    tracking_id: str
    recipient: str | None
    bulk_id: str | None
    previous: DeliveryStatus | None
    status: DeliveryStatus
    reason: str | None
    event_id: str | None
    timestamp: datetime


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What one ``ingest`` call stored: ``new`` events, ``duplicates`` already known (or
    repeated within the batch), and the state ``changes`` they caused."""

    new: int
    duplicates: int
    changes: tuple[StateChange, ...] = ()


@dataclass(frozen=True, slots=True)
class Badge:
    """Where one (message, recipient) is now, read from its stored state in one row: the
    ``status`` its badge shows and the ``reason`` beside it, as ``SendRecord`` has them,
    for a send recorded here or one known only from its events."""

    status: DeliveryStatus
    reason: str | None


@dataclass(frozen=True, slots=True)
class SendRecord:
    """One (message, recipient): what was sent and where it is now.

    ``status`` is the badge: the fold of the events received, or the outcome of the send
    itself (``accepted``, ``suppressed``, ``duplicate``, ``failed``) while no provider event
    says more. ``updated_at`` is when the badge last moved.
    """

    tracking_id: str
    bulk_id: str | None
    recipient: str
    name: str | None
    sender: str | None
    subject: str | None
    category: str | None
    metadata: Mapping[str, str]
    tags: Sequence[str]
    provider: str | None
    message_id: str | None
    status: DeliveryStatus
    reason: str | None
    sent_at: datetime
    updated_at: datetime
    opens: int = 0
    clicks: int = 0
    track_opens: bool = False
    track_clicks: bool = False


@dataclass(frozen=True, slots=True)
class Page(Sequence[T]):
    """One page of a listing: ``items``, the ``next_cursor`` to pass back for the next page
    (None on the last one) and the ``total`` number of items across all pages.

    A page is also a sequence of its items, so ``len(page)`` and ``for row in page`` work.
    """

    items: tuple[T, ...]
    next_cursor: str | None
    total: int

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    @overload
    def __getitem__(self, index: int) -> T: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[T]: ...

    def __getitem__(self, index: int | slice) -> T | Sequence[T]:
        return self.items[index]


@dataclass(frozen=True, slots=True)
class BulkStats:
    """The analytics row of a bulk send.

    Each stage counts the recipients that reached it, so a recipient who opened is also
    counted ``delivered``, and one who clicked is also counted ``opened``. ``opens`` and
    ``clicks`` count every open and click event; ``unique_opens`` and ``unique_clicks`` the
    recipients with at least one. ``sent`` counts the copies a provider accepted;
    ``suppressed``, ``duplicates`` and ``not_sent`` (failed at sending) the ones never sent.
    ``failed`` includes deferrals that expired.

    Honest engagement: each open and click is ``human``, ``machine`` (a provider's machine
    flag, a privacy proxy or a link scanner within seconds of delivery, a scanner's user
    agent) or ``unknown`` (``unimailtrack.deliverability.classify_open``).
    ``opened_excluding_machine`` and ``clicked_excluding_machine`` count the recipients
    with at least one open (or click) that is not a machine's, ``open_rate`` and
    ``click_rate`` are those over ``delivered``, and ``machine_excluded`` says how many
    open and click events were left out.
    ``open_tracked`` and ``click_tracked`` count the recipients whose send asked for open and
    click tracking: where they are 0, no open or click was ever going to be reported.
    """

    bulk_id: str
    recipients: int = 0
    sent: int = 0
    suppressed: int = 0
    duplicates: int = 0
    not_sent: int = 0
    delivered: int = 0
    opened: int = 0
    clicked: int = 0
    bounced: int = 0
    dropped: int = 0
    deferred: int = 0
    rejected: int = 0
    failed: int = 0
    complained: int = 0
    unsubscribed: int = 0
    opens: int = 0
    clicks: int = 0
    unique_opens: int = 0
    unique_clicks: int = 0
    human_opens: int = 0
    machine_opens: int = 0
    unknown_opens: int = 0
    human_clicks: int = 0
    machine_clicks: int = 0
    unknown_clicks: int = 0
    opened_excluding_machine: int = 0
    clicked_excluding_machine: int = 0
    open_rate: float = 0.0
    click_rate: float = 0.0
    machine_excluded: int = 0
    open_tracked: int = 0
    click_tracked: int = 0


@dataclass(frozen=True, slots=True)
class DomainAlert:
    """Several different recipients at one domain bounced within the window: the domain
    (or a filter in front of it) probably blocks the sender, rather than each address being
    bad."""

    domain: str
    recipients: int
    bounces: int
    first_at: datetime
    last_at: datetime
    reasons: tuple[str, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A webhook body that could not be parsed, kept whole with the reason, to replay later."""

    id: int
    provider: str
    received_at: datetime
    reason: str
    headers: Mapping[str, str]
    body: bytes


# --------------------------------------------------------------------------- cursors


def encode_cursor(kind: str, values: Sequence[Any]) -> str:
    """An opaque cursor: the keyset position of the last row handed out, and what it is for."""
    raw = json.dumps([kind, *values], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


MAX_CURSOR_LENGTH = 1024
"""Longer than any cursor this module hands out; a longer one is refused before decoding."""

_BIGINT = 2**63
Slot = type | tuple[type, ...]
"""What one position of a cursor may hold: ``int`` (a 64-bit integer, never a bool), ``str``,
``type(None)``, or a tuple of them."""


def decode_cursor(kind: str, cursor: str, *slots: Slot) -> list[Any]:
    """The keyset position in ``cursor``, one value per slot; ``InvalidQuery`` when it is not
    one of ours for ``kind`` (a cursor from another listing, cut short, tampered with, or
    holding a value the store cannot compare, such as an integer beyond 64 bits)."""
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise InvalidQuery("cursor", f"is longer than {MAX_CURSOR_LENGTH} characters")
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        decoded = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, UnicodeError, binascii.Error, RecursionError):
        raise InvalidQuery("cursor", "is not a cursor this tracker handed out") from None
    if not (isinstance(decoded, list) and len(decoded) == len(slots) + 1 and decoded[0] == kind):
        raise InvalidQuery("cursor", "does not belong to this listing")
    values: list[Any] = decoded[1:]
    for value, slot in zip(values, slots, strict=True):
        allowed = slot if isinstance(slot, tuple) else (slot,)
        if type(value) not in allowed or (type(value) is int and not -_BIGINT <= value < _BIGINT):
            raise InvalidQuery("cursor", "holds a position this listing cannot have")
    return values
