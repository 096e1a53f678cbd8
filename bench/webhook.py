"""Webhook receiving end to end: signed 1,000-event SendGrid batches posted to ``serve``.

Thirty bodies of 1,000 mixed events each (the generator of ``parse_sendgrid.py``, every event
id unique, so every batch is verified, parsed, stored in one transaction and answered 200) are
signed with ECDSA as SendGrid signs them. One table per store: SQLite, then PostgreSQL when
it answers (``UNIMAILTRACK_BENCH_POSTGRES_URL``, else the test server; a fresh schema for each
contender, dropped afterwards). The reference is ``WebhookReceiver.handle`` in this process
over a tracker on that store: verify, parse, store, one body after the other, no HTTP. The
other rows post the same kind of bodies over loopback to ``unimailtrack serve`` (a child
process, a fresh store of its own, the SendGrid adapter holding the verification key): from
one keep-alive connection, then from 8 at once, with 1 worker and with ``--workers 2``. Each
round starts every contender afresh (server started and warmed up with two bodies before the
clock starts), in rotating order, and takes its ratio to the reference of that round. The
latency of each request at 8 clients is recorded: the p50 and p99 over all rounds are printed.

SQLite has one writer, so its workers queue for it and grow only as far as verifying and
parsing are the cost; PostgreSQL takes both workers' transactions at once, and is where
``--workers`` can grow with the cores.

Run with ``.venv-bench/bin/python bench/webhook.py`` (``--rounds N``, default 5).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))

from _harness import Row, Target, print_table, record_targets, rounds, target_from_row
from ingest import postgres_reachable, postgres_schemas
from parse_sendgrid import batch
from unimailtrack.adapters.sendgrid import SendGridAdapter, SendGridWebhookSigner
from unimailtrack.tracking import Tracker
from unimailtrack.webhooks import WebhookReceiver

BODIES = 30
EVENTS_PER_BODY = 1000
CLIENTS = 8
ROUNDS = 5
REFERENCE = "WebhookReceiver.handle, in process"

Request = tuple[bytes, dict[str, str]]


@contextmanager
def serving(public_key: str, store: str, workers: int = 1) -> Iterator[str]:
    """``unimailtrack serve`` on the store at URL ``store``, in a child process; yields its
    base URL."""
    env = {
        **os.environ,
        "UNIMAILTRACK_DSN": "sendgrid://default",
        "UNIMAILTRACK_SENDGRID_WEBHOOK_KEY": public_key,
        "UNIMAILTRACK_STORE": store,
    }
    command = [sys.executable, "-m", "unimailtrack.cli", "serve", "--port", "0"]
    command += ["--workers", str(workers)]
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


def signed(signer: SendGridWebhookSigner, seeds: range) -> list[Request]:
    requests = []
    for seed in seeds:
        body = batch(EVENTS_PER_BODY, seed=seed)
        requests.append((body, {"Content-Type": "application/json", **signer.sign(body)}))
    return requests


def post_all(url: str, requests: Sequence[Request], clients: int) -> tuple[float, list[float]]:
    """Seconds to post every request, spread over ``clients`` keep-alive connections, and
    each request's latency."""
    shares = [requests[i::clients] for i in range(clients)]
    latencies: list[float] = []

    def post(share: Sequence[Request]) -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            for body, headers in share:
                sent = time.perf_counter()
                answer = client.post("/webhooks/sendgrid", content=body, headers=headers)
                latencies.append(time.perf_counter() - sent)
                if answer.status_code != 200 or answer.json()["new"] != EVENTS_PER_BODY:
                    raise RuntimeError(f"unexpected answer {answer.status_code}: {answer.text}")

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(post, shares))
    return time.perf_counter() - started, latencies


def handle_all(adapter: SendGridAdapter, store: str, requests: Sequence[Request]) -> float:
    """Seconds for ``WebhookReceiver.handle`` to verify, parse and store every request but
    the first (a warm-up: the schema, the first pages of the indexes) into the store at URL
    ``store``."""
    (warm_body, warm_headers), *timed = requests
    with Tracker.open(store) as tracker:
        receiver = WebhookReceiver({"sendgrid": adapter}, tracker)
        receiver.handle("sendgrid", warm_headers, warm_body)
        started = time.perf_counter()
        for body, headers in timed:
            if receiver.handle("sendgrid", headers, body).status != 200:
                raise RuntimeError("a batch was not stored")
        return time.perf_counter() - started


