"""Tracker speed: ingesting webhook batches, and the screens' queries over a million events.

Part 1, ingestion. Thirty SendGrid Event Webhook bodies of 1,000 events each, parsed
beforehand (parsing is not timed: both sides would do the same), are stored one transaction
per body: by the tracker, and by the reference, a bare loop that computes every one of the 23
columns of the tracker's ``events`` table the plain way (the same JSON encoder for ``raw``,
``tags`` and ``metadata``) and writes them into that very table, created by the tracker's own
migrations (so the same types, the same primary key and the same three secondary indexes):
``sqlite3.executemany`` with the tracker's pragmas on SQLite, a psycopg ``COPY`` on PostgreSQL
(when ``UNIMAILTRACK_BENCH_POSTGRES_URL``, or the test server, answers). The same again with
1,000 batches of one event each, what a provider that posts one event per request causes.
The tracker does more than the reference (an idempotent insert that reports what was new, the
state upsert, suppressions, change reports); the ratio says what that costs. A third row is a
lower bound on that: the reference plus the least write any store that keeps each send's
state must make (one unindexed column of each state row the batch touches; on PostgreSQL
also the claim of the ids in ``event_ids``, where the partitioned layout keeps uniqueness).
A fourth row is the tracker's own statements without the tracker: every statement (and every
COPY) it sent for the same batches, read at the driver in an untimed run and replayed, with
the same parameters, by a bare loop into a fresh store of the same state. What the tracker's
Python adds is the gap between this row and the tracker's; a target above this row cannot be
met by tuning that Python, only by sending the database less work.

The stream is shaped like production: 10,000 messages sent in bulk sends of 100 (recorded by
the tracker beforehand, as the mailer does, and not timed), each with the time-ordered tracking
id the library gives it; every body carries events (in the event mix of ``parse_sendgrid.py``)
for the messages sent in the last while, so a message's events spread over several bodies.
Each round stores into fresh stores, the contenders in rotating order; the ratio is taken
within the round (min / median / max over ``--rounds``, default 5).

Part 2, reading. An SQLite tracker holding 1,000,000 events about 200,000 sends (one of them
a 100,000-recipient bulk send) answers a contact's history page and the bulk send's analytics
row; each median beside a bare ``sqlite3`` query over the same tables (the page's rows by the
recipient index; a count over the bulk send) as the reference.

Run with ``.venv/bin/python bench/ingest.py`` (``--quick`` shrinks part 2 tenfold;
``--ingestion`` or ``--reading`` runs one part).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _harness import Row, Target, print_table, record_targets, rounds, target_from_row
from parse_sendgrid import MIX, START
from unimailtrack import (
    BounceKind,
    DeliveryStatus,
    Email,
    EmailEvent,
    EventType,
    RecipientResult,
    SendResult,
)
from unimailtrack.adapters.sendgrid import parse_events
from unimailtrack.lifecycle import RANK
from unimailtrack.tracking import Tracker
from unimailtrack.tracking._programs import _EVENT_COLUMNS as EVENT_COLUMNS
from unimailtrack.tracking._programs import dumps

BODIES = 30
EVENTS_PER_BODY = 1000
MESSAGES = 10_000
BULK = 100
ROUNDS = 5
SINGLES = 1000
BOUND = "lower bound: the reference + the least state write"
"""The row of what any store that keeps a state per send must at least do (``_sqlite_bound``,
``_postgres_bound``): a target above it cannot be met by a tracker, only by a store that keeps
no state."""
REPLAY = "the tracker's own statements, replayed bare"
"""The row of what the tracker's statements cost without it (``_sqlite_replay``,
``_postgres_replay``): a target above it cannot be met by tuning the tracker's Python."""
CLOCK = time.process_time if "--cpu" in sys.argv else time.perf_counter
"""``--cpu`` times SQLite rows by this process's CPU time (steadier on a busy machine; not
meaningful for PostgreSQL, whose work is in the server)."""
RECEIVED = datetime(2024, 1, 15, tzinfo=UTC)
RECEIVED_US = int(RECEIVED.timestamp() * 1_000_000)
POSTGRES_URL = os.environ.get(
    "UNIMAILTRACK_BENCH_POSTGRES_URL",
    os.environ.get("UNIMAILTRACK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"),
)

# --------------------------------------------------------------------------- part 1


