from __future__ import annotations

import dataclasses
import random
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from unimailtrack import DeliveryStatus, EmailEvent, EventType, fold
from unimailtrack.lifecycle import EXPIRED_REASON, RANK, precedence_key

T0 = datetime(2024, 1, 15, 9, 0, tzinfo=UTC)


def ev(kind: EventType, minutes: float, event_id: str | None = None, **kw: object) -> EmailEvent:
    return EmailEvent(
        provider="memory",
        type=kind,
        provider_event=kind.value,
        recipient="a@example.com",
        event_id=event_id or f"{kind.value}-{minutes}",
        timestamp=T0 + timedelta(minutes=minutes),
        **kw,
    )  # type: ignore[arg-type]


def test_empty_is_unknown() -> None:
    assert fold([]).status is DeliveryStatus.UNKNOWN


def test_precedence_order_matches_the_contract() -> None:
    order = [
        EventType.UNKNOWN,
        EventType.ACCEPTED,
        EventType.PROCESSED,
        EventType.DEFERRED,
        EventType.DELIVERED,
        EventType.BOUNCED,
        EventType.OPENED,
        EventType.CLICKED,
        EventType.UNSUBSCRIBED,
        EventType.COMPLAINED,
    ]
    assert [RANK[t] for t in order] == sorted(RANK[t] for t in order)
    assert len({RANK[t] for t in order}) == len(order)
    failures = {EventType.BOUNCED, EventType.DROPPED, EventType.REJECTED, EventType.FAILED}
    assert {RANK[t] for t in failures} == {RANK[EventType.BOUNCED]}
    assert RANK[EventType.RESUBSCRIBED] == RANK[EventType.UNSUBSCRIBED]


def test_late_bounce_outranks_delivered_and_keeps_the_reason() -> None:
    state = fold(
        [ev(EventType.DELIVERED, 1), ev(EventType.BOUNCED, 30, reason="550 5.1.1 user unknown")]
    )
    assert state.status is DeliveryStatus.BOUNCED
    assert state.reason == "550 5.1.1 user unknown"
    assert state.first_delivered_at == T0 + timedelta(minutes=1)


def test_engagement_outranks_a_failure() -> None:
    state = fold([ev(EventType.BOUNCED, 5), ev(EventType.OPENED, 1)])
    assert state.status is DeliveryStatus.OPENED
    assert state.first_opened_at == T0 + timedelta(minutes=1)


def test_within_a_rank_the_later_event_wins() -> None:
    state = fold([ev(EventType.UNSUBSCRIBED, 10), ev(EventType.RESUBSCRIBED, 20)])
    assert state.status is DeliveryStatus.RESUBSCRIBED
    state = fold([ev(EventType.UNSUBSCRIBED, 30), ev(EventType.RESUBSCRIBED, 20)])
    assert state.status is DeliveryStatus.UNSUBSCRIBED


def test_same_time_same_rank_breaks_ties_by_event_id() -> None:
    a = ev(EventType.BOUNCED, 5, event_id="a", reason="first")
    b = ev(EventType.DROPPED, 5, event_id="b", reason="second")
    assert fold([a, b]).reason == "second"
    assert fold([b, a]).reason == "second"


def test_deferred_expires_into_failed() -> None:
    events = [ev(EventType.PROCESSED, 0), ev(EventType.DEFERRED, 10, attempt=3)]
    fresh = fold(events, now=T0 + timedelta(hours=71))
    assert fresh.status is DeliveryStatus.DEFERRED
    expired = fold(events, now=T0 + timedelta(hours=73))
    assert expired.status is DeliveryStatus.FAILED
    assert expired.reason == EXPIRED_REASON
    assert expired.expired
    assert expired.attempts == 3
    short = fold(events, now=T0 + timedelta(hours=2), deferred_expiry=timedelta(hours=1))
    assert short.status is DeliveryStatus.FAILED


def test_deferred_then_delivered_does_not_expire() -> None:
    events = [ev(EventType.DEFERRED, 10), ev(EventType.DELIVERED, 20)]
    assert fold(events, now=T0 + timedelta(days=30)).status is DeliveryStatus.DELIVERED


def test_timeline_is_oldest_first_and_deduplicated() -> None:
    a, b, c = ev(EventType.PROCESSED, 0), ev(EventType.DELIVERED, 1), ev(EventType.OPENED, 2)
    state = fold([c, a, b, c, a])
    assert state.timeline == (a, b, c)
    assert state.opens == 1


# ----------------------------------------------------------------- properties

KINDS = list(EventType)
event_strategy = st.builds(
    lambda kind, minute, eid, reason: ev(kind, minute, event_id=f"e{eid}", reason=reason),
    st.sampled_from(KINDS),
    st.integers(min_value=0, max_value=5000),
    st.integers(min_value=0, max_value=40),
    st.sampled_from([None, "a", "b"]),
)
NOW = T0 + timedelta(days=2)


def summary(events: list[EmailEvent]) -> tuple[object, ...]:
    state = fold(events, now=NOW)
    return (
        state.status,
        state.reason,
        state.bounce,
        state.updated_at,
        state.timeline,
        state.first_delivered_at,
        state.first_opened_at,
        state.attempts,
        state.opens,
    )


@settings(max_examples=300)
@given(st.lists(event_strategy, max_size=12), st.randoms(use_true_random=False))
def test_fold_is_order_independent(events: list[EmailEvent], rnd: random.Random) -> None:
    shuffled = events[:]
    rnd.shuffle(shuffled)
    assert summary(shuffled) == summary(events)


@settings(max_examples=300)
@given(st.lists(event_strategy, max_size=12), st.randoms(use_true_random=False))
def test_fold_is_duplicate_insensitive(events: list[EmailEvent], rnd: random.Random) -> None:
    repeated = events + [rnd.choice(events) for _ in range(len(events))] if events else []
    assert summary(repeated) == summary(events)


@settings(max_examples=200)
@given(st.lists(event_strategy, max_size=10), st.lists(event_strategy, max_size=10))
def test_fold_is_associative(left: list[EmailEvent], right: list[EmailEvent]) -> None:
    # Folding a union equals folding the union of the parts' timelines.
    joined = list(fold(left, now=NOW).timeline) + list(fold(right, now=NOW).timeline)
    assert summary(joined) == summary(left + right)


@settings(max_examples=200)
@given(st.lists(event_strategy, min_size=1, max_size=12))
def test_status_is_the_highest_ranked_event(events: list[EmailEvent]) -> None:
    distinct = [dataclasses.replace(e, event_id=f"u{i}") for i, e in enumerate(events)]
    state = fold(distinct, now=T0)  # no expiry is possible before the first event
    top = max(distinct, key=precedence_key)
    assert state.event == top
    assert RANK[EventType(state.status.value)] == RANK[top.type]
