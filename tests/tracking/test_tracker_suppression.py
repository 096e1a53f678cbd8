"""The suppression list, and the tracker as the mailer's send log."""

from __future__ import annotations

from datetime import timedelta

import pytest
from tracking_support import T0, Store, event

from unimailtrack import (
    DeliveryStatus,
    Email,
    EventType,
    InvalidAddress,
    Mailer,
    Suppression,
)
from unimailtrack.adapters.memory import MemoryAdapter
from unimailtrack.tracking import Tracker


@pytest.mark.parametrize(
    ("kind", "bounce"),
    [("bounced", "hard"), ("complained", None), ("unsubscribed", None)],
)
def test_hard_bounces_complaints_and_unsubscribes_suppress(
    tracker: Tracker, kind: str, bounce: str | None
) -> None:
    cause = event(kind, at=5, recipient="Ada@Example.COM", bounce=bounce, reason="why")
    tracker.ingest([cause])
    found = tracker.suppression("Ada@example.com")
    scope = "default" if kind == "unsubscribed" else None
    assert found == Suppression(
        address="Ada@Example.COM",
        reason="why",
        cause=EventType(kind),
        created_at=T0 + timedelta(seconds=5),
        scope=scope,
        source="event",
        provider="memory",
        event_id=cause.event_id,
        tracking_id="t1",
    )
    # The domain compares case-insensitively, the local part as written.
    assert tracker.suppression("ada@example.com") is None


@pytest.mark.parametrize("bounce", ["soft", "block", "undetermined", None])
def test_other_bounces_never_suppress(tracker: Tracker, bounce: str | None) -> None:
    tracker.ingest([event("bounced", at=5, bounce=bounce), event("dropped", at=6)])
    tracker.ingest([event("deferred", at=7), event("failed", at=8)])
    assert tracker.suppression("ada@example.com") is None


def test_the_earliest_cause_is_kept_whatever_the_order(tracker: Tracker) -> None:
    late = event("complained", at=50)
    early = event("bounced", "t0", at=10, bounce="hard", reason="550 gone")
    tracker.ingest([late])
    tracker.ingest([early])
    found = tracker.suppression("ada@example.com")
    assert found is not None
    assert (found.cause, found.event_id) == (EventType.BOUNCED, early.event_id)


def test_unsuppress_and_correcting_an_address_lift_it(tracker: Tracker) -> None:
    cause = event("bounced", at=5, bounce="hard")
    tracker.ingest([cause, event("complained", "t2", at=6, recipient="bob@example.com")])
    lifted = tracker.unsuppress("ada@EXAMPLE.com")
    assert lifted is not None and lifted.event_id == cause.event_id
    assert tracker.suppression("ada@example.com") is None
    assert tracker.unsuppress("ada@example.com") is None
    # A webhook retry of the old event does not suppress again: it is a duplicate.
    tracker.ingest([cause])
    assert tracker.suppression("ada@example.com") is None

    assert tracker.correct_address("bob@example.com", "robert@example.com") is not None
    assert tracker.suppression("bob@example.com") is None
    with pytest.raises(InvalidAddress):
        tracker.correct_address("bob@example.com", "robert at example")


def test_manual_suppressions_are_listed_newest_first(store: Store) -> None:
    tracker = store.open()
    made = tracker.suppress("Zed@Example.com", "asked by phone")
    assert (made.address, made.cause, made.event_id) == ("Zed@example.com", "manual", None)
    assert made.source == "manual"
    assert tracker.suppression("Zed@example.com") == made
    store.clock.advance(timedelta(seconds=1))
    tracker.suppress("amy@example.com", cause="unsubscribed")
    tracker.ingest([event("complained", at=1)])
    page = tracker.suppressions(limit=2)
    assert [s.address for s in page] == ["amy@example.com", "Zed@example.com"]
    assert page.total == 3
    rest = tracker.suppressions(limit=2, cursor=page.next_cursor)
    assert ([s.address for s in rest], rest.next_cursor) == (["ada@example.com"], None)
    with pytest.raises(InvalidAddress):
        tracker.suppress("not an address")


def test_suppressions_for_looks_up_many_addresses_at_once(tracker: Tracker) -> None:
    tracker.ingest([event("complained", f"t{i}", recipient=f"u{i}@example.com") for i in range(3)])
    many = [f"u{i}@Example.com" for i in range(1200)]
    found = tracker.suppressions_for(many)
    assert sorted(found) == ["u0@example.com", "u1@example.com", "u2@example.com"]


def _invite(*to: str, tracked: bool = True) -> Email:
    return Email(
        sender="Events <events@example.com>",
        to=list(to),
        subject="Launch party",
        text="Join us",
        category="rsvp_invite",
        metadata={"event_id": "42"},
        tracked=tracked,
    )


def test_the_mailer_refuses_suppressed_recipients_and_records_every_send(
    tracker: Tracker,
) -> None:
    memory = MemoryAdapter()
    mailer = Mailer(memory, tracker=tracker)
    tracker.ingest([event("bounced", "old", recipient="gone@example.com", bounce="hard")])
    result = mailer.send(
        _invite("Ada <ada@example.com>", "gone@example.com", "Ada <ADA@example.com>")
    )
    statuses = [r.status for r in result.recipients]
    assert statuses == [
        DeliveryStatus.ACCEPTED,
        DeliveryStatus.SUPPRESSED,
        DeliveryStatus.DUPLICATE,
    ]
    assert len(memory.outbox) == 1
    rows = {r.recipient: r for r in tracker.bulk_rows(result.bulk_id)}
    assert rows["ada@example.com"].status is DeliveryStatus.ACCEPTED
    assert rows["ada@example.com"].name == "Ada"
    assert rows["gone@example.com"].status is DeliveryStatus.SUPPRESSED
    assert "suppressed since" in (rows["gone@example.com"].reason or "")
    assert rows["ADA@example.com"].status is DeliveryStatus.DUPLICATE
    stats = tracker.bulk_stats(result.bulk_id)
    assert (stats.recipients, stats.sent, stats.suppressed, stats.duplicates) == (3, 1, 1, 1)

    ada = result.recipients[0].tracking_id
    body, headers = memory.webhook(memory.scenario(ada, "opens-and-clicks"))
    tracker.ingest(memory.unwrap(body, headers))
    assert tracker.state(ada).status is DeliveryStatus.CLICKED
    history = {row.tracking_id: row.status for row in tracker.history("ada@example.com")}
    assert history == {ada: DeliveryStatus.CLICKED, result.recipients[2].tracking_id: "duplicate"}
    mailer.close()


def test_untracked_sends_are_not_recorded(tracker: Tracker) -> None:
    mailer = Mailer(MemoryAdapter(), tracker=tracker)
    mailer.send(_invite("ada@example.com", tracked=False))
    assert tracker.history("ada@example.com").total == 0
    mailer.close()


def test_a_send_recorded_twice_keeps_the_first_record(tracker: Tracker) -> None:
    memory = MemoryAdapter()
    result = memory.send(_invite("ada@example.com"))
    tracker.record_send(_invite("ada@example.com"), result)
    tracker.record_send(_invite("bob@example.com").model_copy(update={"subject": "Other"}), result)
    [row] = tracker.history("ada@example.com")
    assert row.subject == "Launch party"
    memory.close()