@dataclass(frozen=True)
class Stream:
    """The sends, and the webhook bodies that report on them."""

    tracking_ids: list[str]
    bodies: list[bytes]

    def address(self, index: int) -> str:
        return f"user{index}@example.com"


def stream(seed: int = 7) -> Stream:
    rng = random.Random(seed)
    sent_at_ms = START * 1000
    tracking_ids = [
        f"{((sent_at_ms + i // BULK) << 80) | rng.getrandbits(80):032x}" for i in range(MESSAGES)
    ]
    names = list(MIX)
    weights = [MIX[name][0] for name in names]
    window = 2_000
    step = (MESSAGES - window) // BODIES
    bodies = []
    for number in range(BODIES):
        items = []
        for _ in range(EVENTS_PER_BODY):
            index = number * step + rng.randrange(window)
            name = rng.choices(names, weights)[0]
            message = f"{index:022x}"
            items.append(
                {
                    "email": f"user{index}@example.com",
                    "timestamp": START + 60 * number + rng.randrange(60),
                    "smtp-id": f"<{message}@geopod-ismtpd-4>",
                    "event": name,
                    "category": ["transactional"],
                    "sg_event_id": f"{rng.getrandbits(192):048x}",
                    "sg_message_id": f"{message}.filterdrecv-5bd4d5c8b8-x2h7k-1-65A4F3D0-2F.0",
                    "unimailtrack_id": tracking_ids[index],
                    "order_ref": f"ORD-{index}",
                    **MIX[name][1](rng),
                }
            )
        bodies.append((json.dumps(items, separators=(",", ":")) + "\r\n").encode())
    return Stream(tracking_ids, bodies)


def _record_sends(tracker: Tracker, data: Stream) -> None:
    for start in range(0, MESSAGES, BULK):
        indexes = range(start, start + BULK)
        email = Email(
            sender="Shop <orders@example.com>",
            to=[data.address(i) for i in indexes],
            subject="Your order",
            text=".",
            category="transactional",
        )
        tracker.record_send(
            email,
            SendResult(
                bulk_id=f"bulk-{start // BULK}",
                recipients=[
                    RecipientResult(
                        recipient=data.address(i),
                        tracking_id=data.tracking_ids[i],
                        status=DeliveryStatus.ACCEPTED,
                        message_id=f"{i:022x}",
                        provider="sendgrid",
                    )
                    for i in indexes
                ],
            ),
        )


_closing: list[sqlite3.Connection | Tracker | Any] = []


def _reference_rows(events: list[EmailEvent], received_at_us: int) -> list[tuple[Any, ...]]:
    """Every column of the tracker's ``events`` table, computed the plain way, with the same
    JSON encoder the tracker uses."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    micro = timedelta(microseconds=1)
    rows = []
    for e in events:
        key = e.recipient.strip().casefold()
        rows.append(
            (
                e.event_id,
                e.provider,
                e.type.value,
                e.provider_event,
                e.recipient,
                key,
                key.rpartition("@")[2],
                e.message_id,
                e.message_id.partition(".")[0] if e.message_id else None,
                e.tracking_id,
                (e.timestamp - epoch) // micro,
                RANK[e.type],
                e.reason,
                e.bounce.value if e.bounce else None,
                e.smtp_status,
                e.attempt,
                e.url,
                e.user_agent,
                e.machine,
                dumps(e.tags) if e.tags else None,
                dumps(e.metadata) if e.metadata else None,
                dumps(e.raw),
                received_at_us,
            )
        )
    return rows


def _schema_only(url: str) -> None:
    """Create the tracker's exact schema (every table and index) at ``url``, then let go."""
    Tracker.open(url).close()


def _schema_with_sends(url: str, data: Stream) -> None:
    """The tracker's schema at ``url`` with the sends of ``data`` recorded, as the tracker
    contender starts, then let go."""
    tracker = Tracker.open(url)
    _record_sends(tracker, data)
    tracker.close()


_COPY = f"COPY events ({EVENT_COLUMNS}) FROM STDIN"
_SQLITE_INSERT = f"INSERT INTO events ({EVENT_COLUMNS}) VALUES ({', '.join('?' * 23)})"


def _sqlite_connection(path: Path) -> sqlite3.Connection:
    """A bare connection to ``path`` with the tracker's pragmas, closed after the round."""
    conn = sqlite3.connect(path, isolation_level=None)
    _closing.append(conn)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA cache_size = -32768")
    return conn


