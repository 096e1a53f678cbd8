"""Ingestion: idempotent, order-independent, atomic, and joined to sends whenever they come."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from tracking_support import T0, Store, event

from unimailtrack import (
    DeliveryStatus,
    Email,
    EmailEvent,
    EventType,
    RecipientResult,
    SendResult,
    fold,
)
from unimailtrack.tracking import StoreError, Tracker
from unimailtrack.tracking._providers import PLAIN


def _send(
    tracker: Tracker,
    *recipients: tuple[str, str],
    provider: str = "memory",
    message_id: str | None = "msg-1",
    bulk_id: str = "bulk-1",
) -> SendResult:
    """Record a send of one e-mail to (tracking id, address) pairs."""
    email = Email(
        sender="Events <events@example.com>",
        to=[address for _, address in recipients],
        subject="You're invited",
        text="Come along",
        category="rsvp_invite",
        metadata={"event_id": "42"},
    )
    result = SendResult(
        bulk_id=bulk_id,
        recipients=[
            RecipientResult(
                recipient=address,
                tracking_id=tid,
                status=DeliveryStatus.ACCEPTED,
                message_id=message_id,
                provider=provider,
            )
            for tid, address in recipients
        ],
    )
    tracker.record_send(email, result)
    return result


def test_an_event_twice_is_stored_once(tracker: Tracker) -> None:
    delivered = event("delivered", at=10)
    first = tracker.ingest([delivered])
    assert (first.new, first.duplicates) == (1, 0)
    again = tracker.ingest([delivered, delivered])
    assert (again.new, again.duplicates) == (0, 2)
    assert tracker.count_events() == 1


def test_duplicates_within_one_batch_count_once(tracker: Tracker) -> None:
    opened = event("opened", at=5)
    result = tracker.ingest([opened, opened, event("delivered", at=1)])
    assert (result.new, result.duplicates) == (2, 1)
    assert tracker.count_events() == 2


def test_an_empty_batch_writes_nothing(tracker: Tracker) -> None:
    result = tracker.ingest([])
    assert (result.new, result.duplicates, result.changes) == (0, 0, ())


def test_state_is_the_fold_of_the_stored_events_in_any_order(tracker: Tracker) -> None:
    events = [
        event("processed", at=1),
        event("delivered", at=2, reason="250 OK"),
        event("opened", at=30),
        event("bounced", at=20, bounce="hard", reason="550 5.1.1 user unknown"),
    ]
    for item in reversed(events):
        tracker.ingest([item])
    state = tracker.state("t1")
    assert state.status is DeliveryStatus.OPENED
    assert state == fold(events, now=tracker._now(), deferred_expiry=tracker.deferred_expiry)


def test_timeline_is_oldest_first_with_every_field(tracker: Tracker) -> None:
    late = event(
        "clicked",
        at=50,
        url="https://example.com/rsvp",
        user_agent="Mozilla/5.0",
        machine=False,
        tags=["invite"],
        metadata={"contact_id": "7"},
        message_id="m-1",
        attempt=2,
        smtp_status="2.0.0",
    )
    early = event("delivered", at=10, reason="250 2.0.0 OK")
    tracker.ingest([late, early])
    timeline = tracker.timeline("t1")
    assert timeline == [early, late]
    assert tracker.timeline("nobody") == []


def test_a_higher_precedence_event_wins_even_when_older(tracker: Tracker) -> None:
    tracker.ingest([event("opened", at=100)])
    tracker.ingest([event("delivered", at=200)])
    assert tracker.state("t1").status is DeliveryStatus.OPENED


def test_within_a_rank_the_later_event_decides(tracker: Tracker) -> None:
    tracker.ingest([event("bounced", at=20, bounce="soft", reason="later")])
    tracker.ingest([event("dropped", at=10, reason="earlier")])
    state = tracker.state("t1")
    assert (state.status, state.reason) == (DeliveryStatus.BOUNCED, "later")


def test_events_before_their_send_join_it_by_tracking_id(tracker: Tracker) -> None:
    tracker.ingest([event("delivered", "t-early", at=5, recipient="ada@example.com")])
    _send(tracker, ("t-early", "Ada@Example.com"))
    [row] = tracker.history("ada@example.com").items
    assert (row.tracking_id, row.status) == ("t-early", DeliveryStatus.DELIVERED)
    assert row.recipient == "Ada@Example.com"


def test_events_without_tracking_id_join_by_provider_message_id(tracker: Tracker) -> None:
    _send(tracker, ("t-a", "ada@example.com"), ("t-b", "bob@example.com"), message_id="M1")
    result = tracker.ingest(
        [
            event("delivered", None, at=3, message_id="M1", recipient="ada@example.com"),
            event(
                "bounced", None, at=4, message_id="M1", recipient="BOB@example.com", bounce="soft"
            ),
        ]
    )
    assert result.new == 2
    assert tracker.state("t-a").status is DeliveryStatus.DELIVERED
    assert tracker.state("t-b").status is DeliveryStatus.BOUNCED
    assert {c.tracking_id for c in result.changes} == {"t-a", "t-b"}


def test_events_without_tracking_id_wait_for_their_send(tracker: Tracker) -> None:
    waiting = event("opened", None, at=9, message_id="M2", recipient="ada@example.com")
    assert tracker.ingest([waiting]).changes == ()
    assert tracker.count_events() == 1
    seen: list[object] = []
    tracker.subscribe(seen.append)
    _send(tracker, ("t-late", "ada@example.com"), message_id="M2")
    state = tracker.state("t-late")
    assert state.status is DeliveryStatus.OPENED
    assert [e.event_id for e in state.timeline] == [waiting.event_id]
    [row] = tracker.history("ada@example.com").items
    assert row.status is DeliveryStatus.OPENED
    assert len(seen) == 1


def test_the_message_key_of_the_provider_adapter_is_used(tracker: Tracker) -> None:
    # SendGrid reports "<id>.filter..." in events for the X-Message-Id a send returned.
    _send(tracker, ("t-sg", "ada@example.com"), provider="sendgrid", message_id="14c5d75ce93")
    waiting = event(
        "delivered",
        None,
        provider="sendgrid",
        message_id="14c5d75ce93.filter0001p3las1-27574-5E2D5A1B-3.0",
        recipient="ada@example.com",
    )
    tracker.ingest([waiting])
    assert tracker.state("t-sg").status is DeliveryStatus.DELIVERED


class _Rules:
    """Provider rules of the tracker's builder: acme-mail's events carry "<id>/<suffix>"."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def message_key(self, provider: str) -> Callable[[str], str]:
        self.asked.append(provider)
        return (lambda message_id: message_id.split("/")[0]) if provider == "acme-mail" else str

    def list_change(self, provider: str) -> None:
        return None