@contextmanager
def sqlite_stores() -> Iterator[Callable[[], str]]:
    """A fresh SQLite store URL for each contender, removed afterwards."""
    with tempfile.TemporaryDirectory() as scratch:
        made = iter(range(1_000_000))
        yield lambda: f"sqlite:///{Path(scratch) / f'bench-{next(made)}.sqlite3'}"


class _Table:
    """One store's table: the in-process reference and ``serve`` at 1 and 2 workers."""

    def __init__(
        self, fresh: Callable[[], str], signer: SendGridWebhookSigner, seeds: Iterator[int]
    ) -> None:
        self.fresh = fresh  # a new store's URL for each run
        self.signer = signer
        self.adapter = SendGridAdapter(webhook_keys=signer.public_key)
        self.seeds = seeds
        self.latencies: list[float] = []

    def in_process(self) -> Callable[[], float]:
        def run() -> float:
            seed = next(self.seeds)
            requests = signed(self.signer, range(seed, seed + BODIES + 1))
            return BODIES * EVENTS_PER_BODY / handle_all(self.adapter, self.fresh(), requests)

        return run

    def through_serve(self, clients: int, workers: int) -> Callable[[], float]:
        def run() -> float:
            seed = next(self.seeds)
            warm = signed(self.signer, range(seed, seed + 2))
            timed = signed(self.signer, range(seed + 2, seed + 2 + BODIES))
            with serving(self.signer.public_key, self.fresh(), workers) as url:
                post_all(url, warm, min(clients, 2))  # imports, schema, each worker's first
                seconds, taken = post_all(url, timed, clients)
            if clients == CLIENTS:
                self.latencies.extend(taken)
            return BODIES * EVENTS_PER_BODY / seconds

        return run


def measure(
    store: str,
    fresh: Callable[[], str],
    signer: SendGridWebhookSigner,
    seeds: Iterator[int],
    count: int,
) -> list[Target]:
    """The table of one store, printed, and its targets: each ``serve`` row against the
    in-process receiver on the same store, and the growth from 1 to 2 workers."""
    table = _Table(fresh, signer, seeds)
    one = f"serve, 1 worker, 1 client, {store}"
    many = f"serve, 1 worker, {CLIENTS} clients, {store}"
    two = f"serve, --workers 2, {CLIENTS} clients, {store}"
    reference = f"{REFERENCE}, {store}"
    contenders = {
        reference: table.in_process(),
        one: table.through_serve(1, 1),
        many: table.through_serve(CLIENTS, 1),
        two: table.through_serve(CLIENTS, 2),
    }
    rows = rounds(contenders, reference=reference, count=count)
    print_table(
        f"Signed SendGrid webhooks, {EVENTS_PER_BODY:,} events a request, {store} store, "
        f"{count} rounds",
        rows,
        reference=reference,
    )
    ordered = sorted(table.latencies)
    p50 = ordered[len(ordered) // 2]
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(
        f"  latency of a request at {CLIENTS} clients over {len(ordered)} requests: "
        f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"
    )
    by = {row.label: row for row in rows}
    growth = tuple(a / b for a, b in zip(by[two].ratios, by[many].ratios, strict=True))
    return [
        *(target_from_row(f"{label} / {reference}", by[label], 0.8) for label in (one, many, two)),
        target_from_row(
            f"serve at {CLIENTS} clients, {store}: --workers 2 / 1 worker (grows with workers)",
            Row(two, by[two].rate, by[two].unit, growth),
            1.0,
            note=f"p99 latency at {CLIENTS} clients: {p99 * 1000:.0f} ms (p50 {p50 * 1000:.0f} ms)",
        ),
    ]


def main() -> None:
    count = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else ROUNDS
    signer = SendGridWebhookSigner()
    seeds = iter(range(10_000, 10_000_000, BODIES + 2))
    targets: list[Target] = []
    with contextlib.ExitStack() as stack:
        fresh = stack.enter_context(sqlite_stores())
        targets += measure("SQLite", fresh, signer, seeds, count)
        if postgres_reachable():
            fresh = stack.enter_context(postgres_schemas())
            targets += measure("PostgreSQL", fresh, signer, seeds, count)
        else:
            print("\n  PostgreSQL: not reachable, its table is left out")
    record_targets("webhook", targets)


if __name__ == "__main__":
    main()
