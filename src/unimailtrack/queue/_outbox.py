"""A PostgreSQL outbox: a queue table for teams that run no broker.

Envelopes are rows of ``webhook_queue`` in the URL's ``schema`` (default ``unimailtrack``;
the table is created when missing, so the queue may live beside the tracker or elsewhere). An
``INSERT`` that committed is durable. Workers take rows with ``SELECT ... FOR UPDATE SKIP
LOCKED`` (so that concurrent workers never wait on each other's rows) and, in the same
statement, lease them: ``available_at`` moves ``visibility`` seconds ahead and ``attempts``
counts the delivery. A row is deleted once the store has committed its events; a worker that
dies leaves its lease to run out, and the row is handed out again.

URL: ``postgresql://user@host/db?outbox=1&schema=unimailtrack&visibility=60``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from unimailtrack.errors import ConfigurationError, MissingDependency, QueueError
from unimailtrack.queue._base import Delivery, Queue, positive_seconds
from unimailtrack.queue._envelope import Envelope

__all__ = ["OutboxQueue"]

_OURS = frozenset({"outbox", "schema", "visibility", "poll"})
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,47}")

_CREATE = (
    """
    CREATE TABLE IF NOT EXISTS webhook_queue (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        envelope BYTEA NOT NULL,
        enqueued_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        available_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        attempts INTEGER NOT NULL DEFAULT 0
    )
    """,
    "CREATE INDEX IF NOT EXISTS webhook_queue_available ON webhook_queue (available_at, id)",
)
_TAKE = """
UPDATE webhook_queue AS q
SET attempts = q.attempts + 1, available_at = now() + make_interval(secs => %s)
FROM (
    SELECT id FROM webhook_queue WHERE available_at <= now()
    ORDER BY available_at, id LIMIT %s FOR UPDATE SKIP LOCKED
) AS picked
WHERE q.id = picked.id
RETURNING q.id, q.attempts, q.envelope
"""


def _import_psycopg() -> Any:
    try:
        import psycopg
        import psycopg_pool
    except ImportError:
        raise MissingDependency(
            "psycopg", "postgres", purpose="A PostgreSQL outbox webhook queue"
        ) from None
    return psycopg, psycopg_pool


class OutboxQueue(Queue):
    """A webhook queue in a PostgreSQL table (see the module docstring for the URL)."""

    def __init__(self, url: str) -> None:
        psycopg, psycopg_pool = _import_psycopg()
        self._errors: tuple[type[BaseException], ...] = (psycopg.Error, psycopg_pool.PoolTimeout)
        self.url = url
        parts = urlsplit(url)
        options: dict[str, str] = {}
        theirs: list[tuple[str, str]] = []
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            (options.__setitem__(key, value) if key in _OURS else theirs.append((key, value)))
        self.schema = options.get("schema", "unimailtrack")
        if not _SCHEMA_NAME.fullmatch(self.schema):
            raise ConfigurationError(f"{self.schema!r} is not a valid outbox schema name")
        self.visibility = positive_seconds(options, "visibility", self.visibility)
        self._poll = positive_seconds(options, "poll", 0.2)
        conninfo = urlunsplit(parts._replace(query=urlencode(theirs)))
        sql = psycopg.sql
        try:
            with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
                conn.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
                )
                conn.execute(sql.SQL("SET search_path = {}").format(sql.Identifier(self.schema)))
                with conn.transaction():
                    conn.execute(
                        "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"uq.{self.schema}",)
                    )
                    for statement in _CREATE:
                        conn.execute(statement)
        except psycopg.Error as exc:
            raise QueueError(f"cannot prepare the PostgreSQL outbox: {exc}") from exc
        self._pool = psycopg_pool.ConnectionPool(
            conninfo,
            min_size=1,
            max_size=8,
            kwargs={"autocommit": True, "options": f"-c search_path={self.schema}"},
            open=False,
            name=f"unimailtrack-outbox-{self.schema}",
        )
        try:
            self._pool.open(wait=True, timeout=10)
        except psycopg_pool.PoolTimeout as exc:
            self._pool.close()
            raise QueueError("cannot connect to the PostgreSQL outbox") from exc

    def _execute(self, doing: str, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            with self._pool.connection() as conn:
                cursor = conn.execute(sql, params)
                return cursor.fetchall() if cursor.description is not None else []
        except self._errors as exc:
            raise QueueError(f"PostgreSQL outbox: {doing} failed: {exc}") from exc

    def put(self, envelope: Envelope) -> None:
        self._execute(
            "enqueuing", "INSERT INTO webhook_queue (envelope) VALUES (%s)", (envelope.encode(),)
        )

    def receive(self, limit: int, wait: float) -> list[Delivery]:
        deadline = time.monotonic() + wait
        while True:
            rows = self._execute("taking envelopes", _TAKE, (self.visibility, limit))
            if rows or time.monotonic() >= deadline:
                rows.sort(key=lambda row: row[0])
                return [Delivery.read(bytes(row[2]), int(row[1]), int(row[0])) for row in rows]
            time.sleep(min(self._poll, max(0.0, deadline - time.monotonic())))

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        if deliveries:
            ids = [d.handle for d in deliveries]
            self._execute("acknowledging", "DELETE FROM webhook_queue WHERE id = ANY(%s)", (ids,))

    def release(self, delivery: Delivery, delay: float) -> None:
        self._execute(
            "giving back",
            "UPDATE webhook_queue SET available_at = now() + make_interval(secs => %s) "
            "WHERE id = %s",
            (delay, delivery.handle),
        )

    def extend(self, deliveries: Sequence[Delivery]) -> None:
        if deliveries:
            self._execute(
                "extending leases",
                "UPDATE webhook_queue SET available_at = now() + make_interval(secs => %s) "
                "WHERE id = ANY(%s)",
                (self.visibility, [d.handle for d in deliveries]),
            )

    def pending(self) -> int:
        try:
            return int(self._execute("counting", "SELECT count(*) FROM webhook_queue")[0][0])
        except QueueError:
            return -1

    def close(self) -> None:
        self._pool.close()
