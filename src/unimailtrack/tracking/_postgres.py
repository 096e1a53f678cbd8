"""The backend at scale: PostgreSQL through psycopg 3, shared by any number of processes.

One driver does all three jobs: a sync connection pool, an async pool (opened lazily in the
event loop that needs it; close it there with ``await tracker.aclose()``; a new one is opened
when that loop has ended and another asks), and a listener connection that ``LISTEN``s for
the changes other processes commit.

Transactions run at READ COMMITTED. What keeps concurrent writers right is in the SQL (see
``_programs``): upserts decided inside the database, rows touched in a stable order. A
deadlock or serialization failure that still happens is retried whole, out of the caller's
sight.

The URL is a libpq URL plus options of ours: ``schema`` (default ``unimailtrack``; created
when missing), ``pool_min`` and ``pool_max``, ``statement_timeout`` and ``lock_timeout``
(PostgreSQL durations such as ``10s`` or ``500ms``; ``0`` turns one off). Every statement of
ingestion (and of every other operation) runs under both, so that a stuck database (a lock
held, a statement that never ends) fails a webhook fast with 503 instead of holding every
connection of the pool; migrations run without them.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache, partial
from itertools import chain
from typing import TYPE_CHECKING, Any, ClassVar, TypeGuard, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from unimailtrack.errors import ConfigurationError, MissingDependency
from unimailtrack.tracking._live import decode_changes, encode_changes
from unimailtrack.tracking._partitions import (
    ensure_partitions,
    month_start,
)
from unimailtrack.tracking._records import StateChange
from unimailtrack.tracking._schema import column_kinds, migrate
from unimailtrack.tracking._store import (
    Dialect,
    Emit,
    InsertNew,
    Outcome,
    Params,
    ProgramFactory,
    Query,
    Rows,
    Statement,
    Step,
    Store,
    StoreContentError,
    StoreError,
    Write,
    adrive,
    awith_retries,
    drive,
    execute_step,
    with_retries,
)

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import AsyncConnectionPool, ConnectionPool

__all__ = ["PostgresDialect", "PostgresStore", "parse_postgres_url"]

log = logging.getLogger("unimailtrack.tracking")

T = TypeVar("T")

DEFAULT_SCHEMA = "unimailtrack"
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,47}")
_OUR_OPTIONS = frozenset({"schema", "pool_min", "pool_max", "statement_timeout", "lock_timeout"})
DEFAULT_STATEMENT_TIMEOUT = "10s"
DEFAULT_LOCK_TIMEOUT = "2s"
_DURATION = re.compile(r"\d{1,9}(?:us|ms|s|min)?")
_OPEN_TIMEOUT = 10.0
_LISTEN_POLL = 0.2
"""Seconds between the listener's checks that it should stop."""


class PostgresDialect(Dialect):
    name = "postgresql"
    positional = "%s"
    named = "%({})s"
    max_params = 65535
    types: ClassVar[Mapping[str, str]] = {
        "key": 'TEXT COLLATE "C"',
        "text": "TEXT",
        "int": "INTEGER",
        "bigint": "BIGINT",
        "bool": "BOOLEAN",
        "json": "JSONB",
        "document": "JSON",
        "blob": "BYTEA",
        "serial": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    }

    array_types: ClassVar[Mapping[str, str]] = {
        "key": "text[]",
        "text": "text[]",
        "int": "int4[]",
        "bigint": "int8[]",
        "bool": "bool[]",
        "json": "jsonb[]",
        "document": "json[]",
        "blob": "bytea[]",
    }

    def __init__(self, channel: str, origin: str) -> None:
        self.channel = channel
        self.origin = origin

    def statements(self, step: Statement) -> list[tuple[str, Params]]:
        """A ``Write`` of more than ``_FEW`` rows goes as one statement whatever its size: one
        binary array per column, unnested in the order given (a multi-row VALUES statement
        that size is re-parsed by the driver on every call, which costs more than the
        insert); up to ``_FEW`` rows, as VALUES. ``InsertNew`` and ``Upsert`` are that
        statement with ``RETURNING``. Events are not written by one statement (see
        ``_store_events``)."""
        if isinstance(step, Query):
            return super().statements(step)
        if _copies(step):
            raise TypeError("events are stored by _store_events, not by a statement")
        if not isinstance(step, Write):
            step = step.returning()
        if not step.rows:
            return []
        if len(step.rows) <= _FEW:
            return super().statements(step)
        columns = [list(column) for column in zip(*step.rows, strict=True)]
        return [(_unnest_sql(step.head, step.tail), columns)]

    def emit(self, changes: Sequence[StateChange]) -> list[tuple[str, Params]]:
        payloads = encode_changes(self.origin, changes)
        if len(payloads) == 1:
            return [("SELECT pg_notify(%s, %s)", [self.channel, payloads[0]])]
        return [("SELECT pg_notify(%s, p) FROM unnest(%b::text[]) AS p", [self.channel, payloads])]