def test_the_tracker_uses_the_provider_rules_its_builder_hands_it(store: Store) -> None:
    rules = _Rules()
    tracker = store.open(providers=rules)
    _send(tracker, ("t-acme", "ada@example.com"), provider="acme-mail", message_id="A-1")
    decorated = event("delivered", None, provider="acme-mail", message_id="A-1/relay-7")
    tracker.ingest([decorated])
    assert tracker.state("t-acme").status is DeliveryStatus.DELIVERED
    assert rules.asked == ["acme-mail"]


def test_with_plain_rules_a_decorated_sendgrid_id_does_not_join(store: Store) -> None:
    tracker = store.open(providers=PLAIN)
    _send(tracker, ("t-sg", "ada@example.com"), provider="sendgrid", message_id="14c5d75ce93")
    tracker.ingest([event("delivered", None, provider="sendgrid", message_id="14c5d75ce93.f0")])
    assert tracker.state("t-sg").status is not DeliveryStatus.DELIVERED


def test_an_unknown_provider_joins_by_the_id_as_is(tracker: Tracker) -> None:
    _send(tracker, ("t-x", "ada@example.com"), provider="acme-mail", message_id="X-9")
    tracker.ingest([event("delivered", None, provider="acme-mail", message_id="X-9")])
    assert tracker.state("t-x").status is DeliveryStatus.DELIVERED


