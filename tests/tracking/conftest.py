"""One tracker test suite, run on every backend.

``store`` is "sqlite" (a file in the test's temporary directory, so that WAL and per-thread
connections are exercised) or "postgres" (the real server at UNIMAILTRACK_TEST_POSTGRES_URL,
default postgresql://postgres@127.0.0.1:5432/test, in a schema of its own that is dropped
afterwards, since other test runs share the database). When no PostgreSQL server answers,
the postgres half is skipped with the reason.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from tracking_support import POSTGRES_URL, Store, drop_schema, require_postgres, with_schema

from unimailtrack.tracking import Tracker


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    schema = None
    if request.param == "sqlite":
        place = Store("sqlite", f"sqlite:///{tmp_path / 'tracking.sqlite3'}")
    else:
        require_postgres()
        schema = f"t_{secrets.token_hex(6)}"
        place = Store("postgres", with_schema(POSTGRES_URL, schema))
    try:
        yield place
    finally:
        for tracker in place.opened:
            tracker.close()
        if schema is not None:
            drop_schema(schema)


@pytest.fixture
def tracker(store: Store) -> Tracker:
    return store.open()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """The URL of a PostgreSQL store in a schema of its own, dropped afterwards."""
    require_postgres()
    schema = f"t_{secrets.token_hex(6)}"
    try:
        yield with_schema(POSTGRES_URL, schema)
    finally:
        drop_schema(schema)