_FEW = 8
"""Up to this many rows a write goes as a VALUES statement of scalar parameters: psycopg dumps
an array in Python, a fixed cost per column that, for a batch of one or a few rows (a provider
that posts one event per request), costs more than the statement."""


_HEAD = re.compile(r"INSERT INTO (\w+) \((.*)\)")


@cache
def _unnest_sql(head: str, tail: str) -> str:
    found = _HEAD.fullmatch(head)
    assert found is not None, head
    table, names = found[1], found[2]
    kinds = column_kinds()[table]
    arrays = ", ".join(
        f"%b::{PostgresDialect.array_types[kinds[name]]}" for name in names.split(", ")
    )
    # The column names come from our own statements, never from input.
    unnested = f"SELECT {names} FROM unnest({arrays}) WITH ORDINALITY AS v({names}, n)"  # noqa: S608
    return f"{head} {unnested} ORDER BY n {tail}".rstrip()


def parse_postgres_url(url: str) -> tuple[str, dict[str, str]]:
    """The libpq URL without our options, and our options."""
    parts = urlsplit(url)
    ours: dict[str, str] = {}
    theirs: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        (ours.__setitem__(key, value) if key in _OUR_OPTIONS else theirs.append((key, value)))
    return urlunsplit(parts._replace(query=urlencode(theirs))), ours


def _int_option(options: dict[str, str], name: str, default: int) -> int:
    try:
        value = int(options.get(name, default))
    except ValueError:
        raise ConfigurationError(f"the tracker URL option {name} must be a whole number") from None
    if value < 1:
        raise ConfigurationError(f"the tracker URL option {name} must be at least 1")
    return value


def _duration(options: dict[str, str], name: str, default: str) -> str:
    value = options.get(name, default).strip()
    if not _DURATION.fullmatch(value):
        raise ConfigurationError(
            f"the tracker URL option {name} must be a duration such as 10s, 500ms or 0"
        )
    return value


def _import_psycopg() -> Any:
    try:
        import psycopg
        import psycopg_pool
    except ImportError:
        raise MissingDependency(
            "psycopg", "postgres", purpose="A PostgreSQL tracking store"
        ) from None
    return psycopg, psycopg_pool


def _transient(exc: BaseException) -> bool:
    import psycopg.errors

    return isinstance(exc, psycopg.errors.SerializationFailure | psycopg.errors.DeadlockDetected)


_CONTENT_CLASSES = frozenset({"22", "23", "54"})
"""SQLSTATE classes that refuse the data rather than report an outage: data exceptions (a NUL
character, an integer out of range, ``\\u0000`` in JSONB), integrity constraint violations,
and program limits (an index row too large). The same data fails the same way every time."""


def _refuses_content(exc: BaseException) -> bool:
    """Whether ``exc`` (raised running a program) is the data's fault, not the server's."""
    import psycopg

    if isinstance(exc, UnicodeEncodeError | OverflowError):  # refused while encoding a value
        return True
    if not isinstance(exc, psycopg.Error):
        return False
    state = exc.sqlstate
    if state is None:  # raised by the driver itself: a value it cannot adapt or dump
        return isinstance(exc, psycopg.DataError | psycopg.ProgrammingError)
    return state[:2] in _CONTENT_CLASSES


