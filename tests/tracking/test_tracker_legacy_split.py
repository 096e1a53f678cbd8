"""Splitting ``events_legacy`` into monthly partitions (PostgreSQL).

The store is populated the way a migrated one is: events received in past months, all of them
in ``events_legacy``, some still waiting for their send. The split counts the rows of each
month, copies them in batches that resume after an interruption (even a connection killed in
the middle of a batch) without losing or doubling a row, keeps what is written to
``events_legacy`` meanwhile (a waiting event attached to its send, an event stored late), and
swaps the monthly partitions in, after which every event reads as before and retention drops
the old months one by one."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from tracking_support import POSTGRES_URL, event, schema_of, send_one

from unimailtrack import StoreError
from unimailtrack.errors import ConfigurationError
from unimailtrack.tracking import Tracker
from unimailtrack.tracking import _partitions as partitions
from unimailtrack.tracking._partitions import month_start, partition_name

NOW = datetime.now(UTC)
PAST = [month_start(NOW, -back) for back in (3, 2, 1)]
"""The three months before this one: events_legacy holds events of each."""
AFTER = month_start(NOW, 1) + timedelta(days=1)
"""After events_legacy's month (the migration ran this month): it receives nothing more."""
PER_MONTH = 122
"""Rows in each: 60 sends delivered and opened, and two events waiting for their sends."""
SENDS = 60


def _at(when: datetime) -> Callable[[], datetime]:
    return lambda: when


def _sql(url: str, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"SET search_path = {schema_of(url)}")
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description is not None else []


def _partitions(url: str) -> dict[str, str]:
    rows = _sql(
        url,
        """
        SELECT c.relname, pg_get_expr(c.relpartbound, c.oid)
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace
        WHERE p.relname = 'events' AND n.nspname = current_schema()
        """,
    )
    return dict(rows)


def _populate(url: str) -> None:
    """events_legacy with PER_MONTH events in each of the three past months: sends delivered
    and opened, and events waiting for sends not recorded yet, among them one of the first
    rows stored ("early") and one of the last ("late")."""
    with Tracker.open(url):
        pass  # the store, migrated: events_legacy covers everything up to next month
    for number, start in enumerate(PAST):
        when = start + timedelta(days=3)
        waiting = [_waiting(f"orphan{number}-{k}", when) for k in range(2)]
        if number == 0:
            waiting[0] = _waiting("early", when)
        if number == 2:
            waiting[1] = _waiting("late", when)
        with Tracker.open(url, clock=_at(when)) as tracker:
            tracker.ingest(waiting[:1])
            for index in range(SENDS):
                send_one(
                    tracker, f"s{number}-{index}", f"u{index}@example.com", f"m{number}-{index}"
                )
            tracker.ingest(
                [
                    event(kind, f"s{number}-{index}", at=when, recipient=f"u{index}@example.com")
                    for index in range(SENDS)
                    for kind in ("delivered", "opened")
                ]
            )
            tracker.ingest(waiting[1:])


def _waiting(name: str, when: datetime) -> Any:
    return event(
        "clicked",
        None,
        at=when,
        recipient=f"{name}@example.com",
        message_id=f"m-{name}",
        event_id=f"waiting-{name}",
    )


def _numbers(url: str) -> tuple[int, int]:
    [(rows, ids)] = _sql(url, "SELECT COUNT(*), COUNT(DISTINCT event_id) FROM events")
    return int(rows), int(ids)


def _timelines(tracker: Tracker) -> dict[str, list[Any]]:
    names = [f"s{number}-{index}" for number in range(3) for index in (0, 7, 30)]
    return {name: tracker.timeline(name) for name in names}


def _months(report: partitions.SplitReport) -> dict[str, int]:
    return {partition_name(start): rows for start, rows in report.months}


EXPECTED_MONTHS = {
    **{partition_name(start): PER_MONTH for start in PAST},
    partition_name(month_start(NOW)): 0,  # events_legacy's last month: this one
}


