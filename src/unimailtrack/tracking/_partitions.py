"""The event history at scale: monthly partitions on PostgreSQL, and retention on both backends.

On PostgreSQL ``events`` is partitioned by range of ``received_at_us`` (native declarative
partitioning), one partition a calendar month (UTC), named ``events_YYYYMM``; the events
stored before the partitioned layout are the first partition, ``events_legacy``, which covers
everything up to the month after the migration. The store creates the partitions of the
current month and of ``AHEAD`` months after it when it opens, and again whenever a running
store gets within a month of the last one. There is no DEFAULT partition: an event whose month
has no partition is refused (a 503 the provider retries), never put somewhere retention
cannot drop.

The partition key is the time of receipt, not the provider's event time, because it is the
one time that is always now: a provider's timestamp can be years off, a partition for every
such month would have to exist, and retention would keep or drop events by a clock it does not
control.

Deduplication: a unique index of a partitioned table must contain the partition key, and the
provider's retry of an event carries the same id with a later time of receipt, possibly in the
next month. So the id's uniqueness lives in ``event_ids`` (not partitioned): ingestion inserts
the batch's ids there first (``ON CONFLICT DO NOTHING``) and stores only the events whose id
was new, in the same statement. Retention keeps ids for ``dedupe_window`` (at least 72 hours,
what SendGrid and Mailgun retry for; 14 days by default), independently of the events.

Retention (``Tracker.retention``) drops whole partitions older than the cutoff on PostgreSQL
and deletes in bounded batches on SQLite; the per-message state (``messages``: the badge, the
first delivered/opened/clicked times, the counters) and the suppression list are kept, so
histories, reports and bulk statistics still answer for old sends. It is a dry run unless
``apply`` is set.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache, partial
from typing import Any

from unimailtrack.tracking._store import Program, Query

__all__ = [
    "AHEAD",
    "DEFAULT_DEDUPE_WINDOW",
    "MIN_WINDOW",
    "RetentionReport",
    "ensure_partitions",
    "month_start",
    "partitioned_insert_sql",
    "retention",
]

AHEAD = 3
"""Months of partitions created ahead of the current one."""
DEFAULT_DEDUPE_WINDOW = timedelta(days=14)
MIN_WINDOW = timedelta(hours=72)
"""The shortest window an event id (or an event) may be forgotten after: providers retry a
webhook for up to 72 hours (SendGrid, Mailgun)."""
BATCH = 10_000
"""Rows a retention transaction deletes at most."""


def _micros(when: datetime) -> int:
    return int(when.timestamp()) * 1_000_000 + when.microsecond


def month_start(when: datetime, months: int = 0) -> datetime:
    """The first instant (UTC) of the month ``months`` after the one holding ``when``."""
    when = when.astimezone(UTC)
    index = when.year * 12 + when.month - 1 + months
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def partition_name(start: datetime) -> str:
    return f"events_{start.year:04d}{start.month:02d}"


def ensure_partitions(now: datetime, ahead: int = AHEAD) -> Program[datetime]:
    """Create the monthly partitions of the month of ``now`` and ``ahead`` months after it
    that no partition covers yet (the legacy one covers the month of the migration); returns
    the end of the last. Safe to run at once from many processes (an advisory lock, ``IF NOT
    EXISTS``)."""
    yield Query("SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.partitions'))")
    bounds = yield from _partitions()
    start = month_start(now)
    end = month_start(now, ahead + 1)
    while start < end:
        following = month_start(start, 1)
        low, high = _micros(start), _micros(following)
        if not any((lower is None or lower < high) and upper > low for _, lower, upper in bounds):
            # Made apart and then attached: ATTACH PARTITION locks the parent only against
            # other schema changes (CREATE TABLE ... PARTITION OF would lock out every
            # ingest while it waits). The name and both bounds are computed here.
            name = partition_name(start)
            yield Query(f"CREATE TABLE IF NOT EXISTS {name} (LIKE events INCLUDING DEFAULTS)")
            yield Query(
                f"ALTER TABLE events ATTACH PARTITION {name} FOR VALUES FROM ({low}) TO ({high})"
            )
        start = following
    return end


_BOUNDS_SQL = """
SELECT c.relname, pg_get_expr(c.relpartbound, c.oid)
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
JOIN pg_class p ON p.oid = i.inhparent
JOIN pg_namespace n ON n.oid = p.relnamespace
WHERE p.relname = 'events' AND n.nspname = current_schema()
"""


def _bound(text: str) -> int | None:
    text = text.strip().strip("()'")
    return None if text.upper() == "MINVALUE" else int(text)


def _partitions() -> Program[list[tuple[str, int | None, int]]]:
    """(name, lower bound or None for MINVALUE, upper bound) of every partition of events."""
    rows = yield Query(_BOUNDS_SQL)
    found: list[tuple[str, int | None, int]] = []
    for name, expression in rows:
        # FOR VALUES FROM (x) TO (y), written by PostgreSQL itself.
        lower, upper = expression.split("FROM", 1)[1].split(") TO (")
        upper_bound = _bound(upper)
        assert upper_bound is not None
        found.append((str(name), _bound(lower), upper_bound))
    return sorted(found, key=lambda item: item[2])


@cache
def partitioned_insert_sql(names: str, arrays: str, tail: str) -> str:
    """``INSERT INTO events`` through ``event_ids``: the batch's ids are claimed first and
    only the events whose id was new are stored, in one statement, in the order given."""
    columns = names.split(", ")
    assert columns[0] == "event_id"
    assert "received_at_us" in columns
    selected = ", ".join(f"v.{name}" for name in columns)
    returning = tail.split("RETURNING", 1)[1] if "RETURNING" in tail else ""
    # The column names come from our own statements, never from input.
    return (
        f"WITH v AS MATERIALIZED (SELECT {names}, n FROM unnest({arrays}) WITH ORDINALITY "  # noqa: S608
        f"AS u({names}, n)), "
        "fresh AS (INSERT INTO event_ids (event_id, received_at_us) "
        "SELECT event_id, received_at_us FROM v ORDER BY n "
        "ON CONFLICT (event_id) DO NOTHING RETURNING event_id) "
        f"INSERT INTO events ({names}) SELECT {selected} FROM v JOIN fresh USING (event_id) "
        f"ORDER BY v.n{' RETURNING ' + returning.strip() if returning else ''}"
    )


# --------------------------------------------------------------------------- retention


@dataclass(frozen=True, slots=True)
class RetentionReport:
    """What retention removed (``applied``) or would remove (a dry run)."""

    keep: timedelta
    cutoff: datetime
    applied: bool
    events: int
    """Events removed, or that would be."""
    partitions: tuple[str, ...] = ()
    """PostgreSQL partitions dropped whole, or that would be."""
    event_ids: int = 0
    """Event ids past the deduplication window, forgotten or to be."""
    kept_partitions: tuple[str, ...] = field(default=())
    """Partitions holding events past the cutoff that are kept because they also hold newer
    ones (a partition is dropped only when all of it is past the cutoff)."""


Runner = Callable[[Callable[[], Program[Any]], bool], Any]
"""Runs a program in a transaction of its own (``write``); returns its result."""


def check_window(name: str, value: timedelta) -> timedelta:
    if value < MIN_WINDOW:
        raise ValueError(
            f"{name} must be at least 72 hours (providers retry webhooks that long), got {value}"
        )
    return value


def retention(
    dialect: str,
    run: Runner,
    *,
    keep: timedelta,
    now: datetime,
    apply: bool,
    dedupe_window: timedelta = DEFAULT_DEDUPE_WINDOW,
) -> RetentionReport:
    """Remove (``apply``) or count events received more than ``keep`` before ``now``."""
    check_window("keep", keep)
    check_window("dedupe_window", dedupe_window)
    cutoff = now - keep
    cutoff_us = _micros(cutoff)
    if dialect == "postgresql":
        return _postgres_retention(run, keep, cutoff, cutoff_us, now - dedupe_window, apply)
    count = run(lambda: _count("events", cutoff_us), False)
    removed = _delete_batches(run, "events", cutoff_us) if apply else count
    return RetentionReport(keep, cutoff, apply, removed)


def _count(table: str, before_us: int) -> Program[int]:
    # The table name is one of ours.
    rows = yield Query(f"SELECT COUNT(*) FROM {table} WHERE received_at_us < ?", (before_us,))  # noqa: S608
    return int(rows[0][0])


def _delete_batch(table: str, key: str, before_us: int) -> Program[int]:
    rows = yield Query(
        f"DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} "  # noqa: S608
        f"WHERE received_at_us < ? LIMIT {BATCH}) RETURNING 1",
        (before_us,),
    )
    return len(rows)


def _delete_batches(run: Runner, table: str, before_us: int) -> int:
    key = "rowid" if table == "events" else "event_id"
    total = 0
    while True:
        done = int(run(lambda: _delete_batch(table, key, before_us), True))
        total += done
        if done < BATCH:
            return total


def _count_partition(name: str) -> Program[int]:
    rows = yield Query(f"SELECT COUNT(*) FROM {name}")  # noqa: S608 - a partition's own name
    return int(rows[0][0])


def _drop_partition(name: str, upper: int) -> Program[int]:
    """Drop one partition if it is still wholly past the cutoff; its row count."""
    bounds = yield from _partitions()
    if not any(found == name and high == upper for found, _, high in bounds):
        return 0
    count = yield from _count_partition(name)
    yield Query(f"ALTER TABLE events DETACH PARTITION {name}")
    yield Query(f"DROP TABLE {name}")
    return count


def _postgres_retention(
    run: Runner,
    keep: timedelta,
    cutoff: datetime,
    cutoff_us: int,
    ids_before: datetime,
    apply: bool,
) -> RetentionReport:
    bounds: list[tuple[str, int | None, int]] = run(_partitions, False)
    expired = [(name, upper) for name, _, upper in bounds if upper <= cutoff_us]
    straddling = tuple(
        name for name, lower, upper in bounds if upper > cutoff_us and (lower or 0) < cutoff_us
    )
    ids_before_us = _micros(ids_before)
    if not apply:
        events = sum(run(partial(_count_partition, name), False) for name, _ in expired)
        ids = run(lambda: _count("event_ids", ids_before_us), False)
        return RetentionReport(
            keep, cutoff, False, events, tuple(n for n, _ in expired), ids, straddling
        )
    events = 0
    for name, upper in expired:
        events += run(partial(_drop_partition, name, upper), True)
    ids = _delete_batches(run, "event_ids", ids_before_us)
    return RetentionReport(
        keep, cutoff, True, events, tuple(n for n, _ in expired), ids, straddling
    )


def as_rows(report: RetentionReport) -> Sequence[tuple[str, Any]]:
    return (
        ("keep", str(report.keep)),
        ("cutoff", report.cutoff.isoformat()),
        ("applied", report.applied),
        ("events", report.events),
        ("partitions", ", ".join(report.partitions) or "-"),
        ("event ids", report.event_ids),
        ("kept partitions", ", ".join(report.kept_partitions) or "-"),
    )