def _refusal(exc: BaseException) -> StoreError:
    if _refuses_content(exc):
        return StoreContentError(f"the PostgreSQL store refused the data: {exc}")
    return StoreError(f"the PostgreSQL store failed: {exc}")


def _text_json(conn: Any) -> None:
    # JSON columns come back as text, as SQLite's do, so that both share one row mapping.
    from psycopg.types.string import TextLoader

    conn.adapters.register_loader("json", TextLoader)
    conn.adapters.register_loader("jsonb", TextLoader)


async def _atext_json(conn: Any) -> None:
    _text_json(conn)


def _copies(step: Step) -> TypeGuard[InsertNew]:
    """Whether ``step`` is an insert of events, which goes as a claim of the ids and a COPY."""
    return isinstance(step, InsertNew) and step.head.startswith("INSERT INTO events (")


_CLAIM_IDS = (
    "INSERT INTO event_ids (event_id, received_at_us) SELECT event_id, received_at_us "
    "FROM unnest(%b::text[], %b::int8[]) WITH ORDINALITY AS v(event_id, received_at_us, n) "
    "ORDER BY n ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
)
"""Claim the ids of a batch of events in ``event_ids``, in the order given (the order rows
are locked in); the reply is the ids that were not there yet."""


@cache
def _copy_sql(head: str) -> str:
    found = _HEAD.fullmatch(head)
    assert found is not None, head
    return f"COPY {found[1]} ({found[2]}) FROM STDIN"


def _claim(step: InsertNew) -> tuple[list[str], list[int]]:
    """The event ids of ``step`` and the time each was received, as ``_CLAIM_IDS`` takes them."""
    received = _received_column(step.head)
    return [row[0] for row in step.rows], [row[received] for row in step.rows]


@cache
def _received_column(head: str) -> int:
    return head[head.index("(") + 1 : -1].split(", ").index("received_at_us")


@cache
def _few_events_sql(head: str, count: int) -> str:
    """``count`` events claimed in ``event_ids`` and the new ones inserted, in one statement
    of scalar parameters (each cast to its column's type), in the order given."""
    found = _HEAD.fullmatch(head)
    assert found is not None, head
    names = found[2]
    kinds = column_kinds()["events"]
    casts = ", ".join(
        f"%s::{PostgresDialect.array_types[kinds[name]].removesuffix('[]')}"
        for name in names.split(", ")
    )
    values = ", ".join(f"({casts}, {n})" for n in range(count))
    # The column names and the row numbers come from our own statements, never from input.
    return (
        f"WITH v ({names}, n) AS (VALUES {values}), "  # noqa: S608
        "fresh AS (INSERT INTO event_ids (event_id, received_at_us) "
        "SELECT event_id, received_at_us FROM v ORDER BY n "
        "ON CONFLICT (event_id) DO NOTHING RETURNING event_id) "
        f"INSERT INTO events ({names}) SELECT {names} FROM v "
        "WHERE event_id IN (SELECT event_id FROM fresh) ORDER BY n RETURNING event_id"
    )


def _few(step: InsertNew) -> tuple[str, list[Any]]:
    """``_few_events_sql`` for ``step`` and its parameters: a statement that costs one round
    trip, where a COPY costs two of its own and arrays a fixed cost per column."""
    return _few_events_sql(step.head, len(step.rows)), list(chain.from_iterable(step.rows))


@dataclass(frozen=True, slots=True)
class _Copy:
    """Rows for a ``COPY ... FROM STDIN`` statement."""

    sql: str
    rows: Sequence[Sequence[Any]]


_EventStep = tuple[str, Params] | _Copy
"""What ``_store_events`` asks for: a statement (its reply is its rows) or a COPY."""


def _store_events(step: InsertNew) -> Generator[_EventStep, Rows, Rows]:
    """Store a batch of events; the reply is the rows that were new (their ids first).

    A few events go as one statement that claims their ids in ``event_ids`` and inserts the
    new rows. More go as a claim of the ids (one array), then one COPY of the rows whose id
    was new: PostgreSQL takes a COPY in well under the time of the same rows as unnested
    arrays, which psycopg dumps in Python. A program, so that the sync and async steps run
    the same statements."""
    if not step.rows:
        return []
    if len(step.rows) <= _FEW:
        return (yield _few(step))
    claimed = yield (_CLAIM_IDS, _claim(step))
    fresh = {row[0] for row in claimed}
    rows = [row for row in step.rows if row[0] in fresh]
    if rows:
        yield _Copy(_copy_sql(step.head), rows)
    return rows


