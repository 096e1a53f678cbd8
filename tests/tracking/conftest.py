"""One tracker test suite, run on every backend.

``backend`` is "sqlite" (a file in the test's temporary directory, so that WAL and per-thread
connections are exercised) or "postgres" (the real server at UNIMAILTRACK_TEST_POSTGRES_URL,
default postgresql://postgres@127.0.0.1:5432/test, in a schema of its own that is dropped
afterwards, since other test runs share the database). When no PostgreSQL server answers,
the postgres half is skipped with the reason.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tracking_support import Clock

from unimailtrack.tracking import Tracker

POSTGRES_URL = os.environ.get(
    "UNIMAILTRACK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
BACKENDS = ("sqlite", "postgres")


def _postgres_unreachable() -> str | None:
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'unimailtrack[postgres]')"
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"{exc}".strip()


_UNREACHABLE: list[str | None] = []


def require_postgres() -> None:
    if not _UNREACHABLE:
        _UNREACHABLE.append(_postgres_unreachable())
    if _UNREACHABLE[0] is not None:
        pytest.skip(
            f"SKIPPED POSTGRESQL TESTS: no server at {POSTGRES_URL} ({_UNREACHABLE[0]}); "
            "start one or set UNIMAILTRACK_TEST_POSTGRES_URL"
        )


def with_schema(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}schema={schema}"


def drop_schema(schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@dataclass
class Store:
    """Where a test's tracker lives: open as many trackers on it as the test needs (they
    share the data, as processes would); all are closed at the end."""

    backend: str
    url: str
    clock: Clock = field(default_factory=Clock)
    opened: list[Tracker] = field(default_factory=list)

    def open(self, **kwargs: Any) -> Tracker:
        kwargs.setdefault("clock", self.clock)
        tracker = Tracker.open(self.url, **kwargs)
        self.opened.append(tracker)
        return tracker


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    backend = request.param
    if backend == "sqlite":
        place = Store(backend, f"sqlite:///{tmp_path / 'tracking.sqlite3'}")
        yield place
        for tracker in place.opened:
            tracker.close()
        return
    require_postgres()
    schema = f"t_{secrets.token_hex(6)}"
    place = Store(backend, with_schema(POSTGRES_URL, schema))
    try:
        yield place
    finally:
        for tracker in place.opened:
            tracker.close()
        drop_schema(schema)


@pytest.fixture
def tracker(store: Store) -> Tracker:
    return store.open()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
