"""Outbound webhooks against a real HTTP server on 127.0.0.1: signed with Standard Webhooks,
retried with backoff, filtered per endpoint, replayed, and never lost when the store stops."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent / "tracking"))

from tracking_support import T0, Clock, event

from unimailtrack import ConfigurationError, EventType, StoreError
from unimailtrack.outbox import OutboxDispatcher, WebhookEndpoint, endpoints
from unimailtrack.standard_webhooks import StandardWebhooks, new_secret
from unimailtrack.tracking import Tracker

SECRET = new_secret()
OLD_SECRET = new_secret()


@dataclass
class Receiver:
    """The application's endpoint: answers ``script`` in turn (then 200), keeps every
    request, and runs ``before_answer`` (if set) before answering."""

    url: str = ""
    script: list[int] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    before_answer: Callable[[], None] | None = None

    @property
    def ids(self) -> list[str]:
        return [headers["webhook-id"] for headers, _ in self.received]


@contextmanager
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            state.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            if state.before_answer is not None:
                state.before_answer()
            status = state.script.pop(0) if state.script else 200
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def app() -> Iterator[Receiver]:
    with receiver() as state:
        yield state


def open_tracker(path: Path, clock: Clock, *hooks: WebhookEndpoint, **kwargs: Any) -> Tracker:
    return Tracker.open(f"sqlite:///{path}?timeout=0.05", clock=clock, webhooks=hooks, **kwargs)


def delivered(tracking_id: str = "t1") -> list[Any]:
    return [event(EventType.DELIVERED, tracking_id, at=10, event_id=f"d-{tracking_id}")]


def test_a_change_is_posted_signed_retried_with_backoff_and_settled(
    tmp_path: Path, app: Receiver
) -> None:
    clock = Clock()
    hook = WebhookEndpoint("app", app.url, (SECRET,), first_delay=timedelta(seconds=5))
    with open_tracker(tmp_path / "o.sqlite3", clock, hook) as tracker:
        tracker.ingest(delivered())
        [queued] = tracker.outbox()
        assert (queued.event_type, queued.status, queued.attempts) == (
            "message.delivered",
            "pending",
            0,
        )
        dispatcher = OutboxDispatcher(tracker, clock=clock)
        app.script = [500, 503]
        report = dispatcher.run_once()
        assert (report.delivered, report.retried, report.failed) == (0, 1, 0)
        [waiting] = tracker.outbox()
        assert waiting.attempts == 1 and waiting.last_error == "HTTP 500"
        assert waiting.next_attempt_at == clock.now + timedelta(seconds=5)
        assert dispatcher.run_once().retried == 0  # not due yet: nothing is posted
        assert len(app.received) == 1

        clock.advance(timedelta(seconds=5))
        assert dispatcher.run_once().retried == 1
        [waiting] = tracker.outbox()
        assert waiting.next_attempt_at == clock.now + timedelta(seconds=10)  # doubled
        clock.advance(timedelta(seconds=10))
        assert dispatcher.run_once().delivered == 1
        assert tracker.outbox() == []
        [done] = tracker.outbox(status="delivered")
        assert done.delivered_at == clock.now and done.attempts == 3
        assert dispatcher.run_once().delivered == 0
        assert len(app.received) == 3
        assert len(set(app.ids)) == 1  # every retry is the same message to the receiver

        for headers, body in app.received:
            stamp = int(headers["webhook-timestamp"])
            StandardWebhooks(SECRET).verify(body, headers, now=T0.fromtimestamp(stamp, T0.tzinfo))
        payload = json.loads(app.received[-1][1])
        assert payload["type"] == "message.delivered"
        assert payload["data"]["tracking_id"] == "t1"
        assert payload["data"]["status"] == "delivered"


def test_every_secret_signs_so_the_receiver_may_rotate(tmp_path: Path, app: Receiver) -> None:
    clock = Clock()
    hook = WebhookEndpoint("app", app.url, (SECRET, OLD_SECRET))
    with open_tracker(tmp_path / "o.sqlite3", clock, hook) as tracker:
        tracker.ingest(delivered())
        OutboxDispatcher(tracker, clock=clock).run_once()
    [(headers, body)] = app.received
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (SECRET, OLD_SECRET):
        StandardWebhooks(secret).verify(body, headers, now=clock.now)
    with pytest.raises(Exception, match="signature"):
        StandardWebhooks(new_secret()).verify(body, headers, now=clock.now)
    tampered = body.replace(b"delivered", b"bounced")
    with pytest.raises(Exception, match="signature"):
        StandardWebhooks(SECRET).verify(tampered, headers, now=clock.now)


def test_a_message_is_given_up_after_max_age_and_can_be_replayed(
    tmp_path: Path, app: Receiver
) -> None:
    clock = Clock()
    hook = WebhookEndpoint(
        "app",
        app.url,
        (SECRET,),
        first_delay=timedelta(minutes=1),
        max_age=timedelta(minutes=2),
    )
    with open_tracker(tmp_path / "o.sqlite3", clock, hook) as tracker:
        tracker.ingest(delivered())
        dispatcher = OutboxDispatcher(tracker, clock=clock)
        app.script = [500, 500, 500]
        assert dispatcher.run_once().retried == 1
        clock.advance(timedelta(minutes=1))
        assert dispatcher.run_once().failed == 1  # the next try would be past max_age
        [failed] = tracker.outbox(status="failed")
        assert failed.last_error == "HTTP 500"
        clock.advance(timedelta(hours=1))
        assert dispatcher.run_once().delivered == 0
        assert tracker.replay_outbox() == 1
        app.script = []
        assert dispatcher.run_once().delivered == 1
        assert tracker.outbox() == []


def test_each_endpoint_gets_the_event_types_it_asked_for(tmp_path: Path) -> None:
    clock = Clock()
    with receiver() as alerts, receiver() as states:
        hooks = (
            WebhookEndpoint("alerts", alerts.url, (SECRET,), events=("alert.*",)),
            WebhookEndpoint("bounces", states.url, (SECRET,), events=("message.bounced",)),
        )
        with open_tracker(tmp_path / "o.sqlite3", clock, *hooks) as tracker:
            tracker.ingest(delivered())
            tracker.ingest(
                [
                    event(EventType.BOUNCED, f"b{c}", recipient=f"{c}@gmail.com", bounce="block")
                    for c in "abc"
                ]
            )
            tracker.evaluate_alerts(now=T0 + timedelta(minutes=10))
            tracker.evaluate_alerts(now=T0 + timedelta(minutes=10))  # nothing new to tell
            OutboxDispatcher(tracker, clock=clock).run_once()
        assert [json.loads(body)["type"] for _, body in alerts.received] == ["alert.opened"]
        assert json.loads(alerts.received[0][1])["data"]["scope"] == "google"
        assert sorted(json.loads(body)["data"]["tracking_id"] for _, body in states.received) == [
            "ba",
            "bb",
            "bc",
        ]


@contextmanager
def locked(path: Path) -> Iterator[None]:
    with closing(sqlite3.connect(path, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            other.execute("ROLLBACK")


def test_a_change_the_store_cannot_commit_queues_nothing(tmp_path: Path, app: Receiver) -> None:
    path = tmp_path / "o.sqlite3"
    clock = Clock()
    with open_tracker(path, clock, WebhookEndpoint("app", app.url, (SECRET,))) as tracker:
        with locked(path), pytest.raises(StoreError):
            tracker.ingest(delivered())
        assert tracker.outbox() == [] and tracker.count_events() == 0
        tracker.ingest(delivered())  # the provider's retry
        assert len(tracker.outbox()) == 1
        tracker.ingest(delivered())  # and a retry of that: already told
        assert len(tracker.outbox()) == 1


def test_a_store_stopped_mid_delivery_loses_nothing_and_posts_again_after_the_lease(
    tmp_path: Path, app: Receiver
) -> None:
    path = tmp_path / "o.sqlite3"
    clock = Clock()
    with open_tracker(path, clock, WebhookEndpoint("app", app.url, (SECRET,))) as tracker:
        tracker.ingest(delivered("t1"))
        tracker.ingest(delivered("t2"))
        dispatcher = OutboxDispatcher(tracker, clock=clock, lease=timedelta(minutes=2))
        holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        app.before_answer = lambda: holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreError):
            dispatcher.run_once()  # posted t1's message, then could not settle it
        app.before_answer = None
        holder.execute("ROLLBACK")
        holder.close()
        [first] = app.ids
        pending = tracker.outbox()
        assert [e.status for e in pending] == ["pending", "pending"]  # nothing lost
        assert all(e.attempts == 0 for e in pending)

        # Within the lease nothing is posted twice ...
        report = dispatcher.run_once()
        assert report.delivered == 0
        assert app.ids == [first]
        # ... after it, the unsettled message goes again (at least once), then the rest.
        clock.advance(timedelta(minutes=2))
        assert dispatcher.run_once().delivered == 2
        assert app.ids[0] == app.ids[1] == first and len(set(app.ids)) == 2
        assert tracker.outbox() == []
        assert dispatcher.run_once().delivered == 0
        assert len(app.ids) == 3


def test_the_async_dispatcher_posts_concurrently(tmp_path: Path, app: Receiver) -> None:
    clock = Clock()
    with open_tracker(
        tmp_path / "o.sqlite3", clock, WebhookEndpoint("app", app.url, (SECRET,))
    ) as tracker:
        for n in range(5):
            tracker.ingest(delivered(f"t{n}"))
        dispatcher = OutboxDispatcher(tracker, clock=clock, batch=2)
        report = asyncio.run(dispatcher.arun_once())
        assert report.delivered == 5
        assert tracker.outbox() == []
        assert len(set(app.ids)) == 5


def test_endpoints_are_checked_and_read_from_the_environment() -> None:
    found = endpoints(
        {
            "UNIMAILTRACK_WEBHOOK_ENDPOINTS": json.dumps(
                [{"name": "a", "url": "https://a.example/h", "secrets": SECRET, "events": ["x"]}]
            )
        }
    )
    assert found == [WebhookEndpoint("a", "https://a.example/h", (SECRET,), ("x",))]
    assert endpoints({}) == []
    with pytest.raises(ConfigurationError):
        endpoints({"UNIMAILTRACK_WEBHOOK_ENDPOINTS": "{}"})
    with pytest.raises(ConfigurationError, match="name of its own"):
        Tracker.open(
            "sqlite:///:memory:",
            webhooks=[WebhookEndpoint("a", "u", (SECRET,)), WebhookEndpoint("a", "v", (SECRET,))],
        )


def test_the_outbox_works_the_same_on_postgresql(app: Receiver) -> None:
    import secrets as _secrets

    from tracking_support import POSTGRES_URL, drop_schema, require_postgres, with_schema

    require_postgres()
    schema = f"t_{_secrets.token_hex(6)}"
    clock = Clock()
    hook = WebhookEndpoint("app", app.url, (SECRET,), first_delay=timedelta(seconds=1))
    try:
        with Tracker.open(with_schema(POSTGRES_URL, schema), clock=clock, webhooks=[hook]) as t:
            t.ingest(delivered("t1") + delivered("t2"))
            t.ingest(delivered("t1"))  # a retried webhook queues nothing more
            assert len(t.outbox()) == 2
            dispatcher = OutboxDispatcher(t, clock=clock, batch=1)
            app.script = [500]
            report = dispatcher.run_once()
            assert (report.delivered, report.retried) == (1, 1)
            clock.advance(timedelta(seconds=1))
            assert dispatcher.run_once().delivered == 1
            assert t.outbox() == [] and len(t.outbox(status="delivered")) == 2
            [failed_first] = [e for e in t.outbox(status="delivered") if e.attempts == 2]
            assert failed_first.last_error is None
    finally:
        drop_schema(schema)


# --------------------------------------------------------------------------- a server that stops


@dataclass
class OwnPostgres:
    """A throwaway PostgreSQL cluster of this test's own, which it may stop and start."""

    bin: Path
    data: Path
    port: int
    user: str | None

    def _run(self, *argv: str) -> None:
        import subprocess

        command = [str(self.bin / argv[0]), *argv[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.data.parent / "server.log")  # the server must not hold our pipes
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-o", options, "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    import os
    import shutil
    import socket
    import tempfile

    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        pytest.skip("no PostgreSQL server binaries to start a cluster of our own")
    # Not under pytest's own temporary directory, which the postgres user may not enter.
    place = Path(tempfile.mkdtemp(prefix="unimailtrack-pg-"))
    data = place / "data"
    user = None
    if os.geteuid() == 0:  # the server refuses to run as root
        user = "postgres"
        shutil.chown(place, user)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = OwnPostgres(found[-1].parent, data, port, user)
    try:
        server._run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        server.start()
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.stop()
        shutil.rmtree(place, ignore_errors=True)


def test_a_postgres_server_stopped_mid_delivery_loses_nothing(
    own_postgres: OwnPostgres, app: Receiver
) -> None:
    clock = Clock()
    hook = WebhookEndpoint("app", app.url, (SECRET,))
    tracker = Tracker.open(own_postgres.url, clock=clock, webhooks=[hook])
    try:
        tracker.ingest(delivered("t1"))
        tracker.ingest(delivered("t2"))
        dispatcher = OutboxDispatcher(tracker, clock=clock, lease=timedelta(minutes=2))
        app.before_answer = own_postgres.stop  # the store goes away while the post is answered
        with pytest.raises(StoreError):
            dispatcher.run_once()
        app.before_answer = None
        [first] = app.ids
        own_postgres.start()
        pending = tracker.outbox()
        assert [(e.status, e.attempts) for e in pending] == [("pending", 0), ("pending", 0)]
        assert dispatcher.run_once().delivered == 0  # leased: not posted twice meanwhile
        clock.advance(timedelta(minutes=2))
        assert dispatcher.run_once().delivered == 2
        assert app.ids[:2] == [first, first] and len(set(app.ids)) == 2
        assert tracker.outbox() == []
        assert tracker.count_events() == 2
    finally:
        tracker.close()