def _postgres_connection(url: str) -> Any:
    """A bare psycopg connection in the schema of ``url``, closed after the round."""
    import psycopg

    from unimailtrack.tracking._postgres import parse_postgres_url

    conninfo, options = parse_postgres_url(url)
    conn = psycopg.connect(conninfo, options=f"-c search_path={options['schema']}")
    _closing.append(conn)
    return conn


def _sqlite_reference(path: Path, data: Stream) -> Callable[[list[EmailEvent]], None]:
    """A bare ``executemany`` of every column into the tracker's own ``events`` table, with
    its indexes, the tracker's pragmas, one transaction per batch."""
    _schema_only(f"sqlite:///{path}")
    conn = _sqlite_connection(path)

    def store(events: list[EmailEvent]) -> None:
        rows = _reference_rows(events, RECEIVED_US)
        conn.execute("BEGIN")
        conn.executemany(_SQLITE_INSERT, rows)
        conn.execute("COMMIT")

    return store


def _postgres_reference(url: str) -> Callable[[list[EmailEvent]], None]:
    """A bare psycopg ``COPY`` of every column into the tracker's own ``events`` table (the
    same schema, types and indexes), one transaction per batch."""
    _schema_only(url)
    conn = _postgres_connection(url)

    def store(events: list[EmailEvent]) -> None:
        rows = _reference_rows(events, RECEIVED_US)
        with conn.transaction(), conn.cursor() as cursor, cursor.copy(_COPY) as sink:
            for row in rows:
                sink.write_row(row)

    return store


def _states(events: list[EmailEvent]) -> list[str]:
    """The tracking ids of the sends a batch's events are about, once each, in order."""
    return sorted({e.tracking_id for e in events if e.tracking_id is not None})


def _sqlite_bound(path: Path, data: Stream) -> Callable[[list[EmailEvent]], None]:
    """The least a store that keeps each send's delivery state can write for a batch: the
    reference's insert, and one unindexed column of the state row of each send the batch is
    about (the sends recorded first, as for the tracker, so that the rows are there)."""
    _schema_with_sends(f"sqlite:///{path}", data)
    conn = _sqlite_connection(path)
    touch = "UPDATE messages SET updated_at_us = ? WHERE tracking_id = ?"

    def store(events: list[EmailEvent]) -> None:
        rows = _reference_rows(events, RECEIVED_US)
        conn.execute("BEGIN")
        conn.executemany(_SQLITE_INSERT, rows)
        conn.executemany(touch, [(RECEIVED_US, t) for t in _states(events)])
        conn.execute("COMMIT")

    return store


def _postgres_bound(url: str, data: Stream) -> Callable[[list[EmailEvent]], None]:
    """The least the partitioned PostgreSQL layout can write for a batch: the ids claimed in
    ``event_ids`` (uniqueness cannot live in the partitioned table, and the claim says which
    events are new), the reference's COPY, and one unindexed column of the state row of each
    send the batch is about (the sends recorded first, as for the tracker)."""
    _schema_with_sends(url, data)
    conn = _postgres_connection(url)
    claim = (
        "INSERT INTO event_ids (event_id, received_at_us) "
        "SELECT * FROM unnest(%b::text[], %b::int8[]) ON CONFLICT DO NOTHING RETURNING event_id"
    )
    touch = (
        "UPDATE messages SET updated_at_us = %b FROM unnest(%b::text[]) AS v(id) "
        "WHERE messages.tracking_id = v.id"
    )

    def store(events: list[EmailEvent]) -> None:
        rows = _reference_rows(events, RECEIVED_US)
        with conn.transaction(), conn.cursor() as cursor:
            cursor.execute(claim, ([r[0] for r in rows], [RECEIVED_US] * len(rows)))
            new = {found for (found,) in cursor.fetchall()}
            with cursor.copy(_COPY) as sink:
                for row in rows:
                    if row[0] in new:
                        sink.write_row(row)
            cursor.execute(touch, (RECEIVED_US, _states(events)))

    return store


def _tracker_store(url: str, data: Stream) -> Callable[[list[EmailEvent]], None]:
    tracker = Tracker.open(url, clock=lambda: RECEIVED)
    _closing.append(tracker)
    _record_sends(tracker, data)

    def store(events: list[EmailEvent]) -> None:
        tracker.ingest(events)

    return store


