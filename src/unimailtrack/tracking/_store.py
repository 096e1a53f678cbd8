"""The storage seam: one ``Store`` interface, programs written once for every backend.

Every tracker operation is a *program*: a generator that yields the statements it needs
(:class:`Query`, :class:`Write`, :class:`Emit`) and receives each statement's rows. A program
knows the SQL and the row mapping but no driver, no connection and no event loop, so one
program serves SQLite and PostgreSQL, sync and async. A store runs a program inside one
transaction (retrying it whole when the database asks for a retry) and returns its result with
the state changes it emitted, to be published once the transaction has committed.

The SQL is written once, with ``?`` for positional and ``:name`` for named parameters; a
:class:`Dialect` translates the placeholders, spells the few types that differ, expands a
:class:`Write` into multi-row ``INSERT`` statements sized to the driver's parameter limit, and
turns an :class:`Emit` into whatever the backend does to tell other processes (PostgreSQL:
``NOTIFY``; SQLite: nothing, changes stay in the process).

Two writes say what they want back rather than how to get it: :class:`InsertNew` (the rows
that were not stored yet) and :class:`Upsert` (the rows as written). Both are ``...
RETURNING`` by default, which is what PostgreSQL runs. SQLite runs ``RETURNING`` as a trigger
program per row, which costs about as much as the insert itself, so its dialect finds the
answer otherwise: it counts the rows an insert added (all of them, usually) and reads an
upsert's rows back by their keys. That is exact because an SQLite write transaction is alone
from its first statement.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from itertools import chain
from typing import Any, ClassVar, Protocol, TypeVar

from unimailtrack.errors import StoreContentError, StoreError
from unimailtrack.tracking._records import StateChange

__all__ = [
    "Dialect",
    "Emit",
    "InsertNew",
    "Program",
    "ProgramFactory",
    "Query",
    "Rows",
    "Statement",
    "Store",
    "StoreContentError",
    "StoreError",
    "Upsert",
    "Write",
    "adrive",
    "drive",
    "table_and_key",
]

T = TypeVar("T")
R = TypeVar("R")
S = TypeVar("S")

log = logging.getLogger("unimailtrack.tracking")

Rows = list[tuple[Any, ...]]
Params = Mapping[str, Any] | Sequence[Any]


@dataclass(frozen=True, slots=True)
class Query:
    """One statement with one set of parameters; its rows (if any) are the reply."""

    sql: str
    params: Params = ()


@dataclass(frozen=True, slots=True)
class Write:
    """Many rows for ``{head} VALUES (...), (...) {tail}``: sent as few multi-row statements
    as the driver allows, in the order given (which is the order rows are locked in). The
    reply is every row the ``tail``'s ``RETURNING`` produced."""

    head: str
    rows: Sequence[Sequence[Any]]
    tail: str = ""


_HEAD = re.compile(r"INSERT INTO (\w+) \((\w+)(?:, \w+)*\)")


@cache
def table_and_key(head: str) -> tuple[str, str]:
    """The table and the first column (the conflict key) of ``INSERT INTO table (...)``."""
    found = _HEAD.fullmatch(head)
    assert found is not None, head
    return found[1], found[2]


@dataclass(frozen=True, slots=True)
class InsertNew:
    """Rows for ``head`` (``INSERT INTO table (key, ...)``) of which only those whose key is
    not stored yet are inserted, in the order given; the reply has one row, key first, for
    each row inserted (only its key is to be read). The keys of ``rows`` are unique."""

    head: str
    rows: Sequence[tuple[Any, ...]]

    def returning(self) -> Write:
        key = table_and_key(self.head)[1]
        return Write(self.head, self.rows, f"ON CONFLICT ({key}) DO NOTHING RETURNING {key}")


@dataclass(frozen=True, slots=True)
class Upsert:
    """Rows for ``head`` (``INSERT INTO table (key, ...)``), each inserted or, through
    ``tail`` (an ``ON CONFLICT (key) DO UPDATE`` without a ``WHERE``), updated; the reply is
    the ``columns`` of every row as written. The keys of ``rows`` are unique."""

    head: str
    rows: Sequence[Sequence[Any]]
    tail: str
    columns: str

    def returning(self) -> Write:
        return Write(self.head, self.rows, f"{self.tail} RETURNING {self.columns}")


@dataclass(frozen=True, slots=True)
class Emit:
    """State changes to publish once the transaction commits."""

    changes: Sequence[StateChange]


Step = Query | Write | InsertNew | Upsert | Emit
Statement = Query | Write | InsertNew | Upsert
Program = Generator[Step, Rows, T]
ProgramFactory = Callable[[], Program[T]]

_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
_MAX_ROWS_PER_STATEMENT = 256
"""Larger statements save little and cost more to prepare (measured on SQLite)."""


