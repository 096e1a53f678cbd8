"""The delivery lifecycle: from a set of events to one badge (contract).

``fold`` is a join over a total order of events, so it is idempotent, commutative and
associative: the same events, in any order and any number of times, give the same state.
Webhooks arrive late, twice and out of order; the badge does not care.

Precedence, lowest to highest (docs/lifecycle.md explains each rule)::

    unknown < accepted < processed < deferred < delivered
            < {bounced, dropped, rejected, failed} < opened < clicked
            < {unsubscribed, resubscribed} < complained

Within one rank the later timestamp wins, then the greater ``event_id``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

from unimailtrack.model import BounceKind, DeliveryStatus, EmailEvent, EventType

__all__ = [
    "DEFAULT_DEFERRED_EXPIRY",
    "EXPIRED_REASON",
    "RANK",
    "MessageState",
    "fold",
    "precedence_key",
    "rank",
]

DEFAULT_DEFERRED_EXPIRY = timedelta(hours=72)
EXPIRED_REASON = "expired"

RANK: Mapping[EventType, int] = MappingProxyType(
    {
        EventType.UNKNOWN: 0,
        EventType.ACCEPTED: 1,
        EventType.PROCESSED: 2,
        EventType.DEFERRED: 3,
        EventType.DELIVERED: 4,
        EventType.BOUNCED: 5,
        EventType.DROPPED: 5,
        EventType.REJECTED: 5,
        EventType.FAILED: 5,
        EventType.OPENED: 6,
        EventType.CLICKED: 7,
        EventType.UNSUBSCRIBED: 8,
        EventType.RESUBSCRIBED: 8,
        EventType.COMPLAINED: 9,
    }
)
"""The precedence rank of every event type: the higher rank decides the badge."""

_ENGAGED = frozenset({EventType.OPENED, EventType.CLICKED})
_ARRIVED = frozenset(
    {
        EventType.DELIVERED,
        EventType.OPENED,
        EventType.CLICKED,
        EventType.COMPLAINED,
        EventType.UNSUBSCRIBED,
        EventType.RESUBSCRIBED,
    }
)


def rank(event_type: EventType) -> int:
    """The precedence rank of an event type."""
    return RANK[event_type]


def precedence_key(event: EmailEvent) -> tuple[int, datetime, str]:
    """The total order ``fold`` picks the deciding event by: rank, then time, then id."""
    return (RANK[event.type], event.timestamp, event.event_id)


def _identity_key(event: EmailEvent) -> tuple[datetime, int, str, str, str, str]:
    # Two events with one event_id but different content (a provider bug) resolve the same
    # way whatever order they arrive in.
    return (
        event.timestamp,
        RANK[event.type],
        event.event_id,
        event.type.value,
        event.provider_event,
        event.reason or "",
    )


@dataclass(frozen=True, slots=True)
class MessageState:
    """The derived state of one (message, recipient) (contract).

    ``status`` is the badge, ``reason`` the text that explains it (the remote server's reply
    on a bounce, "expired" for a deferral that never resolved), ``timeline`` every distinct
    event oldest first. ``event`` is the event that decided the status (None when there are
    no events, or when the status is an expiry).
    """

    status: DeliveryStatus
    reason: str | None = None
    bounce: BounceKind | None = None
    smtp_status: str | None = None
    updated_at: datetime | None = None
    event: EmailEvent | None = None
    timeline: tuple[EmailEvent, ...] = field(default=())
    first_delivered_at: datetime | None = None
    first_opened_at: datetime | None = None
    first_clicked_at: datetime | None = None
    attempts: int = 0
    opens: int = 0
    clicks: int = 0
    expired: bool = False

    @property
    def delivered(self) -> bool:
        """True once anything proves the mail reached the mailbox."""
        return self.first_delivered_at is not None


def _first(current: datetime | None, candidate: datetime) -> datetime:
    return candidate if current is None or candidate < current else current


def fold(
    events: Iterable[EmailEvent],
    *,
    now: datetime | None = None,
    deferred_expiry: timedelta = DEFAULT_DEFERRED_EXPIRY,
) -> MessageState:
    """Fold a set of events about one (message, recipient) into its state (contract).

    Order-independent, duplicate-insensitive (events are identified by ``event_id``) and
    deterministic. A ``deferred`` status whose latest deferral is older than
    ``deferred_expiry`` at ``now`` (default: the current time) becomes ``failed`` with reason
    ``"expired"``.
    """
    unique: dict[str, EmailEvent] = {}
    for event in events:
        seen = unique.get(event.event_id)
        if seen is None or _identity_key(event) > _identity_key(seen):
            unique[event.event_id] = event
    if not unique:
        return MessageState(status=DeliveryStatus.UNKNOWN)

    timeline = tuple(sorted(unique.values(), key=_identity_key))
    top = max(timeline, key=precedence_key)

    first_delivered: datetime | None = None
    first_opened: datetime | None = None
    first_clicked: datetime | None = None
    last_deferred: datetime | None = None
    attempts = opens = clicks = 0
    for event in timeline:
        kind = event.type
        if kind in _ARRIVED:
            first_delivered = _first(first_delivered, event.timestamp)
        if kind is EventType.OPENED:
            opens += 1
            first_opened = _first(first_opened, event.timestamp)
        elif kind is EventType.CLICKED:
            clicks += 1
            first_clicked = _first(first_clicked, event.timestamp)
        elif kind is EventType.DEFERRED:
            last_deferred = event.timestamp
            attempts = max(attempts + 1, event.attempt or 0)
        if kind in _ENGAGED and event.attempt:
            attempts = max(attempts, event.attempt)

    state = MessageState(
        status=DeliveryStatus(top.type.value),
        reason=top.reason,
        bounce=top.bounce,
        smtp_status=top.smtp_status,
        updated_at=top.timestamp,
        event=top,
        timeline=timeline,
        first_delivered_at=first_delivered,
        first_opened_at=first_opened,
        first_clicked_at=first_clicked,
        attempts=attempts,
        opens=opens,
        clicks=clicks,
    )
    if top.type is EventType.DEFERRED and last_deferred is not None:
        clock = now if now is not None else datetime.now(UTC)
        if clock - last_deferred > deferred_expiry:
            return expire(state, at=last_deferred + deferred_expiry)
    return state


def expire(state: MessageState, *, at: datetime) -> MessageState:
    """The state a deferral that never resolved turns into: ``failed`` / ``"expired"``."""
    return MessageState(
        status=DeliveryStatus.FAILED,
        reason=EXPIRED_REASON,
        bounce=None,
        smtp_status=state.smtp_status,
        updated_at=at,
        event=None,
        timeline=state.timeline,
        first_delivered_at=state.first_delivered_at,
        first_opened_at=state.first_opened_at,
        first_clicked_at=state.first_clicked_at,
        attempts=state.attempts,
        opens=state.opens,
        clicks=state.clicks,
        expired=True,
    )
