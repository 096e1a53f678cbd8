"""Property: whatever the order, the duplicates and the batch splits, the stored badge of every
message is the one ``lifecycle.fold`` gives for the set of its events, on every backend."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from datetime import timedelta
from itertools import pairwise

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tracking_support import T0, Store

from unimailtrack import (
    BounceKind,
    DeliveryStatus,
    Email,
    EmailEvent,
    EventType,
    RecipientResult,
    SendResult,
    fold,
)
from unimailtrack.tracking import StateChange, Tracker

EXPIRY = timedelta(seconds=30)
NOW = T0 + timedelta(seconds=40)
"""Deferrals at second 0..9 have expired when read, later ones have not."""


@dataclass(frozen=True)
class Plan:
    """Events about a few messages, how to deliver them, and when the send is recorded."""

    events: list[EmailEvent]
    order: list[int]
    cuts: list[int]
    send_after_batch: int


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    messages = draw(st.integers(1, 3))
    ids = draw(
        st.lists(st.text("abcxyz", min_size=1, max_size=3), min_size=1, max_size=14, unique=True)
    )
    events = []
    for event_id in ids:
        index = draw(st.integers(0, messages - 1))
        kind = draw(st.sampled_from(list(EventType)))
        by_tracking_id = draw(st.booleans())
        events.append(
            EmailEvent(
                provider="memory",
                type=kind,
                provider_event=kind.value,
                recipient=f"user{index}@example.com",
                event_id=event_id,
                timestamp=T0 + timedelta(seconds=draw(st.sampled_from([0, 1, 9, 12, 31]))),
                message_id=f"m{index}",
                tracking_id=f"t{index}" if by_tracking_id else None,
                reason=draw(st.sampled_from([None, "r1", "r2"])),
                bounce=draw(st.sampled_from([None, *BounceKind]))
                if kind is EventType.BOUNCED
                else None,
            )
        )
    copies = draw(st.lists(st.integers(0, len(events) - 1), max_size=4))
    order = draw(st.permutations([*range(len(events)), *copies]))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(order) - 1)), max_size=4)))
    send_after = draw(st.integers(0, len(cuts) + 1))
    return Plan(events, list(order), cuts, send_after)


def _prefixed(event: EmailEvent, prefix: str) -> EmailEvent:
    return EmailEvent(
        provider=event.provider,
        type=event.type,
        provider_event=event.provider_event,
        recipient=event.recipient,
        event_id=prefix + event.event_id,
        timestamp=event.timestamp,
        message_id=None if event.message_id is None else prefix + event.message_id,
        tracking_id=None if event.tracking_id is None else prefix + event.tracking_id,
        reason=event.reason,
        bounce=event.bounce,
    )


def _record_sends(tracker: Tracker, prefix: str) -> None:
    recipients = [f"user{i}@example.com" for i in range(3)]
    tracker.record_send(
        Email(sender="e@example.com", to=recipients, text="."),
        SendResult(
            bulk_id=prefix + "bulk",
            recipients=[
                RecipientResult(
                    recipient=address,
                    tracking_id=f"{prefix}t{i}",
                    status=DeliveryStatus.ACCEPTED,
                    message_id=f"{prefix}m{i}",
                    provider="memory",
                )
                for i, address in enumerate(recipients)
            ],
        ),
    )


def _expected(events: list[EmailEvent], tracking_id: str) -> tuple[DeliveryStatus, str | None]:
    """The badge ``fold`` gives; the send's own outcome while nothing above unknown came."""
    state = fold([e for e in events if e.recipient], now=NOW, deferred_expiry=EXPIRY)
    if state.status is DeliveryStatus.UNKNOWN:
        return DeliveryStatus.ACCEPTED, None
    return state.status, state.reason


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=plans())
def test_stored_badges_equal_the_fold_whatever_the_arrival(store: Store, plan: Plan) -> None:
    tracker = store.opened[0] if store.opened else store.open(deferred_expiry=EXPIRY)
    store.clock.now = NOW
    prefix = secrets.token_hex(4) + "-"
    events = [_prefixed(e, prefix) for e in plan.events]
    arrivals = [events[i] for i in plan.order]
    bounds = [0, *plan.cuts, len(arrivals)]
    batches = [arrivals[a:b] for a, b in pairwise(bounds)]
    stored_before = tracker.count_events()
    heard: list[StateChange] = []
    unsubscribe = tracker.subscribe(heard.append)
    for number, batch in enumerate(batches):
        if number == plan.send_after_batch:
            _record_sends(tracker, prefix)
        tracker.ingest(batch)
    if plan.send_after_batch >= len(batches):
        _record_sends(tracker, prefix)
    unsubscribe()

    rows = {row.tracking_id: row for row in tracker.bulk_rows(prefix + "bulk")}
    for index in range(3):
        tracking_id = f"{prefix}t{index}"
        # An event joined by its message id comes back with the tracking id it joined.
        mine = [
            replace(e, tracking_id=tracking_id)
            for e in events
            if e.message_id == f"{prefix}m{index}"
        ]
        row = rows[tracking_id]
        assert (row.status, row.reason) == _expected(mine, tracking_id)
        state = tracker.state(tracking_id)
        assert state == fold(mine, now=NOW, deferred_expiry=EXPIRY)
        last = [c for c in heard if c.tracking_id == tracking_id]
        if state.event is not None and state.event.type is not EventType.UNKNOWN:
            assert last[-1].event_id == state.event.event_id
    assert tracker.count_events() - stored_before == len(events)
