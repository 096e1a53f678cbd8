"""Ingestion at scale, over loopback in one run: the queue seam, workers, and partitions.

Part 1, answer time. ``unimailtrack serve`` in two child processes on 127.0.0.1, both over one
PostgreSQL store (a throwaway schema): one storing each request before it answers (the
default), one with ``--queue redis://...`` enqueueing the verified request to a Redis stream.
Signed 1,000-event SendGrid batches (the generator of ``parse_sendgrid.py``, every event id
unique) are posted one after another on one keep-alive connection; the figures are requests/s
and the p50/p99 of the answer time, which is what the provider sees. The two servers are
measured in turns, round after round; min/median/max over the rounds.

Part 2, draining. The same kind of batches, enqueued as envelopes to a Redis stream, drained
into PostgreSQL by ``unimailtrack worker`` processes (1, and 2 on one consumer group; the
contenders in an order rotating round by round), beside the reference: a bare psycopg ``COPY``
of the same event rows (already parsed and encoded, untimed) into a tracker's own ``events``
table (made by its migrations: the same monthly partitions, types and indexes). The workers
are started first and timed from the first envelope enqueued, once each has joined the
consumer group, until the group has read and acknowledged every envelope (after the store
committed), so interpreter start-up is not counted. Target: 2 workers at least half the rate
of the bare COPY. A fourth row is the floor the database sets: the statements the tracker
sends for the workers' transactions (four envelopes each), recorded in an untimed run and
replayed bare by two processes at once, each taking every other transaction. Each round fresh
schemas and a fresh stream; the rows interleave; min/median/max over the rounds.

Part 3, partitions. Ingestion through ``Tracker.ingest`` (pre-parsed batches of 1,000 events,
one transaction each) into a partitioned events table already holding 10 million rows (and
event_ids holding the 14 days' share of their ids) beside an empty one. The 10 million rows
are made on the server with one ``INSERT ... SELECT generate_series`` in a throwaway schema
(then vacuumed, analysed and checkpointed, as a table that has held its rows a while), dropped
at the end; five rounds. Target: the rate falls by no more than a fifth.

Part 4, the legacy split. A store as a migrated one is a month later: ``events_legacy`` holding
2 million events received over the three months before this one (made on the server as in
part 3) and closed at the start of this month. ``split_legacy(apply=True)`` moves them into
monthly partitions while a thread goes on ingesting 1,000-event batches into this month's
partition, as the store in use would; the figures are the split's seconds and rows/s, and the
ingest rate while it runs beside the rate without it, measured just before in the same store
(the ratio within each round). Each round a fresh store; every event is counted afterwards.

Run with ``.venv/bin/python bench/queue`` (``--quick``: fewer bodies, 1 million rows in
part 3 and 200,000 in part 4; ``--part N`` runs one part). PostgreSQL:
``UNIMAILTRACK_BENCH_POSTGRES_URL`` or the test server; Redis: ``UNIMAILTRACK_BENCH_REDIS_URL``
or 127.0.0.1:6379.
"""

from __future__ import annotations

import os
import sys

# A directory run as a script (``python bench/queue``): a file bench/queue.py would shadow the
# standard library's ``queue`` for every benchmark that puts bench/ first on the path, while a
# directory without __init__.py never does. The shared helpers are one level up.
sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse
import multiprocessing
import secrets
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
from psycopg import sql

from _harness import Target, record_targets
from ingest import Replayed, _postgres_connection, record_postgres, replay_postgres
from parse_sendgrid import batch
from unimailtrack import parse_webhook
from unimailtrack.adapter_rules import REGISTERED
from unimailtrack.adapters.sendgrid import SendGridWebhookSigner
from unimailtrack.queue import Envelope, open_queue
from unimailtrack.tracking import Tracker
from unimailtrack.tracking import _programs as P

