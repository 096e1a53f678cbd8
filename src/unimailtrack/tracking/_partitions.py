"""The event history at scale: monthly partitions on PostgreSQL, and retention on both backends.

On PostgreSQL ``events`` is partitioned by range of ``received_at_us`` (native declarative
partitioning), one partition a calendar month (UTC), named ``events_YYYYMM``; the events
stored before the partitioned layout are the first partition, ``events_legacy``, which covers
everything up to the month after the migration. The store creates the partitions of the
current month and of ``AHEAD`` months after it when it opens, and again whenever a running
store gets within a month of the last one. There is no DEFAULT partition: an event whose month
has no partition is refused (a 503 the provider retries), never put somewhere retention
cannot drop.

The events stored before that layout stay in ``events_legacy`` until they are split
(``Tracker.split_legacy``; ``split_legacy`` below): once its month is over, its rows are copied
into one new partition a month, in bounded batches that each commit with their progress, and a
short final transaction swaps the copies in for it. After that retention drops the old months
one by one instead of waiting for all of ``events_legacy`` to expire.

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

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache, partial
from typing import Any

from unimailtrack.errors import ConfigurationError, StoreError
from unimailtrack.tracking._records import from_micros
from unimailtrack.tracking._store import Program, Query

__all__ = [
    "AHEAD",
    "DEFAULT_DEDUPE_WINDOW",
    "MIN_WINDOW",
    "RetentionReport",
    "SplitReport",
    "ensure_partitions",
    "month_start",
    "retention",
    "split_legacy",
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


def as_rows(report: RetentionReport | SplitReport) -> Sequence[tuple[str, Any]]:
    """The report as (label, value) rows, for the command's table."""
    if isinstance(report, SplitReport):
        return _split_rows(report)
    return (
        ("keep", str(report.keep)),
        ("cutoff", report.cutoff.isoformat()),
        ("applied", report.applied),
        ("events", report.events),
        ("partitions", ", ".join(report.partitions) or "-"),
        ("event ids", report.event_ids),
        ("kept partitions", ", ".join(report.kept_partitions) or "-"),
    )


# --------------------------------------------------------------------------- the legacy split
#
# ``events_legacy`` is the table of before the partitioned layout, attached whole; it covers
# every month up to the one after the migration, so retention can drop it only once all of it
# has expired. The split moves its rows into one partition a month, PostgreSQL only:
#
# 1. Set up (one transaction): a trigger on events_legacy that records the id of every row
#    written to it from now on (``legacy_split_touched``: a waiting event attached to its
#    send, or an event stored by a process whose clock is behind); the staging table
#    ``events_split``, partitioned like ``events`` with its indexes, and one partition a month
#    under its final name, each with a CHECK of its range; the progress (``legacy_split``) and
#    the rows counted in each month (``legacy_split_months``).
# 2. Copy: the blocks of events_legacy as it was set up, a range at a time (a TID range scan,
#    PostgreSQL 14+), each range in a transaction that also moves the cursor, so that a range
#    is copied exactly once whatever fails. events_legacy stays in place: the store reads and
#    writes it as before.
# 3. Check (one transaction on one snapshot, no lock taken but a reader's): the staged copies
#    of every recorded id are replaced by the row events_legacy holds; then the rows of each
#    month are counted in both, and must agree. Those counts are kept.
# 4. Swap (one short transaction under an ACCESS EXCLUSIVE lock on ``events``): the ids
#    recorded since the check are replaced the same way, and every one of them that was in
#    events_legacy at the check must have had exactly one staged copy (with the counts of the
#    check, that proves the months still agree); events_legacy is detached, each staged
#    partition is detached from the staging table and attached to ``events`` (its CHECK
#    spares the attach a validating scan), and events_legacy and the staging are dropped.
#
# Why a trigger, rather than re-reading the staged rows still waiting for their send: an
# update writes a new row version wherever there is room, so an event attached before its
# block was copied can move to a block that was copied already, or past the blocks the copy
# covers, and be missing from the copy with nothing in the copy to say so.

