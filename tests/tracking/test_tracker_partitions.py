"""The partitioned event history on PostgreSQL and retention on both backends.

Partitions are created ahead by the store, there is no DEFAULT partition, a provider's retry
landing in another month's partition is still a duplicate, retention drops whole partitions
(PostgreSQL) or deletes in bounded batches (SQLite) and keeps the per-message state and the
suppression list, and a populated database of the previous layout migrates forward with its
events readable and its recent ids still deduplicated."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from tracking_support import POSTGRES_URL, event, schema_of

from unimailtrack import Email, Mailer, StoreError
from unimailtrack.adapters import MemoryAdapter
from unimailtrack.tracking import Tracker
from unimailtrack.tracking import _partitions as partitions
from unimailtrack.tracking._partitions import month_start


def _partitions(url: str) -> dict[str, str]:
    with psycopg.connect(POSTGRES_URL) as conn:
        rows = conn.execute(
            """
            SELECT c.relname, pg_get_expr(c.relpartbound, c.oid)
            FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace
            WHERE p.relname = 'events' AND n.nspname = %s
            """,
            (schema_of(url),),
        ).fetchall()
    return dict(rows)


def _clock(when: datetime):  # type: ignore[no-untyped-def]
    return lambda: when


def test_partitions_are_made_ahead_and_there_is_no_default(pg_url: str) -> None:
    now = datetime.now(UTC)
    with Tracker.open(pg_url):
        found = _partitions(pg_url)
    expected = {
        partitions.partition_name(month_start(now, months))
        for months in range(1, 1 + partitions.AHEAD)
    }
    assert expected <= set(found)
    assert "events_legacy" in found  # the events of before, and of this month
    assert all("DEFAULT" not in bound for bound in found.values())
    with psycopg.connect(POSTGRES_URL) as conn:
        [(default,)] = conn.execute(
            "SELECT partdefid FROM pg_partitioned_table t JOIN pg_class c ON c.oid = t.partrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relname = 'events' "
            "AND n.nspname = %s",
            (schema_of(pg_url),),
        ).fetchall()
    assert default == 0


def test_an_event_for_a_month_without_a_partition_is_refused_whole(pg_url: str) -> None:
    far = datetime.now(UTC) + timedelta(days=3650)
    with Tracker.open(pg_url) as here, Tracker.open(pg_url, clock=_clock(far)) as there:
        with pytest.raises(StoreError, match="no partition"):
            there.ingest([event("delivered", "t1"), event("opened", "t1")])
        assert here.count_events() == 0
        assert here.state("t1").status == "unknown"


def test_a_retry_received_next_month_is_still_a_duplicate(pg_url: str) -> None:
    now = datetime.now(UTC)
    next_month = month_start(now, 1) + timedelta(days=2)
    first = event("delivered", "t1", event_id="same-id")
    with Tracker.open(pg_url) as here, Tracker.open(pg_url, clock=_clock(next_month)) as later:
        assert here.ingest([first]).new == 1
        retried = later.ingest([first, event("opened", "t1")])
        assert (retried.new, retried.duplicates) == (1, 1)
        assert here.count_events() == 2
        assert here.state("t1").opens == 1


def test_retention_drops_whole_partitions_and_keeps_state_and_suppressions(pg_url: str) -> None:
    now = datetime.now(UTC)
    next_month = month_start(now, 1) + timedelta(days=1)
    with Tracker.open(pg_url) as here, Tracker.open(pg_url, clock=_clock(next_month)) as later:
        sent = Mailer(MemoryAdapter(), tracker=here).send(
            Email(sender="s@example.com", to=["ada@example.com"], subject="Hi", text="x")
        )
        old = sent.recipients[0].tracking_id
        here.ingest([event("delivered", old), event("bounced", old, bounce="hard")])
        later.ingest([event("delivered", "newer", recipient="bob@example.com")])
        assert here.suppression("ada@example.com") is not None
    far = month_start(now, 2) + timedelta(days=91)  # 90 days on, the first two months expire
    with Tracker.open(pg_url, clock=_clock(far)) as tracker:
        dry = tracker.retention(timedelta(days=90))
        assert not dry.applied and dry.events == 3
        assert set(dry.partitions) == {
            "events_legacy",
            partitions.partition_name(month_start(now, 1)),
        }
        assert dry.event_ids == 3
        assert tracker.count_events() == 3  # a dry run removes nothing
        done = tracker.retention(timedelta(days=90), apply=True)
        assert done.applied and done.events == 3 and done.event_ids == 3
        assert tracker.count_events() == 0
        assert "events_legacy" not in _partitions(pg_url)
        assert tracker.suppression("ada@example.com") is not None  # kept
        [row] = tracker.history("ada@example.com").items  # the send's state is kept too
        assert (row.tracking_id, row.status) == (old, "bounced")
        badge = tracker.badge(old)  # the badge outlives the events it was folded from
        assert badge is not None and badge.status == "bounced"
        assert tracker.timeline_page(old).total == 0
        assert tracker.retention(timedelta(days=90)).events == 0
    with Tracker.open(pg_url) as reopened:  # the store still works, and still dedupes
        assert reopened.ingest([event("delivered", "t9", event_id="fresh")]).new == 1


@pytest.mark.parametrize("keep", [timedelta(hours=71), timedelta(0)])
def test_a_retention_shorter_than_providers_retry_is_refused(keep: timedelta, tmp_path) -> None:
    with Tracker.open(f"sqlite:///{tmp_path / 't.sqlite3'}") as tracker:
        with pytest.raises(ValueError, match="72 hours"):
            tracker.retention(keep)
        with pytest.raises(ValueError, match="72 hours"):
            tracker.retention(timedelta(days=90), dedupe_window=keep)


def test_sqlite_retention_deletes_in_bounded_batches(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(partitions, "BATCH", 7)
    url = f"sqlite:///{tmp_path / 't.sqlite3'}"
    start = datetime(2024, 1, 1, tzinfo=UTC)
    with Tracker.open(url, clock=_clock(start)) as old:
        old.ingest([event("delivered", f"m{n}", recipient=f"u{n}@example.com") for n in range(30)])
        old.ingest([event("bounced", "m0", recipient="u0@example.com", bounce="hard")])
    with Tracker.open(url, clock=_clock(start + timedelta(days=100))) as tracker:
        tracker.ingest([event("opened", "m1", recipient="u1@example.com")])
        dry = tracker.retention(timedelta(days=90))
        assert dry.events == 31 and tracker.count_events() == 32
        done = tracker.retention(timedelta(days=90), apply=True)
        assert done.events == 31 and tracker.count_events() == 1
        assert tracker.suppression("u0@example.com") is not None
        assert tracker.state("m1").status == "opened"


def test_a_populated_database_of_the_previous_layout_migrates_forward(pg_url: str) -> None:
    """Version 2 with 20,000 events (made on the server), migrated on open: every event is
    readable, its recent ids still count retries as duplicates, new events land in the
    monthly partitions, and retention works."""
    from unimailtrack.tracking import _schema
    from unimailtrack.tracking._postgres import PostgresDialect, parse_postgres_url
    from unimailtrack.tracking._store import drive, execute_step

    conninfo, options = parse_postgres_url(pg_url)
    schema = options["schema"]
    now_us = int(datetime.now(UTC).timestamp() * 1_000_000)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"SET search_path = {schema}")
        dialect = PostgresDialect("c", "o")
        with conn.transaction(), conn.cursor() as cursor:
            drive(
                _schema.migrate(dialect, (), now_us, _schema.MIGRATIONS[:2]),
                lambda step: execute_step(cursor, dialect, step, []),
            )
        conn.execute(
            """
            INSERT INTO events (event_id, provider, type, provider_event, recipient, recipient_key,
                domain, message_id, message_key, tracking_id, timestamp_us, rank, raw,
                received_at_us)
            SELECT 'old-' || g, 'memory', 'delivered', 'delivered', 'u' || g || '@example.com',
                'u' || g || '@example.com', 'example.com', NULL, NULL, 'tid-' || mod(g, 100),
                %s::bigint - g::bigint * 1000000, 4, '{}', %s::bigint - g::bigint * 1000000
            FROM generate_series(1, 20000) AS g
            """,
            (now_us, now_us),
        )
        [(version,)] = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchall()
        assert version == 2
    with Tracker.open(pg_url) as tracker:
        assert tracker.count_events() == 20000
        assert len(tracker.timeline("tid-7")) == 200
        retry = tracker.ingest(
            [event("delivered", "tid-7", event_id="old-7", recipient="u7@example.com")]
        )
        assert (retry.new, retry.duplicates) == (0, 1)
        assert tracker.ingest([event("opened", "tid-7", recipient="u7@example.com")]).new == 1
        assert tracker.count_events() == 20001
    assert "events_legacy" in _partitions(pg_url)


def test_the_retention_command_is_a_dry_run_unless_applied(tmp_path, capsys) -> None:
    from unimailtrack.cli import main

    url = f"sqlite:///{tmp_path / 't.sqlite3'}"
    with Tracker.open(url, clock=_clock(datetime(2020, 1, 1, tzinfo=UTC))) as old:
        old.ingest([event("delivered", "m1")])
    assert main(["retention", "--keep", "90d", "--store", url, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["events"] == 1 and report["applied"] is False
    assert main(["retention", "--keep", "90d", "--store", url, "--apply"]) == 0
    assert "events" in capsys.readouterr().out
    with Tracker.open(url) as tracker:
        assert tracker.count_events() == 0
    assert main(["retention", "--keep", "48h", "--store", url]) == 3
    assert main(["retention", "--keep", "soon", "--store", url]) == 2