def test_events_about_no_recipient_are_kept_but_touch_no_state(tracker: Tracker) -> None:
    account = event("unknown", None, recipient="", reason="account_status_change")
    stray = event("unknown", "t1", recipient="")
    result = tracker.ingest([account, stray])
    assert (result.new, result.changes) == (2, ())
    assert tracker.count_events() == 2
    assert tracker.history("").total == 0


def test_a_store_failure_half_way_raises_store_error_and_keeps_nothing(store: Store) -> None:
    tracker = store.open()
    tracker.ingest([event("delivered", at=1)])
    # The events go in, then folding them into their states fails: all of it is undone.
    _admin(store, "ALTER TABLE messages RENAME TO messages_away")
    with pytest.raises(StoreError):
        tracker.ingest([event("opened", at=2), event("clicked", "t2", at=3)])
    _admin(store, "ALTER TABLE messages_away RENAME TO messages")
    assert tracker.count_events() == 1
    assert tracker.state("t1").status is DeliveryStatus.DELIVERED
    assert tracker.timeline("t2") == []


def _admin(store: Store, sql: str) -> None:
    if store.backend == "sqlite":
        import sqlite3

        conn = sqlite3.connect(store.url.removeprefix("sqlite:///"))
        try:
            conn.execute(sql)
            conn.commit()
        finally:
            conn.close()
        return
    import psycopg

    from unimailtrack.tracking._postgres import parse_postgres_url

    conninfo, options = parse_postgres_url(store.url)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"SET search_path = {options['schema']}")
        conn.execute(sql)


def test_deferred_expires_on_read_and_sweep_persists_it(store: Store) -> None:
    tracker = store.open(deferred_expiry=timedelta(hours=72))
    _send(tracker, ("t1", "ada@example.com"))
    tracker.ingest([event("deferred", at=T0 + timedelta(hours=1), reason="451 try later")])
    store.clock.now = T0 + timedelta(hours=50)
    assert tracker.state("t1").status is DeliveryStatus.DEFERRED
    assert tracker.history("ada@example.com")[0].status is DeliveryStatus.DEFERRED

    store.clock.now = T0 + timedelta(hours=74)
    state = tracker.state("t1")
    assert (state.status, state.reason, state.expired) == (DeliveryStatus.FAILED, "expired", True)
    row = tracker.history("ada@example.com")[0]
    assert (row.status, row.reason) == (DeliveryStatus.FAILED, "expired")
    assert row.updated_at == T0 + timedelta(hours=73)

    changes: list[object] = []
    tracker.subscribe(changes.append)
    assert tracker.sweep() == 1
    assert tracker.sweep() == 0
    assert len(changes) == 1
    assert tracker.report(status="failed").total == 1

    # A delivery after all: it outranks the deferral the expiry stood on.
    tracker.ingest([event("delivered", at=T0 + timedelta(hours=80))])
    assert tracker.history("ada@example.com")[0].status is DeliveryStatus.DELIVERED
    assert tracker.state("t1").status is DeliveryStatus.DELIVERED


def test_a_new_deferral_after_a_sweep_starts_the_window_again(store: Store) -> None:
    tracker = store.open(deferred_expiry=timedelta(hours=1))
    _send(tracker, ("t1", "ada@example.com"))
    tracker.ingest([event("deferred", at=T0)])
    store.clock.now = T0 + timedelta(hours=2)
    assert tracker.sweep() == 1
    tracker.ingest([event("deferred", at=T0 + timedelta(hours=1, minutes=30))])
    row = tracker.history("ada@example.com")[0]
    assert row.status is DeliveryStatus.DEFERRED
    assert tracker.state("t1").status is DeliveryStatus.DEFERRED


def test_changes_report_the_previous_and_new_badge(tracker: Tracker) -> None:
    _send(tracker, ("t1", "ada@example.com"))
    first = tracker.ingest([event("delivered", at=5, reason="250 OK")])
    [change] = first.changes
    assert (change.previous, change.status) == (DeliveryStatus.ACCEPTED, DeliveryStatus.DELIVERED)
    assert (change.recipient, change.bulk_id, change.reason) == (
        "ada@example.com",
        "bulk-1",
        "250 OK",
    )
    assert change.timestamp == T0 + timedelta(seconds=5)
    assert tracker.ingest([event("processed", at=1)]).changes == ()