SPLIT_BATCH = 50_000
"""Rows a copy transaction of the split moves, about: it copies whole blocks."""
SWAP_LOCK_TIMEOUT = "1s"
"""How long the swap waits for the events table. While it waits every statement that wants
the table waits behind it, so it gives up soon and tries again."""
SWAP_ATTEMPTS = 5
_LEGACY = "events_legacy"
_SPLIT_LOCK = Query("SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.legacy_split'))")
_BLOCKS = "pg_relation_size('events_legacy') / current_setting('block_size')::bigint"
_KEY_SQL = """
SELECT 1 FROM pg_index i
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
WHERE i.indrelid = 'events_legacy'::regclass AND i.indisunique AND i.indnkeyatts = 1
AND a.attname = 'event_id'
"""
_SPLIT_DDL = (
    'CREATE TABLE legacy_split_touched (event_id TEXT COLLATE "C" PRIMARY KEY, '
    "inserted BOOLEAN NOT NULL)",
    # Its own search_path: it runs in whichever session writes events_legacy.
    """
    CREATE FUNCTION legacy_split_touch() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
    BEGIN
        INSERT INTO legacy_split_touched (event_id, inserted)
        VALUES (NEW.event_id, TG_OP = 'INSERT') ON CONFLICT (event_id) DO NOTHING;
        RETURN NULL;
    END $$
    """,
    "CREATE TRIGGER legacy_split_touch AFTER INSERT OR UPDATE ON events_legacy "
    "FOR EACH ROW EXECUTE FUNCTION legacy_split_touch()",
)
_SPLIT_TABLES = "events_split, legacy_split, legacy_split_months, legacy_split_touched"


@dataclass(frozen=True, slots=True)
class SplitReport:
    """Where the split of ``events_legacy`` into monthly partitions stands (``applied``), or
    what it would move (a dry run)."""

    months: tuple[tuple[datetime, int], ...]
    """Each month of ``events_legacy`` (its first instant, UTC) and its rows."""
    rows_total: int
    blocks_done: int
    """Blocks of ``events_legacy`` copied so far."""
    blocks_total: int
    applied: bool
    finished: bool
    """The monthly partitions have replaced ``events_legacy``, or there was nothing to split."""
    note: str = ""


@dataclass(frozen=True, slots=True)
class _Split:
    """What the database holds: ``events_legacy``'s upper bound (None: no such partition) and
    the split's progress."""

    upper: int | None
    begun: bool = False
    staged: bool = False
    next_block: int = 0
    blocks: int = 0
    checked: bool = False
    months: tuple[tuple[int, int], ...] = ()
    """(month start, rows) as counted when the split began, or by its check."""
    tuples: float = 0.0
    pages: int = 0


def _state() -> Program[_Split]:
    bounds = yield from _partitions()
    upper = next((high for name, _, high in bounds if name == _LEGACY), None)
    rows = yield Query(
        "SELECT to_regclass('legacy_split') IS NOT NULL, to_regclass('events_split') IS NOT NULL"
    )
    begun, staged = bool(rows[0][0]), bool(rows[0][1])
    if upper is None:
        return _Split(None, begun, staged)
    rows = yield Query(
        f"SELECT reltuples, relpages, {_BLOCKS} FROM pg_class "  # noqa: S608 - constant text
        "WHERE oid = 'events_legacy'::regclass"
    )
    tuples, pages, blocks = float(rows[0][0]), int(rows[0][1]), int(rows[0][2])
    if not begun:
        return _Split(upper, False, staged, 0, blocks, False, (), tuples, pages)
    [(done, total, checked)] = yield Query(
        "SELECT next_block, blocks, checked FROM legacy_split WHERE id = 1"
    )
    months = yield Query("SELECT month_us, rows FROM legacy_split_months ORDER BY month_us")
    return _Split(
        upper,
        True,
        staged,
        int(done),
        int(total),
        bool(checked),
        tuple((int(start), int(count)) for start, count in months),
        tuples,
        pages,
    )


def _month_starts(first_us: int, upper_us: int) -> list[int]:
    """The start of every month from the one holding ``first_us`` to ``upper_us``."""
    starts: list[int] = []
    start = month_start(from_micros(first_us))
    while _micros(start) < upper_us:
        starts.append(_micros(start))
        start = month_start(start, 1)
    return starts


def _per_month(rows: Sequence[tuple[Any, ...]], months: int) -> tuple[list[int], int]:
    """``width_bucket`` counts as one count a month, and the count before the first."""
    counts = [0] * months
    before = 0
    for bucket, number in rows:
        if bucket == 0:
            before += int(number)
        else:
            counts[int(bucket) - 1] += int(number)
    return counts, before


