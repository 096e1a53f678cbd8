"""Live updates and the async twins."""

from __future__ import annotations

import asyncio
import dataclasses
import queue
import threading
from datetime import timedelta

import pytest
from tracking_support import T0, Store, event

from unimailtrack import DeliveryStatus, Email, Mailer, fold
from unimailtrack.adapters.memory import MemoryAdapter
from unimailtrack.tracking import StateChange, Tracker, _live
from unimailtrack.tracking._live import decode_changes, encode_changes

WAIT = 10.0
"""Seconds to wait for a notification from another connection before giving up."""


def test_subscribers_hear_each_committed_change(tracker: Tracker) -> None:
    heard: list[StateChange] = []
    unsubscribe = tracker.subscribe(heard.append)
    tracker.ingest([event("delivered", at=5), event("opened", "t2", at=6)])
    assert [(c.tracking_id, c.previous, c.status) for c in heard] == [
        ("t1", None, DeliveryStatus.DELIVERED),
        ("t2", None, DeliveryStatus.OPENED),
    ]
    unsubscribe()
    unsubscribe()
    tracker.ingest([event("clicked", at=7)])
    assert len(heard) == 2


def test_a_failing_subscriber_does_not_stop_the_others(
    tracker: Tracker, caplog: pytest.LogCaptureFixture
) -> None:
    heard: list[StateChange] = []

    def broken(change: StateChange) -> None:
        raise RuntimeError("screen went away")

    tracker.subscribe(broken)
    tracker.subscribe(heard.append)
    result = tracker.ingest([event("delivered")])
    assert result.new == 1
    assert len(heard) == 1
    assert "subscriber failed" in caplog.text


def test_changes_from_another_process_arrive_through_postgres(store: Store) -> None:
    listener, writer = store.open(), store.open()
    heard: queue.Queue[StateChange] = queue.Queue()
    listener.subscribe(heard.put)
    writer.ingest([event("delivered", "remote", at=5, reason="250 OK")])
    if store.backend == "sqlite":
        # SQLite carries no notifications: another tracker reads the change from the file.
        assert heard.empty()
        assert listener.state("remote").status is DeliveryStatus.DELIVERED
        return
    change = heard.get(timeout=WAIT)
    assert (change.tracking_id, change.status, change.reason) == (
        "remote",
        DeliveryStatus.DELIVERED,
        "250 OK",
    )
    assert change.timestamp == T0 + timedelta(seconds=5)
    # A tracker does not hear its own changes twice.
    own: list[StateChange] = []
    writer.subscribe(own.append)
    writer.ingest([event("opened", "mine", at=6)])
    assert heard.get(timeout=WAIT).tracking_id == "mine"
    assert [c.tracking_id for c in own] == ["mine"]