def test_ingest_accepts_any_iterable(tracker: Tracker) -> None:
    result = tracker.ingest(event("delivered", f"t{i}", at=i) for i in range(3))
    assert result.new == 3


def test_an_unknown_event_does_not_hide_the_send_outcome(tracker: Tracker) -> None:
    _send(tracker, ("t1", "ada@example.com"))
    tracker.ingest([event(EventType.UNKNOWN, at=5, reason="new provider event")])
    assert tracker.history("ada@example.com")[0].status is DeliveryStatus.ACCEPTED
    assert tracker.state("t1").status is DeliveryStatus.UNKNOWN


def test_a_batch_of_new_and_stored_events_reports_only_the_new(tracker: Tracker) -> None:
    stored = [event("processed", at=1), event("delivered", at=2)]
    tracker.ingest(stored)
    opened = event("opened", at=3, user_agent="Mail")
    result = tracker.ingest([*stored, opened])
    assert (result.new, result.duplicates) == (1, 2)
    assert [c.event_id for c in result.changes] == [opened.event_id]
    assert tracker.state("t1").opens == 1
    assert tracker.timeline("t1") == [*stored, opened]


def test_empty_fields_are_stored_as_null_whatever_float_adapter_is_registered(
    tmp_path: Path,
) -> None:
    # Registering an adapter for float changes how the sqlite3 module binds every value for
    # the rest of the process, hence a process of its own.
    script = f"""
import sqlite3, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from tracking_support import event
from unimailtrack.tracking import Tracker

for name in ("plain", "adapted"):
    if name == "adapted":
        sqlite3.register_adapter(float, repr)
    with Tracker.open("sqlite:///{tmp_path / "adapted.sqlite3"}") as tracker:
        tracker.ingest([event("delivered", name)])
        assert tracker.timeline(name)[0].reason is None
conn = sqlite3.connect("{tmp_path / "adapted.sqlite3"}")
print(conn.execute("SELECT typeof(reason), typeof(url) FROM events").fetchall())
conn.close()
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[('null', 'null'), ('null', 'null')]"


@pytest.mark.parametrize("size", [1, 8, 9, 300])
def test_every_batch_size_stores_new_events_once_and_all_or_nothing(
    store: Store, size: int
) -> None:
    """Batches of a few events and larger ones go to PostgreSQL differently (one statement of
    scalar parameters; a claim of the ids and a COPY): both store each new event once, say
    which were new and fold them, and a failure after the events went in undoes all of it."""
    tracker = store.open()
    events = [event("delivered", f"t{i}", at=i, recipient=f"u{i}@example.com") for i in range(size)]
    first = tracker.ingest(events[: size // 2 + 1])
    assert (first.new, first.duplicates) == (size // 2 + 1, 0)
    again = tracker.ingest(events)
    assert (again.new, again.duplicates) == (size - (size // 2 + 1), size // 2 + 1)
    assert tracker.count_events() == size
    assert tracker.state(f"t{size - 1}").status is DeliveryStatus.DELIVERED

    opened = [
        event("opened", f"t{i}", at=size + i, recipient=f"u{i}@example.com") for i in range(size)
    ]
    _admin(store, "ALTER TABLE messages RENAME TO messages_away")
    with pytest.raises(StoreError):
        tracker.ingest(opened)
    _admin(store, "ALTER TABLE messages_away RENAME TO messages")
    assert tracker.count_events() == size
    assert tracker.state("t0").status is DeliveryStatus.DELIVERED
    retried = tracker.ingest(opened)  # the ids the failed batch claimed were given back
    assert (retried.new, retried.duplicates) == (size, 0)
    assert tracker.state("t0").status is DeliveryStatus.OPENED


def _opens(count: int) -> list[EmailEvent]:
    """An open of each of ``count`` sends, event ids in the order of the sends."""
    return [
        event("opened", f"t{i:04d}", at=i, recipient=f"u{i}@example.com", event_id=f"e{i:04d}")
        for i in range(count)
    ]


@pytest.mark.parametrize(
    "stored",
    [
        pytest.param(lambda i: i % 3 == 0, id="every-third"),
        pytest.param(lambda i: i >= 2_600, id="the-last-statements-all-stored"),
        pytest.param(lambda i: i < 2_999, id="all-but-the-last"),
        pytest.param(lambda i: i > 0, id="all-but-the-first"),
    ],
)
def test_a_large_batch_says_exactly_which_events_were_new(
    store: Store, stored: Callable[[int], bool]
) -> None:
    """A batch of 3,000 events goes to the database as several statements; whichever of them
    insert nothing, some or all, the batch reports and folds exactly the events that were
    not stored before, and no stored event a second time."""
    tracker = store.open()
    opened = _opens(3_000)
    before = [e for i, e in enumerate(opened) if stored(i)]
    tracker.ingest(before)
    result = tracker.ingest(reversed(opened))
    fresh = {e.event_id for i, e in enumerate(opened) if not stored(i)}
    assert (result.new, result.duplicates) == (len(fresh), len(before))
    assert {c.event_id for c in result.changes} == fresh
    assert tracker.count_events() == 3_000
    for i in (0, 1, 1_499, 2_599, 2_600, 2_999):
        assert tracker.state(f"t{i:04d}").opens == 1


_REFUSE_THE_LAST = {
    "sqlite": [
        "CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.event_id = 'e2999' "
        "BEGIN SELECT RAISE(ABORT, 'refused'); END"
    ],
    "postgres": [
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.event_id = 'e2999' THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$",
        "CREATE TRIGGER refuse BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION refuse()",
    ],
}
"""A trigger that refuses the event ``e2999``, per backend."""
_STOP_REFUSING = {"sqlite": "DROP TRIGGER refuse", "postgres": "DROP TRIGGER refuse ON events"}


def test_a_large_batch_refused_in_its_last_statement_keeps_nothing(store: Store) -> None:
    """The database refuses the last event of a 3,000-event batch, after the statements
    before it went in: none of the batch is kept, and once the database takes it, the same
    batch is stored whole and counted new, the events stored before it as duplicates."""
    tracker = store.open()
    opened = _opens(3_000)
    tracker.ingest(opened[:10])
    for sql in _REFUSE_THE_LAST[store.backend]:
        _admin(store, sql)
    with pytest.raises(StoreError):
        tracker.ingest(opened)
    assert tracker.count_events() == 10
    assert tracker.state("t0100").status is DeliveryStatus.UNKNOWN
    _admin(store, _STOP_REFUSING[store.backend])
    result = tracker.ingest(opened)
    assert (result.new, result.duplicates, len(result.changes)) == (2_990, 10, 2_990)
    assert tracker.count_events() == 3_000
    assert tracker.state("t2999").opens == 1


@pytest.mark.parametrize("size", [1, 9, 300])
def test_every_batch_size_stores_new_events_once_on_the_async_path(store: Store, size: int) -> None:
    """The async path writes a few events and many as the sync path does (see above)."""
    tracker = store.open()
    events = [event("delivered", f"t{i}", at=i, recipient=f"u{i}@example.com") for i in range(size)]

    async def twice() -> tuple[tuple[int, int], tuple[int, int]]:
        first = await tracker.aingest(events[: size // 2 + 1])
        again = await tracker.aingest(events)
        return (first.new, first.duplicates), (again.new, again.duplicates)

    first, again = asyncio.run(twice())
    assert first == (size // 2 + 1, 0)
    assert again == (size - (size // 2 + 1), size // 2 + 1)
    assert tracker.count_events() == size
    assert tracker.state(f"t{size - 1}").status is DeliveryStatus.DELIVERED


def test_raw_payloads_with_keys_that_are_not_text_and_huge_numbers_are_stored(
    tracker: Tracker,
) -> None:
    """A hand-built event's raw may hold what JSON has no key or number for; it is stored as
    the standard library writes it (keys as text), never refused."""
    odd = dataclasses.replace(event("delivered", at=1), raw={1: "one", "n": 2**70, "when": T0})
    tracker.ingest([odd])
    [stored] = tracker.timeline("t1")
    assert stored.raw == {"1": "one", "n": 2**70, "when": str(T0)}
