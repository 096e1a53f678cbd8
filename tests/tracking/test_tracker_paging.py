"""Listings are bounded by the page, not by the send: ``bulk_rows`` pages by default, and an
export iterates ``iter_bulk_rows`` page by page; a send's timeline pages (``timeline_page``)
and iterates (``iter_timeline``) the same way, however often its reader opened it.

Memory is checked structurally: every read the store runs is recorded, with how many rows
it returned, so a test sees that no read fetched more than a page and that iterating reads
one page at a time, lazily.
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import timedelta
from itertools import islice
from typing import Any

import pytest
from tracking_support import (
    POSTGRES_URL,
    Store,
    drop_schema,
    event,
    require_postgres,
    send_one,
    with_schema,
)

from unimailtrack import DeliveryStatus, Email, EventType, RecipientResult, SendResult
from unimailtrack.errors import InvalidQuery
from unimailtrack.tracking import Badge, Page, StoreError, Tracker
from unimailtrack.tracking._store import Query
from unimailtrack.tracking._tracker import BULK_PAGE, TIMELINE_PAGE, TIMELINE_READ


class Reads:
    """Wraps a tracker's store: the size of every page each program returned."""

    def __init__(self, tracker: Tracker) -> None:
        self.sizes: list[int] = []
        store = tracker._store
        run, arun = store.run, store.arun

        def counted(result: Any) -> Any:
            if isinstance(result[0], Page):
                self.sizes.append(len(result[0]))
            return result

        self.in_async = 0

        def sync(program: Any, *, write: bool) -> Any:
            result = run(program, write=write)
            # SQLite's async twin runs the sync method on its worker: count it once.
            return result if self.in_async else counted(result)

        async def asynchronous(program: Any, *, write: bool) -> Any:
            self.in_async += 1
            try:
                return counted(await arun(program, write=write))
            finally:
                self.in_async -= 1

        store.run = sync  # type: ignore[method-assign]
        store.arun = asynchronous  # type: ignore[method-assign]


def _bulk(tracker: Tracker, count: int, bulk_id: str = "big") -> list[str]:
    ids = [f"t{i:06d}" for i in range(count)]
    email = Email(sender="events@example.com", to=["x@example.com"], subject="s", text=".")
    tracker.record_send(
        email,
        SendResult(
            bulk_id=bulk_id,
            recipients=[
                RecipientResult(
                    recipient=f"user{i:06d}@example.com",
                    tracking_id=tid,
                    status=DeliveryStatus.ACCEPTED,
                    provider="memory",
                    message_id=f"m-{tid}",
                )
                for i, tid in enumerate(ids)
            ],
        ),
    )
    return ids


def test_bulk_rows_without_a_limit_is_one_bounded_page(store: Store) -> None:
    tracker = store.open()
    _bulk(tracker, BULK_PAGE + 5)
    reads = Reads(tracker)
    page = tracker.bulk_rows("big", sort="email")
    assert len(page) == BULK_PAGE
    assert page.total == BULK_PAGE + 5
    assert page.next_cursor is not None
    rest = tracker.bulk_rows("big", sort="email", cursor=page.next_cursor)
    assert [r.recipient for r in rest] == [f"user{i:06d}@example.com" for i in range(1000, 1005)]
    assert rest.next_cursor is None
    assert reads.sizes == [BULK_PAGE, 5]


def test_an_export_iterates_every_row_in_order_one_page_at_a_time(store: Store) -> None:
    tracker = store.open()
    ids = _bulk(tracker, 250)
    _bulk(tracker, 3, bulk_id="other")
    reads = Reads(tracker)
    rows = tracker.iter_bulk_rows("big", sort="email", page_size=40)
    first = [next(rows) for _ in range(40)]
    assert reads.sizes == [40]  # lazy: nothing beyond the first page was read yet
    every = first + list(rows)
    assert [r.tracking_id for r in every] == ids
    assert reads.sizes == [40] * 6 + [10]
    assert max(reads.sizes) <= 40
    backwards = tracker.iter_bulk_rows("big", sort="email", descending=True, page_size=64)
    assert [r.tracking_id for r in backwards] == ids[::-1]


def test_the_async_export_pages_the_same_way(store: Store) -> None:
    tracker = store.open()
    ids = _bulk(tracker, 130)
    reads = Reads(tracker)

    async def export() -> list[str]:
        try:
            return [r.tracking_id async for r in tracker.aiter_bulk_rows("big", page_size=50)]
        finally:
            await tracker.aclose()

    assert sorted(asyncio.run(export())) == ids
    assert reads.sizes == [50, 50, 30]


# --------------------------------------------------------------------------- timelines


