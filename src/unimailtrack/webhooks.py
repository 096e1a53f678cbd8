"""Receiving provider webhooks: verify -> parse -> ingest -> an answer the provider acts on.

``WebhookReceiver`` knows no web framework: it takes a provider name, the request headers and
the raw body, and returns a ``WebhookResponse`` (status, body, headers). The web app, the
framework helpers and the CLI all go through it, so every entry point answers alike.

The status is chosen for what the provider does next, not for taste: every provider retries a
5xx, so anything that might succeed later (the store is down) is a 5xx; SendGrid and Mailgun
retry every other non-2xx as well, Amazon SNS drops a 4xx.

=====  ==============================================================================
200    the batch is durably stored, or every event in it was stored before (a retry)
400    the body cannot be read, or the store refused what it holds (``StoreContentError``);
       it is kept as a dead letter with the reason, never retried forever
401    the signature, the freshness or the replay check failed; nothing is stored (the retry
       of a request already stored is a 200: its events count as duplicates)
404    no adapter is configured under that provider name
413    the body is larger than ``max_body_size``; it is not verified or read further
503    the store failed (any error but a content refusal); nothing of the batch is
       written, the provider retries later (with a queue: the queue could not take the request)
=====  ==============================================================================

With a ``queue`` the receiver verifies, then enqueues the verified request as an
``Envelope`` instead of storing it, and answers 200 once the queue holds it durably; a worker
(``unimailtrack.queue.Worker``) stores it later. A Mailgun token is spent, pinned to the
request's digest, before the envelope is enqueued (in the tracker when it is the replay
store, else in the adapter's): a request posted again is admitted only when it is the same
request, which is then enqueued again and stored once, so a queue that fails after the token
was spent loses nothing, and a different request under the token is refused. The worker
spends the token with the events in the store, the last word on a replay.

A provider's single-use token (Mailgun) is spent in the transaction that stores the events
when the tracker is the replay store (the default): a request is stored with its token or not
at all, so no failure or crash between the two can turn the provider's retries into refusals.

Sync and async are written once: :meth:`WebhookReceiver._flow` is a generator that decides
everything and yields the steps that wait (verify and parse, confirm, store, notify);
``handle`` runs those steps directly and ``ahandle`` awaits their async forms.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeAlias, runtime_checkable

from unimailtrack import _constants as C
from unimailtrack._telemetry import WebhookWatch
from unimailtrack.adapters.base import Adapter, InMemoryNonceStore, ReplayToken, spend_token
from unimailtrack.errors import (
    ConfigurationError,
    PayloadError,
    QueueError,
    SendError,
    SignatureError,
)
from unimailtrack.model import EmailEvent
from unimailtrack.tracking import IngestResult, StateChange, StoreContentError, StoreError

__all__ = ["EventStore", "WebhookReceiver", "WebhookResponse"]

log = logging.getLogger("unimailtrack.webhooks")

EventCallback: TypeAlias = Callable[[EmailEvent], Awaitable[None] | None]
ChangeCallback: TypeAlias = Callable[[StateChange], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class WebhookResponse:
    """What to answer the provider: an HTTP status, a small JSON body and extra headers."""

    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        return json.loads(self.body)


def _answer(status: int, payload: Mapping[str, Any], **headers: str) -> WebhookResponse:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return WebhookResponse(
        status, body, {"content-type": "application/json", **headers, "cache-control": "no-store"}
    )


def _refusal(status: int, error: str, detail: str, **headers: str) -> WebhookResponse:
    return _answer(status, {"ok": False, "error": error, "detail": detail}, **headers)


UNAUTHORIZED = _refusal(
    401, "signature", "the request is not signed by a configured key, not fresh, or a replay"
)
STORE_UNAVAILABLE = _refusal(
    503, "store", "the events could not be stored; retry later", **{"retry-after": "30"}
)
QUEUE_UNAVAILABLE = _refusal(
    503, "queue", "the events could not be queued; retry later", **{"retry-after": "30"}
)


class _WebhookQueue(Protocol):
    """What a receiver needs of a queue (``unimailtrack.queue.Queue`` is one)."""

    def put(self, envelope: Any) -> None: ...

    async def aput(self, envelope: Any) -> None: ...


@runtime_checkable
class EventStore(Protocol):
    """What a receiver needs of a tracker: atomic batch ingestion and a dead-letter box.

    ``unimailtrack.tracking.Tracker`` is one. ``ingest`` stores all of a batch or none of it,
    and raises ``StoreError`` when it could not.
    """

    def ingest(self, events: Sequence[EmailEvent]) -> IngestResult: ...

    async def aingest(self, events: Sequence[EmailEvent]) -> IngestResult: ...

    def record_dead_letter(
        self, provider: str, body: bytes, headers: Mapping[str, str], reason: str
    ) -> int: ...

    async def arecord_dead_letter(
        self, provider: str, body: bytes, headers: Mapping[str, str], reason: str
    ) -> int: ...


class _HasAdapters(Protocol):
    @property
    def adapters(self) -> Mapping[str, Adapter]: ...


# --------------------------------------------------------------------------- steps
#
# Each step is one thing the flow waits for, in a sync and an async form. The flow receives
# the step's result, or has the step's exception thrown into it.


class _Step(Protocol):
    def run(self) -> Any: ...

    async def arun(self) -> Any: ...


Unwrapped: TypeAlias = tuple[list[EmailEvent], tuple[ReplayToken, ...]]


@dataclass(frozen=True, slots=True)
class _Unwrap:
    """Verify, then parse, in one call so that an adapter decodes the body once. With
    ``unspent`` the request's single-use tokens are returned to be spent with the events;
    otherwise the adapter spends them in its own replay store."""

    adapter: Adapter
    body: bytes
    headers: Mapping[str, str]
    now: datetime | None
    unspent: bool

    def run(self) -> Unwrapped:
        if self.unspent:
            return self.adapter.unwrap_unspent(self.body, self.headers, now=self.now)
        return self.adapter.unwrap(self.body, self.headers, now=self.now), ()

    async def arun(self) -> Unwrapped:
        # Verification may wait on I/O (a replay store, a certificate fetch) and parsing a
        # large batch is CPU work: neither may stall the event loop.
        return await asyncio.to_thread(self.run)


@dataclass(frozen=True, slots=True)
class _Confirm:
    """Have the adapter confirm a subscription (SNS): it verifies the request again, refuses
    anything but a subscription confirmation with ``PayloadError``, and returns the ARN."""

    adapter: Any
    body: bytes
    headers: Mapping[str, str]
    now: datetime | None

    def run(self) -> str:
        arn: str = self.adapter.confirm_subscription(self.body, self.headers, now=self.now)
        return arn

    async def arun(self) -> str:
        arn: str = await self.adapter.aconfirm_subscription(self.body, self.headers, now=self.now)
        return arn


@dataclass(frozen=True, slots=True)
class _Ingest:
    store: EventStore
    events: Sequence[EmailEvent]

    def run(self) -> IngestResult:
        return self.store.ingest(self.events)

    async def arun(self) -> IngestResult:
        return await self.store.aingest(self.events)


@dataclass(frozen=True, slots=True)
class _IngestOnce:
    """Spend a request's tokens and store its events in one transaction; None: a replay."""

    store: Any
    events: Sequence[EmailEvent]
    tokens: Sequence[ReplayToken]

    def run(self) -> IngestResult | None:
        result: IngestResult | None = self.store.ingest_once(self.events, self.tokens)
        return result

    async def arun(self) -> IngestResult | None:
        result: IngestResult | None = await self.store.aingest_once(self.events, self.tokens)
        return result


