"""Streams and scopes, provenance and history, the soft-bounce policy, import and export: on
every backend."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tracking_support import T0, Store, event

from unimailtrack import DeliveryStatus, Email, EmailEvent, EventType, Mailer, Suppression
from unimailtrack.adapters.memory import MemoryAdapter
from unimailtrack.model import SendResult
from unimailtrack.tracking import SoftBouncePolicy, Tracker
from unimailtrack.tracking import _programs as P
from unimailtrack.tracking._store import Query, Step, drive


def _send(tracker: Tracker, stream: str | None, *to: str) -> SendResult:
    mailer = Mailer(MemoryAdapter(), tracker=tracker)
    try:
        return mailer.send(
            Email(sender="news@example.com", to=list(to), subject="Hi", text="x", stream=stream)
        )
    finally:
        mailer.close()


def test_an_unsubscribe_stops_only_its_stream_and_a_hard_bounce_every_stream(
    tracker: Tracker,
) -> None:
    result = _send(tracker, "marketing", "ada@example.com", "bob@example.com")
    ada, bob = (r.tracking_id for r in result.recipients)
    tracker.ingest([event("unsubscribed", ada, at=5, reason="one-click")])
    found = tracker.suppression("ada@example.com", stream="marketing")
    assert found is not None and (found.scope, found.cause) == ("marketing", "unsubscribed")
    assert tracker.suppression("ada@example.com", stream="transactional") is None
    assert tracker.suppression("ada@example.com") is None

    tracker.ingest([event("bounced", bob, at=6, recipient="bob@example.com", bounce="hard")])
    for stream in (None, "marketing", "transactional"):
        hit = tracker.suppression("bob@example.com", stream=stream)
        assert hit is not None and hit.scope is None

    again = _send(tracker, "marketing", "ada@example.com", "bob@example.com")
    assert [r.status for r in again.recipients] == [DeliveryStatus.SUPPRESSED] * 2
    reset = _send(tracker, "transactional", "ada@example.com", "bob@example.com")
    assert [r.status for r in reset.recipients] == [
        DeliveryStatus.ACCEPTED,
        DeliveryStatus.SUPPRESSED,
    ]


def test_a_resubscribe_lifts_its_unsubscribe_whatever_the_order(store: Store) -> None:
    for order in ([0, 1], [1, 0]):
        tracker = store.open()
        address = f"o{order[0]}@example.com"
        unsubscribe = event("unsubscribed", None, at=10, recipient=address)
        resubscribe = event("resubscribed", None, at=20, recipient=address)
        for i in order:
            tracker.ingest([(unsubscribe, resubscribe)[i]])
        assert tracker.suppression(address) is None
    # Older than the unsubscribe, a resubscribe lifts nothing, in either order.
    for order in ([0, 1], [1, 0]):
        tracker = store.open()
        address = f"late{order[0]}@example.com"
        unsubscribe = event("unsubscribed", None, at=20, recipient=address)
        stale = event("resubscribed", None, at=10, recipient=address)
        for i in order:
            tracker.ingest([(unsubscribe, stale)[i]])
        assert tracker.suppression(address) is not None
    # No resubscribe lifts a complaint.
    tracker.ingest(
        [
            event("complained", None, at=5, recipient="c@example.com"),
            event("resubscribed", None, at=50, recipient="c@example.com"),
        ]
    )
    assert tracker.suppression("c@example.com") is not None


def test_the_history_says_why_an_address_cannot_be_mailed(store: Store) -> None:
    tracker = store.open()
    cause = event("bounced", "t1", at=5, bounce="hard", reason="550 5.1.1 unknown user")
    tracker.ingest([cause])
    store.clock.advance(timedelta(seconds=1))
    tracker.unsuppress("ada@example.com", reason="the customer confirmed the address")
    store.clock.advance(timedelta(seconds=1))
    tracker.suppress("ada@example.com", "asked by phone", scope="marketing")
    changes = tracker.suppression_history("ADA@EXAMPLE.COM".lower())
    assert [(c.action, c.suppression.source, c.suppression.cause) for c in changes] == [
        ("added", "event", "bounced"),
        ("lifted", "manual", "manual"),
        ("added", "manual", "manual"),
    ]
    assert changes[0].suppression.event_id == cause.event_id
    assert changes[0].suppression.reason == "550 5.1.1 unknown user"
    assert changes[2].suppression.scope == "marketing"
    # The old event, retried, is a duplicate; one older than the lift lifts nothing back.
    tracker.ingest([cause, event("complained", "t1", at=6)])
    assert tracker.suppression("ada@example.com") is None
    assert tracker.suppression("ada@example.com", stream="marketing") is not None


def _soft(address: str, at: int, tracking_id: str = "s") -> EmailEvent:
    return event("bounced", tracking_id, at=at, recipient=address, bounce="soft", reason="full")


def test_five_soft_bounces_without_a_delivery_suppress_for_a_while(store: Store) -> None:
    tracker = store.open()
    bounces = [_soft("full@example.com", at, f"s{at}") for at in range(1, 6)]
    random.Random(3).shuffle(bounces)
    for one in bounces[:4]:
        tracker.ingest([one])
    assert tracker.suppression("full@example.com") is None
    tracker.ingest(bounces[4:])
    found = tracker.suppression("full@example.com")
    assert found is not None
    assert (found.cause, found.scope, found.created_at) == (
        "soft-bounce-limit",
        None,
        T0 + timedelta(seconds=5),
    )
    assert found.expires_at == T0 + timedelta(seconds=5) + timedelta(days=30)
    # A delivery between the bounces breaks the run, even when it arrives last.
    tracker.ingest([event("delivered", "s3", at=3, recipient="full@example.com")])
    assert tracker.suppression("full@example.com") is None
    assert tracker.suppression_history("full@example.com")[-1].action == "cleared"


def test_the_soft_bounce_limit_lifts_by_itself_and_can_be_turned_off(store: Store) -> None:
    tracker = store.open(soft_bounces=SoftBouncePolicy(limit=2, duration=timedelta(days=1)))
    tracker.ingest([_soft("a@example.com", 1, "a1"), _soft("a@example.com", 2, "a2")])
    assert tracker.suppression("a@example.com") is not None
    store.clock.now = T0 + timedelta(days=1, seconds=3)
    assert tracker.suppression("a@example.com") is None
    tracker.sweep()
    assert tracker.suppression_history("a@example.com")[-1].action == "expired"
    off = store.open(soft_bounces=SoftBouncePolicy(limit=0))
    off.ingest([_soft("b@example.com", at, f"b{at}") for at in range(10)])
    assert off.suppression("b@example.com") is None


def test_a_provider_list_change_is_recorded_as_provider_sync(tracker: Tracker) -> None:
    change = EmailEvent(
        provider="ses",
        type=EventType.UNSUBSCRIBED,
        provider_event="Subscription",
        recipient="ada@example.com",
        event_id="ses-sub-1",
        timestamp=T0,
        raw={},
    )
    tracker.ingest([change])
    found = tracker.suppression("ada@example.com")
    assert found is not None and (found.source, found.provider) == ("provider-sync", "ses")


def test_the_check_of_a_bulk_send_is_one_statement(tracker: Tracker) -> None:
    tracker.import_suppressions(
        [{"address": f"u{i}@example.com"} for i in range(0, 10_000, 7)], dry_run=False
    )
    steps: list[Step] = []

    def execute(step: Step) -> list[tuple[object, ...]]:
        steps.append(step)
        return tracker._store.run(lambda: _one(step), write=False)[0]

    def _one(step: Step):  # type: ignore[no-untyped-def]
        return (yield step)

    addresses = [f"u{i}@Example.com" for i in range(10_000)]
    found = drive(P.suppressions_for(addresses, None, 0), execute)
    assert len(steps) == 1 and isinstance(steps[0], Query)
    assert len(found) == len(range(0, 10_000, 7))


# --------------------------------------------------------------------------- import, export


def test_import_is_a_dry_run_first_then_idempotent(store: Store) -> None:
    tracker = store.open()
    rows = [
        {"address": "Ann@Example.COM", "cause": "bounced", "reason": "550 gone"},
        {"address": "bob@example.com", "scope": "marketing", "cause": "unsubscribed"},
        {"address": "cy@example.com", "created_at": "2024-01-02T03:04:05Z"},
    ]
    dry = tracker.import_suppressions(rows, source="import")
    assert (dry.new, dry.updated, dry.unchanged, dry.invalid, dry.applied) == (3, 0, 0, 0, False)
    assert tracker.suppression("Ann@example.com") is None
    done = tracker.import_suppressions(rows, source="import", dry_run=False)
    assert (done.new, done.applied) == (3, True)
    ann = tracker.suppression("Ann@example.com")
    assert ann is not None and (ann.address, ann.source, ann.cause) == (
        "Ann@example.com",
        "import",
        "bounced",
    )
    assert tracker.suppression("bob@example.com", stream="marketing") is not None
    again = tracker.import_suppressions(rows, source="import", dry_run=False)
    assert (again.new, again.updated, again.unchanged) == (0, 0, 3)
    assert len(tracker.suppression_history("Ann@example.com")) == 1
    exported = list(tracker.export_suppressions(page_size=2))
    assert [(s.address, s.scope) for s in exported] == [
        ("Ann@example.com", None),
        ("bob@example.com", "marketing"),
        ("cy@example.com", None),
    ]
    other = store.open()
    assert other.import_suppressions(exported, source="import", dry_run=False).unchanged == 3


def test_an_import_with_invalid_rows_imports_nothing_unless_told(tracker: Tracker) -> None:
    rows = [
        {"address": "ok@example.com"},
        {"address": "not an address"},
        {"address": "x@example.com", "scope": "*bad"},
        {"address": "y@example.com", "cause": "sneezed"},
        {"address": "z@example.com", "created_at": "2024-01-02T03:04:05"},
        {"address": "w@example.com", "colour": "red"},
    ]
    report = tracker.import_suppressions(rows, dry_run=False)
    assert (report.applied, report.invalid) == (False, 5)
    assert [e.line for e in report.errors] == [2, 3, 4, 5, 6]
    assert "unknown scope" in report.errors[1].reason
    assert "no time zone" in report.errors[3].reason
    assert tracker.suppression("ok@example.com") is None
    skipped = tracker.import_suppressions(rows, dry_run=False, skip_invalid=True)
    assert (skipped.applied, skipped.new, skipped.invalid) == (True, 1, 5)
    assert tracker.suppression("ok@example.com") is not None
    with pytest.raises(ValueError, match="unknown source"):
        tracker.import_suppressions(rows, source="rumour")


def test_an_import_is_one_transaction_across_chunks(tracker: Tracker) -> None:
    rows: list[dict[str, str]] = [{"address": f"n{i}@example.com"} for i in range(25_000)]
    rows.append({"address": "broken"})
    report = tracker.import_suppressions(rows, dry_run=False)
    assert (report.applied, report.invalid) == (False, 1)
    assert tracker.suppressions(limit=1).total == 0


# --------------------------------------------------------------------------- the property

KINDS = ("unsubscribed", "resubscribed", "complained", "hard", "soft", "delivered")


@st.composite
def histories(draw: st.DrawFn) -> list[EmailEvent]:
    events = []
    for n in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(KINDS))
        address = f"p{draw(st.integers(0, 2))}@example.com"
        at = draw(st.sampled_from([0, 1, 2, 5, 9]))
        if kind in ("hard", "soft"):
            events.append(
                event("bounced", None, at=at, recipient=address, bounce=kind, event_id=f"e{n}")
            )
        else:
            events.append(event(kind, None, at=at, recipient=address, event_id=f"e{n}"))
    return events


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(events=histories(), seed=st.integers(0, 10**6), size=st.integers(1, 4))
def test_the_list_is_the_same_whatever_the_order_and_batches(
    store: Store, events: list[EmailEvent], seed: int, size: int
) -> None:
    policy = SoftBouncePolicy(limit=2)
    reference = store.open(soft_bounces=policy)
    shuffled = store.open(soft_bounces=policy)
    # Each pair of trackers gets addresses of its own, so that examples do not meet.
    tag = f"{seed}-{size}-{len(store.opened)}"
    mine = [_retag(e, tag) for e in events]
    reference_events = [_retag(e, "r" + tag) for e in events]
    reference.ingest(reference_events)
    mixed = mine + random.Random(seed).sample(mine, len(mine) // 2)
    random.Random(seed).shuffle(mixed)
    for start in range(0, len(mixed), size):
        shuffled.ingest(mixed[start : start + size])
    for index in range(3):
        want = reference.suppression(f"p{index}.r{tag}@example.com")
        got = shuffled.suppression(f"p{index}.{tag}@example.com")
        assert _content(got) == _content(want)


def _retag(one: EmailEvent, tag: str) -> EmailEvent:
    from dataclasses import replace

    local, _, domain = one.recipient.partition("@")
    return replace(one, recipient=f"{local}.{tag}@{domain}", event_id=f"{one.event_id}.{tag}")


def _content(found: Suppression | None) -> tuple[object, ...] | None:
    if found is None:
        return None
    return (found.scope, found.cause, found.created_at, found.expires_at, found.reason)


def test_nothing_is_written_when_an_import_is_refused(tracker: Tracker) -> None:
    report = tracker.import_suppressions([{"address": "a@example.com"}, {}], dry_run=False)
    assert report.errors[0].reason == "the address is missing"
    rows, _ = tracker._store.run(lambda: _count(), write=False)
    assert rows == 0


def _count():  # type: ignore[no-untyped-def]
    rows = yield Query("SELECT COUNT(*) FROM suppression_history")
    return int(rows[0][0])


def test_an_adapter_names_the_events_that_change_its_own_list(tracker: Tracker) -> None:
    """A provider event that says the provider added or removed an address (Resend's
    ``suppression.added``/``removed`` are of this kind) feeds the list as provider-sync."""
    from unimailtrack.adapters import register

    class Listing(MemoryAdapter):
        name = "listing-test"

        @classmethod
        def list_change(cls, provider_event: str, type: EventType) -> str | None:
            return {"list.added": "added", "list.removed": "lifted"}.get(provider_event)

    register("listing-test", Listing)

    def change(name: str, at: int) -> EmailEvent:
        return EmailEvent(
            provider="listing-test",
            type=EventType.UNKNOWN,
            provider_event=name,
            recipient="ann@example.com",
            event_id=f"{name}-{at}",
            timestamp=T0 + timedelta(seconds=at),
            raw={},
        )

    tracker.ingest([change("list.added", 1)])
    found = tracker.suppression("ann@example.com")
    assert found is not None and (found.source, found.scope) == ("provider-sync", None)
    tracker.ingest([change("list.removed", 2)])
    assert tracker.suppression("ann@example.com") is None
    # An older removal lifts nothing, whatever order it arrives in.
    tracker.ingest([change("list.added", 5), change("list.removed", 3)])
    assert tracker.suppression("ann@example.com") is not None


def test_an_address_repeated_across_chunks_of_a_first_import_stands_once(
    tracker: Tracker,
) -> None:
    rows: list[dict[str, str]] = [{"address": f"r{i}@example.com"} for i in range(21_000)]
    rows.append(
        {"address": "r5@example.com", "cause": "complained", "created_at": "2020-01-01T00:00:00Z"}
    )
    report = tracker.import_suppressions(rows, dry_run=False)
    assert (report.new, report.updated, report.unchanged) == (21_000, 1, 0)
    assert tracker.suppressions(limit=1).total == 21_000
    found = tracker.suppression("r5@example.com")
    assert found is not None and found.cause == "complained"  # the earlier one stands
    assert [c.action for c in tracker.suppression_history("r5@example.com")] == ["added"] * 2
