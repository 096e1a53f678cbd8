"""What every webhook queue offers, and how a queue URL names one.

A queue takes envelopes (``put``: durable when it returns) and hands them out in batches
(``receive``), each as a :class:`Delivery` that stays invisible to other workers for the
queue's ``visibility`` timeout. A worker acknowledges a delivery once the store has committed
its events (``ack``); one it could not store it gives back for redelivery after a delay
(``release``), or keeps holding while it waits for the store (``extend``). A worker that dies
acknowledges nothing: once the timeout passes, another worker receives what it held. The
queue counts deliveries (``attempts``), which is how a worker tells a poison envelope.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from unimailtrack.errors import ConfigurationError, PayloadError
from unimailtrack.queue._envelope import Envelope, decode_envelope

__all__ = ["DEFAULT_VISIBILITY", "Delivery", "Queue", "open_queue", "queue_options"]

DEFAULT_VISIBILITY = 60.0
"""Seconds a received envelope stays hidden from other workers before it is redelivered."""


@dataclass(slots=True)
class Delivery:
    """One received message: its envelope (None when the message cannot be read, and then
    ``error`` says why), how many times the queue has handed it out, and the queue's own
    handle for it."""

    envelope: Envelope | None
    raw: bytes
    attempts: int
    handle: Any
    error: str | None = None

    @classmethod
    def read(cls, raw: bytes, attempts: int, handle: Any) -> Delivery:
        try:
            return cls(decode_envelope(raw), raw, attempts, handle)
        except PayloadError as exc:
            return cls(None, raw, attempts, handle, exc.message)


class Queue(ABC):
    """A durable queue of webhook envelopes on an engine the application already runs."""

    url: str
    visibility: float = DEFAULT_VISIBILITY

    @abstractmethod
    def put(self, envelope: Envelope) -> None:
        """Enqueue ``envelope``; when this returns the queue holds it durably. Raises
        ``QueueError`` otherwise."""

    async def aput(self, envelope: Envelope) -> None:
        """The async twin of :meth:`put` (the engines' clients block: it runs in a thread)."""
        await asyncio.to_thread(self.put, envelope)

    @abstractmethod
    def receive(self, limit: int, wait: float) -> list[Delivery]:
        """Up to ``limit`` deliveries, waiting up to ``wait`` seconds for the first."""

    @abstractmethod
    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Forget ``deliveries``: their events are stored (or kept as dead letters)."""

    @abstractmethod
    def release(self, delivery: Delivery, delay: float) -> None:
        """Hand ``delivery`` out again after about ``delay`` seconds (a failed attempt)."""

    @abstractmethod
    def extend(self, deliveries: Sequence[Delivery]) -> None:
        """Keep holding ``deliveries`` for another visibility timeout, without counting an
        attempt (the worker waits for the store to come back)."""

    def pending(self) -> int:
        """How many envelopes are waiting or in flight (for progress lines; -1: unknown)."""
        return -1

    def close(self) -> None:  # noqa: B027 - most clients need nothing
        """Release connections."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url.split('@')[-1]!r}>"


def queue_options(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def positive_seconds(options: dict[str, str], name: str, default: float) -> float:
    try:
        value = float(options.get(name, default))
    except ValueError:
        raise ConfigurationError(f"the queue URL option {name} must be seconds") from None
    if not value > 0:
        raise ConfigurationError(f"the queue URL option {name} must be more than 0")
    return value


def open_queue(url: str) -> Queue:
    """The queue a URL names (docs/scale.md):

    - ``redis://host:6379/0?stream=unimailtrack`` (also ``rediss://``): a Redis stream read
      through a consumer group (``group``, default ``unimailtrack``);
    - ``sqs://queue-name?region=eu-west-1`` or an SQS queue URL
      (``https://sqs.eu-west-1.amazonaws.com/123456789012/name``);
      ``sqs+ses://queue-name?region=...``: an SQS queue subscribed to the SNS topic SES
      publishes to, whose messages are SNS envelopes the worker verifies;
    - ``postgresql://...?outbox=1``: a table in PostgreSQL (``schema``, default
      ``unimailtrack``), taken with ``FOR UPDATE SKIP LOCKED``.

    ``visibility`` (seconds) is how long a received envelope stays hidden before it is
    redelivered.
    """
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme in ("redis", "rediss", "unix"):
        from unimailtrack.queue._redis import RedisStreamQueue

        return RedisStreamQueue(url)
    if scheme in ("sqs", "sqs+ses") or (
        scheme == "https" and ".amazonaws.com/" in url and "sqs" in urlsplit(url).netloc
    ):
        from unimailtrack.queue._sqs import SQSQueue

        return SQSQueue(url)
    if scheme in ("postgresql", "postgres"):
        if queue_options(url).get("outbox") not in ("1", "true", "yes"):
            raise ConfigurationError(
                "a PostgreSQL queue URL says so: postgresql://...?outbox=1 (the store's own "
                "URL is not a queue)"
            )
        from unimailtrack.queue._outbox import OutboxQueue

        return OutboxQueue(url)
    raise ConfigurationError(
        "a queue URL is redis://host:6379/0?stream=NAME, sqs://queue-name?region=REGION, "
        f"sqs+ses://queue-name?region=REGION or postgresql://...?outbox=1, not "
        f"{url.split('@')[-1]!r}"
    )