def test_the_split_moves_every_month_into_its_partition_and_retention_drops_them(
    pg_url: str,
) -> None:
    _populate(pg_url)
    before = _numbers(pg_url)
    assert before == (3 * PER_MONTH, 3 * PER_MONTH)
    with Tracker.open(pg_url, clock=_at(AFTER)) as tracker:
        timelines = _timelines(tracker)
        assert all(len(found) == 2 for found in timelines.values())

        dry = tracker.split_legacy()
        assert not dry.applied and not dry.finished
        assert _months(dry) == EXPECTED_MONTHS
        assert dry.rows_total == 3 * PER_MONTH and dry.blocks_total > 1
        assert "events_legacy" in _partitions(pg_url)  # a dry run moves nothing

        done = tracker.split_legacy(apply=True, batch=40)
        assert done.applied and done.finished
        assert done.blocks_done == done.blocks_total == dry.blocks_total
        assert _months(done) == EXPECTED_MONTHS

        found = _partitions(pg_url)
        assert "events_legacy" not in found
        assert set(EXPECTED_MONTHS) <= set(found)
        for start in PAST:
            low, high = partitions._micros(start), partitions._micros(month_start(start, 1))
            assert found[partition_name(start)] == f"FOR VALUES FROM ('{low}') TO ('{high}')"
        left = _sql(
            pg_url,
            "SELECT relname FROM pg_class WHERE relnamespace = current_schema()::regnamespace "
            "AND relname IN ('events_legacy', 'events_split', 'legacy_split', "
            "'legacy_split_months', 'legacy_split_touched')",
        )
        assert left == []
        assert _numbers(pg_url) == before
        for start in PAST:
            [(rows,)] = _sql(pg_url, f"SELECT COUNT(*) FROM {partition_name(start)}")
            assert rows == PER_MONTH
        assert _timelines(tracker) == timelines
        assert tracker.split_legacy(apply=True).note.startswith("nothing to split")

        # The store goes on: a new event, its retry, a send's waiting event attached.
        assert tracker.ingest([event("delivered", "fresh", event_id="fresh-1")]).new == 1
        assert tracker.ingest([event("delivered", "fresh", event_id="fresh-1")]).duplicates == 1
        send_one(tracker, "t-late", "late@example.com", "m-late")
        assert [e.event_id for e in tracker.timeline("t-late")] == ["waiting-late"]

        # The cutoff falls inside the last past month: the two before it go, whole.
        keep = AFTER - (PAST[2] + timedelta(days=10))
        retention = tracker.retention(keep, apply=True)
        assert set(retention.partitions) == {partition_name(PAST[0]), partition_name(PAST[1])}
        assert retention.events == 2 * PER_MONTH
        assert partition_name(PAST[2]) in retention.kept_partitions
        assert tracker.count_events() == PER_MONTH + 1
        assert tracker.timeline("s0-7") == [] and len(tracker.timeline("s2-7")) == 2


def test_an_interrupted_split_resumes_without_losing_or_doubling_a_row(pg_url: str) -> None:
    _populate(pg_url)
    before = _numbers(pg_url)
    # A lock timeout longer than the test needs to see the batch wait.
    url = f"{pg_url}&lock_timeout=30s"
    with Tracker.open(url, clock=_at(AFTER)) as tracker:
        timelines = _timelines(tracker)
        first = tracker.split_legacy(apply=True, batch=20, max_batches=1)
        assert first.applied and not first.finished
        assert 0 < first.blocks_done < first.blocks_total
        # Mid-way the store reads every event once, from events_legacy.
        assert _numbers(pg_url) == before and tracker.count_events() == before[0]
        assert _timelines(tracker) == timelines
        assert "events_legacy" in _partitions(pg_url)
        _assert_staged_once(pg_url)

        # The next batch inserts its rows, then waits to move the cursor: it is killed there.
        with psycopg.connect(POSTGRES_URL) as holder:
            holder.execute(f"LOCK TABLE {schema_of(pg_url)}.legacy_split IN SHARE MODE")
            failure: list[BaseException] = []

            def batch() -> None:
                try:
                    tracker.split_legacy(apply=True, batch=20, max_batches=1)
                except BaseException as exc:
                    failure.append(exc)

            worker = threading.Thread(target=batch)
            worker.start()
            killed = _terminate_when_waiting(pg_url, "UPDATE legacy_split")
            holder.rollback()
            worker.join(30)
        assert killed
        assert len(failure) == 1 and isinstance(failure[0], StoreError)
        [(cursor,)] = _sql(pg_url, "SELECT next_block FROM legacy_split")
        assert cursor == first.blocks_done  # the copy and the cursor rolled back together
        _assert_staged_once(pg_url)

        second = tracker.split_legacy(apply=True, batch=20, max_batches=2)
        assert first.blocks_done < second.blocks_done < second.blocks_total
        _assert_staged_once(pg_url)
        assert _timelines(tracker) == timelines

        done = tracker.split_legacy(apply=True, batch=20)
        assert done.finished and "events_legacy" not in _partitions(pg_url)
        assert _numbers(pg_url) == before
        assert _timelines(tracker) == timelines


