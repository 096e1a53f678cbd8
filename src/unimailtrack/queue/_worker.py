"""``Worker``: drains a webhook queue into a tracker, in batches, acknowledging after commit.

One batch: take up to ``batch`` deliveries; read each envelope (verifying the ones a receiver
did not write, such as SNS envelopes from an SQS queue, exactly as the HTTP endpoint does);
parse it; store the events of every envelope in one transaction (an envelope with single-use
tokens in a transaction of its own that spends them); acknowledge once committed.

Ingestion is idempotent (every event has a unique id), so a delivery that comes twice, after
a crash between commit and acknowledgement, stores nothing twice: at-least-once delivery
gives exactly-once state.

When the batch cannot be stored the worker asks whether the store answers at all:

- it does not (an outage): the worker holds the batch, extends its leases and tries again
  with backoff, counting no attempt, until the store is back or it is told to stop;
- it does: some envelope is poisoned. Each envelope is then stored alone; one that still
  fails is given back to the queue for a later attempt (after a backoff delay), and after
  ``max_attempts`` deliveries it is kept in the tracker's dead letters with the reason and
  acknowledged, while the rest flow.

A body that cannot be parsed, or a message that is not an envelope, is a dead letter at
once, as the HTTP endpoint would keep it. A message that fails verification is refused: it
is logged, counted and dropped, and nothing in it is stored.
"""

from __future__ import annotations

import json
import logging
import random
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import IO, Any

from unimailtrack.adapters.base import Adapter
from unimailtrack.errors import PayloadError, QueueError, SignatureError, StoreError
from unimailtrack.model import EmailEvent
from unimailtrack.queue._base import Delivery, Queue
from unimailtrack.queue._envelope import Envelope

__all__ = ["Worker", "WorkerStats"]

log = logging.getLogger("unimailtrack.queue")

DEFAULT_BATCH = 100
DEFAULT_MAX_ATTEMPTS = 5
_FIRST_BACKOFF = 0.5
_MAX_BACKOFF = 30.0


def backoff(attempt: int, first: float = _FIRST_BACKOFF, most: float = _MAX_BACKOFF) -> float:
    """Seconds to wait before try ``attempt + 1``: exponential from ``first``, capped at
    ``most``, jittered by a quarter either way."""
    return float(min(most, first * 2 ** max(0, attempt - 1)) * (0.75 + random.random() / 2))


@dataclass
class WorkerStats:
    """What a worker did so far (the progress line prints it)."""

    batches: int = 0
    envelopes: int = 0
    events: int = 0
    new: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    refused: int = 0
    replays: int = 0
    retries: int = 0
    outages: int = 0
    started: float = field(default_factory=time.monotonic)

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)
        elapsed = max(1e-9, time.monotonic() - values.pop("started"))
        values["seconds"] = round(elapsed, 3)
        values["events_per_second"] = round(self.events / elapsed, 1)
        return values


@dataclass(slots=True)
class _Parsed:
    delivery: Delivery
    envelope: Envelope
    events: list[EmailEvent]


class _Keep:
    """A delivery left on the queue, neither stored nor acknowledged."""


_KEEP = _Keep()