Replayed = list[list[tuple[str, str, Any]]]
"""Per batch, what a store sent: ("sql", text, parameters) or ("copy", text, rows)."""


class _RecordingCursor:
    """An sqlite3 cursor that notes every statement it runs, with its parameters."""

    def __init__(self, cursor: sqlite3.Cursor, log: Replayed) -> None:
        self._cursor, self._log = cursor, log

    def execute(self, sql: str, params: Any = ()) -> _RecordingCursor:
        self._log[-1].append(("sql", sql, params))
        self._cursor.execute(sql, params)
        return self

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


class _RecordingConnection:
    """An sqlite3 connection whose cursors note their statements (BEGIN and COMMIT are the
    replay's own)."""

    def __init__(self, conn: sqlite3.Connection, log: Replayed) -> None:
        self._conn, self._log = conn, log

    def cursor(self) -> _RecordingCursor:
        return _RecordingCursor(self._conn.cursor(), self._log)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def _record_sqlite(path: Path, data: Stream, batches: list[list[EmailEvent]]) -> Replayed:
    """The statements the tracker sends to store ``batches`` (in an untimed run)."""
    tracker = Tracker.open(f"sqlite:///{path}", clock=lambda: RECEIVED)
    _record_sends(tracker, data)
    store = tracker._store
    log: Replayed = []
    store._local.conn = _RecordingConnection(store._connection(), log)  # type: ignore[attr-defined]
    for events in batches:
        log.append([])
        tracker.ingest(events)
    tracker.close()
    return log


def record_postgres(
    url: str,
    data: Stream | None,
    batches: list[list[EmailEvent]],
    clock: Callable[[], datetime] | None = None,
) -> Replayed:
    """The statements and COPYs the tracker sends to store ``batches`` (in an untimed run, the
    sends of ``data`` recorded first), read where the PostgreSQL store hands each to its
    cursor. ``clock`` is the tracker's (this benchmark's fixed time of receipt by default)."""
    from unimailtrack.tracking import _postgres

    tracker = Tracker.open(url, clock=clock or (lambda: RECEIVED))
    if data is not None:
        _record_sends(tracker, data)
    log: Replayed = []
    plain, events_step = _postgres.execute_step, _postgres._event_step

    def execute_step(cursor: Any, dialect: Any, step: Any, emitted: Any) -> Any:
        class Noting:
            description: Any = None

            def execute(self, sql: str, params: Any = ()) -> None:
                log[-1].append(("sql", sql, params))
                cursor.execute(sql, params)
                self.description = cursor.description

            def fetchall(self) -> Any:
                return cursor.fetchall()

        return plain(Noting(), dialect, step, emitted)

    def event_step(cursor: Any, ask: Any) -> Any:
        if isinstance(ask, _postgres._Copy):
            log[-1].append(("copy", ask.sql, list(ask.rows)))
        else:
            log[-1].append(("sql", *ask))
        return events_step(cursor, ask)

    _postgres.execute_step, _postgres._event_step = execute_step, event_step  # type: ignore[assignment]
    try:
        for events in batches:
            log.append([])
            tracker.ingest(events)
    finally:
        _postgres.execute_step, _postgres._event_step = plain, events_step  # type: ignore[assignment]
        tracker.close()
    return log


def _sqlite_replay(path: Path, data: Stream, log: Replayed) -> Callable[[list[EmailEvent]], None]:
    """The tracker's statements for each batch, in turn, by a bare connection with the
    tracker's pragmas, one ``BEGIN IMMEDIATE`` transaction per batch, into a fresh store with
    the same sends recorded."""
    _schema_with_sends(f"sqlite:///{path}", data)
    conn = _sqlite_connection(path)
    batches = iter(log)

    def store(events: list[EmailEvent]) -> None:
        conn.execute("BEGIN IMMEDIATE")
        for _, sql, params in next(batches):
            conn.execute(sql, params).fetchall()
        conn.execute("COMMIT")

    return store


def replay_postgres(conn: Any, statements: list[tuple[str, str, Any]]) -> None:
    """One batch's recorded statements and COPYs, in one transaction on ``conn``."""
    with conn.transaction(), conn.cursor() as cursor:
        for kind, sql, values in statements:
            if kind == "copy":
                with cursor.copy(sql) as sink:
                    for row in values:
                        sink.write_row(row)
            else:
                cursor.execute(sql, values)
                if cursor.description is not None:
                    cursor.fetchall()