def _count_months(table: str, starts: Sequence[int]) -> Program[tuple[list[int], int]]:
    """The rows of ``table`` in each month that starts at ``starts``, and before the first."""
    rows = yield Query(
        f"SELECT width_bucket(received_at_us, ?::bigint[]), COUNT(*) FROM {table} GROUP BY 1",  # noqa: S608 - one of ours
        (list(starts),),
    )
    return _per_month(rows, len(starts))


def _count_legacy(upper: int) -> Program[tuple[tuple[int, int], ...]]:
    """Every month of events_legacy from its first event on, with its rows: one read of the
    whole table, without the statement timeout (it blocks no writer)."""
    yield Query("SET LOCAL statement_timeout = 0")
    rows = yield Query("SELECT MIN(received_at_us) FROM events_legacy")
    if rows[0][0] is None:
        return ()
    starts = _month_starts(int(rows[0][0]), upper)
    counts, _ = yield from _count_months(_LEGACY, starts)
    return tuple(zip(starts, counts, strict=True))


def _bounds_of(start_us: int) -> tuple[str, int, int]:
    start = from_micros(start_us)
    return partition_name(start), start_us, _micros(month_start(start, 1))


def _begin(counted: Sequence[tuple[int, int]]) -> Program[None]:
    """Set the split up (step 1), unless it has begun or there is nothing to split."""
    yield _SPLIT_LOCK
    state = yield from _state()
    if state.upper is None or state.begun:
        return
    if _micros(month_start(from_micros(state.upper))) != state.upper:
        raise StoreError(
            f"events_legacy ends at {from_micros(state.upper).isoformat()}, not at the start "
            "of a month: it cannot be split into monthly partitions"
        )
    [(version,)] = yield Query("SELECT current_setting('server_version_num')::int")
    if int(version) < 140000:
        raise StoreError(
            "splitting events_legacy needs PostgreSQL 14 or later, which reads a range of "
            "blocks without scanning the whole table"
        )
    if not (yield Query(_KEY_SQL)):
        raise StoreError(
            "events_legacy has no unique index on event_id (the primary key of the table it "
            "was), which the split reads rows by: restore it before splitting"
        )
    for statement in _SPLIT_DDL:
        yield Query(statement)
    # After the trigger: every row written from now on is recorded, every row there was is in
    # these blocks.
    [(first, blocks)] = yield Query(
        f"SELECT MIN(received_at_us), {_BLOCKS} FROM events_legacy"  # noqa: S608 - constant text
    )
    starts = [] if first is None else _month_starts(int(first), state.upper)
    named = [_bounds_of(start) for start in starts]
    taken = yield Query(
        "SELECT relname FROM pg_class WHERE relnamespace = current_schema()::regnamespace "
        "AND relname = ANY(?)",
        ([name for name, _, _ in named],),
    )
    if taken:
        raise StoreError(
            "cannot stage the monthly partitions of events_legacy: "
            f"{', '.join(sorted(str(row[0]) for row in taken))} exist already"
        )
    yield Query(
        "CREATE TABLE events_split (LIKE events INCLUDING DEFAULTS INCLUDING INDEXES) "
        "PARTITION BY RANGE (received_at_us)"
    )
    for name, low, high in named:
        # The names and bounds are computed here. The CHECK, proven while the table is empty,
        # is what lets the swap attach it to events without a scan.
        yield Query(
            f"CREATE TABLE {name} PARTITION OF events_split FOR VALUES FROM ({low}) TO ({high})"
        )
        yield Query(
            f"ALTER TABLE {name} ADD CONSTRAINT split_bound "
            f"CHECK (received_at_us >= {low} AND received_at_us < {high})"
        )
    yield Query(
        "CREATE TABLE legacy_split (id INTEGER PRIMARY KEY CHECK (id = 1), "
        "next_block BIGINT NOT NULL, blocks BIGINT NOT NULL, checked BOOLEAN NOT NULL)"
    )
    yield Query(
        "INSERT INTO legacy_split (id, next_block, blocks, checked) VALUES (1, 0, ?, FALSE)",
        (int(blocks),),
    )
    yield Query(
        "CREATE TABLE legacy_split_months (month_us BIGINT PRIMARY KEY, rows BIGINT NOT NULL)"
    )
    rows = dict(counted)
    yield Query(
        "INSERT INTO legacy_split_months (month_us, rows) "
        "SELECT * FROM unnest(?::bigint[], ?::bigint[])",
        (starts, [rows.get(start, 0) for start in starts]),
    )