def _sync_execute_step(
    cursor: psycopg.Cursor[Any], dialect: Dialect, step: Step, emitted: list[StateChange]
) -> Rows:
    """``execute_step``, with events stored by ``_store_events``."""
    if _copies(step):
        return drive(_store_events(step), partial(_event_step, cursor))
    return execute_step(cursor, dialect, step, emitted)


def _event_step(cursor: psycopg.Cursor[Any], ask: _EventStep) -> Rows:
    if isinstance(ask, _Copy):
        with cursor.copy(ask.sql) as copy:
            for row in ask.rows:
                copy.write_row(row)
        return []
    cursor.execute(*ask)
    return cursor.fetchall()


async def _aevent_step(cursor: psycopg.AsyncCursor[Any], ask: _EventStep) -> Rows:
    if isinstance(ask, _Copy):
        async with cursor.copy(ask.sql) as copy:
            for row in ask.rows:
                await copy.write_row(row)
        return []
    await cursor.execute(*ask)
    return await cursor.fetchall()


async def _aexecute_step(
    cursor: psycopg.AsyncCursor[Any], dialect: Dialect, step: Step, emitted: list[StateChange]
) -> Rows:
    """The async twin of ``execute_step``: the same statements, awaited."""
    if _copies(step):
        return await adrive(_store_events(step), partial(_aevent_step, cursor))
    if isinstance(step, Emit):
        emitted.extend(step.changes)
        statements = dialect.emit(step.changes)
    else:
        statements = dialect.statements(step)
    rows: Rows = []
    for sql, params in statements:
        await cursor.execute(sql, params)
        if cursor.description is not None:
            rows.extend(await cursor.fetchall())
    return rows