POSTGRES_URL = os.environ.get(
    "UNIMAILTRACK_BENCH_POSTGRES_URL",
    os.environ.get("UNIMAILTRACK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"),
)
REDIS_URL = os.environ.get("UNIMAILTRACK_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
EVENTS_PER_BODY = 1000
WORKER_BATCH = 4
"""Envelopes a worker stores in one transaction (``--batch``)."""
Request = tuple[bytes, dict[str, str]]
_seeds = iter(range(10_000, 10_000_000))


def _url(schema: str) -> str:
    return f"{POSTGRES_URL}{'&' if '?' in POSTGRES_URL else '?'}schema={schema}"


@contextmanager
def throwaway_schema() -> Iterator[str]:
    schema = f"bench_{secrets.token_hex(5)}"
    try:
        yield schema
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def spread(values: Sequence[float]) -> str:
    return f"{min(values):>10,.1f} {statistics.median(values):>10,.1f} {max(values):>10,.1f}"


def bodies(count: int) -> list[bytes]:
    return [batch(EVENTS_PER_BODY, seed=next(_seeds)) for _ in range(count)]


# --------------------------------------------------------------------------- part 1


@contextmanager
def serving(public_key: str, store: str, queue: str | None) -> Iterator[str]:
    env = {
        **os.environ,
        "UNIMAILTRACK_DSN": "sendgrid://default",
        "UNIMAILTRACK_SENDGRID_WEBHOOK_KEY": public_key,
        "UNIMAILTRACK_STORE": store,
    }
    command = [sys.executable, "-m", "unimailtrack.cli", "serve", "--port", "0", "--no-api"]
    if queue:
        command += ["--queue", queue]
    process = subprocess.Popen(
        [*command, "--log-level", "warning"], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("unimailtrack: serving "):
            raise RuntimeError(f"serve did not start: {line!r}")
        yield line.split()[-1]
    finally:
        process.terminate()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


def post_timed(url: str, requests: Sequence[Request]) -> list[float]:
    """Seconds each request took to be answered, one after another on one connection."""
    took = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for body, headers in requests:
            started = time.perf_counter()
            answer = client.post("/webhooks/sendgrid", content=body, headers=headers)
            took.append(time.perf_counter() - started)
            if answer.status_code != 200:
                raise RuntimeError(f"unexpected answer {answer.status_code}: {answer.text}")
    return took


def part1(rounds: int, count: int) -> None:
    signer = SendGridWebhookSigner()

    def signed(n: int) -> list[Request]:
        return [
            (body, {"Content-Type": "application/json", **signer.sign(body)}) for body in bodies(n)
        ]

    stream = f"bench-{secrets.token_hex(4)}"
    queue_url = f"{REDIS_URL}?stream={stream}"
    results: dict[str, dict[str, list[float]]] = {}
    with throwaway_schema() as schema:
        store = _url(schema)
        Tracker.open(store).close()
        with (
            serving(signer.public_key, store, None) as direct,
            serving(signer.public_key, store, queue_url) as queued,
        ):
            servers = {"serve, storing in PostgreSQL": direct, "serve --queue redis": queued}
            for url in servers.values():
                post_timed(url, signed(3))  # warm up
            for _ in range(rounds):
                for label, url in servers.items():
                    took = post_timed(url, signed(count))
                    found = results.setdefault(label, {"rps": [], "p50": [], "p99": []})
                    found["rps"].append(len(took) / sum(took))
                    ordered = sorted(took)
                    found["p50"].append(1000 * statistics.median(ordered))
                    found["p99"].append(
                        1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
                    )
    import redis

    redis.Redis.from_url(REDIS_URL).delete(stream)
    print(
        f"\nPart 1: signed SendGrid batches of {EVENTS_PER_BODY:,} events, {count} a round, "
        f"{rounds} rounds (min / median / max)"
    )
    reference = statistics.median(results["serve, storing in PostgreSQL"]["rps"])
    for label, found in results.items():
        print(f"  {label}")
        print(
            f"    requests/s   {spread(found['rps'])}   "
            f"(median {statistics.median(found['rps']) / reference:.2f}x storing)"
        )
        print(f"    p50 ms       {spread(found['p50'])}")
        print(f"    p99 ms       {spread(found['p99'])}")


# --------------------------------------------------------------------------- part 2


def drain(workers: int, store: str, queue_url: str, payload: list[bytes], total: int) -> float:
    """Events/s of ``workers`` worker processes draining ``payload`` into ``store``: timed
    from the first envelope enqueued (the workers already started, connected and waiting on
    the stream, so that no interpreter start-up is counted) until the consumer group has
    read and acknowledged every envelope (a worker acknowledges after the store commits)."""
    import redis

    command = [
        sys.executable,
        "-m",
        "unimailtrack.cli",
        "worker",
        "--queue",
        queue_url,
        "--store",
        store,
        "--batch",
        str(WORKER_BATCH),
        "--progress-every",
        "0.5",
    ]
    queue = open_queue(queue_url)
    client = redis.Redis.from_url(REDIS_URL)
    stream, group = queue.stream, queue.group  # type: ignore[attr-defined]
    with ExitStack() as files:
        logs = [files.enter_context(tempfile.TemporaryFile()) for _ in range(workers)]
        processes = [subprocess.Popen(command, env={**os.environ}, stderr=log) for log in logs]
        try:
            # A worker prints its first progress line once it is connected and reading.
            deadline = time.monotonic() + 60
            while not all(os.fstat(log.fileno()).st_size for log in logs):
                if any(p.poll() is not None for p in processes) or time.monotonic() > deadline:
                    raise RuntimeError("the workers did not start")
                time.sleep(0.02)
            started = time.perf_counter()
            for body in payload:
                queue.put(Envelope.of("sendgrid", body, {"content-type": "application/json"}))
            while not _drained(client, stream, group, len(payload)):
                if any(p.poll() is not None for p in processes):
                    raise RuntimeError("the workers stopped before storing everything")
                time.sleep(0.005)
            elapsed = time.perf_counter() - started
        finally:
            for process in processes:
                process.terminate()  # SIGTERM: finish the batch in hand, then stop
            for process in processes:
                process.wait(timeout=60)
            queue.close()
            client.delete(stream)
    with Tracker.open(store) as tracker:
        stored = tracker.count_events()
    if stored != total:
        raise RuntimeError(f"the workers stored {stored:,} events of {total:,}")
    return total / elapsed


def _drained(client: Any, stream: str, group: str, envelopes: int) -> bool:
    [info] = [g for g in client.xinfo_groups(stream) if g["name"].decode() == group]
    return bool(info["entries-read"] is not None and info["entries-read"] >= envelopes) and (
        info["pending"] == 0
    )


def copy_rate(schema: str, rows: list[tuple[object, ...]]) -> float:
    """Events/s of a bare psycopg ``COPY`` of ``rows`` into a tracker's own ``events`` table
    (made by its migrations: the same partitions, types and indexes), one transaction."""
    Tracker.open(_url(schema)).close()
    with psycopg.connect(POSTGRES_URL) as conn:
        conn.execute(sql.SQL("SET search_path = {}").format(sql.Identifier(schema)))
        started = time.perf_counter()
        with (
            conn.cursor() as cursor,
            cursor.copy(f"COPY events ({P._EVENT_COLUMNS}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)
        conn.commit()
        return len(rows) / (time.perf_counter() - started)


REPLAYED = "2 bare replays"
"""The floor row: the tracker's own statements replayed bare on 2 connections at once."""


def replay_rate(schema: str, log: Replayed, connections: int, total: int) -> float:
    """Events/s of the tracker's own statements for the workers' transactions (recorded in an
    untimed run), replayed bare by ``connections`` processes at once into a fresh store, each
    taking every ``connections``-th transaction, as workers on one consumer group take the
    envelopes in turn: what the database alone makes of the workers' writes."""
    Tracker.open(_url(schema)).close()
    context = multiprocessing.get_context("fork")  # the log is shared, not pickled
    ready = context.Barrier(connections + 1)  # passed once every process has connected
    processes = [
        context.Process(target=_replay_share, args=(_url(schema), log[n::connections], ready))
        for n in range(connections)
    ]
    for process in processes:
        process.start()
    ready.wait(timeout=60)
    started = time.perf_counter()
    for process in processes:
        process.join()
    elapsed = time.perf_counter() - started
    if any(process.exitcode for process in processes):
        raise RuntimeError("a replay failed")
    return total / elapsed


def _replay_share(url: str, share: Replayed, ready: Any) -> None:
    conn = _postgres_connection(url)
    ready.wait(timeout=60)
    for statements in share:
        replay_postgres(conn, statements)
    conn.close()


def part2(rounds: int, count: int) -> None:
    total = count * EVENTS_PER_BODY
    rates: dict[str, list[float]] = {}
    for number in range(rounds):
        payload = bodies(count)
        now_us = int(datetime.now(UTC).timestamp() * 1_000_000)
        parsed = [parse_webhook("sendgrid", body) for body in payload]
        rows = [
            row for events in parsed for row in P.event_rows(events, now_us, REGISTERED.message_key)
        ]
        transactions = [
            [event for events in parsed[start : start + WORKER_BATCH] for event in events]
            for start in range(0, len(parsed), WORKER_BATCH)
        ]
        with throwaway_schema() as schema:
            log = record_postgres(_url(schema), None, transactions, clock=lambda: datetime.now(UTC))

        def copied(rows: list[tuple[object, ...]] = rows) -> float:
            with throwaway_schema() as schema:
                return copy_rate(schema, rows)

        def replayed(log: Replayed = log) -> float:
            with throwaway_schema() as schema:
                return replay_rate(schema, log, 2, total)

        def drained(workers: int, payload: list[bytes] = payload) -> float:
            queue_url = f"{REDIS_URL}?stream=bench-{secrets.token_hex(4)}"
            with throwaway_schema() as schema:
                store = _url(schema)
                Tracker.open(store).close()
                return drain(workers, store, queue_url, payload, total)

        contenders = [
            ("bare psycopg COPY", copied),
            ("1 worker", lambda: drained(1)),
            ("2 workers", lambda: drained(2)),
            (REPLAYED, replayed),
        ]
        shift = number % len(contenders)
        for label, run in contenders[shift:] + contenders[:shift]:  # rotating, round by round
            rates.setdefault(label, []).append(run())
    print(
        f"\nPart 2: {total:,} events ({count} envelopes) from Redis into PostgreSQL, "
        f"{rounds} rounds, events/s (min / median / max) and the ratio to the COPY within "
        "each round (min / median / max)"
    )
    _print_rates(rates, "bare psycopg COPY", "COPY")
    record_targets(
        "queue_drain",
        [
            _target(
                "2 workers draining Redis into PostgreSQL / bare COPY, same table and indexes",
                _within(rates, "2 workers", "bare psycopg COPY"),
                0.5,
                note="the tracker's statements, replayed bare on 2 connections: "
                + _spread_ratio(_within(rates, REPLAYED, "bare psycopg COPY")),
            )
        ],
    )


# --------------------------------------------------------------------------- part 3


_FILL = """
INSERT INTO events_legacy (event_id, provider, type, provider_event, recipient, recipient_key,
    domain, message_id, message_key, tracking_id, timestamp_us, rank, raw, received_at_us)
SELECT 'fill-' || g, 'sendgrid', 'delivered', 'delivered',
    'u' || mod(g, 2000000) || '@example.com', 'u' || mod(g, 2000000) || '@example.com',
    'example.com', 'm' || mod(g, 2000000), 'm' || mod(g, 2000000),
    md5(mod(g, 2000000)::text), %(now)s::bigint - g::bigint * %(step)s, 4, '{}',
    %(now)s::bigint - g::bigint * %(step)s
FROM generate_series(1, %(rows)s) AS g
"""


@contextmanager
def _session(schema: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection of its own in ``schema``, with no statement timeout, for the fills."""
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path = {}").format(sql.Identifier(schema)))
        conn.execute("SET statement_timeout = 0")
        yield conn


def ingest_rate(tracker: Tracker, batches: list[list[object]]) -> float:
    started = time.perf_counter()
    for events in batches:
        tracker.ingest(events)  # type: ignore[arg-type]
    return sum(len(b) for b in batches) / (time.perf_counter() - started)


def part3(rounds: int, rows: int, count: int) -> None:
    now_us = int(datetime.now(UTC).timestamp() * 1_000_000)
    with throwaway_schema() as full, throwaway_schema() as empty:
        Tracker.open(_url(full)).close()
        Tracker.open(_url(empty)).close()
        started = time.perf_counter()
        with _session(full) as conn:
            conn.execute(_FILL, {"now": now_us, "rows": rows, "step": 700_000})
            conn.execute(
                "INSERT INTO event_ids SELECT event_id, received_at_us FROM events "
                "WHERE received_at_us > %s",
                (now_us - 14 * 86400 * 1_000_000,),
            )
            # As a table that has held its rows a while: vacuumed and analysed, so that the
            # autovacuum a fresh bulk insert sets off does not run during the measurement,
            # and the fill's WAL checkpointed, so that the checkpoint it is due does not
            # either (both contenders then start right after one).
            conn.execute("VACUUM (ANALYZE)")
            try:
                conn.execute("CHECKPOINT")
            except psycopg.errors.InsufficientPrivilege:
                print("  (not allowed to CHECKPOINT: the fill's checkpoint may fall in a round)")
            [(held,)] = conn.execute("SELECT count(*) FROM events").fetchall()
        print(f"\nPart 3: {held:,} rows made on the server in {time.perf_counter() - started:.0f}s")
        rates: dict[str, list[float]] = {}
        with Tracker.open(_url(full)) as big, Tracker.open(_url(empty)) as small:
            warm = [parse_webhook("sendgrid", b) for b in bodies(2)]
            ingest_rate(big, warm)
            ingest_rate(small, [parse_webhook("sendgrid", b) for b in bodies(2)])
            contenders = [("empty events table", small), (f"{held:,} rows", big)]
            for number in range(rounds):
                for label, tracker in contenders[:: 1 if number % 2 == 0 else -1]:
                    batches = [parse_webhook("sendgrid", b) for b in bodies(count)]
                    rates.setdefault(label, []).append(ingest_rate(tracker, batches))  # type: ignore[arg-type]
    print(
        f"  ingest into a partitioned events table, {count} batches of {EVENTS_PER_BODY:,}, "
        f"{rounds} rounds (the order alternating), events/s (min / median / max) and the "
        "ratio to the empty table within each round"
    )
    _print_rates(rates, "empty events table", "empty")
    record_targets(
        "queue_partitions",
        [
            _target(
                f"ingest beside {held:,} stored rows / into an empty partitioned table",
                _within(rates, f"{held:,} rows", "empty events table"),
                0.8,
            )
        ],
    )


# --------------------------------------------------------------------------- part 4


def _legacy_store(schema: str, rows: int) -> str:
    """A store as a migrated one is once the month after its migration has begun:
    ``events_legacy`` holding ``rows`` events received over the three months before this one,
    closed at the start of this month, which has a partition of its own."""
    url = _url(schema)
    Tracker.open(url).close()
    bound = int(
        datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()
        * 1_000_000
    )
    step = 90 * 86400 * 1_000_000 // rows
    with _session(schema) as conn:
        conn.execute(_FILL, {"now": bound - 1, "rows": rows, "step": step})
        conn.execute("ALTER TABLE events DETACH PARTITION events_legacy")
        conn.execute(
            "ALTER TABLE events ATTACH PARTITION events_legacy "
            f"FOR VALUES FROM (MINVALUE) TO ({bound})"
        )
        conn.execute("VACUUM (ANALYZE)")
    Tracker.open(url).close()  # this month's partition
    return url


def _split_round(rows: int, count: int) -> tuple[float, float, float]:
    """One round in a fresh store: seconds the split takes, and the ingest rate without it
    and beside it (the median over the batches stored while it ran)."""
    with throwaway_schema() as schema, Tracker.open(_legacy_store(schema, rows)) as tracker:
        ingest_rate(tracker, [parse_webhook("sendgrid", b) for b in bodies(2)])
        alone = ingest_rate(tracker, [parse_webhook("sendgrid", b) for b in bodies(count)])
        beside = [parse_webhook("sendgrid", b) for b in bodies(count)]
        during: list[float] = []
        done = threading.Event()

        def ingest_meanwhile() -> None:
            for events in beside:
                if done.is_set():
                    return
                during.append(ingest_rate(tracker, [events]))

        started = time.perf_counter()
        ingester = threading.Thread(target=ingest_meanwhile)
        ingester.start()
        report = tracker.split_legacy(apply=True)
        elapsed = time.perf_counter() - started
        done.set()
        ingester.join()
        if not report.finished or report.rows_total != rows:
            raise RuntimeError(f"the split did not finish: {report}")
        if not during:
            raise RuntimeError("no batch was ingested while the split ran")
        if tracker.count_events() != rows + EVENTS_PER_BODY * (2 + count + len(during)):
            raise RuntimeError("events went missing across the split")
        return elapsed, alone, statistics.median(during)


def part4(rounds: int, rows: int, count: int) -> None:
    """How long ``split_legacy`` takes over ``rows`` events, and what ingestion (into this
    month's partition, the store in use) keeps of its rate while the split runs."""
    seconds: list[float] = []
    rates: dict[str, list[float]] = {"without a split": [], "while splitting": []}
    for _ in range(rounds):
        elapsed, alone, during = _split_round(rows, count)
        seconds.append(elapsed)
        rates["without a split"].append(alone)
        rates["while splitting"].append(during)
    print(
        f"\nPart 4: split_legacy over {rows:,} events in events_legacy (three months), "
        f"{rounds} rounds (min / median / max)"
    )
    print(f"  seconds             {spread(seconds)}")
    print(f"  rows/s              {spread([rows / s for s in seconds])}")
    print(
        "  ingest, 1,000-event batches into this month's partition, events/s, and the ratio "
        "within each round"
    )
    _print_rates(rates, "without a split", "without")


def _print_rates(rates: dict[str, list[float]], reference: str, short: str) -> None:
    """Each row's rates and its ratio to ``reference`` within each round (min / median / max)."""
    for label, found in rates.items():
        ratios = _within(rates, label, reference)
        print(f"  {label:<20} {spread(found)}   {_spread_ratio(ratios)} {short}")


def _within(rates: dict[str, list[float]], label: str, reference: str) -> list[float]:
    """``label``'s rate over ``reference``'s, round by round."""
    return [ours / theirs for ours, theirs in zip(rates[label], rates[reference], strict=True)]


def _spread_ratio(ratios: Sequence[float]) -> str:
    return f"{min(ratios):.2f}x {statistics.median(ratios):.2f}x {max(ratios):.2f}x"


def _target(name: str, ratios: Sequence[float], threshold: float, note: str = "") -> Target:
    return Target(name, statistics.median(ratios), min(ratios), max(ratios), threshold, note=note)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--part", type=int, choices=[1, 2, 3, 4])
    args = parser.parse_args()
    rounds = 3
    if args.part in (None, 1):
        part1(rounds, 10 if args.quick else 30)
    if args.part in (None, 2):
        part2(rounds, 20 if args.quick else 60)
    if args.part in (None, 3):
        # Five rounds: one round's pair is a few seconds, the fill before them minutes.
        part3(5, 1_000_000 if args.quick else 10_000_000, 10 if args.quick else 20)
    if args.part in (None, 4):
        part4(rounds, 200_000 if args.quick else 2_000_000, 10 if args.quick else 20)


if __name__ == "__main__":
    main()