@cache
def _columns(prefix: str = "") -> str:
    from unimailtrack.tracking._schema import column_kinds

    return ", ".join(f"{prefix}{name}" for name in column_kinds()["events"])


def _copy_batch(step: int) -> Program[tuple[int, int]]:
    """Copy the next ``step`` blocks of events_legacy and move the cursor past them, in one
    transaction (step 2); the blocks copied and the blocks in all, after it."""
    yield _SPLIT_LOCK
    [(begun,)] = yield Query("SELECT to_regclass('legacy_split') IS NOT NULL")
    if not begun:
        raise StoreError("the split of events_legacy was finished or abandoned meanwhile")
    [(done, total)] = yield Query(
        "SELECT next_block, blocks FROM legacy_split WHERE id = 1 FOR UPDATE"
    )
    done, total = int(done), int(total)
    if done >= total:
        return done, total
    end = min(total, done + step)
    # A TID range scan reads only these blocks; the bounds are integers computed here.
    yield Query(
        f"INSERT INTO events_split ({_columns()}) SELECT {_columns()} FROM events_legacy "  # noqa: S608
        f"WHERE ctid >= '({done},0)'::tid AND ctid < '({end},0)'::tid"
    )
    yield Query("UPDATE legacy_split SET next_block = ? WHERE id = 1", (end,))
    return end, total


_TOUCHED_ROWS = (
    "legacy_split_touched t CROSS JOIN LATERAL "
    "(SELECT * FROM events_legacy l WHERE l.event_id = t.event_id LIMIT 1) l"
)
"""Each recorded id with events_legacy's row, read by its key: the LIMIT keeps the planner
from joining by a scan of all of events_legacy instead."""


def _replace_touched(starts: Sequence[int]) -> Program[tuple[list[int], list[int]]]:
    """Replace the staged copies of every recorded id by the row events_legacy holds, and
    forget the ids; the staged rows removed in each month, and the recorded ids that were in
    events_legacy before they were recorded (updated, not inserted), in each month."""
    yield Query("ANALYZE legacy_split_touched")  # a few rows, or many: let the planner know
    # received_at_us never changes, so a copy is found through the staged partitions' index
    # on it, at the time events_legacy's row was received.
    gone = yield Query(
        f"WITH gone AS (DELETE FROM events_split s USING {_TOUCHED_ROWS} "  # noqa: S608
        "WHERE s.received_at_us = l.received_at_us AND s.event_id = t.event_id "
        "RETURNING s.received_at_us) "
        "SELECT width_bucket(received_at_us, ?::bigint[]), COUNT(*) FROM gone GROUP BY 1",
        (list(starts),),
    )
    yield Query(
        f"INSERT INTO events_split ({_columns()}) SELECT {_columns('l.')} FROM {_TOUCHED_ROWS}"  # noqa: S608
    )
    were = yield Query(
        "SELECT width_bucket(l.received_at_us, ?::bigint[]), COUNT(*) "  # noqa: S608
        f"FROM {_TOUCHED_ROWS} WHERE NOT t.inserted GROUP BY 1",
        (list(starts),),
    )
    yield Query("DELETE FROM legacy_split_touched")
    return _per_month(gone, len(starts))[0], _per_month(were, len(starts))[0]


