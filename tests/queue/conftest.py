"""The three queues, real on this machine: Redis on 127.0.0.1:6379 (a stream of its own per
test), Amazon SQS as moto's server over real HTTP (a queue of its own per test), and a
PostgreSQL outbox in a schema of its own per test. Each test gets a tracker of its own too."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from queue_support import (
    AWS,
    POSTGRES_URL,
    REDIS_URL,
    drop_schema,
    free_port,
    require_postgres,
    require_redis,
    sqs_client,
    with_option,
)

from unimailtrack.queue import Queue, open_queue
from unimailtrack.tracking import Tracker


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's server over real HTTP on a free loopback port, for the whole session."""
    from moto.server import ThreadedMotoServer

    for name, value in AWS.items():
        os.environ.setdefault(name, value)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def make_queue(moto_endpoint: str) -> Iterator[Callable[..., Queue]]:
    """``make_queue(kind, visibility=...)``: a fresh queue of that engine; several calls with
    ``same=True`` return more clients of the last one (as more processes would open)."""
    opened: list[Queue] = []
    schemas: list[str] = []
    streams: list[str] = []
    last: dict[str, str] = {}

    def make(kind: str, *, visibility: float = 2.0, same: bool = False) -> Queue:
        if not same or kind not in last:
            if kind == "redis":
                require_redis()
                stream = f"test-{secrets.token_hex(6)}"
                streams.append(stream)
                last[kind] = with_option(REDIS_URL, f"stream={stream}")
            elif kind == "sqs":
                name = f"test-{secrets.token_hex(6)}"
                sqs_client(moto_endpoint).create_queue(QueueName=name)
                last[kind] = f"sqs://{name}?region=eu-west-1&endpoint_url={moto_endpoint}&wait=1"
            elif kind == "outbox":
                require_postgres()
                schema = f"q_{secrets.token_hex(6)}"
                schemas.append(schema)
                last[kind] = with_option(POSTGRES_URL, f"outbox=1&schema={schema}")
            else:
                raise AssertionError(kind)
        queue = open_queue(with_option(last[kind], f"visibility={visibility:g}"))
        opened.append(queue)
        return queue

    try:
        yield make
    finally:
        for queue in opened:
            queue.close()
        if streams:
            import redis

            client = redis.Redis.from_url(REDIS_URL)
            client.delete(*streams)
            client.close()
        for schema in schemas:
            drop_schema(schema)


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'tracking.sqlite3'}"
        return
    require_postgres()
    schema = f"t_{secrets.token_hex(6)}"
    try:
        yield with_option(POSTGRES_URL, f"schema={schema}")
    finally:
        drop_schema(schema)


@pytest.fixture
def tracker(store_url: str) -> Iterator[Tracker]:
    with Tracker.open(store_url) as opened:
        yield opened
