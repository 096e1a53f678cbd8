"""The embedded backend: an SQLite file through the standard library, zero set-up.

Each thread gets its own connection (WAL mode lets readers run while one writer writes).
Writes take ``BEGIN IMMEDIATE``, so a write transaction holds the database's only write lock
from its first statement and nothing it read can change under it; within the process,
writers queue on a lock first instead of in SQLite's busy loop, and other processes are
waited for up to ``timeout`` seconds. ``:memory:`` databases live in one connection, which
one thread at a time uses. The async methods run on a worker thread of the store's own.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from itertools import chain
from typing import Any, ClassVar, TypeVar

from unimailtrack.tracking._records import StateChange
from unimailtrack.tracking._schema import migrate
from unimailtrack.tracking._store import (
    Dialect,
    InsertNew,
    Outcome,
    Params,
    ProgramFactory,
    Rows,
    Statement,
    Step,
    Store,
    StoreContentError,
    StoreError,
    Upsert,
    Write,
    drive,
    execute_step,
    table_and_key,
)

__all__ = ["SQLiteDialect", "SQLiteStore"]

T = TypeVar("T")

MEMORY = ":memory:"


class SQLiteDialect(Dialect):
    name = "sqlite"
    positional = "?"
    named = ":{}"
    max_params = 32766
    types: ClassVar[Mapping[str, str]] = {
        "key": "TEXT",
        "text": "TEXT",
        "int": "INTEGER",
        "bigint": "INTEGER",
        "bool": "INTEGER",
        "json": "TEXT",
        "document": "TEXT",
        "blob": "BLOB",
        "serial": "INTEGER PRIMARY KEY",
    }

    def _values(self, rows: Sequence[Sequence[Any]]) -> list[Any]:
        """The rows' values, each None as a NaN float, which SQLite binds as NULL. The
        sqlite3 module binds a float as it is but sends None through its adapter protocol,
        an attribute lookup that raises and is swallowed, per value: several times the cost
        of a float, and on a batch of events (most of their optional fields empty) about a
        quarter of the insert. Not if the application adapts ``float`` itself: then a NaN
        would be its business."""
        if (float, sqlite3.PrepareProtocol) in sqlite3.adapters:
            return super()._values(rows)
        return [_NULL if value is None else value for value in chain.from_iterable(rows)]

    def run(self, step: Statement, execute: Callable[[str, Params], Rows]) -> Rows:
        """``Upsert`` without ``RETURNING`` (see ``_store``); ``InsertNew`` needs the cursor's
        counts, so it goes to :meth:`insert_new` instead."""
        if isinstance(step, InsertNew):
            raise TypeError("an InsertNew runs through SQLiteDialect.insert_new")
        if isinstance(step, Upsert):
            super().run(Write(step.head, step.rows, step.tail), execute)
            table, key = table_and_key(step.head)
            return self._lookup(table, key, step.columns, step.rows, execute)
        return super().run(step, execute)

    def insert_new(self, cursor: sqlite3.Cursor, step: InsertNew) -> Rows:
        """Insert, skipping the keys stored already, and say what went in, with no statement
        of its own in the usual case. The driver counts the rows each statement inserted
        (``rowcount``: SQLite's ``changes()``, which skips the rows a conflict left out);
        when all went in, that is all. Otherwise the new rows are the last ones inserted: a
        rowid table gives each new row the largest rowid plus one, no one else writes
        meanwhile, and ``lastrowid`` is the last of them."""
        table, key = table_and_key(step.head)
        inserted = 0
        for sql, params in self.statements(
            Write(step.head, step.rows, f"ON CONFLICT ({key}) DO NOTHING")
        ):
            cursor.execute(sql, params)
            inserted += cursor.rowcount
        if inserted == len(step.rows):
            return list(step.rows)
        if not inserted:
            return []
        last = cursor.lastrowid
        assert last is not None  # a row went in
        cursor.execute(_INSERTED_SQL.format(table=table, key=key), (last - inserted,))
        return cursor.fetchall()

    def _lookup(
        self,
        table: str,
        key: str,
        columns: str,
        rows: Sequence[Sequence[object]],
        execute: Callable[[str, Params], Rows],
    ) -> Rows:
        """``columns`` of the stored rows whose ``key`` is the first value of one of
        ``rows``, by the key's index; lists are padded to a power of two (with the last key
        again) so that a few statements serve every size."""
        keys = [row[0] for row in rows]
        found: Rows = []
        for start in range(0, len(keys), _LOOKUP_CHUNK):
            chunk = keys[start : start + _LOOKUP_CHUNK]
            size = 1 << (len(chunk) - 1).bit_length()
            chunk += [chunk[-1]] * (size - len(chunk))
            found.extend(execute(_lookup_sql(table, key, columns, size), chunk))
        return found


def _execute_step(
    cursor: sqlite3.Cursor, dialect: SQLiteDialect, step: Step, emitted: list[StateChange]
) -> Rows:
    """``execute_step``, with an ``InsertNew`` counted at the cursor."""
    if isinstance(step, InsertNew):
        return dialect.insert_new(cursor, step)
    return execute_step(cursor, dialect, step, emitted)


_CONTENT_ERRORS = (
    sqlite3.DataError,  # a string or blob too big
    sqlite3.IntegrityError,  # a constraint (NOT NULL, CHECK, a trigger's RAISE) refused a row
    OverflowError,  # an integer beyond 64 bits
    UnicodeEncodeError,  # a lone surrogate in a string
)
"""Errors that say the data was refused, not that the database is unavailable: the same
data fails the same way every time, so retrying it is pointless."""


def _refuses_content(exc: sqlite3.Error) -> bool:
    """A value the driver cannot bind (``Error binding parameter 3: type 'dict' is not
    supported``): the content's fault. Every other ``sqlite3.Error`` (locked, busy, disk I/O,
    full, corrupt, closed) is the store's."""
    return isinstance(exc, sqlite3.ProgrammingError | sqlite3.InterfaceError) and str(
        exc
    ).startswith("Error binding parameter")