@dataclass(frozen=True, slots=True)
class _Spend:
    """Spend a request's tokens in an adapter's own replay store; False: a replay."""

    adapter: Any
    tokens: Sequence[ReplayToken]

    def run(self) -> bool:
        return all(spend_token(self.adapter.nonce_store, token) for token in self.tokens)

    async def arun(self) -> bool:
        return await asyncio.to_thread(self.run)


@dataclass(frozen=True, slots=True)
class _Enqueue:
    queue: _WebhookQueue
    envelope: Any

    def run(self) -> None:
        self.queue.put(self.envelope)

    async def arun(self) -> None:
        await self.queue.aput(self.envelope)


@dataclass(frozen=True, slots=True)
class _DeadLetter:
    store: EventStore
    provider: str
    body: bytes
    headers: Mapping[str, str]
    reason: str

    def run(self) -> int:
        return self.store.record_dead_letter(
            self.provider, self.body, dict(self.headers), self.reason
        )

    async def arun(self) -> int:
        return await self.store.arecord_dead_letter(
            self.provider, self.body, dict(self.headers), self.reason
        )


@dataclass(frozen=True, slots=True)
class _Notify:
    """Run the application's callbacks on what a request brought."""

    calls: Sequence[tuple[Callable[[Any], Any], Any]]

    def run(self) -> None:
        for callback, argument in self.calls:
            result = callback(argument)
            if inspect.isawaitable(result):
                _discard(result)
                raise ConfigurationError(
                    f"{callback!r} is a coroutine function: use ahandle(), or a plain function"
                )

    async def arun(self) -> None:
        for callback, argument in self.calls:
            result = callback(argument)
            if inspect.isawaitable(result):
                await result


