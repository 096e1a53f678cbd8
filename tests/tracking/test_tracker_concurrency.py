"""Many writers at once end exactly where one writer would have, on both backends.

Several threads (and, on PostgreSQL, several processes) ingest the same events in different
orders and batch splits at the same time, while the sends they belong to are recorded; the
badges, counts and suppressions must be those of the fold, with no error reaching a caller.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable
from dataclasses import replace

from tracking_support import (
    Store,
    batches_in_random_order,
    expected_suppressed,
    ingest_in_another_process,
    scenario_events,
)

from unimailtrack import (
    DeliveryStatus,
    Email,
    EmailEvent,
    EventType,
    RecipientResult,
    SendResult,
    fold,
)
from unimailtrack.tracking import Tracker

MESSAGES = 40


def _record_sends(tracker: Tracker) -> None:
    recipients = [f"user{i}@example.com" for i in range(MESSAGES)]
    # In several sends, so that recording interleaves with the ingestion.
    for start in range(0, MESSAGES, 10):
        tracker.record_send(
            Email(sender="e@example.com", to=recipients[start : start + 10], text="."),
            SendResult(
                bulk_id="concurrent",
                recipients=[
                    RecipientResult(
                        recipient=recipients[i],
                        tracking_id=f"c{i}",
                        status=DeliveryStatus.ACCEPTED,
                        message_id=f"cm{i}",
                        provider="memory",
                    )
                    for i in range(start, start + 10)
                ],
            ),
        )


def _run_together(jobs: list[Callable[[], object]]) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(len(jobs))

    def run(job: Callable[[], object]) -> None:
        start.wait()
        try:
            job()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def _assert_sequential_outcome(tracker: Tracker, events: list[EmailEvent]) -> None:
    assert tracker.count_events() == len(events)
    rows = {row.tracking_id: row for row in tracker.bulk_rows("concurrent")}
    assert len(rows) == MESSAGES
    now = tracker._now()
    for index in range(MESSAGES):
        tracking_id = f"c{index}"
        mine = [replace(e, tracking_id=tracking_id) for e in events if e.message_id == f"cm{index}"]
        state = fold(mine, now=now, deferred_expiry=tracker.deferred_expiry)
        assert tracker.state(tracking_id) == state
        assert (rows[tracking_id].status, rows[tracking_id].reason) == (state.status, state.reason)
        suppressing = expected_suppressed(mine, now)
        assert (tracker.suppression(f"user{index}@example.com") is not None) == suppressing
    stats = tracker.bulk_stats("concurrent")
    opens = sum(1 for e in events if e.type is EventType.OPENED)
    assert (stats.recipients, stats.opens) == (MESSAGES, opens)


def test_threads_ingesting_overlapping_batches_reach_the_sequential_states(store: Store) -> None:
    events = scenario_events(MESSAGES, seed=7)
    writers = [store.open() for _ in range(4)]
    jobs: list[Callable[[], object]] = [
        lambda w=writer, s=seed: [w.ingest(b) for b in batches_in_random_order(events, s, 9)]
        for seed, writer in enumerate(writers[:3])
    ]
    jobs.append(lambda: _record_sends(writers[3]))
    _run_together(jobs)
    _assert_sequential_outcome(writers[0], events)


def test_processes_ingesting_overlapping_batches_reach_the_sequential_states(
    store: Store,
) -> None:
    events = scenario_events(MESSAGES, seed=11)
    tracker = store.open()
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        pending = [
            pool.apply_async(ingest_in_another_process, (store.url, events, seed))
            for seed in range(3)
        ]
        _record_sends(tracker)
        for job in pending:
            job.get(timeout=120)
    _assert_sequential_outcome(tracker, events)