class Dialect:
    """What differs between backends, in one place. Subclasses set the class attributes."""

    name: str
    positional: str
    named: str
    max_params: int
    types: ClassVar[Mapping[str, str]]
    """DDL spellings of the column kinds the schema uses (``key``, ``json``, ...)."""

    def sql(self, text: str) -> str:
        """``text`` with its placeholders in the driver's style."""
        return _translate(text, self.positional, self.named)

    def statements(self, step: Statement) -> list[tuple[str, Params]]:
        if isinstance(step, Query):
            return [(self.sql(step.sql), step.params)]
        if not isinstance(step, Write):
            step = step.returning()
        rows = step.rows
        if not rows:
            return []
        width = len(rows[0])
        result: list[tuple[str, Params]] = []
        start = 0
        for size in _chunk_sizes(len(rows), min(_MAX_ROWS_PER_STATEMENT, self.max_params // width)):
            chunk = rows[start : start + size]
            start += size
            result.append(
                (
                    self._write_sql(step.head, step.tail, width, size),
                    self._values(chunk),
                )
            )
        return result

    def run(self, step: Statement, execute: Callable[[str, Params], Rows]) -> Rows:
        """Run ``step`` through ``execute`` (one statement in, its rows out); the reply."""
        rows: Rows = []
        for sql, params in self.statements(step):
            rows.extend(execute(sql, params))
        return rows

    def _values(self, rows: Sequence[Sequence[Any]]) -> list[Any]:
        """The parameters of one multi-row statement: its rows' values in order."""
        return list(chain.from_iterable(rows))

    def _write_sql(self, head: str, tail: str, width: int, count: int) -> str:
        return _write_sql(self.positional, head, tail, width, count)

    def emit(self, changes: Sequence[StateChange]) -> list[tuple[str, Params]]:
        """The statements that tell other processes about ``changes`` (none by default)."""
        return []

    def ddl(self, text: str) -> str:
        """A schema statement with its column kinds spelled for this backend."""
        return text.format_map(self.types)


def _chunk_sizes(count: int, most: int) -> list[int]:
    """``count`` rows as statements of ``most`` rows, then of powers of two: a handful of
    statement texts serve every batch size, so that each is prepared once and cached."""
    most = max(1, most)
    sizes = [most] * (count // most)
    rest = count % most
    while rest:
        size = 1 << (rest.bit_length() - 1)
        sizes.append(size)
        rest -= size
    return sizes


@cache
def _translate(text: str, positional: str, named: str) -> str:
    if positional == "?":
        return text
    escaped = text.replace("%", "%%").replace("?", positional)
    return _NAMED.sub(lambda m: named.format(m.group(1)), escaped)


@cache
def _write_sql(positional: str, head: str, tail: str, width: int, count: int) -> str:
    row = "(" + ", ".join([positional] * width) + ")"
    return f"{head} VALUES {', '.join([row] * count)} {tail}".rstrip()


class Cursor(Protocol):
    """The part of a DB-API cursor a store needs (sqlite3 and psycopg agree on it)."""

    @property
    def description(self) -> Any: ...

    def execute(self, sql: Any, params: Any = ..., /) -> Any: ...

    def fetchall(self) -> list[Any]: ...


def execute_step(cursor: Cursor, dialect: Dialect, step: Step, emitted: list[StateChange]) -> Rows:
    """Run one step on a synchronous cursor; the reply is every row returned."""

    def execute(sql: str, params: Params) -> Rows:
        cursor.execute(sql, params)
        return cursor.fetchall() if cursor.description is not None else []

    if isinstance(step, Emit):
        emitted.extend(step.changes)
        rows: Rows = []
        for sql, params in dialect.emit(step.changes):
            rows.extend(execute(sql, params))
        return rows
    return dialect.run(step, execute)


def drive(program: Generator[S, Rows, T], execute: Callable[[S], Rows]) -> T:
    """Run ``program`` to completion, answering each step with ``execute``."""
    try:
        step = next(program)
        while True:
            step = program.send(execute(step))
    except StopIteration as done:
        result: T = done.value
        return result


async def adrive(program: Generator[S, Rows, T], execute: Callable[[S], Awaitable[Rows]]) -> T:
    """The async twin of :func:`drive`."""
    try:
        step = next(program)
        while True:
            step = program.send(await execute(step))
    except StopIteration as done:
        result: T = done.value
        return result


# --------------------------------------------------------------------------- retrying

MAX_ATTEMPTS = 12
_FIRST_DELAY = 0.005
_MAX_DELAY = 0.25


def retry_delay(attempt: int) -> float:
    """Seconds to wait before attempt ``attempt + 1`` after a transient conflict: short,
    exponential and jittered, so that colliding transactions stop colliding."""
    return float(min(_MAX_DELAY, _FIRST_DELAY * 2**attempt) * (0.5 + random.random()))


def with_retries(once: Callable[[], R], retryable: Callable[[BaseException], bool]) -> R:
    """``once()``, run again while it fails with a ``retryable`` error, up to a bound."""
    for attempt in range(MAX_ATTEMPTS - 1):
        try:
            return once()
        except Exception as exc:
            if not retryable(exc):
                raise
            log.debug("transaction conflict, retrying: %s", exc)
        time.sleep(retry_delay(attempt))
    return once()


async def awith_retries(
    once: Callable[[], Awaitable[R]], retryable: Callable[[BaseException], bool]
) -> R:
    """The async twin of :func:`with_retries`."""
    for attempt in range(MAX_ATTEMPTS - 1):
        try:
            return await once()
        except Exception as exc:
            if not retryable(exc):
                raise
            log.debug("transaction conflict, retrying: %s", exc)
        await asyncio.sleep(retry_delay(attempt))
    return await once()


# --------------------------------------------------------------------------- the interface

Outcome = tuple[T, list[StateChange]]


class Store(ABC):
    """A backend: runs programs in transactions and, where it can, carries state changes to
    other processes. ``write=False`` lets a backend run a program on a read snapshot."""

    dialect: Dialect

    @abstractmethod
    def run(self, program: ProgramFactory[T], *, write: bool) -> Outcome[T]:
        """Run ``program()`` in one transaction: all of it is committed, or none of it and
        ``StoreError`` is raised. Returns its result and the changes it emitted."""

    @abstractmethod
    async def arun(self, program: ProgramFactory[T], *, write: bool) -> Outcome[T]:
        """The async twin of :meth:`run`."""

    def listen(self, deliver: Callable[[Sequence[StateChange]], None]) -> None:  # noqa: B027
        """Start handing changes committed by *other* processes to ``deliver``. A backend
        that cannot reach other processes has nothing to do."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    async def aclose(self) -> None: ...