class Worker:
    """Moves envelopes from ``queue`` into ``tracker`` (a ``Tracker``).

    ``adapters`` (by provider name) verify envelopes the receiver did not write (``sqs+ses``);
    envelopes a receiver wrote were verified before they were enqueued and are only parsed.
    ``batch`` is how many deliveries one transaction takes, ``max_attempts`` how many times an
    envelope that fails alone is tried before it becomes a dead letter, ``wait`` how long one
    receive waits for work. ``backoff_first`` and ``backoff_max`` bound the retry delays.
    """

    def __init__(
        self,
        queue: Queue,
        tracker: Any,
        *,
        adapters: Mapping[str, Adapter] | None = None,
        batch: int = DEFAULT_BATCH,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        wait: float = 1.0,
        backoff_first: float = _FIRST_BACKOFF,
        backoff_max: float = _MAX_BACKOFF,
    ) -> None:
        if batch < 1 or max_attempts < 1:
            raise ValueError("batch and max_attempts must be at least 1")
        self.queue = queue
        self.tracker = tracker
        self.adapters = dict(adapters or {})
        self.batch = batch
        self.max_attempts = max_attempts
        self.wait = wait
        self._first, self._most = backoff_first, backoff_max
        self.stats = WorkerStats()
        self._lock = threading.Lock()
        self.stopping = threading.Event()

    # ------------------------------------------------------------------ running

    def stop(self) -> None:
        """Finish the batch in hand, then return from :meth:`run` (what SIGTERM does)."""
        self.stopping.set()

    def run(
        self,
        *,
        concurrency: int = 1,
        until_empty: bool = False,
        progress: Callable[[WorkerStats], None] | None = None,
        progress_every: float = 5.0,
    ) -> WorkerStats:
        """Drain the queue until :meth:`stop` (or, with ``until_empty``, until a receive
        comes back empty), with ``concurrency`` threads; returns the totals."""
        threads = [
            threading.Thread(
                target=self._loop, args=(until_empty,), name=f"unimailtrack-worker-{i}"
            )
            for i in range(max(1, concurrency))
        ]
        for thread in threads:
            thread.start()
        try:
            while any(t.is_alive() for t in threads):
                for thread in threads:
                    thread.join(progress_every / len(threads))
                if progress is not None:
                    progress(self.stats)
        except BaseException:
            self.stopping.set()
            for thread in threads:
                thread.join()
            raise
        return self.stats

    def _loop(self, until_empty: bool) -> None:
        failures = 0
        while not self.stopping.is_set():
            try:
                deliveries = self.queue.receive(self.batch, self.wait)
            except QueueError as exc:
                failures += 1
                log.error("reading the queue failed (%s); retrying", exc)
                self.stopping.wait(backoff(failures, self._first, self._most))
                continue
            failures = 0
            if not deliveries:
                if until_empty:
                    return
                continue
            self.process(deliveries)

    # ------------------------------------------------------------------ one batch

    def process(self, deliveries: Sequence[Delivery]) -> None:
        """Store one batch and acknowledge it; see the module docstring for failures."""
        parsed: list[_Parsed] = []
        done: list[Delivery] = []
        for delivery in deliveries:
            item = self._read(delivery)
            if item is None:
                done.append(delivery)
            elif isinstance(item, _Parsed):
                parsed.append(item)
        self._ack(done)
        if parsed:
            self._store_batch(parsed)
        with self._lock:
            self.stats.batches += 1
            self.stats.envelopes += len(deliveries)

    def _read(self, delivery: Delivery) -> _Parsed | _Keep | None:
        """The delivery's envelope and events, or None when it is finished with already (kept
        as a dead letter, or refused)."""
        envelope = delivery.envelope
        if envelope is None:
            self._dead_letter("queue", delivery.raw, {}, f"not an envelope: {delivery.error}")
            return None
        if not envelope.trusted:
            return self._verified(delivery, envelope)
        try:
            from unimailtrack import parse_webhook

            events = parse_webhook(envelope.provider, envelope.body, envelope.headers)
        except PayloadError as exc:
            self._dead_letter(envelope.provider, envelope.body, envelope.headers, exc.message)
            return None
        except Exception as exc:  # an unknown provider name, a parser bug: keep the body
            self._dead_letter(
                envelope.provider, envelope.body, envelope.headers, f"cannot be parsed: {exc!r}"
            )
            return None
        return _Parsed(delivery, envelope, events)

    def _verified(self, delivery: Delivery, envelope: Envelope) -> _Parsed | _Keep | None:
        adapter = self.adapters.get(envelope.provider)
        if adapter is None:  # cannot be believed here, nor dropped: leave it for a worker that can
            log.error(
                "%s cannot be verified: no %s adapter is configured",
                envelope.describe(),
                envelope.provider,
            )
            self._give_back([delivery], self.queue.visibility)
            return _KEEP
        try:
            events, tokens = adapter.unwrap_unspent(
                envelope.body, envelope.headers, now=envelope.received_at
            )
        except SignatureError as exc:
            log.warning("refused %s: %s", envelope.describe(), exc)
            with self._lock:
                self.stats.refused += 1
            return None
        except PayloadError as exc:
            self._dead_letter(envelope.provider, envelope.body, envelope.headers, exc.message)
            return None
        if not events and not tokens:
            log.info("%s carries no events (a control message); acknowledged", envelope.describe())
            return None
        checked = Envelope(
            envelope.provider,
            envelope.body,
            envelope.headers,
            envelope.received_at,
            envelope.verified,
            tokens,
            envelope.id,
        )
        return _Parsed(delivery, checked, events)

    def _store(self, items: Sequence[_Parsed]) -> list[Delivery]:
        """Store ``items`` (tokenless ones in one transaction); the deliveries to ack."""
        plain = [item for item in items if not item.envelope.tokens]
        events = [event for item in plain for event in item.events]
        finished = [item.delivery for item in plain]
        new = duplicates = 0
        if events:
            result = self.tracker.ingest(events)
            new, duplicates = result.new, result.duplicates
        counted = len(events)
        for item in items:
            if not item.envelope.tokens:
                continue
            once = self.tracker.ingest_once(item.events, item.envelope.tokens)
            finished.append(item.delivery)
            if once is None:
                log.warning(
                    "%s: its token was spent by another request (a replay); not stored",
                    item.envelope.describe(),
                )
                with self._lock:
                    self.stats.replays += 1
                continue
            new, duplicates, counted = (
                new + once.new,
                duplicates + once.duplicates,
                counted + len(item.events),
            )
        with self._lock:
            self.stats.events += counted
            self.stats.new += new
            self.stats.duplicates += duplicates
        return finished

    def _store_batch(self, items: list[_Parsed]) -> None:
        outage = 0
        while items:
            try:
                self._ack(self._store(items))
                return
            except Exception as exc:  # a store failure of any kind: find out which
                failure: Exception = exc
            if not _is_outage(failure) and self._store_answers():
                log.warning(
                    "a batch of %d envelopes failed (%s); storing each alone", len(items), failure
                )
                items, failure = self._one_by_one(items, failure)
                if not items:
                    return
            outage += 1
            with self._lock:
                self.stats.outages += 1
            delay = backoff(outage, self._first, self._most)
            log.error(
                "the store is unavailable (%s); holding %d envelopes, retrying in %.1fs",
                failure,
                len(items),
                delay,
            )
            if self.stopping.wait(delay):
                self._give_back([item.delivery for item in items], 0.0)
                return
            try:
                self.queue.extend([item.delivery for item in items])
            except QueueError as exc:  # redelivered elsewhere meanwhile: idempotent, harmless
                log.warning("could not extend the leases: %s", exc)

    def _one_by_one(
        self, items: list[_Parsed], failure: Exception
    ) -> tuple[list[_Parsed], Exception]:
        """Store each envelope alone; one that fails for its content counts an attempt. The
        envelopes left when the store turns out to be down are returned, with the error."""
        for index, item in enumerate(items):
            try:
                self._ack(self._store([item]))
                continue
            except Exception as exc:
                failure = exc
            if _is_outage(failure) or not self._store_answers():
                return items[index:], failure
            attempts = item.delivery.attempts
            envelope = item.envelope
            if attempts >= self.max_attempts:
                reason = f"not stored after {attempts} attempts: {failure}"
                if self._dead_letter(envelope.provider, envelope.body, envelope.headers, reason):
                    self._ack([item.delivery])
                continue
            with self._lock:
                self.stats.retries += 1
            self._give_back([item.delivery], backoff(attempts, self._first, self._most))
        return [], failure

    # ------------------------------------------------------------------ helpers

    def _store_answers(self) -> bool:
        try:
            self.tracker.ping_writable()
        except Exception:
            return False
        return True

    def _dead_letter(
        self, provider: str, body: bytes, headers: Mapping[str, str], reason: str
    ) -> bool:
        """Keep a body the store will never take; False (and it stays on the queue) when
        even that fails."""
        try:
            self.tracker.record_dead_letter(provider, body, dict(headers), reason)
        except StoreError as exc:
            log.error("keeping a dead letter failed (%s); it stays on the queue", exc)
            return False
        log.warning("dead letter (%s, %d bytes): %s", provider, len(body), reason)
        with self._lock:
            self.stats.dead_letters += 1
        return True

    def _ack(self, deliveries: Sequence[Delivery]) -> None:
        try:
            self.queue.ack(deliveries)
        except QueueError as exc:  # stored already: a redelivery is a duplicate, nothing more
            log.warning("acknowledging %d envelopes failed: %s", len(deliveries), exc)

    def _give_back(self, deliveries: Sequence[Delivery], delay: float) -> None:
        for delivery in deliveries:
            try:
                self.queue.release(delivery, delay)
            except QueueError as exc:  # it comes back when its lease runs out anyway
                log.warning("giving an envelope back failed: %s", exc)


