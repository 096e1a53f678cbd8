"""Redis Streams: ``XADD`` to a stream, read through a consumer group, acknowledged after commit.

Every worker is a consumer of one group (``group``, default ``unimailtrack``). A message read
with ``XREADGROUP`` stays in the group's pending list, held by that consumer, until it is
acknowledged (``XACK``, then ``XDEL`` so that the stream does not grow without end). Messages
a consumer has held longer than ``visibility`` seconds, because it died or hangs, are taken
over with ``XAUTOCLAIM``, which also counts the delivery; a worker waiting for the store
re-claims its own messages with ``XCLAIM ... JUSTID``, which resets their idle time without
counting one.

Durability is the server's: with ``appendonly yes`` and ``appendfsync always`` an ``XADD``
that returned is on disk; ``replicas=N`` also waits (``WAIT``) until N replicas hold it and
fails the enqueue otherwise.

URL: ``redis://[:password@]host:6379/0?stream=unimailtrack&group=unimailtrack&visibility=60``
(``rediss://`` for TLS); ``consumer`` names this process (default: host, pid and a counter).
"""

from __future__ import annotations

import itertools
import os
import socket
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from unimailtrack.errors import ConfigurationError, MissingDependency, QueueError
from unimailtrack.queue._base import Delivery, Queue, positive_seconds
from unimailtrack.queue._envelope import Envelope

__all__ = ["RedisStreamQueue"]

_OURS = frozenset({"stream", "group", "consumer", "visibility", "replicas", "replica_timeout"})
_FIELD = "envelope"
_consumers = itertools.count(1)


def _import_redis() -> Any:
    try:
        import redis
    except ImportError:
        raise MissingDependency("redis", "redis", purpose="A Redis Streams webhook queue") from None
    return redis


class RedisStreamQueue(Queue):
    """A webhook queue on a Redis stream (see the module docstring for the URL)."""

    def __init__(self, url: str) -> None:
        redis = _import_redis()
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError,)
        parts = urlsplit(url)
        options: dict[str, str] = {}
        theirs: list[tuple[str, str]] = []
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            (options.__setitem__(key, value) if key in _OURS else theirs.append((key, value)))
        self.url = url
        self.stream = options.get("stream", "unimailtrack")
        self.group = options.get("group", "unimailtrack")
        if not self.stream or not self.group:
            raise ConfigurationError("the Redis queue options stream and group may not be empty")
        self.consumer = options.get(
            "consumer", f"{socket.gethostname()}-{os.getpid()}-{next(_consumers)}"
        )
        self.visibility = positive_seconds(options, "visibility", self.visibility)
        try:
            self.replicas = int(options.get("replicas", 0))
        except ValueError:
            raise ConfigurationError("the Redis queue option replicas must be a number") from None
        self._replica_timeout = int(positive_seconds(options, "replica_timeout", 1.0) * 1000)
        self._client = redis.Redis.from_url(urlunsplit(parts._replace(query=urlencode(theirs))))
        self._group_ready = False

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            # From the stream's beginning: what was enqueued before any worker ran is read too.
            self._client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except self._errors as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def _fail(self, doing: str, exc: BaseException) -> QueueError:
        return QueueError(f"Redis stream {self.stream!r}: {doing} failed: {exc}")

    def put(self, envelope: Envelope) -> None:
        try:
            self._client.xadd(self.stream, {_FIELD: envelope.encode()})
            if self.replicas:
                held = int(self._client.wait(self.replicas, self._replica_timeout))
                if held < self.replicas:
                    raise QueueError(
                        f"Redis stream {self.stream!r}: only {held} of {self.replicas} "
                        "replicas hold the envelope"
                    )
        except self._errors as exc:
            raise self._fail("XADD", exc) from exc

    def receive(self, limit: int, wait: float) -> list[Delivery]:
        try:
            self._ensure_group()
            deliveries = self._claim(limit)
            if len(deliveries) < limit:
                block = None if deliveries else max(1, int(wait * 1000))
                answer = self._client.xreadgroup(
                    self.group,
                    self.consumer,
                    {self.stream: ">"},
                    count=limit - len(deliveries),
                    block=block,
                )
                for _, entries in answer or ():
                    for message_id, fields in entries:
                        deliveries.append(
                            Delivery.read(fields.get(_FIELD.encode(), b""), 1, message_id)
                        )
            return deliveries
        except self._errors as exc:
            raise self._fail("reading", exc) from exc

    def _claim(self, limit: int) -> list[Delivery]:
        """What other consumers (or this one) held past the visibility timeout."""
        idle = int(self.visibility * 1000)
        answer = self._client.xautoclaim(
            self.stream, self.group, self.consumer, idle, start_id="0-0", count=limit
        )
        entries, deleted = answer[1], answer[2] if len(answer) > 2 else []
        if deleted:  # pending but gone from the stream: nothing left to deliver
            self._client.xack(self.stream, self.group, *deleted)
        entries = [(mid, fields) for mid, fields in entries if fields]
        if not entries:
            return []
        counts = {
            row["message_id"]: int(row["times_delivered"])
            for row in self._client.xpending_range(
                self.stream,
                self.group,
                min=entries[0][0],
                max=entries[-1][0],
                count=len(entries) * 4 + 16,
                consumername=self.consumer,
            )
        }
        return [
            Delivery.read(fields.get(_FIELD.encode(), b""), counts.get(mid, 2), mid)
            for mid, fields in entries
        ]

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        ids = [d.handle for d in deliveries]
        try:
            pipe = self._client.pipeline(transaction=True)
            pipe.xack(self.stream, self.group, *ids)
            pipe.xdel(self.stream, *ids)
            pipe.execute()
        except self._errors as exc:
            raise self._fail("XACK", exc) from exc

    def release(self, delivery: Delivery, delay: float) -> None:
        # Claimable again once its idle time reaches the visibility timeout: set it so that
        # happens ``delay`` seconds from now.
        idle = max(0, int((self.visibility - delay) * 1000))
        try:
            self._client.xclaim(
                self.stream,
                self.group,
                self.consumer,
                0,
                [delivery.handle],
                idle=idle,
                justid=True,
            )
        except self._errors as exc:
            raise self._fail("XCLAIM", exc) from exc

    def extend(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        try:
            self._client.xclaim(
                self.stream,
                self.group,
                self.consumer,
                0,
                [d.handle for d in deliveries],
                idle=0,
                justid=True,
            )
        except self._errors as exc:
            raise self._fail("XCLAIM", exc) from exc

    def pending(self) -> int:
        try:
            return int(self._client.xlen(self.stream))
        except self._errors:
            return -1

    def close(self) -> None:
        self._client.close()
