"""Mailgun webhooks through a real outage and a real crash, with clients that retry as Mailgun
does (every answer but a 2xx, and every broken connection, is sent again later).

- A PostgreSQL server of the test's own (``initdb``/``pg_ctl`` on a free port in a temporary
  directory: the shared server is never touched) is stopped hard and started again while the
  requests flow; the receiver answers 503 meanwhile.
- ``unimailtrack serve`` is killed with SIGKILL in the middle of the load and started again on
  the same store (SQLite, and the shared PostgreSQL server in a schema of its own).

Every request sent is stored exactly once: 0 lost, 0 doubled, and every client ends on a 200.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

import webhook_kits
from live_server import running
from unimailtrack.tracking import Tracker
from unimailtrack.web import create_app
from unimailtrack.webhooks import WebhookReceiver

POSTGRES_URL = os.environ.get(
    "UNIMAILTRACK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
CLIENTS = 4
PER_CLIENT = 40
GIVE_UP = 90.0
"""Seconds after which a client stops retrying: the test then fails, naming what was lost."""


@dataclass
class Load:
    """Clients posting signed Mailgun requests to ``url()`` and retrying until each is 200."""

    url: Callable[[], str]
    requests: list[list[tuple[bytes, dict[str, str]]]]
    answers: Counter[str] = field(default_factory=Counter)
    done: int = 0
    lost: list[int] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def total(self) -> int:
        return sum(len(batch) for batch in self.requests)

    def _client(self, batch: list[tuple[bytes, dict[str, str]]]) -> None:
        with httpx.Client(timeout=10) as client:
            for index, (body, headers) in enumerate(batch):
                deadline = time.monotonic() + GIVE_UP
                delay = 0.05
                while True:
                    try:
                        answer = client.post(
                            f"{self.url()}/webhooks/mailgun", content=body, headers=headers
                        )
                        outcome = str(answer.status_code)
                    except httpx.HTTPError:
                        outcome = "connection error"
                    with self._lock:
                        self.answers[outcome] += 1
                        if outcome == "200":
                            self.done += 1
                    if outcome == "200":
                        break
                    if time.monotonic() > deadline:
                        with self._lock:
                            self.lost.append(index)
                        break
                    time.sleep(delay)
                    delay = min(delay * 2, 0.5)

    def start(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self._client, args=(b,)) for b in self.requests]
        for thread in threads:
            thread.start()
        return threads

    def wait_until(self, fraction: float) -> None:
        limit = time.monotonic() + GIVE_UP
        while self.done < self.total * fraction and time.monotonic() < limit:
            time.sleep(0.01)


def signed_requests(kit: webhook_kits.Kit) -> list[list[tuple[bytes, dict[str, str]]]]:
    return [
        [
            kit.request(secrets.token_hex(16), f"c{c}r{i}@example.com", "delivered")
            for i in range(PER_CLIENT)
        ]
        for c in range(CLIENTS)
    ]


def assert_all_stored_once(tracker: Tracker, load: Load) -> None:
    assert load.lost == [], f"gave up on {len(load.lost)} request(s): {load.answers}"
    assert load.done == load.total
    assert tracker.count_events() == load.total  # every request once: none lost, none doubled
    recipients = [
        f"c{c}r{i}@example.com" for c in range(len(load.requests)) for i in range(PER_CLIENT)
    ]
    assert all(tracker.history(r).total == 0 for r in recipients)  # no send was recorded
    assert sum(1 for r in recipients if tracker.suppression(r) is None) == load.total


# --------------------------------------------------------------------------- a server of our own


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    initdb = shutil.which("initdb") or (found[-1] if found else None)
    if initdb is None:
        message = "PostgreSQL's initdb is not installed (apt-get install postgresql)"
        if os.environ.get("UNIMAILTRACK_REQUIRE_POSTGRES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return Path(initdb).parent


@dataclass
class Cluster:
    """A throwaway PostgreSQL server: its own data directory, socket directory and port."""

    bin: Path
    root: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres?connect_timeout=2"

    def _run(self, *command: str) -> None:
        prefix: list[str] = []
        if os.geteuid() == 0:  # the server refuses to run as root
            prefix = ["runuser", "-u", "postgres", "--"]
        subprocess.run([*prefix, *command], check=True, capture_output=True, timeout=60)

    def init(self) -> None:
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(self.root, account.pw_uid, account.pw_gid)
        self._run(
            str(self.bin / "initdb"), "-D", str(self.root / "data"), "-U", "postgres",
            "--auth=trust", "-E", "UTF8", "--no-sync",
        )  # fmt: skip

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=40"
        )
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-o", options,
            "-l", str(self.root / "log"), "-w", "-t", "30", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-m", mode, "-w", "stop")


@contextmanager
def own_postgres() -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="unimailtrack-pg-"))
    cluster = Cluster(_postgres_bin(), root, _free_port())
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        with suppress(subprocess.CalledProcessError):  # already stopped
            cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.postgres
def test_a_postgres_restart_under_load_loses_and_doubles_nothing() -> None:
    kit = webhook_kits.mailgun()
    with own_postgres() as cluster, Tracker.open(cluster.url) as tracker:
        receiver = WebhookReceiver({"mailgun": kit.adapter}, tracker)  # the default setup
        with running(create_app(receiver, api=False)) as url:
            load = Load(lambda: url, signed_requests(kit))
            threads = load.start()
            load.wait_until(0.25)
            cluster.stop("immediate")  # as a crash would: no clean shutdown of sessions
            time.sleep(1.5)  # requests keep arriving while the store is away
            cluster.start()
            for thread in threads:
                thread.join()
        assert load.answers["503"] > 0, load.answers  # the outage was felt
        with Tracker.open(cluster.url) as counter:  # fresh connections, after the restart
            assert_all_stored_once(counter, load)


# --------------------------------------------------------------------------- kill -9 of serve


@contextmanager
def postgres_schema() -> Iterator[str]:
    psycopg = pytest.importorskip("psycopg")
    from psycopg import sql

    try:
        psycopg.connect(POSTGRES_URL, connect_timeout=3).close()
    except psycopg.Error as exc:
        if os.environ.get("UNIMAILTRACK_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL is required but {POSTGRES_URL} does not answer: {exc}")
        pytest.skip(f"SKIPPED POSTGRESQL TESTS: no server at {POSTGRES_URL} ({exc})")
    schema = f"kill_{secrets.token_hex(6)}"
    try:
        yield f"{POSTGRES_URL}{'&' if '?' in POSTGRES_URL else '?'}schema={schema}"
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@contextmanager
def store_url(kind: str, tmp_path: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'serve.sqlite3'}"
    else:
        with postgres_schema() as url:
            yield url


def serve(store: str, key: str) -> tuple[subprocess.Popen[str], str]:
    env = {
        **os.environ,
        "UNIMAILTRACK_DSN": f"mailgun://key-test:mg.example.com@default?webhook_key={key}",
        "UNIMAILTRACK_STORE": store,
    }
    command = [sys.executable, "-m", "unimailtrack.cli", "serve", "--port", "0", "--no-api"]
    process = subprocess.Popen(
        [*command, "--log-level", "error"], env=env, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("unimailtrack: serving http://127.0.0.1:"), line
    return process, line.split()[-1]


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_kill_9_of_serve_under_load_loses_and_doubles_nothing(kind: str, tmp_path: Path) -> None:
    key = secrets.token_hex(16)
    kit = webhook_kits.mailgun(key)
    with store_url(kind, tmp_path) as store:
        process, url = serve(store, key)
        current = [url]
        load = Load(lambda: current[0], signed_requests(kit))
        try:
            threads = load.start()
            load.wait_until(0.3)
            process.send_signal(signal.SIGKILL)  # no shutdown, no cleanup: a crash
            killed = process.wait()
            if process.stdout is not None:
                process.stdout.close()
            process, current[0] = serve(store, key)
            for thread in threads:
                thread.join()
        finally:
            process.kill()
            process.wait()
            if process.stdout is not None:
                process.stdout.close()
        assert killed == -signal.SIGKILL
        with Tracker.open(store) as tracker:
            assert_all_stored_once(tracker, load)
        assert load.answers["connection error"] + load.answers["503"] > 0, load.answers