class PostgresStore(Store):
    """A store in one PostgreSQL schema."""

    dialect: PostgresDialect

    def __init__(self, url: str, *, now_us: int = 0) -> None:
        psycopg, psycopg_pool = _import_psycopg()
        self._psycopg = psycopg
        conninfo, options = parse_postgres_url(url)
        schema = options.get("schema", DEFAULT_SCHEMA)
        if not _SCHEMA_NAME.fullmatch(schema):
            raise ConfigurationError(
                f"schema {schema!r} is not a valid tracker schema name: use up to 48 lower-case "
                "letters, digits and underscores, not starting with a digit"
            )
        self.schema = schema
        self._lock_name = f"unimailtrack.{schema}"
        self._conninfo = conninfo
        self._max = _int_option(options, "pool_max", 8)
        self._min = min(_int_option(options, "pool_min", 1), self._max)
        self.dialect = PostgresDialect(f"unimailtrack_{schema}", secrets.token_hex(8))
        timeouts = " ".join(
            f"-c {name}={_duration(options, name, default)}"
            for name, default in (
                ("statement_timeout", DEFAULT_STATEMENT_TIMEOUT),
                ("lock_timeout", DEFAULT_LOCK_TIMEOUT),
            )
        )
        self._kwargs: dict[str, Any] = {
            "autocommit": True,
            "options": f"-c search_path={schema} {timeouts}",
        }
        self._lock = threading.Lock()
        self._closed = False
        self._async: tuple[asyncio.AbstractEventLoop, AsyncConnectionPool, Any] | None = None
        self._listener: _Listener | None = None
        self._ensure_schema()
        self._pool: ConnectionPool = psycopg_pool.ConnectionPool(
            conninfo,
            min_size=self._min,
            max_size=self._max,
            kwargs=self._kwargs,
            configure=_text_json,
            open=False,
            name=f"unimailtrack-{schema}",
        )
        try:
            self._pool.open(wait=True, timeout=_OPEN_TIMEOUT)
            lock = (
                Query("SET LOCAL statement_timeout = 0"),
                Query("SET LOCAL lock_timeout = 0"),
                Query("SELECT pg_advisory_xact_lock(hashtext(?))", (self._lock_name,)),
            )
            self.run(lambda: migrate(self.dialect, lock, now_us), write=True)
            self._extend_partitions()
        except psycopg_pool.PoolTimeout as exc:
            self._pool.close()
            raise StoreError(f"cannot connect to PostgreSQL within {_OPEN_TIMEOUT:g}s") from exc
        except BaseException:
            self._pool.close()
            raise

    def __repr__(self) -> str:
        return f"<PostgresStore schema={self.schema!r}>"

    def _ensure_schema(self) -> None:
        """Create the schema when missing; processes starting together take turns (the
        existence check spares the CREATE privilege when the schema is there already)."""
        psycopg = self._psycopg
        sql = psycopg.sql
        try:
            with (
                psycopg.connect(self._conninfo, autocommit=True, connect_timeout=10) as conn,
                conn.transaction(),
            ):
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self._lock_name,))
                found = conn.execute(
                    "SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)
                ).fetchone()
                if found is None:
                    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.schema)))
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot prepare the PostgreSQL schema {self.schema!r}: {exc}"
            ) from exc

    # ------------------------------------------------------------------ running

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the tracker is closed")

    _partitions_checked_until = 0.0
    """When the partitions ahead must be checked again (a month before the last one ends)."""

    def _extend_partitions(self) -> None:
        """Create the partitions of this month and the months ahead that are missing. A
        failure (a lock not granted in time) is logged and tried again in a minute: the
        partitions are made months ahead, so there is time."""
        now = datetime.now(UTC)
        try:
            end, _ = self.run(lambda: ensure_partitions(now), write=True)
        except StoreError as exc:
            log.warning("creating the event partitions ahead failed (%s); retrying later", exc)
            self._partitions_checked_until = time.time() + 60
            return
        self._partitions_checked_until = month_start(end, -1).timestamp()

    def run(self, program: ProgramFactory[T], *, write: bool) -> Outcome[T]:
        self._check_open()
        if self._partitions_checked_until and time.time() >= self._partitions_checked_until:
            self._partitions_checked_until = 0.0
            self._extend_partitions()

        def once() -> Outcome[T]:
            emitted: list[StateChange] = []
            with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cursor:
                result = drive(
                    program(), lambda step: _sync_execute_step(cursor, self.dialect, step, emitted)
                )
            return result, emitted

        try:
            return with_retries(once, _transient)
        except (self._psycopg.Error, UnicodeEncodeError, OverflowError) as exc:  # PoolTimeout too
            raise _refusal(exc) from exc

    async def _apool(self) -> AsyncConnectionPool:
        from psycopg_pool import AsyncConnectionPool

        loop = asyncio.get_running_loop()
        with self._lock:
            self._check_open()
            if self._async is not None and self._async[0].is_closed():
                # The loop that used the last pool is gone (asyncio.run returned), and its
                # connections with it: start afresh in this one.
                self._async = None
            if self._async is None:
                pool = AsyncConnectionPool(
                    self._conninfo,
                    min_size=self._min,
                    max_size=self._max,
                    kwargs=self._kwargs,
                    configure=_atext_json,
                    open=False,
                    name=f"unimailtrack-{self.schema}-async",
                )
                opening = pool.open(wait=True, timeout=_OPEN_TIMEOUT)
                self._async = (loop, pool, asyncio.ensure_future(opening))
            bound, pool, opened = self._async
        if bound is not loop:
            raise StoreError(
                "this tracker's async methods are in use by another running event loop; "
                "open one tracker per event loop"
            )
        try:
            await opened
        except BaseException:
            with self._lock:
                if self._async is not None and self._async[1] is pool:
                    self._async = None
            await pool.close()
            raise
        return pool

    async def arun(self, program: ProgramFactory[T], *, write: bool) -> Outcome[T]:
        if self._partitions_checked_until and time.time() >= self._partitions_checked_until:
            self._partitions_checked_until = 0.0
            await asyncio.to_thread(self._extend_partitions)
        pool = await self._apool()

        async def once() -> Outcome[T]:
            emitted: list[StateChange] = []
            async with pool.connection() as conn, conn.transaction(), conn.cursor() as cursor:

                async def execute(step: Step) -> Rows:
                    return await _aexecute_step(cursor, self.dialect, step, emitted)

                result = await adrive(program(), execute)
            return result, emitted

        try:
            return await awith_retries(once, _transient)
        except (self._psycopg.Error, UnicodeEncodeError, OverflowError) as exc:  # PoolTimeout too
            raise _refusal(exc) from exc

    # ------------------------------------------------------------------ listening

    def listen(self, deliver: Callable[[Sequence[StateChange]], None]) -> None:
        with self._lock:
            self._check_open()
            if self._listener is None:
                listener = _Listener(
                    self._psycopg,
                    self._conninfo,
                    self.dialect.channel,
                    self.dialect.origin,
                    deliver,
                )
                listener.start()
                self._listener = listener
            listener = self._listener
        listener.wait_ready()

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            listener, self._listener = self._listener, None
            async_pool, self._async = self._async, None
        if listener is not None:
            listener.stop()
        if async_pool is not None:
            _close_abandoned(*async_pool)
        self._pool.close()

    async def aclose(self) -> None:
        with self._lock:
            async_pool, self._async = self._async, None
        if async_pool is not None:
            loop, pool, _ = async_pool
            if loop is asyncio.get_running_loop():
                await pool.close()
            else:
                _close_abandoned(*async_pool)
        await asyncio.to_thread(self.close)