def _check(starts: Sequence[int]) -> Program[None]:
    """Step 3, on one snapshot: what was written to events_legacy during the copy is copied
    again, and then each month must hold as many rows in the staging as in events_legacy."""
    yield Query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    yield Query("SET LOCAL statement_timeout = 0")
    yield _SPLIT_LOCK
    [(checked,)] = yield Query("SELECT checked FROM legacy_split WHERE id = 1")
    if checked:
        return
    # Statistics for the staged partitions, which they keep once swapped in, and which the
    # swap's statements are planned by.
    yield Query("ANALYZE events_split")
    yield from _replace_touched(starts)
    legacy, before = yield from _count_months(_LEGACY, starts)
    staged, _ = yield from _count_months("events_split", starts)
    if before or legacy != staged:
        wrong = [
            f"{partition_name(from_micros(start))}: {ours} copied, {theirs} in events_legacy"
            for start, ours, theirs in zip(starts, staged, legacy, strict=True)
            if ours != theirs
        ]
        if before:
            wrong.append(f"{before} rows in events_legacy before its first month")
        raise StoreError(f"the copy of events_legacy does not match it ({'; '.join(wrong)})")
    yield Query(
        "UPDATE legacy_split_months m SET rows = c.rows "
        "FROM unnest(?::bigint[], ?::bigint[]) AS c(month_us, rows) WHERE m.month_us = c.month_us",
        (list(starts), legacy),
    )
    yield Query("UPDATE legacy_split SET checked = TRUE WHERE id = 1")