def _assert_staged_once(url: str) -> None:
    """The staging holds exactly the rows of the blocks the cursor has passed."""
    [(staged, distinct)] = _sql(url, "SELECT COUNT(*), COUNT(DISTINCT event_id) FROM events_split")
    [(copied,)] = _sql(
        url,
        "SELECT COUNT(*) FROM events_legacy "
        "WHERE ctid < ('(' || (SELECT next_block FROM legacy_split) || ',0)')::tid",
    )
    assert staged == distinct == copied > 0


def _terminate_when_waiting(url: str, query: str) -> bool:
    """Terminate the backend of this schema's store that waits on a lock running ``query``."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        rows = _sql(
            url,
            "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE %s AND pid <> pg_backend_pid()",
            (f"{query}%",),
        )
        if rows:
            [(terminated,)] = _sql(url, "SELECT pg_terminate_backend(%s)", (rows[0][0],))
            return bool(terminated)
        time.sleep(0.05)
    return False


def test_rows_written_to_events_legacy_during_the_split_are_kept(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Waiting events attached to their sends after their rows were copied (or before their
    blocks were reached), an event stored late by a process whose clock is behind, both
    during the copy and between the check and the swap: each ends as events_legacy has it."""
    _populate(pg_url)
    late_clock = PAST[1] + timedelta(days=9)
    with (
        Tracker.open(pg_url, clock=_at(AFTER)) as tracker,
        Tracker.open(pg_url, clock=_at(late_clock)) as behind,
    ):
        first = tracker.split_legacy(apply=True, batch=20, max_batches=1)
        assert not first.finished
        [(copied,)] = _sql(
            pg_url, "SELECT tracking_id FROM events_split WHERE event_id = 'waiting-early'"
        )
        assert copied is None  # copied while it waited
        [(pending,)] = _sql(
            pg_url, "SELECT COUNT(*) FROM events_split WHERE event_id = 'waiting-late'"
        )
        assert pending == 0  # not reached yet
        send_one(tracker, "t-early", "early@example.com", "m-early")
        send_one(tracker, "t-late", "late@example.com", "m-late")
        behind.ingest([event("bounced", "s1-3", at=late_clock, event_id="late-1", bounce="soft")])

        swap = partitions._swap_when_locked

        def after_the_check(run: Any, starts: Any) -> None:
            # Between the check and the swap: another attach, another late event.
            behind.ingest([_waiting("between", late_clock)])
            send_one(tracker, "t-between", "between@example.com", "m-between")
            behind.ingest([event("opened", "s1-4", at=late_clock, event_id="late-2")])
            send_one(tracker, "t-orphan", "orphan1-0@example.com", "m-orphan1-0")  # copied, checked
            swap(run, starts)

        monkeypatch.setattr(partitions, "_swap_when_locked", after_the_check)
        done = tracker.split_legacy(apply=True, batch=20)
        assert done.finished and "events_legacy" not in _partitions(pg_url)

        for tid, event_id in (
            ("t-early", "waiting-early"),
            ("t-late", "waiting-late"),
            ("t-between", "waiting-between"),
            ("t-orphan", "waiting-orphan1-0"),
        ):
            assert [e.event_id for e in tracker.timeline(tid)] == [event_id]
            assert tracker.state(tid).clicks == 1
        assert [e.event_id for e in tracker.timeline("s1-3")][-1] == "late-1"
        assert [e.event_id for e in tracker.timeline("s1-4")][-1] == "late-2"
        assert _numbers(pg_url) == (3 * PER_MONTH + 3, 3 * PER_MONTH + 3)
        [(rows,)] = _sql(pg_url, f"SELECT COUNT(*) FROM {partition_name(PAST[1])}")
        assert rows == PER_MONTH + 3


