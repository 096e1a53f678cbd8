"""Opening a tracker: URLs, migrations, and failures that must be clear."""

from __future__ import annotations

import secrets
import sqlite3
import threading
import time
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from tracking_support import (
    POSTGRES_URL,
    T0,
    Store,
    drop_schema,
    event,
    require_postgres,
    send_one,
    with_schema,
)

from unimailtrack import ConfigurationError, DeliveryStatus
from unimailtrack.tracking import StoreError, Tracker
from unimailtrack.tracking._schema import LATEST, MIGRATIONS, Migration, migrate
from unimailtrack.tracking._store import Program, Query


def test_no_url_means_an_sqlite_file_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with Tracker.open() as tracker:
        tracker.ingest([event("delivered")])
    assert (tmp_path / "unimailtrack.sqlite3").exists()
    with Tracker.open(f"sqlite:///{tmp_path}/unimailtrack.sqlite3") as again:
        assert again.count_events() == 1


def test_sqlite_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with Tracker.open("sqlite:///relative.db?timeout=1.5") as tracker:
        tracker.ingest([event("delivered")])
    assert (tmp_path / "relative.db").exists()
    with Tracker.open(f"sqlite:///{tmp_path / 'absolute.db'}") as tracker:
        assert tracker.count_events() == 0
    with Tracker.open("sqlite:///:memory:") as tracker:
        tracker.ingest([event("delivered")])
        assert tracker.state("t1").status is DeliveryStatus.DELIVERED


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://", "names no SQLite file"),
        ("sqlite://host/file.db", "names no SQLite file"),
        ("sqlite:///x.db?journal=off", "unknown SQLite tracker option"),
        ("sqlite:///x.db?timeout=soon", "must be seconds"),
        ("mysql://user:secret@db/track", "not 'db/track'"),
        ("unimailtrack.sqlite3", "a tracker URL is"),
        ("postgresql://localhost/db?schema=Bad-Name", "not a valid tracker schema"),
        ("postgresql://localhost/db?pool_max=0", "at least 1"),
        ("postgresql://localhost/db?pool_min=two", "whole number"),
    ],
)
def test_bad_urls_are_refused_clearly(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Tracker.open(url)


def test_an_unreachable_server_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="cannot prepare"):
        Tracker.open("postgresql://postgres@127.0.0.1:1/test?connect_timeout=2")


def test_a_closed_tracker_refuses_work(store: Store) -> None:
    tracker = store.open()
    tracker.close()
    tracker.close()
    with pytest.raises(StoreError, match="closed"):
        tracker.ingest([event("delivered")])


def test_reopening_does_not_migrate_again(store: Store) -> None:
    store.open().ingest([event("delivered")])
    again = store.open()
    assert again.count_events() == 1
    assert _versions(again) == [m.version for m in MIGRATIONS]


def _versions(tracker: Tracker) -> list[int]:
    from unimailtrack.tracking._store import Query

    def program():  # type: ignore[no-untyped-def]
        rows = yield Query("SELECT version FROM schema_migrations ORDER BY version")
        return [row[0] for row in rows]

    versions, _ = tracker._store.run(program, write=False)
    return versions  # type: ignore[no-any-return]


def test_pending_migrations_run_forward_in_order(store: Store) -> None:
    tracker = store.open()
    tracker.ingest([event("delivered")])
    later = Migration(LATEST + 1, "a column", ("ALTER TABLE events ADD COLUMN note {text}",))
    dialect = tracker._store.dialect
    version, _ = tracker._store.run(
        lambda: migrate(dialect, (), 0, (*MIGRATIONS, later)), write=True
    )
    assert version == LATEST + 1
    assert _versions(tracker) == [*(m.version for m in MIGRATIONS), LATEST + 1]
    assert tracker.count_events() == 1


def test_a_newer_schema_is_refused(store: Store) -> None:
    tracker = store.open()
    later = Migration(LATEST + 1, "from the future", ())
    dialect = tracker._store.dialect
    tracker._store.run(lambda: migrate(dialect, (), 0, (*MIGRATIONS, later)), write=True)
    with pytest.raises(StoreError, match=f"newer than the {LATEST} this unimailtrack knows"):
        store.open()