def _postgres_replay(url: str, data: Stream, log: Replayed) -> Callable[[list[EmailEvent]], None]:
    """The tracker's statements and COPYs for each batch, in turn, by a bare psycopg
    connection, one transaction per batch, into a fresh schema with the same sends."""
    _schema_with_sends(url, data)
    conn = _postgres_connection(url)
    batches = iter(log)

    def store(events: list[EmailEvent]) -> None:
        replay_postgres(conn, next(batches))

    return store


def _contender(
    make_store: Callable[[], Callable[[list[EmailEvent]], None]], batches: list[list[EmailEvent]]
) -> Callable[[], float]:
    """Events per second storing ``batches`` into a fresh store (made untimed)."""

    def run() -> float:
        store = make_store()
        try:
            started = CLOCK()
            for events in batches:
                store(events)
            return sum(map(len, batches)) / (CLOCK() - started)
        finally:
            while _closing:
                _closing.pop().close()

    return run


def postgres_reachable() -> bool:
    try:
        import psycopg

        with psycopg.connect(POSTGRES_URL, connect_timeout=3):
            return True
    except Exception:
        return False


@contextlib.contextmanager
def postgres_schemas() -> Iterator[Callable[[], str]]:
    """Fresh schemas for each round, dropped afterwards."""
    import psycopg
    from psycopg import sql

    made: list[str] = []

    def fresh() -> str:
        made.append(f"bench_{secrets.token_hex(4)}")
        separator = "&" if "?" in POSTGRES_URL else "?"
        return f"{POSTGRES_URL}{separator}schema={made[-1]}"

    try:
        yield fresh
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            for schema in made:
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def ingestion(workdir: Path, count: int) -> list[Target]:
    data = stream()
    bodies = [parse_events(body) for body in data.bodies]  # parsed once, not timed
    singles = [[event] for event in bodies[0][:SINGLES]]
    files = (workdir / f"store-{n}.sqlite3" for n in range(1_000_000))
    targets = []
    tables: list[tuple[str, list[Row], str]] = []

    def compare(
        title: str,
        ours: str,
        reference: str,
        make_ours: Callable[[], Callable[[list[EmailEvent]], None]],
        make_reference: Callable[[], Callable[[list[EmailEvent]], None]],
        batches: list[list[EmailEvent]],
        threshold: float | None,
        make_bound: Callable[[], Callable[[list[EmailEvent]], None]],
        make_replay: Callable[[], Callable[[list[EmailEvent]], None]],
    ) -> None:
        rows = rounds(
            {
                reference: _contender(make_reference, batches),
                ours: _contender(make_ours, batches),
                BOUND: _contender(make_bound, batches),
                REPLAY: _contender(make_replay, batches),
            },
            reference=reference,
            count=count,
        )
        tables.append((title, rows, reference))
        if threshold is not None:
            ours_row, bound, replay = (
                next(r for r in rows if r.label == label) for label in (ours, BOUND, REPLAY)
            )
            note = f"{bound.summary()}; {replay.summary()}"
            targets.append(target_from_row(f"{ours} / {reference}", ours_row, threshold, note=note))

    big = f"{BODIES} batches of {EVENTS_PER_BODY:,} events"
    sqlite_bodies = _record_sqlite(next(files), data, bodies)
    sqlite_singles = _record_sqlite(next(files), data, singles)
    compare(
        f"SQLite ingestion, {big}",
        "tracker.ingest, SQLite, 1,000-event batches",
        "bare executemany, same schema and indexes",
        lambda: _tracker_store(f"sqlite:///{next(files)}", data),
        lambda: _sqlite_reference(next(files), data),
        bodies,
        0.8,
        lambda: _sqlite_bound(next(files), data),
        lambda: _sqlite_replay(next(files), data, sqlite_bodies),
    )
    compare(
        f"SQLite ingestion, {SINGLES:,} batches of one event",
        "tracker.ingest, SQLite, 1-event batches",
        "bare executemany, same schema and indexes, 1 event",
        lambda: _tracker_store(f"sqlite:///{next(files)}", data),
        lambda: _sqlite_reference(next(files), data),
        singles,
        0.6,
        lambda: _sqlite_bound(next(files), data),
        lambda: _sqlite_replay(next(files), data, sqlite_singles),
    )
    with contextlib.ExitStack() as stack:
        if postgres_reachable():
            fresh = stack.enter_context(postgres_schemas())
            postgres_bodies = record_postgres(fresh(), data, bodies)
            postgres_singles = record_postgres(fresh(), data, singles)
            compare(
                f"PostgreSQL ingestion, {big}",
                "tracker.ingest, PostgreSQL, 1,000-event batches",
                "bare psycopg COPY, same schema and indexes",
                lambda: _tracker_store(fresh(), data),
                lambda: _postgres_reference(fresh()),
                bodies,
                0.6,
                lambda: _postgres_bound(fresh(), data),
                lambda: _postgres_replay(fresh(), data, postgres_bodies),
            )
            compare(
                f"PostgreSQL ingestion, {SINGLES:,} batches of one event",
                "tracker.ingest, PostgreSQL, 1-event batches",
                "bare psycopg COPY, same schema and indexes, 1 event",
                lambda: _tracker_store(fresh(), data),
                lambda: _postgres_reference(fresh()),
                singles,
                None,
                lambda: _postgres_bound(fresh(), data),
                lambda: _postgres_replay(fresh(), data, postgres_singles),
            )
        else:
            print(f"(no PostgreSQL at {POSTGRES_URL}: its rows are left out)")
    for title, rows, reference in tables:
        print_table(
            f"{title} ({count} rounds; store only, parsed beforehand)", rows, reference=reference
        )
    return targets