_OUTAGE_STATES = ("08", "53", "57", "58", "40", "55P03", "25006")
"""SQLSTATEs (classes and codes) of a database that cannot serve now rather than a batch it
refuses: connection failures, insufficient resources, operator intervention (a statement
timeout, a shutdown), system errors, transaction rollbacks, a lock timeout, a read-only
server."""


def _is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` says the store is down or stuck (hold the batch) rather than that it
    refused this batch (count an attempt against its envelopes)."""
    if getattr(exc, "retryable", True) is False:  # a store that tells its refusals apart
        return False
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        state = getattr(cause, "sqlstate", None)
        if isinstance(state, str) and state.startswith(_OUTAGE_STATES):
            return True
        if type(cause).__name__ == "OperationalError" and any(
            word in str(cause).lower() for word in ("locked", "busy", "disk i/o", "unable to open")
        ):
            return True
        if type(cause).__name__ in ("PoolTimeout", "OperationalError") and hasattr(
            cause, "sqlstate"
        ):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def progress_printer(
    stream: IO[str] | None = None, *, as_json: bool = False
) -> Callable[[WorkerStats], None]:
    """A ``progress`` callback for :meth:`Worker.run`: one line per call on stderr."""
    out = stream or sys.stderr

    def show(stats: WorkerStats) -> None:
        values = stats.as_dict()
        if as_json:
            out.write(json.dumps(values, separators=(",", ":")) + "\n")
        else:
            out.write(
                "unimailtrack worker: {envelopes} envelopes, {events} events ({new} new, "
                "{duplicates} duplicates), {dead_letters} dead letters, {refused} refused, "
                "{retries} retries, {events_per_second} events/s\n".format(**values)
            )
        out.flush()

    return show