_closing: set[asyncio.Task[None]] = set()


def _close_abandoned(loop: asyncio.AbstractEventLoop, pool: AsyncConnectionPool, _: Any) -> None:
    """Close an async pool from outside a coroutine, as far as its event loop allows."""
    if loop.is_closed():
        return  # its connections went with it
    try:
        current = asyncio.get_running_loop()
    except RuntimeError:
        current = None
    if current is loop:  # a sync close() inside the loop: finish closing in the background
        task = loop.create_task(pool.close())
        _closing.add(task)
        task.add_done_callback(_closing.discard)
    elif loop.is_running():
        asyncio.run_coroutine_threadsafe(pool.close(), loop).result()
    else:
        loop.run_until_complete(pool.close())


class _Listener(threading.Thread):
    """A thread that LISTENs on the store's channel and hands other processes' changes on.

    It reconnects after losing the server (changes committed meanwhile are not replayed:
    live updates are a hint, the store is the truth).
    """

    def __init__(
        self,
        psycopg: Any,
        conninfo: str,
        channel: str,
        origin: str,
        deliver: Callable[[Sequence[StateChange]], None],
    ) -> None:
        super().__init__(name=f"unimailtrack-listen-{channel}", daemon=True)
        self._psycopg = psycopg
        self._conninfo = conninfo
        self._channel = channel
        self._origin = origin
        self._deliver = deliver
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._failure: BaseException | None = None

    def wait_ready(self) -> None:
        if not self._ready.wait(_OPEN_TIMEOUT) or self._failure is not None:
            raise StoreError(f"cannot listen for changes on PostgreSQL: {self._failure}")

    def stop(self) -> None:
        self._stopping.set()
        self.join()

    def run(self) -> None:
        delay = 0.1
        while not self._stopping.is_set():
            try:
                self._listen()
                delay = 0.1
            except self._psycopg.Error as exc:
                if not self._ready.is_set():
                    self._failure = exc
                    self._ready.set()
                    return
                log.warning("lost the change listener connection (%s); reconnecting", exc)
                self._stopping.wait(delay)
                delay = min(delay * 2, 5.0)

    def _listen(self) -> None:
        sql = self._psycopg.sql
        with self._psycopg.connect(self._conninfo, autocommit=True) as conn:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
            self._ready.set()
            while not self._stopping.is_set():
                for notice in conn.notifies(timeout=_LISTEN_POLL):
                    self._receive(notice.payload)

    def _receive(self, payload: str) -> None:
        try:
            origin, changes = decode_changes(payload)
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed change notification on %s", self._channel)
            return
        if origin != self._origin:
            self._deliver(changes)
