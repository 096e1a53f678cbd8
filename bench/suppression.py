"""The suppression list at scale: importing a million rows, and checking a bulk send against it.

Part 1, import. 1,000,000 rows (an address, a cause, a reason; a hundred domains) are
imported by ``tracker.import_suppressions(rows, dry_run=False)`` into a fresh store: SQLite,
and PostgreSQL when ``UNIMAILTRACK_BENCH_POSTGRES_URL`` (or the test server) answers. The
tracker checks every address, looks up what the list holds for each (nothing, in a fresh
store), folds, and writes one history row per entry, all in one transaction. The reference,
in the same round, is a bare ``executemany`` of the same rows (the same fourteen values the
tracker writes, prepared beforehand and not timed) into a table with the same columns and the
same three indexes, one transaction: ``sqlite3`` with the tracker's pragmas, psycopg's
``executemany`` on PostgreSQL. Each round makes fresh stores and runs the tracker and the
reference one after the other (the order alternates); the ratio is taken within each round
and printed as min / median / max. Target: at least half the reference's speed.

Part 2, the check. The SQLite store holding the million entries answers the mailer's question
for a 10,000-recipient bulk send (one in a hundred of them suppressed):
``tracker.suppressions_for(addresses, stream=...)``, one statement to the store (the script
counts them). Its CPU time is set beside the CPU time of that send itself through the
SendGrid adapter with a transport that answers at once (building and reading the ten Mail
Send requests, the results, the tracking ids: everything the library does for the send but
the network), without a tracker, so that the share says what the check adds.

Run with ``.venv/bin/python bench/suppression.py`` (``--rows N`` for fewer rows, ``--rounds
N``, default 3).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))

from unimailtrack import Email, Mailer
from unimailtrack._http import HttpxTransport
from unimailtrack.adapters import SendGridAdapter
from unimailtrack.tracking import Tracker
from unimailtrack.tracking import _suppression as S
from unimailtrack.tracking._schema import MIGRATIONS
from unimailtrack.tracking._store import Step, drive

POSTGRES_URL = os.environ.get(
    "UNIMAILTRACK_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
DOMAINS = 100
RECIPIENTS = 10_000


def rows(count: int) -> list[dict[str, Any]]:
    return [
        {
            "address": f"user{i}@example{i % DOMAINS}.com",
            "cause": "bounced",
            "reason": "550 5.1.1 user unknown",
        }
        for i in range(count)
    ]


def history_ddl() -> list[str]:
    """The statements that make ``suppression_history`` and its indexes, from the migration."""
    wanted = ("TABLE suppression_history", "ON suppression_history")
    return [s for m in MIGRATIONS for s in m.statements if any(w in s for w in wanted)]


def claim_tuples(data: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    now = int(time.time() * 1_000_000)
    return [S.claim_from_row(row, "import", now)._replace(standing=True)[:14] for row in data]


_INSERT = (
    "INSERT INTO suppression_history (address_key, scope_key, action, address, cause, reason, "
    "source, provider, event_id, tracking_id, at_us, expires_at_us, recorded_at_us, standing) "
    "VALUES ({})"
)


# --------------------------------------------------------------------------- SQLite


def sqlite_reference(path: Path, tuples: list[tuple[Any, ...]]) -> float:
    from unimailtrack.tracking._sqlite import SQLiteDialect

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA cache_size = -32768")
    dialect = SQLiteDialect()
    for statement in history_ddl():
        conn.execute(dialect.ddl(statement))
    start = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(_INSERT.format(", ".join("?" * 14)), tuples)
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def tracker_import(url: str, data: list[dict[str, Any]]) -> float:
    with Tracker.open(url) as tracker:
        start = time.perf_counter()
        report = tracker.import_suppressions(data, dry_run=False)
        elapsed = time.perf_counter() - start
        assert report.new == len(data), report
    return elapsed


# --------------------------------------------------------------------------- PostgreSQL


def postgres_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(POSTGRES_URL, connect_timeout=3):
            return True
    except Exception:
        return False


@contextlib.contextmanager
def postgres_schema() -> Iterator[str]:
    import psycopg
    from psycopg import sql

    schema = f"bench_{secrets.token_hex(5)}"
    try:
        yield schema
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def postgres_reference(schema: str, tuples: list[tuple[Any, ...]]) -> float:
    import psycopg
    from psycopg import sql

    from unimailtrack.tracking._postgres import PostgresDialect

    dialect = PostgresDialect("bench", "bench")
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        for statement in history_ddl():
            conn.execute(dialect.ddl(statement))  # type: ignore[arg-type]
        start = time.perf_counter()
        with conn.transaction(), conn.cursor() as cursor:
            cursor.executemany(
                _INSERT.format(", ".join(["%s"] * 14)),  # type: ignore[arg-type]
                tuples,
            )
        return time.perf_counter() - start


def with_schema(schema: str) -> str:
    return f"{POSTGRES_URL}{'&' if '?' in POSTGRES_URL else '?'}schema={schema}"


# --------------------------------------------------------------------------- the check


def send_cpu(email: Email) -> float:
    """CPU seconds of the send itself through SendGrid, the network answered at once."""

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(202, headers={"X-Message-Id": "bench"})

    transport = HttpxTransport(httpx.Client(transport=httpx.MockTransport(answer)))
    with Mailer(SendGridAdapter("SG.bench", transport=transport)) as mailer:
        start = time.process_time()
        result = mailer.send(email)
        elapsed = time.process_time() - start
    assert len(result.recipients) == RECIPIENTS
    return elapsed


def check_cpu(tracker: Tracker, addresses: list[str]) -> tuple[float, int, int]:
    """CPU seconds of the suppression check, the statements it sent, what it found."""
    start = time.process_time()
    found = tracker.suppressions_for(addresses, stream="newsletter")
    elapsed = time.process_time() - start
    steps: list[Step] = []

    def count(step: Step) -> list[tuple[Any, ...]]:
        steps.append(step)
        return []

    drive(S.lookup(addresses, "newsletter", 0), count)
    return elapsed, len(steps), len(found)


def spread(values: list[float]) -> str:
    return f"min {min(values):.2f}  median {statistics.median(values):.2f}  max {max(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    data = rows(args.rows)
    tuples = claim_tuples(data)
    backends = ["sqlite"] + (["postgresql"] if postgres_available() else [])
    ratios: dict[str, list[float]] = {b: [] for b in backends}
    times: dict[str, list[tuple[float, float]]] = {b: [] for b in backends}
    with tempfile.TemporaryDirectory() as scratch:
        place = Path(scratch)
        kept_store = None
        for round_number in range(args.rounds):
            for backend in backends:
                steps: list[Callable[[], float]]
                if backend == "sqlite":
                    url = f"sqlite:///{place / f'tracker{round_number}.sqlite3'}"
                    ref_path = place / f"reference{round_number}.sqlite3"
                    steps = [
                        lambda url=url: tracker_import(url, data),
                        lambda ref_path=ref_path: sqlite_reference(ref_path, tuples),
                    ]
                    if round_number == args.rounds - 1:
                        kept_store = url
                    first, second = steps if round_number % 2 == 0 else steps[::-1]
                    a, b = first(), second()
                    ours, reference = (a, b) if round_number % 2 == 0 else (b, a)
                else:
                    with postgres_schema() as tracked, postgres_schema() as bare:
                        work = [
                            lambda tracked=tracked: tracker_import(with_schema(tracked), data),
                            lambda bare=bare: postgres_reference(bare, tuples),
                        ]
                        first, second = work if round_number % 2 == 0 else work[::-1]
                        a, b = first(), second()
                        ours, reference = (a, b) if round_number % 2 == 0 else (b, a)
                ratios[backend].append(reference / ours)
                times[backend].append((ours, reference))
                print(
                    f"round {round_number + 1} {backend}: tracker {args.rows / ours:,.0f} rows/s, "
                    f"bare executemany {args.rows / reference:,.0f} rows/s",
                    flush=True,
                )
        print(f"\nImport of {args.rows:,} rows, speed as a share of a bare executemany's")
        for backend in backends:
            print(f"  {backend:<10}  {spread(ratios[backend])}   (target at least 0.50)")

        assert kept_store is not None
        with Tracker.open(kept_store) as tracker:
            addresses = [
                f"user{i * 100 if i % 100 == 0 else 10**7 + i}@example{i % DOMAINS}.com"
                for i in range(RECIPIENTS)
            ]
            email = Email(
                sender="news@example.com",
                to=addresses,
                subject="Monthly news",
                text="Hello",
                stream="newsletter",
            )
            shares, checks, sends = [], [], []
            for _ in range(5):
                send = send_cpu(email)
                check, statements, found = check_cpu(tracker, addresses)
                shares.append(check / send)
                checks.append(check)
                sends.append(send)
        print(
            f"\nSuppression check of a {RECIPIENTS:,}-recipient bulk send against "
            f"{args.rows:,} entries (SQLite): {statements} statement, {found} suppressed"
        )
        print(f"  check CPU ms   {spread([c * 1000 for c in checks])}")
        print(f"  send CPU ms    {spread([s * 1000 for s in sends])}")
        print(f"  check / send   {spread(shares)}")


if __name__ == "__main__":
    main()