_NO_WAIT: AbstractContextManager[object] = nullcontext()
"""A reader's turn: SQLite's own snapshot isolation is all it waits for."""
_NULL = float("nan")
"""Bound in place of None: SQLite turns a NaN into NULL as it binds it."""
_INSERTED_SQL = "SELECT {key} FROM {table} WHERE rowid > ? ORDER BY rowid"
_LOOKUP_CHUNK = 512


@functools.cache
def _lookup_sql(table: str, key: str, columns: str, size: int) -> str:
    # Table and column names come from our own statements, never from input.
    return f"SELECT {columns} FROM {table} WHERE {key} IN ({', '.join('?' * size)})"  # noqa: S608


class SQLiteStore(Store):
    """A store in one SQLite database file (or in memory, for tests)."""

    dialect = SQLiteDialect()

    def __init__(self, path: str, *, timeout: float = 5.0, now_us: int = 0) -> None:
        self._path = path
        self._timeout = timeout
        self._memory = path == MEMORY
        self._local = threading.local()
        self._connections: list[tuple[weakref.ref[threading.Thread], sqlite3.Connection]] = []
        self._registry = threading.Lock()
        self._write_lock = threading.Lock()
        self._shared = threading.RLock()
        self._worker: ThreadPoolExecutor | None = None
        self._closed = False
        try:
            self.run(lambda: migrate(self.dialect, (), now_us), write=True)
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"<SQLiteStore {self._path!r}>"

    # ------------------------------------------------------------------ connections

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self._path,
                timeout=self._timeout,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the SQLite database {self._path!r}: {exc}") from exc
        if not self._memory:
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA cache_size = -32768")
        return conn

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection (the only one, in memory)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        with self._registry:
            if self._closed:
                raise StoreError("the tracker is closed")
            if self._memory and self._connections:
                conn = self._connections[0][1]
            else:
                self._forget_finished_threads()
                conn = self._connect()
                self._connections.append((weakref.ref(threading.current_thread()), conn))
        self._local.conn = conn
        return conn

    def _forget_finished_threads(self) -> None:
        alive = []
        for thread, conn in self._connections:
            owner = thread()
            if owner is None or not owner.is_alive():
                conn.close()
            else:
                alive.append((thread, conn))
        self._connections = alive

    def _turn(self, write: bool) -> AbstractContextManager[object]:
        """What waits for this process's turn: the one connection in memory, or the write
        lock (a lock itself, not a generator around it: this is on every transaction's path)."""
        if self._memory:
            return self._shared
        return self._write_lock if write else _NO_WAIT

    # ------------------------------------------------------------------ running

    def run(self, program: ProgramFactory[T], *, write: bool) -> Outcome[T]:
        if self._closed:
            raise StoreError("the tracker is closed")
        with self._turn(write):
            conn = self._connection()
            try:
                return self._transaction(conn, program, write)
            except _CONTENT_ERRORS as exc:
                raise StoreContentError(f"the SQLite store refused the data: {exc}") from exc
            except sqlite3.Error as exc:
                if _refuses_content(exc):
                    raise StoreContentError(f"the SQLite store refused the data: {exc}") from exc
                raise StoreError(f"the SQLite store failed: {exc}") from exc

    def _transaction(
        self, conn: sqlite3.Connection, program: ProgramFactory[T], write: bool
    ) -> Outcome[T]:
        emitted: list[StateChange] = []
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            cursor = conn.cursor()
            try:
                result = drive(
                    program(), lambda step: _execute_step(cursor, self.dialect, step, emitted)
                )
            finally:
                cursor.close()
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result, emitted

    def _executor(self) -> ThreadPoolExecutor:
        with self._registry:
            if self._closed:
                raise StoreError("the tracker is closed")
            if self._worker is None:
                self._worker = ThreadPoolExecutor(1, thread_name_prefix="unimailtrack-sqlite")
            return self._worker

    async def arun(self, program: ProgramFactory[T], *, write: bool) -> Outcome[T]:
        loop = asyncio.get_running_loop()
        call = functools.partial(self.run, program, write=write)
        return await loop.run_in_executor(self._executor(), call)

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        with self._registry:
            if self._closed:
                return
            self._closed = True
            worker, self._worker = self._worker, None
        if worker is not None:
            worker.shutdown(wait=True)
        with self._shared, self._write_lock, self._registry:
            for _, conn in self._connections:
                conn.close()
            self._connections = []

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)