def _swap(starts: Sequence[int]) -> Program[None]:
    """Step 4: the monthly partitions take the place of events_legacy."""
    yield Query(f"SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT}'")
    yield _SPLIT_LOCK
    [(begun,)] = yield Query("SELECT to_regclass('legacy_split') IS NOT NULL")
    if not begun:
        return  # swapped meanwhile
    [(ready,)] = yield Query(
        "SELECT next_block >= blocks AND checked FROM legacy_split WHERE id = 1"
    )
    if not ready:
        raise StoreError("the copy of events_legacy is not complete and checked: run the split")
    # Every partition of events with it; nothing writes events_legacy from here on.
    yield Query("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
    removed, were = yield from _replace_touched(starts)
    if removed != were:
        raise StoreError(
            "the copy of events_legacy changed since it was checked "
            f"(copies removed by month {removed}, expected {were}); nothing was swapped"
        )
    yield Query("ALTER TABLE events DETACH PARTITION events_legacy")
    for start in starts:
        name, low, high = _bounds_of(start)
        yield Query(f"ALTER TABLE events_split DETACH PARTITION {name}")
        yield Query(
            f"ALTER TABLE events ATTACH PARTITION {name} FOR VALUES FROM ({low}) TO ({high})"
        )
        yield Query(f"ALTER TABLE {name} DROP CONSTRAINT split_bound")
    yield Query("DROP TABLE events_legacy")
    yield from _drop_split()


def _drop_split() -> Program[None]:
    yield Query(f"DROP TABLE IF EXISTS {_SPLIT_TABLES}")
    yield Query("DROP FUNCTION IF EXISTS legacy_split_touch()")


def _abandon() -> Program[None]:
    """events_legacy is gone (retention dropped it whole): so is what was staged for it."""
    yield _SPLIT_LOCK
    bounds = yield from _partitions()
    if not any(name == _LEGACY for name, _, _ in bounds):
        yield from _drop_split()


def _undo() -> Program[tuple[int, int]]:
    """Undo a split under way: the trigger off events_legacy, the staging and the progress
    dropped; events_legacy itself was never changed. The blocks that had been copied, of how
    many."""
    yield _SPLIT_LOCK
    state = yield from _state()
    done = (state.next_block, state.blocks) if state.begun else (0, state.blocks)
    if state.upper is not None:
        yield Query(f"DROP TRIGGER IF EXISTS legacy_split_touch ON {_LEGACY}")
    yield from _drop_split()
    return done


def _blocks_per_batch(batch: int, state: _Split, rows: int) -> int:
    """Blocks holding about ``batch`` rows: the planner's rows per block (``reltuples`` over
    ``relpages``), or the rows counted over the blocks when the table was never analysed."""
    if state.tuples > 0 and state.pages > 0:
        per_block = state.tuples / state.pages
    elif state.blocks > 0:
        per_block = rows / state.blocks
    else:
        per_block = 0.0
    if per_block <= 0:
        return max(1, state.blocks)
    return max(1, int(batch / per_block))


def _lock_not_granted(exc: StoreError) -> bool:
    return getattr(exc.__cause__, "sqlstate", None) == "55P03"  # lock_not_available


def _swap_when_locked(run: Runner, starts: Sequence[int]) -> None:
    for attempt in range(SWAP_ATTEMPTS):
        try:
            run(partial(_swap, starts), True)
            return
        except StoreError as exc:
            if not _lock_not_granted(exc):
                raise
            if attempt == SWAP_ATTEMPTS - 1:
                raise StoreError(
                    f"the copy of events_legacy is complete, but the events table could not be "
                    f"locked within {SWAP_LOCK_TIMEOUT} ({SWAP_ATTEMPTS} tries): run the split "
                    "again to swap it in"
                ) from exc
        time.sleep(0.5 * (attempt + 1))


def _report(
    months: Sequence[tuple[int, int]],
    done: int,
    total: int,
    applied: bool,
    finished: bool,
    note: str = "",
) -> SplitReport:
    return SplitReport(
        tuple((from_micros(start), rows) for start, rows in months),
        sum(rows for _, rows in months),
        done,
        total,
        applied,
        finished,
        note,
    )


def split_legacy(
    dialect: str,
    run: Runner,
    *,
    now: datetime,
    batch: int = SPLIT_BATCH,
    apply: bool = False,
    max_batches: int | None = None,
) -> SplitReport:
    """Split ``events_legacy`` into monthly partitions (``apply``), or count what it holds.

    Resumable: every step commits with its progress, so a call after a failure (or after
    ``max_batches`` copy transactions) goes on where the last one stopped."""
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    if max_batches is not None and max_batches < 0:
        raise ValueError(f"max_batches must not be negative, got {max_batches}")
    if dialect != "postgresql":
        return SplitReport((), 0, 0, 0, apply, True, "nothing to split: SQLite keeps one table")
    state: _Split = run(_state, False)
    if state.upper is None:
        if apply and (state.begun or state.staged):
            run(_abandon, True)
        return SplitReport((), 0, 0, 0, apply, True, "nothing to split: no events_legacy")
    bound = from_micros(state.upper)
    if now < bound:
        if apply:
            raise ConfigurationError(
                f"events_legacy still receives events until {bound.isoformat()}; split it "
                "once that month is over"
            )
        note = f"events_legacy receives events until {bound.isoformat()}; split it from then"
    elif state.begun:
        note = f"under way: {state.next_block} of {state.blocks} blocks copied"
    else:
        note = ""
    if not apply:
        months = run(partial(_count_legacy, state.upper), False)
        return _report(months, state.next_block, state.blocks, False, False, note)
    if not state.begun:
        run(partial(_begin, run(partial(_count_legacy, state.upper), False)), True)
        return split_legacy(dialect, run, now=now, batch=batch, apply=True, max_batches=max_batches)
    months = state.months
    step = _blocks_per_batch(batch, state, sum(rows for _, rows in months))
    done, total = state.next_block, state.blocks
    batches = 0
    while done < total and (max_batches is None or batches < max_batches):
        done, total = run(partial(_copy_batch, step), True)
        batches += 1
    if done < total:
        return _report(months, done, total, True, False)
    starts = [start for start, _ in months]
    if not state.checked:
        run(partial(_check, starts), True)
        months = run(_state, False).months
    _swap_when_locked(run, starts)
    return _report(months, total, total, True, True)


def abandon_split(dialect: str, run: Runner) -> SplitReport:
    """Give up a split under way (``split_legacy(apply=True)`` begun but not swapped in):
    events_legacy stays as it is, the copy made so far is dropped, and so is the trigger that
    recorded every write to events_legacy for it. A later ``split_legacy`` starts afresh."""
    if dialect != "postgresql":
        return SplitReport((), 0, 0, 0, True, False, "nothing to abandon: SQLite keeps one table")
    state: _Split = run(_state, False)
    if not (state.begun or state.staged):
        return SplitReport((), 0, 0, 0, True, False, "nothing to abandon: no split under way")
    done, total = run(_undo, True)
    return _report(
        state.months,
        done,
        total,
        True,
        False,
        f"abandoned after {done} of {total} blocks; events_legacy is as it was",
    )


def _split_rows(report: SplitReport) -> Sequence[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = [
        ("applied", report.applied),
        ("finished", report.finished),
        ("blocks", f"{report.blocks_done} / {report.blocks_total}"),
        ("rows", report.rows_total),
    ]
    rows += [(start.strftime("%Y-%m"), count) for start, count in report.months]
    if report.note:
        rows.append(("note", report.note))
    return rows
