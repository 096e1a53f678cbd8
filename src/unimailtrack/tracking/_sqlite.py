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
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import ClassVar, TypeVar

from unimailtrack.tracking._records import StateChange
from unimailtrack.tracking._schema import migrate
from unimailtrack.tracking._store import (
    Dialect,
    Outcome,
    ProgramFactory,
    Store,
    StoreError,
    drive,
    execute_step,
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

    @contextmanager
    def _turn(self, write: bool) -> Iterator[None]:
        """Wait for this process's turn: the one connection in memory, or the write lock."""
        if self._memory:
            with self._shared:
                yield
        elif write:
            with self._write_lock:
                yield
        else:
            yield

    # ------------------------------------------------------------------ running

    def run(self, program: ProgramFactory[T], *, write: bool) -> Outcome[T]:
        if self._closed:
            raise StoreError("the tracker is closed")
        with self._turn(write):
            conn = self._connection()
            try:
                return self._transaction(conn, program, write)
            except sqlite3.Error as exc:
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
                    program(), lambda step: execute_step(cursor, self.dialect, step, emitted)
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
