"""The worker on every engine and both stores: batches stored and acknowledged after commit,
a poison envelope kept as a dead letter after its attempts while the rest flow, an outage
waited out without counting attempts, two workers ending in the sequential states, and a
worker killed with SIGKILL mid-batch and restarted losing nothing and doubling nothing."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from queue_support import KINDS, POISON, envelope_of, refuse_poison, sendgrid_event

from unimailtrack.queue import Envelope, Queue, Worker
from unimailtrack.tracking import Tracker

ENGINES = ["redis", "sqs", "outbox"]
MakeQueue = Callable[..., Queue]


def tracking_ids(n: int) -> list[str]:
    return [secrets.token_hex(16) for _ in range(n)]


@pytest.mark.parametrize("kind", ENGINES)
def test_the_worker_stores_every_envelope_once_and_empties_the_queue(
    kind: str, make_queue: MakeQueue, tracker: Tracker
) -> None:
    queue = make_queue(kind)
    ids = tracking_ids(10)
    for tid in ids:
        queue.put(envelope_of([sendgrid_event(tid, k) for k in ("processed", "delivered")]))
    # The provider's retry of one request, enqueued twice: stored once.
    repeated = envelope_of([sendgrid_event(ids[0], "open")])
    queue.put(repeated)
    queue.put(Envelope.of(repeated.provider, repeated.body, repeated.headers))
    stats = Worker(queue, tracker, batch=5, wait=0.5).run(until_empty=True)
    assert tracker.count_events() == 21
    assert stats.new == 21 and stats.duplicates == 1 and stats.dead_letters == 0
    assert tracker.state(ids[0]).status == "opened"
    assert all(tracker.state(t).status in ("delivered", "opened") for t in ids)
    assert queue.receive(10, 0.3) == []


@pytest.mark.parametrize("kind", ENGINES)
def test_a_poison_envelope_is_a_dead_letter_after_its_attempts_and_the_rest_flow(
    kind: str, make_queue: MakeQueue, store_url: str
) -> None:
    refuse_poison(store_url)
    queue = make_queue(kind, visibility=1)
    ids = tracking_ids(6)
    for n, tid in enumerate(ids):
        queue.put(envelope_of([sendgrid_event(tid, "delivered")]))
        if n == 2:
            queue.put(
                envelope_of([sendgrid_event(secrets.token_hex(16), "delivered", recipient=POISON)])
            )
    with Tracker.open(store_url) as tracker:
        worker = Worker(queue, tracker, batch=10, max_attempts=3, wait=0.5, backoff_first=0.1)
        done = threading.Event()

        def watch() -> None:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not tracker.dead_letters():
                time.sleep(0.1)
            worker.stop()
            done.set()

        threading.Thread(target=watch, daemon=True).start()
        stats = worker.run()
        assert done.wait(5)
        [letter] = tracker.dead_letters()
        assert letter.provider == "sendgrid"
        assert "not stored after 3 attempts" in letter.reason and "poison" in letter.reason
        assert POISON.encode() in letter.body
        assert tracker.count_events() == 6  # every other envelope went through at once
        assert all(tracker.state(t).status == "delivered" for t in ids)
        assert stats.retries == 2 and stats.dead_letters == 1
    time.sleep(1.2)
    assert queue.receive(10, 0.3) == []  # acknowledged once kept


def test_an_unreadable_message_is_a_dead_letter_at_once(
    make_queue: MakeQueue, tracker: Tracker
) -> None:
    queue = make_queue("redis")
    queue.put(Envelope.of("sendgrid", b"{not json", {"content-type": "application/json"}))
    queue.put(Envelope.of("no-such-provider", b"[]", {}))
    raw = queue._client  # a message someone else wrote to the stream: not an envelope
    raw.xadd(queue.stream, {"envelope": b"hello"})
    stats = Worker(queue, tracker, wait=0.3).run(until_empty=True)
    assert stats.dead_letters == 3
    reasons = sorted(letter.reason for letter in tracker.dead_letters())
    assert any("not an envelope" in r for r in reasons)
    assert any("no-such-provider" in r for r in reasons)
    assert queue.receive(10, 0.3) == []


def test_an_outage_is_waited_out_without_counting_attempts(
    make_queue: MakeQueue, tmp_path: Path
) -> None:
    """The store's file is made unwritable under the worker: it holds the batch, extending
    its lease, and stores it once the store is back; nothing becomes a dead letter."""
    url = f"sqlite:///{tmp_path / 'down.sqlite3'}?timeout=0.2"
    queue = make_queue("outbox", visibility=1)
    tid = secrets.token_hex(16)
    queue.put(envelope_of([sendgrid_event(tid, "delivered")]))
    import sqlite3

    blocker = sqlite3.connect(tmp_path / "down.sqlite3", isolation_level=None)
    with Tracker.open(url) as tracker:
        blocker.execute("BEGIN EXCLUSIVE")  # the store answers nothing, not even a read
        worker = Worker(
            queue, tracker, max_attempts=1, wait=0.3, backoff_first=0.3, backoff_max=0.6
        )
        runner = threading.Thread(target=lambda: worker.run(until_empty=True))
        runner.start()
        time.sleep(2.5)  # beyond the lease: held, not redelivered, not dead-lettered
        assert worker.stats.outages >= 2
        blocker.execute("ROLLBACK")
        runner.join(20)
        assert not runner.is_alive()
        assert tracker.count_events() == 1 and tracker.dead_letters() == []
        assert worker.stats.dead_letters == 0 and worker.stats.retries == 0
    blocker.close()


@pytest.mark.parametrize("kind", ["redis", "outbox"])
def test_two_workers_end_in_the_sequential_states(
    kind: str, make_queue: MakeQueue, tmp_path: Path
) -> None:
    from queue_support import POSTGRES_URL, drop_schema, require_postgres, with_option

    require_postgres()
    schema = f"t_{secrets.token_hex(6)}"
    url = with_option(POSTGRES_URL, f"schema={schema}")
    ids = tracking_ids(20)
    rng = __import__("random").Random(7)
    batches = [
        [sendgrid_event(rng.choice(ids), rng.choice(KINDS)) for _ in range(rng.randint(1, 8))]
        for _ in range(120)
    ]
    queue = make_queue(kind, visibility=30)
    for batch in batches:
        queue.put(envelope_of(batch))
    try:
        with Tracker.open(url) as one, Tracker.open(url) as two:
            workers = [
                Worker(queue, one, batch=7, wait=0.5),
                Worker(make_queue(kind, same=True, visibility=30), two, batch=5, wait=0.5),
            ]
            threads = [
                threading.Thread(target=w.run, kwargs={"until_empty": True}) for w in workers
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert sum(w.stats.new for w in workers) == sum(len(b) for b in batches)
            assert all(w.stats.envelopes > 0 for w in workers)
            with Tracker.open(f"sqlite:///{tmp_path / 'sequential.sqlite3'}") as sequential:
                for batch in batches:
                    from unimailtrack import parse_webhook

                    sequential.ingest(parse_webhook("sendgrid", json.dumps(batch).encode()))
                for tid in ids:
                    a, b = one.state(tid), sequential.state(tid)
                    assert (a.status, a.reason, a.opens, a.clicks, a.first_delivered_at) == (
                        b.status,
                        b.reason,
                        b.opens,
                        b.clicks,
                        b.first_delivered_at,
                    )
    finally:
        drop_schema(schema)


def _worker_process(queue_url: str, store_url: str, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "unimailtrack.cli",
            "worker",
            "--queue",
            queue_url,
            "--store",
            store_url,
            "--batch",
            "20",
            "--json",
            "--progress-every",
            "0.5",
            *extra,
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )


def _summaries(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("kind", ["redis", "outbox"])
def test_a_worker_killed_mid_batch_and_restarted_loses_nothing_and_doubles_nothing(
    kind: str, make_queue: MakeQueue, store_url: str
) -> None:
    queue = make_queue(kind, visibility=2)
    ids = tracking_ids(50)
    total = 0
    for n in range(600):
        events = [sendgrid_event(ids[(n + i) % 50], "open") for i in range(10)]
        total += len(events)
        queue.put(envelope_of(events))
    queue_url = queue.url
    first = _worker_process(queue_url, store_url, "--batch", "5")
    with Tracker.open(store_url) as tracker:
        deadline = time.monotonic() + 60
        while tracker.count_events() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=10)
        stored_at_kill = tracker.count_events()
        assert 0 < stored_at_kill < total, "the kill did not land mid-run"
        time.sleep(2.2)  # the killed worker's leases run out
        second = _worker_process(queue_url, store_url, "--until-empty")
        _, err = second.communicate(timeout=120)
        assert second.returncode == 0, err
        assert tracker.count_events() == total
        assert sum(tracker.state(t).opens for t in ids) == total  # no event counted twice
        final = _summaries(err)[-1]
        assert final["new"] == total - stored_at_kill
        assert final["dead_letters"] == 0
    assert queue.receive(10, 0.3) == []


def test_sigterm_finishes_the_batch_in_hand_and_stops(
    make_queue: MakeQueue, store_url: str
) -> None:
    queue = make_queue("redis", visibility=30)
    for _ in range(200):
        queue.put(
            envelope_of([sendgrid_event(secrets.token_hex(16), "delivered") for _ in range(5)])
        )
    proc = _worker_process(queue.url, store_url)
    with Tracker.open(store_url) as tracker:
        deadline = time.monotonic() + 60
        while tracker.count_events() == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0
        stored = tracker.count_events()
        final = _summaries(err)[-1]
        # Every batch it took was stored whole and acknowledged: what is left is exactly
        # what it never took.
        assert stored == final["new"] and stored % 5 == 0 and stored < 1000
        left = 0
        while batch := queue.receive(100, 0.3):
            left += len(batch)
            queue.ack(batch)
        assert stored + left * 5 == 1000