# --------------------------------------------------------------------------- part 2

SENT = datetime(2024, 1, 1, tzinfo=UTC)
STAGES = (
    (
        EventType.PROCESSED,
        EventType.DELIVERED,
        EventType.OPENED,
        EventType.OPENED,
        EventType.CLICKED,
    ),
    (
        EventType.PROCESSED,
        EventType.DELIVERED,
        EventType.OPENED,
        EventType.UNSUBSCRIBED,
        EventType.OPENED,
    ),
    (
        EventType.PROCESSED,
        EventType.DEFERRED,
        EventType.DEFERRED,
        EventType.DELIVERED,
        EventType.OPENED,
    ),
    (
        EventType.PROCESSED,
        EventType.DEFERRED,
        EventType.DEFERRED,
        EventType.DEFERRED,
        EventType.BOUNCED,
    ),
    (
        EventType.PROCESSED,
        EventType.DELIVERED,
        EventType.OPENED,
        EventType.COMPLAINED,
        EventType.OPENED,
    ),
)
"""Five events per send, in a handful of journeys."""


def _send(tracker: Tracker, bulk_id: str, addresses: list[str]) -> list[str]:
    """Record one send the way the mailer does; its tracking ids."""
    email = Email.model_construct(
        sender="Events <events@example.com>",
        to=[],
        cc=[],
        bcc=[],
        subject=f"Update {bulk_id}",
        text=".",
        category="share_link",
        metadata={"event_id": bulk_id},
        tags=[],
        track_opens=True,
        track_clicks=True,
        tracked=True,
    )
    ids = [f"{bulk_id}-{i:06d}" for i in range(len(addresses))]
    result = SendResult.model_construct(
        bulk_id=bulk_id,
        recipients=[
            RecipientResult.model_construct(
                recipient=address,
                tracking_id=tid,
                status=DeliveryStatus.ACCEPTED,
                message_id=f"m-{tid}",
                provider="sendgrid",
                error=None,
            )
            for tid, address in zip(ids, addresses, strict=True)
        ],
    )
    tracker.record_send(email, result)
    return ids


def _events(
    tracking_ids: list[str], addresses: list[str], at: datetime, rng: random.Random
) -> Iterator[EmailEvent]:
    for tid, address in zip(tracking_ids, addresses, strict=True):
        for step, kind in enumerate(rng.choice(STAGES)):
            yield EmailEvent(
                provider="sendgrid",
                type=kind,
                provider_event=kind.value,
                recipient=address,
                event_id=f"{tid}-{step}",
                timestamp=at + timedelta(seconds=60 * step + rng.randrange(60)),
                message_id=f"m-{tid}",
                tracking_id=tid,
                bounce=rng.choice(list(BounceKind)) if kind is EventType.BOUNCED else None,
                reason="250 2.0.0 OK" if kind is EventType.DELIVERED else None,
                raw={"event": kind.value, "email": address, "sg_event_id": f"{tid}-{step}"},
            )