def _opened_often(tracker: Tracker, count: int, tracking_id: str = "t1") -> None:
    """A delivery, then ``count`` opens and clicks in bursts that share their second (so that
    rank and then event id order them), stored in several batches, out of order."""
    events = [event(EventType.DELIVERED, tracking_id, at=0)]
    for n in range(count - 1):
        kind = EventType.CLICKED if n % 3 == 0 else EventType.OPENED
        events.append(event(kind, tracking_id, at=1 + n // 4, event_id=f"{tracking_id}-{n:05d}"))
    events.reverse()
    for start in range(0, len(events), 97):
        tracker.ingest(events[start : start + 97])


def test_timeline_pages_end_to_end_are_the_timeline(store: Store) -> None:
    tracker = store.open()
    _opened_often(tracker, 250)
    _opened_often(tracker, 7, tracking_id="t2")  # another send's events stay out
    reads = Reads(tracker)
    pages = [tracker.timeline_page("t1", limit=40)]
    while pages[-1].next_cursor is not None:
        pages.append(tracker.timeline_page("t1", cursor=pages[-1].next_cursor, limit=40))
    assert [len(p) for p in pages] == [40] * 6 + [10]
    assert {p.total for p in pages} == {250}
    whole = tracker.timeline("t1")
    assert [e.event_id for p in pages for e in p] == [e.event_id for e in whole]
    assert [e for p in pages for e in p] == whole
    assert reads.sizes == [40] * 6 + [10]  # no read fetched more than a page
    first = tracker.timeline_page("t1")
    assert len(first) == TIMELINE_PAGE and first.total == 250


def test_an_empty_or_unknown_timeline_is_one_empty_page(store: Store) -> None:
    tracker = store.open()
    page = tracker.timeline_page("nothing-here")
    assert (page.items, page.next_cursor, page.total) == ((), None, 0)
    assert list(tracker.iter_timeline("nothing-here")) == []


def test_iterating_a_timeline_reads_one_page_at_a_time_lazily(store: Store) -> None:
    tracker = store.open()
    _opened_often(tracker, 130)
    reads = Reads(tracker)
    events = tracker.iter_timeline("t1", page_size=50)
    first = list(islice(events, 50))
    assert reads.sizes == [50]  # lazy: the second page is not read until it is needed
    assert [e.event_id for e in first + list(events)] == [
        e.event_id for e in tracker.timeline("t1")
    ]
    assert reads.sizes == [50, 50, 30]


def test_an_export_of_a_timeline_reads_larger_pages_than_a_screen_shows(store: Store) -> None:
    tracker = store.open()
    _opened_often(tracker, TIMELINE_READ + 5)
    reads = Reads(tracker)
    assert sum(1 for _ in tracker.iter_timeline("t1")) == TIMELINE_READ + 5
    assert reads.sizes == [TIMELINE_READ, 5] and TIMELINE_READ > TIMELINE_PAGE


def test_the_async_timeline_pages_and_iterates_the_same_way(store: Store) -> None:
    tracker = store.open()
    _opened_often(tracker, 75)
    whole = [e.event_id for e in tracker.timeline("t1")]
    reads = Reads(tracker)

    async def read() -> tuple[list[str], list[str]]:
        try:
            page = await tracker.atimeline_page("t1", limit=60)
            rest = await tracker.atimeline_page("t1", cursor=page.next_cursor, limit=60)
            assert rest.next_cursor is None and page.total == rest.total == 75
            paged = [e.event_id for e in (*page, *rest)]
            return paged, [e.event_id async for e in tracker.aiter_timeline("t1", page_size=30)]
        finally:
            await tracker.aclose()

    paged, iterated = asyncio.run(read())
    assert paged == iterated == whole
    assert reads.sizes == [60, 15, 30, 30, 15]


def test_events_stored_while_paging_that_sort_later_come_on_a_later_page(store: Store) -> None:
    tracker = store.open()
    _opened_often(tracker, 30)
    page = tracker.timeline_page("t1", limit=20)
    tracker.ingest([event(EventType.CLICKED, "t1", at=10_000, event_id="late")])
    rest = tracker.timeline_page("t1", cursor=page.next_cursor, limit=20)
    assert [e.event_id for e in rest][-1] == "late" and rest.total == 31
    assert {e.event_id for e in page}.isdisjoint(e.event_id for e in rest)


def test_a_cursor_after_the_longest_and_strangest_ids_stays_short(store: Store) -> None:
    """Ids of up to 255 bytes of any characters: a cursor after one holds it in base64, so
    it stays under the web's bound on a parameter (1,000 characters) and comes back."""
    tracker = store.open()
    ids = ["\x01" * 255, "\U0001f600" * 63, '"\\' * 85, "plain"]
    tracker.ingest([event(EventType.OPENED, "t1", at=3, event_id=i) for i in ids])
    seen: list[str] = []
    cursor = None
    for _ in ids:  # one page each, and no more
        page = tracker.timeline_page("t1", cursor=cursor, limit=1)
        seen += [e.event_id for e in page]
        cursor = page.next_cursor
        assert cursor is None or len(cursor) < 1000
    assert cursor is None
    assert seen == [e.event_id for e in tracker.timeline("t1")]  # the store's own order
    assert sorted(seen) == sorted(ids)


@pytest.mark.parametrize(
    "cursor",
    [
        "not a cursor",
        "W10",  # an empty list
        "WyJ0aW1lbGluZSIsMSwyXQ",  # ["timeline", 1, 2]: a position cut short
        "WyJ0aW1lbGluZSIsIjEiLDIsImUiXQ",  # ["timeline", "1", 2, "e"]: a time as text
        "WyJ0aW1lbGluZSIsMTAwMDAwMDAwMDAwMDAwMDAwMDAwLDIsImUiXQ",  # beyond 64 bits
        "WyJ0aW1lbGluZSIsIDEsIDIsICJfdz09Il0",  # ["timeline", 1, 2, "_w=="]: an id not UTF-8
        "A" * 2000,
    ],
)
def test_a_timeline_cursor_that_is_not_ours_is_refused(store: Store, cursor: str) -> None:
    tracker = store.open()
    _opened_often(tracker, 3)
    with pytest.raises(InvalidQuery) as refused:
        tracker.timeline_page("t1", cursor=cursor)
    assert refused.value.parameter == "cursor"


def test_a_cursor_of_another_listing_and_a_page_of_nothing_are_refused(store: Store) -> None:
    tracker = store.open()
    for n in range(3):
        send_one(tracker, f"s{n}", "ada@example.com")
    history = tracker.history("ada@example.com", limit=1).next_cursor
    assert history is not None
    with pytest.raises(InvalidQuery, match="does not belong"):
        tracker.timeline_page("s0", cursor=history)
    for limit in (0, -5):
        with pytest.raises(InvalidQuery) as refused:
            tracker.timeline_page("s0", limit=limit)
        assert refused.value.parameter == "limit"
    with pytest.raises(InvalidQuery):
        list(tracker.iter_timeline("s0", page_size=0))


def test_the_badge_is_what_the_fold_of_every_event_says_without_reading_them(
    store: Store,
) -> None:
    tracker = store.open()
    send_one(tracker, "sent", "ada@example.com")
    assert tracker.badge("sent") == Badge(DeliveryStatus.ACCEPTED, None)  # no event yet
    assert tracker.badge("nothing-here") is None
    tracker.ingest(
        [
            event(EventType.DELIVERED, "only-events", at=0),
            event(EventType.BOUNCED, "only-events", at=5, bounce="hard", reason="550 5.1.1 gone"),
            event(EventType.DEFERRED, "deferred", at=0, reason="451 4.7.1 try later"),
        ]
    )
    for tracking_id in ("only-events", "deferred"):
        state = tracker.state(tracking_id)
        assert tracker.badge(tracking_id) == Badge(state.status, state.reason)
    assert tracker.badge("only-events") == Badge(DeliveryStatus.BOUNCED, "550 5.1.1 gone")
    store.clock.advance(timedelta(days=30))  # the deferral outlives its window: failed
    state = tracker.state("deferred")
    assert state.status is DeliveryStatus.FAILED
    assert tracker.badge("deferred") == Badge(state.status, state.reason)
    reads = Reads(tracker)

    async def badge() -> Badge | None:
        try:
            return await tracker.abadge("only-events")
        finally:
            await tracker.aclose()

    assert asyncio.run(badge()) == Badge(DeliveryStatus.BOUNCED, "550 5.1.1 gone")
    assert reads.sizes == []  # no page of events was read for it


def test_a_connection_killed_between_pages_fails_that_page_and_the_cursor_resumes() -> None:
    """PostgreSQL terminates the tracker's backend between two pages: the next page raises a
    ``StoreError`` that says to retry, never a short or wrong page, and the same cursor then
    gives exactly the rest."""
    import psycopg

    require_postgres()
    schema = f"t_{secrets.token_hex(6)}"
    try:
        with Tracker.open(with_schema(POSTGRES_URL, schema)) as tracker:
            _opened_often(tracker, 90)
            whole = [e.event_id for e in tracker.timeline("t1")]
            page = tracker.timeline_page("t1", limit=40)

            def backend() -> Any:
                rows = yield Query("SELECT pg_backend_pid()")
                return rows[0][0]

            pid, _ = tracker._store.run(backend, write=False)
            with psycopg.connect(POSTGRES_URL, autocommit=True) as other:
                other.execute("SELECT pg_terminate_backend(%s)", (pid,))
            with pytest.raises(StoreError) as failed:
                tracker.timeline_page("t1", cursor=page.next_cursor, limit=40)
            assert failed.value.retryable
            rest = tracker.timeline_page("t1", cursor=page.next_cursor, limit=40)
            last = tracker.timeline_page("t1", cursor=rest.next_cursor, limit=40)
            assert [e.event_id for e in (*page, *rest, *last)] == whole
            assert last.next_cursor is None
    finally:
        drop_schema(schema)