@pytest.mark.parametrize("encoder", ["installed", "stdlib"])
def test_a_bounce_with_the_longest_reason_in_emoji_is_stored_and_heard(
    store: Store, encoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Escaped by the standard library, 1,000 four-byte characters take 12,000 bytes, over
    PostgreSQL's NOTIFY limit: the reason in the notification is cut to fit, and the batch is
    stored (it was refused as content), the state keeping the whole reason."""
    if encoder == "stdlib":
        monkeypatch.setattr(_live, "_encode_item", _live._ascii_item)
    listener, writer = store.open(), store.open()
    heard: queue.Queue[StateChange] = queue.Queue()
    listener.subscribe(heard.put)
    reason = "\U0001f6ab" * 3000
    writer.ingest([event("bounced", "emoji", bounce="hard", reason=reason)])
    assert writer.state("emoji").reason == reason
    if store.backend == "postgres":
        change = heard.get(timeout=WAIT)
        assert change.reason is not None and reason.startswith(change.reason)


def round_trip(origin: str, changes: list[StateChange]) -> list[StateChange]:
    """``changes`` through NOTIFY payloads: more than one, each under PostgreSQL's 8,000-byte
    limit, naming ``origin``, with every change in order."""
    payloads = encode_changes(origin, changes)
    assert len(payloads) > 1
    assert all(len(p.encode()) < 8000 for p in payloads)
    assert {decode_changes(p)[0] for p in payloads} == {origin}
    decoded = [c for p in payloads for c in decode_changes(p)[1]]
    assert [c.tracking_id for c in decoded] == [c.tracking_id for c in changes]
    return decoded


def test_notification_payloads_stay_under_the_limit() -> None:
    changes = [
        StateChange(
            tracking_id=f"{i:032x}",
            recipient=f"user{i}@example.com",
            bulk_id="b" * 32,
            previous=DeliveryStatus.ACCEPTED,
            status=DeliveryStatus.BOUNCED,
            reason=("550 mailbox unavailable " * 20) if i % 7 else "x" * 20_000,
            event_id=f"ev-{i}",
            timestamp=T0,
        )
        for i in range(300)
    ]
    decoded = round_trip("origin", changes)
    assert decoded[1] == changes[1]
    assert decoded[0].reason == "x" * 1000


@pytest.mark.parametrize("encoder", ["installed", "stdlib"])
def test_payloads_count_bytes_not_characters_whatever_the_encoder(
    encoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reason in four-byte characters is four times its length on the wire: the payloads
    must stay under the limit in bytes, with orjson (raw UTF-8) or the standard library's
    ASCII escapes, and decode to the same changes."""
    if encoder == "stdlib":
        monkeypatch.setattr(_live, "_encode_item", _live._ascii_item)
    changes = [
        StateChange(
            tracking_id=f"{i:032x}",
            recipient=f"üser{i}@exämple.com",
            bulk_id=None,
            previous=None,
            status=DeliveryStatus.DEFERRED,
            reason="\U0001f4e8" * (900 if i % 5 == 0 else 40),
            event_id=f"ev-{i}",
            timestamp=T0,
        )
        for i in range(200)
    ]
    decoded = round_trip("örigin", changes)
    for got, sent in zip(decoded, changes, strict=True):
        assert sent.reason is not None and got.reason is not None
        if len(sent.reason) <= 40:
            assert got == sent
        else:  # cut to what fits, from the start
            assert 0 < len(got.reason) <= 1000 and sent.reason.startswith(got.reason)
            assert dataclasses.replace(got, reason=sent.reason) == sent


def test_the_async_iterator_yields_changes_in_order(store: Store) -> None:
    async def scenario() -> list[StateChange]:
        tracker = store.open()
        async with tracker.changes() as changes:
            await tracker.aingest([event("delivered", at=1)])
            await tracker.aingest([event("opened", at=2), event("processed", at=0)])
            seen = [await asyncio.wait_for(changes.__anext__(), WAIT) for _ in range(2)]
        await tracker.aclose()
        return seen

    seen = asyncio.run(scenario())
    assert [(c.previous, c.status) for c in seen] == [
        (None, DeliveryStatus.DELIVERED),
        (DeliveryStatus.DELIVERED, DeliveryStatus.OPENED),
    ]


def test_the_async_iterator_hears_changes_made_on_other_threads(tracker: Tracker) -> None:
    async def scenario() -> StateChange:
        async with tracker.changes() as changes:
            writer = threading.Thread(target=tracker.ingest, args=([event("clicked")],))
            writer.start()
            change = await asyncio.wait_for(changes.__anext__(), WAIT)
            writer.join()
            return change

    assert asyncio.run(scenario()).status is DeliveryStatus.CLICKED


def test_every_operation_has_an_async_twin(store: Store) -> None:
    memory = MemoryAdapter()
    email = Email(sender="e@example.com", to=["Ada <ada@example.com>"], subject="Hi", text=".")

    async def scenario() -> None:
        tracker = store.open()
        result = await memory.asend(email)
        await tracker.arecord_send(email, result)
        tid = result.recipients[0].tracking_id
        events = [
            event("deferred", tid, at=1),
            event("bounced", tid, at=9, bounce="hard", recipient="ada@example.com"),
        ]
        assert (await tracker.aingest(events)).new == 2
        assert await tracker.acount_events() == 2
        state = await tracker.astate(tid)
        assert state == fold(events, now=store.clock.now)
        assert await tracker.atimeline(tid) == events
        record = await tracker.asend(tid)
        assert record is not None
        assert (record.subject, record.status) == ("Hi", DeliveryStatus.BOUNCED)
        assert (await tracker.ahistory("ada@example.com")).total == 1
        assert (await tracker.areport(status="bounced")).total == 1
        assert (await tracker.abulk_stats(result.bulk_id)).bounced == 1
        assert len(await tracker.abulk_rows(result.bulk_id, sort="name")) == 1
        assert await tracker.adomain_alerts(threshold=1, now=T0 + timedelta(hours=1)) != []
        found = await tracker.asuppressions_for(["ada@example.com"])
        assert list(found) == ["ada@example.com"]
        assert await tracker.asuppression("ada@example.com") is not None
        assert await tracker.aunsuppress("ada@example.com") is not None
        await tracker.asuppress("bob@example.com", "by hand")
        assert (await tracker.asuppressions()).total == 1
        assert await tracker.acorrect_address("bob@example.com", "rob@example.com") is not None
        letter = await tracker.arecord_dead_letter("memory", b"{", {}, "not JSON")
        assert [d.id for d in await tracker.adead_letters()] == [letter]
        assert await tracker.adiscard_dead_letter(letter)
        assert await tracker.asweep() == 0
        await tracker.aclose()
        await memory.aclose()

    asyncio.run(scenario())


def test_async_context_manager_closes_the_tracker(store: Store) -> None:
    async def scenario() -> None:
        async with store.open() as tracker:
            await tracker.aingest([event("delivered")])

    asyncio.run(scenario())


def test_a_mailer_and_a_tracker_work_together_end_to_end(tracker: Tracker) -> None:
    memory = MemoryAdapter()
    with Mailer(memory, tracker=tracker) as mailer:
        result = mailer.send(
            Email(sender="e@example.com", to=["a@example.com", "b@example.com"], text=".")
        )
    heard: list[StateChange] = []
    tracker.subscribe(heard.append)
    for recipient, scenario in zip(result.recipients, ("delivered", "bounce"), strict=True):
        body, headers = memory.webhook(memory.scenario(recipient.tracking_id, scenario))
        tracker.ingest(memory.unwrap(body, headers))
    assert [c.status for c in heard] == [DeliveryStatus.DELIVERED, DeliveryStatus.BOUNCED]
    assert tracker.suppression("b@example.com") is not None


def test_async_methods_work_from_one_event_loop_after_another(store: Store) -> None:
    tracker = store.open()

    async def count() -> int:
        return await tracker.acount_events()

    tracker.ingest([event("delivered")])
    assert asyncio.run(count()) == 1
    assert asyncio.run(count()) == 1  # the first loop has ended: a new pool serves this one


def test_a_sync_close_inside_the_event_loop_finishes_in_the_background(store: Store) -> None:
    async def scenario() -> None:
        tracker = store.open()
        await tracker.aingest([event("delivered")])
        tracker.close()
        await asyncio.sleep(0)

    asyncio.run(scenario())