def _ingest_all(tracker: Tracker, events: Iterator[EmailEvent], size: int = 10_000) -> int:
    total = 0
    chunk: list[EmailEvent] = []
    for item in events:
        chunk.append(item)
        if len(chunk) == size:
            total += tracker.ingest(chunk).new
            chunk = []
    if chunk:
        total += tracker.ingest(chunk).new
    return total


def build(path: Path, scale: int) -> tuple[Tracker, int]:
    """The store of part 2: a ``100_000 // scale``-recipient bulk send, as many sends again
    in small bulks to ``20_000 // scale`` contacts, and one contact with 300 sends; five
    events each. Returns the tracker and how many events it holds."""
    rng = random.Random(1)
    tracker = Tracker.open(f"sqlite:///{path}", clock=lambda: SENT + timedelta(days=30))
    big = [f"reader{i}@example.com" for i in range(100_000 // scale)]
    stored = _ingest_all(tracker, _events(_send(tracker, "big", big), big, SENT, rng))
    contacts = [f"contact{i}@example.com" for i in range(20_000 // scale)]
    for n in range(1_000 // scale):
        at = SENT + timedelta(minutes=10 * n)
        ada = ["ada@example.com"] if n < 300 else []
        addresses = rng.sample(contacts, 100 - len(ada)) + ada
        ids = _send(tracker, f"small{n:04d}", addresses)
        stored += _ingest_all(tracker, _events(ids, addresses, at, rng))
    return tracker, stored


def _median_ms(fn: Callable[[], object], runs: int) -> float:
    fn()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


def reading(workdir: Path, scale: int) -> None:
    path = workdir / "million.sqlite3"
    started = time.perf_counter()
    tracker, stored = build(path, scale)
    print(f"\nPart 2 store built: {stored:,} events in {time.perf_counter() - started:.0f}s")
    bare = sqlite3.connect(path)
    try:
        ada = tracker.history("ada@example.com")
        assert len(ada) == 25
        second = ada.next_cursor
        contact = "contact7@example.com"
        history_ms = _median_ms(lambda: tracker.history("ada@example.com"), 300)
        next_page_ms = _median_ms(lambda: tracker.history("ada@example.com", cursor=second), 300)
        contact_ms = _median_ms(lambda: tracker.history(contact), 300)
        bare_page_ms = _median_ms(
            lambda: bare.execute(
                "SELECT * FROM messages WHERE recipient_key = ? "
                "ORDER BY sent_at_us DESC, tracking_id DESC LIMIT 25",
                ("ada@example.com",),
            ).fetchall(),
            300,
        )
        stats = tracker.bulk_stats("big")
        assert stats.recipients == 100_000 // scale
        stats_ms = _median_ms(lambda: tracker.bulk_stats("big"), 21)
        bare_stats_ms = _median_ms(
            lambda: bare.execute(
                "SELECT COUNT(*), SUM(opens) FROM messages WHERE bulk_id = ?", ("big",)
            ).fetchall(),
            21,
        )
    finally:
        bare.close()
        tracker.close()
    width = 52
    print(f"Reading, with {stored:,} events stored (median; ratio to the bare query)")
    for label, ms, reference in (
        (f"history page 1 of {ada.total} (ada)", history_ms, bare_page_ms),
        ("history page 2, by cursor", next_page_ms, bare_page_ms),
        ("history page of a contact with ~5 sends", contact_ms, bare_page_ms),
        ("bare sqlite3: 25 rows by the recipient index", bare_page_ms, bare_page_ms),
        (f"analytics row of a {stats.recipients:,}-recipient send", stats_ms, bare_stats_ms),
        ("bare sqlite3: COUNT(*), SUM(opens) of that send", bare_stats_ms, bare_stats_ms),
    ):
        print(f"  {label:{width}} {ms:8.3f} ms  {ms / reference:6.2f}x")


def main() -> None:
    scale = 10 if "--quick" in sys.argv else 1
    count = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else ROUNDS
    with tempfile.TemporaryDirectory(prefix="unimailtrack-bench-") as workdir:
        if "--reading" not in sys.argv:
            record_targets("ingest", ingestion(Path(workdir), count))
        if "--ingestion" not in sys.argv:
            reading(Path(workdir), scale)


if __name__ == "__main__":
    main()
