"""Listings are bounded by the page, not by the send: ``bulk_rows`` pages by default, and an
export iterates ``iter_bulk_rows`` page by page.

Memory is checked structurally: every read the store runs is recorded, with how many rows
it returned, so a test sees that no read fetched more than a page and that iterating reads
one page at a time, lazily.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tracking_support import Store

from unimailtrack import DeliveryStatus, Email, RecipientResult, SendResult
from unimailtrack.tracking import Page, Tracker
from unimailtrack.tracking._tracker import BULK_PAGE


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