def test_the_split_is_refused_while_events_legacy_can_still_receive_events(pg_url: str) -> None:
    _populate(pg_url)
    with Tracker.open(pg_url) as tracker:  # now: events_legacy's month is not over
        dry = tracker.split_legacy()
        assert _months(dry) == EXPECTED_MONTHS and "until" in dry.note
        with pytest.raises(ConfigurationError, match="still receives events"):
            tracker.split_legacy(apply=True)
    assert "events_legacy" in _partitions(pg_url)
    assert _sql(pg_url, "SELECT to_regclass('legacy_split')") == [(None,)]


def test_a_copy_that_does_not_match_is_not_swapped_in(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _populate(pg_url)
    with Tracker.open(pg_url, clock=_at(AFTER)) as tracker:
        tracker.split_legacy(apply=True, batch=20, max_batches=1)
        _sql(
            pg_url,
            "DELETE FROM events_split WHERE event_id = (SELECT MIN(event_id) FROM events_split)",
        )
        with pytest.raises(StoreError, match="does not match"):
            tracker.split_legacy(apply=True)
        assert "events_legacy" in _partitions(pg_url)
        assert tracker.count_events() == 3 * PER_MONTH


def test_a_split_whose_events_legacy_expired_meanwhile_is_cleared(pg_url: str) -> None:
    _populate(pg_url)
    with Tracker.open(pg_url, clock=_at(AFTER)) as tracker:
        tracker.split_legacy(apply=True, batch=20, max_batches=1)
    far = month_start(NOW, 1) + timedelta(days=400)
    with Tracker.open(pg_url, clock=_at(far)) as tracker:
        assert "events_legacy" in tracker.retention(timedelta(days=90), apply=True).partitions
        report = tracker.split_legacy(apply=True)
        assert report.finished and report.note.startswith("nothing to split")
    assert _sql(pg_url, "SELECT to_regclass('events_split'), to_regclass('legacy_split')") == [
        (None, None)
    ]


def test_an_empty_events_legacy_is_dropped(pg_url: str) -> None:
    """A store created on the partitioned layout has an empty events_legacy."""
    with Tracker.open(pg_url, clock=_at(AFTER)) as tracker:
        dry = tracker.split_legacy()
        assert (dry.months, dry.rows_total, dry.finished) == ((), 0, False)
        done = tracker.split_legacy(apply=True)
        assert done.finished and done.months == ()
        assert "events_legacy" not in _partitions(pg_url)
        assert tracker.ingest([event("delivered", "t1", event_id="e-1")]).new == 1
        assert tracker.count_events() == 1


def test_sqlite_has_nothing_to_split(tmp_path: Any) -> None:
    with Tracker.open(f"sqlite:///{tmp_path / 't.sqlite3'}") as tracker:
        report = tracker.split_legacy(apply=True)
        abandoned = tracker.abandon_split()
    assert report.finished and report.months == () and "SQLite" in report.note
    assert abandoned.note == "nothing to abandon: SQLite keeps one table"


def _close_legacy_month(url: str) -> None:
    """events_legacy as it is once the month after the migration has begun: its bound is the
    start of this month, and this month has a partition of its own."""
    bound = partitions._micros(month_start(NOW))
    _sql(url, "ALTER TABLE events DETACH PARTITION events_legacy")
    _sql(
        url,
        "ALTER TABLE events ATTACH PARTITION events_legacy "
        f"FOR VALUES FROM (MINVALUE) TO ({bound})",
    )
    with Tracker.open(url):
        pass  # creates this month's partition


def test_the_split_command_counts_then_moves(pg_url: str, capsys: Any) -> None:
    from unimailtrack.cli import main

    _populate(pg_url)
    assert main(["partitions", "split-legacy", "--store", pg_url, "--apply"]) == 3
    assert "still receives events" in capsys.readouterr().err
    _close_legacy_month(pg_url)

    assert main(["partitions", "split-legacy", "--store", pg_url]) == 0
    out = capsys.readouterr().out
    for start in PAST:
        assert f"{start:%Y-%m}" in out
    assert "a dry run" in out and "events_legacy" in _partitions(pg_url)

    command = ["partitions", "split-legacy", "--store", pg_url, "--batch", "20"]
    assert main([*command, "--apply", "--max-batches", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["applied"] and not report["finished"] and report["rows_total"] == 3 * PER_MONTH

    assert main([*command, "--apply"]) == 0
    [finished] = [line for line in capsys.readouterr().out.splitlines() if "finished" in line]
    assert finished.split() == ["finished", "True"]
    assert "events_legacy" not in _partitions(pg_url)
    assert {partition_name(start) for start in PAST} <= set(_partitions(pg_url))
    assert _numbers(pg_url) == (3 * PER_MONTH, 3 * PER_MONTH)


def _split_objects(url: str) -> dict[str, bool]:
    """Which of what a split sets up is in the schema."""
    [row] = _sql(
        url,
        "SELECT to_regclass('events_split') IS NOT NULL, to_regclass('legacy_split') IS NOT NULL, "
        "to_regclass('legacy_split_touched') IS NOT NULL, "
        "EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'legacy_split_touch' "
        "AND tgrelid = to_regclass('events_legacy')), "
        "to_regprocedure('legacy_split_touch()') IS NOT NULL",
    )
    return dict(zip(("staging", "progress", "touched", "trigger", "function"), row, strict=True))


def test_an_abandoned_split_leaves_events_legacy_as_it_was_and_can_begin_again(
    pg_url: str,
) -> None:
    _populate(pg_url)
    before = _numbers(pg_url)
    with Tracker.open(pg_url, clock=_at(AFTER)) as tracker:
        timelines = _timelines(tracker)
        assert tracker.abandon_split().note == "nothing to abandon: no split under way"
        begun = tracker.split_legacy(apply=True, batch=40, max_batches=1)
        assert 0 < begun.blocks_done < begun.blocks_total
        assert all(_split_objects(pg_url).values())

        given_up = tracker.abandon_split()
        assert (given_up.applied, given_up.finished) == (True, False)
        assert (given_up.blocks_done, given_up.blocks_total) == (
            begun.blocks_done,
            begun.blocks_total,
        )
        assert _months(given_up) == EXPECTED_MONTHS
        assert "abandoned after" in given_up.note
        assert not any(_split_objects(pg_url).values())
        assert "events_legacy" in _partitions(pg_url)
        assert _numbers(pg_url) == before and _timelines(tracker) == timelines
        assert tracker.abandon_split().note == "nothing to abandon: no split under way"

    # A write to events_legacy goes on as before: no trigger asks for the dropped table.
    with Tracker.open(pg_url, clock=_at(PAST[1] + timedelta(days=9))) as late:
        assert late.ingest([_waiting("after-abandon", PAST[1] + timedelta(days=9))]).new == 1
    [(legacy,)] = _sql(pg_url, "SELECT COUNT(*) FROM events_legacy")
    assert legacy == before[0] + 1

    with Tracker.open(pg_url, clock=_at(AFTER)) as tracker:
        again = tracker.split_legacy(apply=True, batch=40)
        assert again.finished and again.blocks_done == again.blocks_total
        assert "events_legacy" not in _partitions(pg_url)
        assert _numbers(pg_url) == (before[0] + 1, before[1] + 1)
        assert _timelines(tracker) == timelines


def test_the_split_command_abandons(pg_url: str, capsys: Any) -> None:
    from unimailtrack.cli import main

    _populate(pg_url)
    _close_legacy_month(pg_url)
    command = ["partitions", "split-legacy", "--store", pg_url, "--batch", "20"]
    assert main([*command, "--apply", "--max-batches", "1"]) == 0
    capsys.readouterr()
    assert main([*command, "--abandon", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["applied"] and not report["finished"]
    assert report["note"].startswith("abandoned after")
    assert not any(_split_objects(pg_url).values())
    assert main([*command, "--abandon"]) == 0
    assert "nothing to abandon" in capsys.readouterr().out
    assert main([*command, "--apply", "--abandon"]) == 2
    assert "not allowed with argument --apply" in capsys.readouterr().err