def _discard(awaitable: Awaitable[Any]) -> None:
    close = getattr(awaitable, "close", None)
    if close is not None:
        close()


# --------------------------------------------------------------------------- the receiver


class WebhookReceiver:
    """Verifies, parses and stores provider webhooks, and says what to answer (contract).

    ``adapters`` maps provider names (the ``{provider}`` of ``/webhooks/{provider}``) to
    configured adapters, or is a ``Mailer``/``AsyncMailer`` whose adapters are used.
    ``tracker`` stores the events (any :class:`EventStore`); without one, events only reach
    the callbacks. ``max_body_size`` bounds a body in bytes.

    ``on_event`` is called with every event of a stored batch (a provider's retry calls it
    again: key on ``event.event_id``) and ``on_state_change`` with every badge the batch
    moved; either may be a coroutine function when the receiver runs through ``ahandle``.
    They run after the batch is committed, so an exception in them is logged and the answer
    stays 200; without a tracker the callbacks are the store, and an exception answers 500 so
    that the provider sends the batch again.

    ``confirm_subscriptions`` lets an adapter that offers ``confirm_subscription`` (SES) act
    on a verified subscription confirmation; turn it off to replay saved requests. When the
    tracker remembers tokens (``add_if_absent``) it becomes the replay store of every adapter
    still on the in-process default, so a replay is refused whichever process it reaches;
    a tracker that also offers ``ingest_once`` spends each token in the transaction that
    stores the request's events.

    ``queue`` (a ``unimailtrack.queue.Queue``, or a queue URL for ``open_queue``) makes the
    receiver enqueue each verified request instead of storing it; the callbacks then run in
    no process (a worker stores the events), and the tracker, when given, still keeps dead
    letters and spends tokens.
    """

    def __init__(
        self,
        adapters: Mapping[str, Adapter] | _HasAdapters,
        tracker: EventStore | None = None,
        *,
        max_body_size: int = C.DEFAULT_MAX_WEBHOOK_BODY,
        on_event: EventCallback | None = None,
        on_state_change: ChangeCallback | None = None,
        confirm_subscriptions: bool = True,
        queue: Any = None,
    ) -> None:
        self.queue: _WebhookQueue | None = None
        self.use_queue(queue)
        found = adapters if isinstance(adapters, Mapping) else adapters.adapters
        self.adapters: dict[str, Adapter] = dict(found)
        if not self.adapters:
            raise ConfigurationError("a webhook receiver needs at least one adapter")
        if max_body_size < 1:
            raise ConfigurationError("max_body_size must be a positive number of bytes")
        self.tracker = tracker
        self.max_body_size = max_body_size
        self.on_event = on_event
        self.on_state_change = on_state_change
        self.confirm_subscriptions = confirm_subscriptions
        self._pinned: dict[str, tuple[str, datetime]] = {}
        """Tokens whose request this process could not store (nothing of it, the token
        included, was written): until the store takes the retry, only that request may use
        them here."""
        if tracker is not None and hasattr(tracker, "add_if_absent"):
            for adapter in self.adapters.values():
                if isinstance(getattr(adapter, "nonce_store", None), InMemoryNonceStore):
                    adapter.nonce_store = tracker  # type: ignore[attr-defined]

    def use_queue(self, queue: Any) -> None:
        """Enqueue verified requests to ``queue`` (a ``unimailtrack.queue.Queue`` or a queue
        URL) from now on instead of storing them; None: store them again."""
        if isinstance(queue, str):
            from unimailtrack.queue import open_queue

            queue = open_queue(queue)
        self.queue = queue

    @property
    def providers(self) -> list[str]:
        """The provider names this receiver answers for."""
        return sorted(self.adapters)

    def knows(self, provider: str) -> bool:
        return provider in self.adapters

    # ------------------------------------------------------------------ answers without a body

    def probe(self, provider: str) -> WebhookResponse:
        """The answer to a HEAD or GET on a webhook URL (a provider's reachability check):
        200 for a configured provider, 404 otherwise; the store is not touched."""
        if provider not in self.adapters:
            return self.not_found(provider)
        return _answer(200, {"ok": True, "provider": provider})

    def not_found(self, provider: str) -> WebhookResponse:
        return _refusal(
            404, "provider", f"no adapter is configured for {provider[:64]!r} on this endpoint"
        )

    def too_large(self) -> WebhookResponse:
        """The 413 answer, for a framework that learns the size before reading the body."""
        return _refusal(
            413,
            "too_large",
            f"the body is larger than {self.max_body_size} bytes",
            connection="close",
        )

    # ------------------------------------------------------------------ readiness

    async def areadiness(self) -> tuple[int, dict[str, Any]]:
        """``/readyz``: 200 while the store answers, with every provider's webhook health
        (``Tracker.provider_health``), the orphans and the dead letters; 503 when the store
        does not answer. A silent provider does not make the endpoint unready (the process
        can take webhooks; the provider is not sending them): monitors read ``healthy``."""
        health = getattr(self.tracker, "aprovider_health", None)
        if health is None:
            return 200, {"status": "ready", "store": None}
        try:
            report = await health(self.providers)
        except StoreError:
            return 503, {"status": "unavailable", "store": "unreachable"}
        return 200, {"status": "ready", "store": "reachable", **report.as_dict()}

    # ------------------------------------------------------------------ handling

    def handle(
        self,
        provider: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        now: datetime | None = None,
    ) -> WebhookResponse:
        """Answer one webhook request (contract). ``now`` is the clock the freshness checks
        use (for replays of saved requests); the real clock when None."""
        with WebhookWatch(provider, len(body)) as watch:
            flow = self._flow(provider, headers, body, now)
            sent: Any = None
            error: Exception | None = None
            while True:
                try:
                    step = flow.throw(error) if error is not None else flow.send(sent)
                except StopIteration as stop:
                    response: WebhookResponse = stop.value
                    watch.answered(response.status)
                    return response
                sent, error = None, None
                try:
                    with watch.step(step):
                        sent = step.run()
                    watch.took(step, sent)
                except Exception as exc:  # handed to the flow, which decides or re-raises
                    watch.failed(exc)
                    error = exc

    async def ahandle(
        self,
        provider: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        now: datetime | None = None,
    ) -> WebhookResponse:
        """The async twin of :meth:`handle` (contract)."""
        with WebhookWatch(provider, len(body)) as watch:
            flow = self._flow(provider, headers, body, now)
            sent: Any = None
            error: Exception | None = None
            while True:
                try:
                    step = flow.throw(error) if error is not None else flow.send(sent)
                except StopIteration as stop:
                    response: WebhookResponse = stop.value
                    watch.answered(response.status)
                    return response
                sent, error = None, None
                try:
                    with watch.step(step):
                        sent = await step.arun()
                    watch.took(step, sent)
                except Exception as exc:  # handed to the flow, which decides or re-raises
                    watch.failed(exc)
                    error = exc

    def _flow(
        self,
        provider: str,
        headers: Mapping[str, str],
        body: bytes,
        now: datetime | None,
    ) -> Generator[_Step, Any, WebhookResponse]:
        adapter = self.adapters.get(provider)
        if adapter is None:
            return self.not_found(provider)
        if len(body) > self.max_body_size:
            return self.too_large()
        unspent = self.queue is not None or self._spends_with_events(adapter)
        try:
            unwrapped: Unwrapped = yield _Unwrap(adapter, body, headers, now, unspent)
        except SignatureError:
            return UNAUTHORIZED
        except PayloadError as exc:
            log.warning(
                "%s webhook: unreadable body (%d bytes): %s", provider, len(body), exc.message
            )
            return (yield from self._dead_letter(provider, body, headers, exc.message, "payload"))
        except StoreError as exc:  # the replay store is the tracker, and it is down
            log.error("%s webhook: the replay check could not reach the store: %s", provider, exc)
            return STORE_UNAVAILABLE
        events, tokens = unwrapped
        if not events and self.confirm_subscriptions and _confirms_subscriptions(adapter):
            return (yield from self._control(provider, adapter, body, headers, now))
        if self.queue is not None:
            return (yield from self._enqueue(provider, adapter, body, headers, events, tokens))
        if self.tracker is None:
            return (yield from self._deliver_only(provider, events))
        if not events and not tokens:
            return _answer(200, {"ok": True, "events": 0, "new": 0, "duplicates": 0})
        if tokens and not self._may_use(tokens):
            log.warning(
                "%s webhook refused: the token belongs to a request not yet stored", provider
            )
            return UNAUTHORIZED
        try:
            if tokens:
                stored: IngestResult | None = yield _IngestOnce(self.tracker, events, tokens)
            else:
                stored = yield _Ingest(self.tracker, events)
        except StoreContentError as exc:
            # Refused for what it holds: a retry would be refused alike, so keep it instead.
            log.error("%s webhook: the store refused a batch: %s", provider, exc)
            self._pin(tokens)
            reason = f"the store refused the batch: {exc.message}"
            return (yield from self._dead_letter(provider, body, headers, reason, "refused"))
        except Exception as exc:  # StoreError, or whatever else a store raised: retry later
            if isinstance(exc, StoreError):
                log.error("%s webhook: storing %d event(s) failed: %s", provider, len(events), exc)
            else:
                log.exception("%s webhook: the store failed unexpectedly", provider)
            self._pin(tokens)
            return STORE_UNAVAILABLE
        for token in tokens:
            self._pinned.pop(token.key, None)
        if stored is None:
            log.warning("%s webhook refused: the token was spent by another request", provider)
            return UNAUTHORIZED
        result = stored
        calls = self._callbacks(events, result.changes)
        if calls:
            try:
                yield _Notify(calls)
            except Exception:
                log.exception("%s webhook: a callback failed after the batch was stored", provider)
        return _answer(
            200,
            {
                "ok": True,
                "events": len(events),
                "new": result.new,
                "duplicates": result.duplicates,
            },
        )

    def _enqueue(
        self,
        provider: str,
        adapter: Adapter,
        body: bytes,
        headers: Mapping[str, str],
        events: Sequence[EmailEvent],
        tokens: Sequence[ReplayToken],
    ) -> Generator[_Step, Any, WebhookResponse]:
        """Spend the request's tokens (pinned to its digest), then enqueue the verified
        request; answer 200 once the queue holds it."""
        assert self.queue is not None
        if not events and not tokens:
            return _answer(200, {"ok": True, "events": 0, "queued": False})
        if tokens and not self._may_use(tokens):
            log.warning(
                "%s webhook refused: the token belongs to a request not yet queued", provider
            )
            return UNAUTHORIZED
        if tokens:
            try:
                if self._spends_with_events(adapter):
                    admitted = (yield _IngestOnce(self.tracker, (), tokens)) is not None
                else:
                    admitted = yield _Spend(adapter, tokens)
            except StoreError as exc:
                log.error("%s webhook: spending the token failed: %s", provider, exc)
                self._pin(tokens)
                return STORE_UNAVAILABLE
            if not admitted:
                log.warning("%s webhook refused: the token was spent by another request", provider)
                return UNAUTHORIZED
        from unimailtrack.queue import Envelope

        envelope = Envelope.of(
            provider, body, headers, verified=adapter.verify_webhooks, tokens=tokens
        )
        try:
            yield _Enqueue(self.queue, envelope)
        except Exception as exc:  # QueueError, or whatever a queue client raised
            level = logging.ERROR if isinstance(exc, QueueError) else logging.CRITICAL
            log.log(
                level, "%s webhook: enqueuing %d event(s) failed: %s", provider, len(events), exc
            )
            self._pin(tokens)
            return QUEUE_UNAVAILABLE
        for token in tokens:
            self._pinned.pop(token.key, None)
        return _answer(200, {"ok": True, "events": len(events), "queued": True})

    def _may_use(self, tokens: Sequence[ReplayToken]) -> bool:
        now = datetime.now(UTC)
        for token in tokens:
            pinned = self._pinned.get(token.key)
            if pinned is not None and pinned[1] > now and pinned[0] != token.digest:
                return False
        return True

    def _pin(self, tokens: Sequence[ReplayToken]) -> None:
        if len(self._pinned) + len(tokens) > C.MAX_PINNED_TOKENS:
            now = datetime.now(UTC)
            self._pinned = {k: v for k, v in self._pinned.items() if v[1] > now}
            while self._pinned and len(self._pinned) + len(tokens) > C.MAX_PINNED_TOKENS:
                del self._pinned[next(iter(self._pinned))]
        for token in tokens:
            self._pinned[token.key] = (token.digest, token.expires_at)

    def _spends_with_events(self, adapter: Adapter) -> bool:
        """Whether ``adapter``'s tokens are spent in the transaction that stores the events:
        the tracker is its replay store and can do both at once."""
        tracker = self.tracker
        return (
            tracker is not None
            and getattr(adapter, "nonce_store", None) is tracker
            and callable(getattr(adapter, "unwrap_unspent", None))
            and callable(getattr(tracker, "ingest_once", None))
        )

    def _control(
        self,
        provider: str,
        adapter: Adapter,
        body: bytes,
        headers: Mapping[str, str],
        now: datetime | None,
    ) -> Generator[_Step, Any, WebhookResponse]:
        """A verified message without events: confirm it when it is a subscription
        confirmation; anything else (an unsubscribe confirmation) is logged, never acted on."""
        try:
            arn = yield _Confirm(adapter, body, headers, now)
        except PayloadError as exc:
            log.info("%s webhook: control message left alone: %s", provider, exc.message)
            return _answer(200, {"ok": True, "events": 0})
        except SignatureError:
            return UNAUTHORIZED
        except ConfigurationError as exc:
            log.error("%s webhook: subscription not confirmed: %s", provider, exc.message)
            return _refusal(403, "not_allowed", "this endpoint does not confirm subscriptions")
        except SendError as exc:
            log.error("%s webhook: confirming the subscription failed: %s", provider, exc)
            if exc.retryable:
                return _refusal(503, "confirmation", "the confirmation failed; retry later")
            return _refusal(502, "confirmation", "the provider refused the confirmation")
        log.info("%s webhook: subscription confirmed: %s", provider, arn)
        return _answer(200, {"ok": True, "events": 0, "confirmed": arn})

    def _deliver_only(
        self, provider: str, events: list[EmailEvent]
    ) -> Generator[_Step, Any, WebhookResponse]:
        """Without a tracker the callbacks are the store: when one fails, answer 500 so that
        the provider sends the batch again."""
        if self.on_event is not None and events:
            try:
                yield _Notify([(self.on_event, e) for e in events])
            except Exception:
                log.exception("%s webhook: on_event failed; the provider will retry", provider)
                return _refusal(500, "callback", "the events could not be handled; retry later")
        return _answer(200, {"ok": True, "events": len(events)})

    def _dead_letter(
        self, provider: str, body: bytes, headers: Mapping[str, str], reason: str, error: str
    ) -> Generator[_Step, Any, WebhookResponse]:
        """Keep the body with ``reason`` and answer 400 (``error`` names the kind); when it
        cannot be kept, answer 503 so that the provider sends it again rather than lose it."""
        if self.tracker is not None:
            try:
                yield _DeadLetter(self.tracker, provider, body, headers, reason)
            except Exception as exc:
                log.error("%s webhook: keeping a dead letter failed: %s", provider, exc)
                return STORE_UNAVAILABLE
        return _refusal(400, error, reason)

    def _callbacks(
        self, events: Sequence[EmailEvent], changes: Sequence[StateChange]
    ) -> list[tuple[Callable[[Any], Any], Any]]:
        calls: list[tuple[Callable[[Any], Any], Any]] = []
        if self.on_event is not None:
            calls.extend((self.on_event, e) for e in events)
        if self.on_state_change is not None:
            calls.extend((self.on_state_change, c) for c in changes)
        return calls


def _confirms_subscriptions(adapter: Adapter) -> bool:
    return callable(getattr(adapter, "confirm_subscription", None))