def test_many_processes_opening_a_new_postgres_schema_migrate_once() -> None:
    require_postgres()
    schema = f"t_{secrets.token_hex(6)}"
    url = with_schema(POSTGRES_URL, schema)
    opened: list[Tracker] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def open_one() -> None:
        start.wait()
        try:
            opened.append(Tracker.open(url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert _versions(opened[0]) == [m.version for m in MIGRATIONS]
    finally:
        for tracker in opened:
            tracker.close()
        drop_schema(schema)


def test_the_sqlite_file_is_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    Tracker.open(f"sqlite:///{path}").close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        conn.close()


def test_a_version_1_suppression_list_moves_into_the_history(store: Store) -> None:
    tracker = store.open()
    dialect = tracker._store.dialect

    def rebuild() -> Program[None]:
        # Back to a version-2 database: every table gone, the first two migrations applied,
        # and a version-1 suppression list with one entry from an event and one made by hand.
        if dialect.name == "sqlite":
            rows = yield Query(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
            drop = "DROP TABLE {}"
        else:
            rows = yield Query(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            )
            drop = "DROP TABLE IF EXISTS {} CASCADE"
        for (name,) in rows:
            yield Query(drop.format(name))
        yield from migrate(dialect, (), 0, MIGRATIONS[:2])
        yield Query(
            "INSERT INTO suppressions VALUES ('Ada@example.com', 'Ada@example.com', '550', "
            "'bounced', 5, 'ev-1', 't1'), ('bob@example.com', 'bob@example.com', NULL, "
            "'unknown', 6, NULL, NULL)"
        )

    tracker._store.run(rebuild, write=True)
    version, _ = tracker._store.run(lambda: migrate(dialect, (), 0), write=True)
    assert version == LATEST
    ada = tracker.suppression("Ada@example.com")
    bob = tracker.suppression("bob@example.com")
    assert ada is not None and (ada.cause, ada.source, ada.event_id, ada.scope) == (
        "bounced",
        "event",
        "ev-1",
        None,
    )
    assert bob is not None and (bob.cause, bob.source) == ("manual", "manual")
    assert [c.action for c in tracker.suppression_history("bob@example.com")] == ["added"]


def test_version_7_indexes_standing_deferrals_by_a_column_of_their_own(store: Store) -> None:
    """A version-6 database with a deferral and a delivery: after the migration the deferral
    has its ``deferred_at_us`` (and still expires), the delivery has none, and a badge that
    leaves ``deferred`` clears it."""
    tracker = store.open(deferred_expiry=timedelta(hours=72))
    send_one(tracker, "t1", "ada@example.com")
    tracker.ingest(
        [
            event("deferred", "t1", at=T0, recipient="ada@example.com"),
            event("delivered", "t2", at=T0, recipient="bob@example.com"),
        ]
    )
    dialect = tracker._store.dialect

    def back_to_version_6() -> Program[None]:
        yield Query("DROP INDEX messages_deferred")
        yield Query("ALTER TABLE messages DROP COLUMN deferred_at_us")
        yield Query(
            "CREATE INDEX messages_deferred ON messages (decided_at_us) WHERE status = 'deferred'"
        )
        yield Query("DELETE FROM schema_migrations WHERE version = 7")

    def deferred_at() -> Program[dict[str, int | None]]:
        rows = yield Query("SELECT tracking_id, deferred_at_us FROM messages")
        return dict(rows)

    tracker._store.run(back_to_version_6, write=True)
    version, _ = tracker._store.run(lambda: migrate(dialect, (), 0), write=True)
    assert version == LATEST
    at_t0 = int(T0.timestamp() * 1_000_000)
    assert tracker._store.run(deferred_at, write=False)[0] == {"t1": at_t0, "t2": None}

    store.clock.now = T0 + timedelta(hours=73)
    assert tracker.state("t1").status is DeliveryStatus.FAILED
    assert tracker.history("ada@example.com")[0].status is DeliveryStatus.FAILED
    assert tracker.report(status="failed").total == 1
    assert tracker.sweep() == 1
    assert tracker._store.run(deferred_at, write=False)[0] == {"t1": None, "t2": None}

    tracker.ingest(
        [event("deferred", "t3", at=T0 + timedelta(hours=74), recipient="cy@example.com")]
    )
    tracker.ingest([event("delivered", "t1", at=T0 + timedelta(hours=74))])
    assert tracker._store.run(deferred_at, write=False)[0] == {
        "t1": None,
        "t2": None,
        "t3": at_t0 + 74 * 3600 * 1_000_000,
    }


def test_a_badge_change_is_a_heap_only_update_on_postgres() -> None:
    """No index of ``messages`` holds a column a badge change writes, so PostgreSQL updates the
    state in place (HOT) instead of writing every index of the table again."""
    require_postgres()
    schema = f"t_{secrets.token_hex(6)}"
    url = with_schema(POSTGRES_URL, schema)
    try:
        with Tracker.open(url) as tracker:
            ids = [f"t{i}" for i in range(200)]
            tracker.ingest([event("processed", t, recipient=f"{t}@example.com") for t in ids])
            for kind, at in (("delivered", 10), ("opened", 20), ("clicked", 30)):
                tracker.ingest([event(kind, t, at=at, recipient=f"{t}@example.com") for t in ids])
        # Closed: the pool's backends ended and sent their statistics.
        with psycopg.connect(POSTGRES_URL) as conn:
            for _ in range(50):
                found = conn.execute(
                    "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
                    "WHERE schemaname = %s AND relname = 'messages'",
                    (schema,),
                ).fetchone()
                conn.commit()
                if found is not None and found[0] >= 600:
                    break
                time.sleep(0.1)
        assert found is not None and found[0] >= 600
        # Before version 7 every badge change wrote the deferral index, so none was HOT; how
        # many are now depends on the room left on each page.
        assert found[1] >= 0.25 * found[0], found
    finally:
        drop_schema(schema)
