"""What every adapter is, and the machinery they all share.

An adapter knows one provider and nothing of the store. Sending is split into pure parts:
``build_calls(email, recipients)`` turns an e-mail into provider requests, each with a pure
``interpret(response)``; the shells here move them through the transport seam, retry what is
retryable, and run a bulk send's requests concurrently on the async path. Sync and async
share everything but the sending and the sleeping.

Webhooks: ``verify_webhook`` checks authenticity (failing closed) and ``parse_webhook`` maps the
provider's vocabulary onto ``EmailEvent`` without I/O. The helpers below keep the details that
every provider shares (header look-up, digests, clocks, logging of why a signature failed) in
one place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Self

import httpx

from unimailtrack import _constants as C
from unimailtrack import _telemetry as telemetry
from unimailtrack._http import (
    AiohttpTransport,
    AsyncTransport,
    HttpxAsyncTransport,
    HttpxTransport,
    RetryPolicy,
    SyncTransport,
    acall_with_retry,
    call_with_retry,
    parse_retry_after,
)
from unimailtrack.errors import (
    AuthenticationError,
    ConfigurationError,
    FieldError,
    InvalidRequest,
    NotPermitted,
    NotSupported,
    PayloadTooLarge,
    ProviderUnavailable,
    RateLimited,
    SendError,
    SignatureCause,
    SignatureError,
)
from unimailtrack.model import (
    Address,
    DeliveryStatus,
    Email,
    EmailEvent,
    EventType,
    RecipientResult,
    SendResult,
    new_tracking_id,
)

if TYPE_CHECKING:
    from unimailtrack.config import Dsn

__all__ = [
    "Adapter",
    "Call",
    "Delivery",
    "InMemoryNonceStore",
    "NonceStore",
    "PushCall",
    "PushResult",
    "Recipient",
    "RemoteSuppression",
    "ReplayToken",
    "SuppressionPage",
    "error_for_status",
    "event_digest",
    "from_unix",
    "lower_headers",
    "signature_failure",
    "spend_token",
    "unknown_event",
]

webhook_log = logging.getLogger("unimailtrack.webhooks")
send_log = logging.getLogger("unimailtrack.send")


@dataclass(frozen=True, slots=True)
class Recipient:
    """One recipient of a send and the tracking id its copy carries."""

    address: Address
    tracking_id: str


@dataclass(frozen=True, slots=True)
class Call:
    """One provider request covering some recipients, and how to read its response.

    ``interpret`` is pure: it returns one ``RecipientResult`` per recipient of the call, or
    raises a ``SendError`` that says why the provider did not take it.
    """

    request: httpx.Request
    recipients: tuple[Recipient, ...]
    interpret: Callable[[httpx.Response], list[RecipientResult]]


@dataclass(slots=True)
class Delivery:
    """What a delivery attempt produced: a result per recipient and the errors met."""

    results: list[RecipientResult] = field(default_factory=list)
    errors: list[SendError] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RemoteSuppression:
    """One entry of a provider's own suppression list, in neutral terms.

    ``cause`` is ``bounced``, ``complained``, ``unsubscribed``, ``blocked`` or ``invalid``;
    ``scope`` None for every stream, else the stream it concerns (an unsubscribe group's
    name); ``temporary`` marks a list the provider itself keeps for a while only (soft
    bounces, blocks), which never becomes a permanent suppression here; ``origin`` is the
    provider's name for the list it came from."""

    address: str
    cause: str
    scope: str | None = None
    reason: str | None = None
    created_at: datetime | None = None
    temporary: bool = False
    origin: str = ""


@dataclass(frozen=True, slots=True)
class SuppressionPage:
    """One page of a provider's suppression list; ``cursor`` resumes right after it (None:
    the list is complete)."""

    items: tuple[RemoteSuppression, ...]
    cursor: str | None


@dataclass(frozen=True, slots=True)
class PushCall:
    """One request that writes ``entries`` into a provider's suppression list; ``check``
    raises a ``SendError`` when the provider did not take it, and may return the entries it
    refused one by one, with why (a provider that answers per address); they are reported as
    skipped, the others as pushed."""

    request: httpx.Request
    entries: tuple[RemoteSuppression, ...]
    check: Callable[[httpx.Response], Sequence[tuple[RemoteSuppression, str]] | None]


@dataclass(slots=True)
class PushResult:
    """What a push wrote (``pushed``), what the provider's list cannot hold (``skipped``,
    with why) and the requests it refused (``errors``)."""

    pushed: list[RemoteSuppression] = field(default_factory=list)
    skipped: list[tuple[RemoteSuppression, str]] = field(default_factory=list)
    errors: list[SendError] = field(default_factory=list)


class Adapter(ABC):
    """The interface every provider adapter implements (contract).

    Subclasses set ``name`` and implement ``build_calls``, ``verify_webhook``,
    ``parse_webhook`` and ``from_dsn``. ``verify_webhooks=False`` turns signature checks off
    explicitly (for replays of trusted data); otherwise every check fails closed.
    """

    name: ClassVar[str]
    dsn_options: ClassVar[frozenset[str]] = frozenset()
    """Provider-specific DSN query options this adapter understands."""

    def __init__(
        self,
        *,
        transport: SyncTransport | None = None,
        async_transport: AsyncTransport | str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = C.DEFAULT_TIMEOUT,
        max_concurrency: int = C.DEFAULT_MAX_CONCURRENCY,
        verify_webhooks: bool = True,
    ) -> None:
        self._transport = transport
        self._async_transport: AsyncTransport | None = None
        self._async_transport_kind = "asyncio"
        if isinstance(async_transport, str):
            if async_transport not in ("asyncio", "httpx", "aiohttp"):
                raise ConfigurationError(
                    f"unknown async transport {async_transport!r}; use 'asyncio' (the "
                    "default), 'httpx' or 'aiohttp'"
                )
            self._async_transport_kind = async_transport
        elif async_transport is not None:
            self._async_transport = async_transport
        self.retry = retry if retry is not None else RetryPolicy()
        self.timeout = timeout
        self.max_concurrency = max(1, max_concurrency)
        self.verify_webhooks = verify_webhooks

    # ------------------------------------------------------------------ configuration

    @classmethod
    @abstractmethod
    def from_dsn(cls, dsn: Dsn, *, env: Mapping[str, str] | None = None) -> Self:
        """Build the adapter from a parsed DSN (``sendgrid://KEY@default?...``)."""

    @staticmethod
    def common_options(dsn: Dsn) -> dict[str, Any]:
        """Keyword arguments every adapter accepts, read from the DSN's query."""
        opts: dict[str, Any] = {}
        if "transport" in dsn.options:
            opts["async_transport"] = dsn.options["transport"]
        if "timeout" in dsn.options:
            opts["timeout"] = dsn.float_option("timeout")
        if "max_retries" in dsn.options:
            opts["retry"] = RetryPolicy(max_retries=dsn.int_option("max_retries"))
        if "max_concurrency" in dsn.options:
            opts["max_concurrency"] = dsn.int_option("max_concurrency")
        if "verify_webhooks" in dsn.options:
            opts["verify_webhooks"] = dsn.bool_option("verify_webhooks")
        return opts

    # ------------------------------------------------------------------ transports

    @property
    def transport(self) -> SyncTransport:
        if self._transport is None:
            self._transport = HttpxTransport(timeout=self.timeout)
        return self._transport

    @property
    def async_transport(self) -> AsyncTransport:
        if self._async_transport is None:
            if self._async_transport_kind == "aiohttp":
                self._async_transport = AiohttpTransport(
                    timeout=self.timeout, limit=self.max_concurrency
                )
            elif self._async_transport_kind == "httpx":
                self._async_transport = HttpxAsyncTransport(
                    client=httpx.AsyncClient(
                        timeout=self.timeout,
                        limits=httpx.Limits(max_connections=self.max_concurrency),
                    )
                )
            else:
                from unimailtrack._asyncio_http import AsyncioTransport

                self._async_transport = AsyncioTransport(
                    timeout=self.timeout, max_connections=self.max_concurrency
                )
        return self._async_transport

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    async def aclose(self) -> None:
        if self._async_transport is not None:
            await self._async_transport.aclose()
        self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ sending

    @abstractmethod
    def build_calls(self, email: Email, recipients: Sequence[Recipient]) -> list[Call]:
        """The provider requests that send ``email`` to ``recipients`` (pure)."""

    async def abuild_calls(self, email: Email, recipients: Sequence[Recipient]) -> list[Call]:
        """``build_calls`` for the async path; override when building may block (credentials)."""
        return self.build_calls(email, recipients)

    @staticmethod
    def plan(email: Email) -> list[Recipient]:
        """A fresh tracking id for every recipient of ``email``, in order."""
        return [Recipient(address, new_tracking_id()) for address in email.recipients()]

    def _run(self, call: Call) -> list[RecipientResult]:
        with telemetry.span("send", provider=self.name, recipients=len(call.recipients)):
            return self._interpret(call, self.transport.send(call.request))

    async def _arun(self, call: Call) -> list[RecipientResult]:
        with telemetry.span("send", provider=self.name, recipients=len(call.recipients)):
            return self._interpret(call, await self.async_transport.send(call.request))

    def _interpret(self, call: Call, response: httpx.Response) -> list[RecipientResult]:
        """``call.interpret(response)``, with an answer no decoder could read made a
        ``SendError``: an adapter that reads its answer with ``response.json()`` would
        otherwise let a ``RecursionError`` or ``JSONDecodeError`` out of a send."""
        try:
            return call.interpret(response)
        except (RecursionError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            message = f"the {self.name} answer could not be read"
            status, cause = response.status_code, type(exc).__name__
            if status >= 500:
                raise ProviderUnavailable(
                    message, provider=self.name, status=status, detail=cause
                ) from None
            raise SendError(message, provider=self.name, status=status, detail=cause) from None

    async def _attempt(self, call: Call) -> list[RecipientResult] | SendError:
        """``call`` with retries; the error that ended it is returned, not raised."""
        try:
            return await acall_with_retry(self.retry, partial(self._arun, call))
        except SendError as exc:
            return exc

    def _settle(
        self, call: Call, outcome: list[RecipientResult] | SendError, delivery: Delivery
    ) -> None:
        telemetry.sent(self.name, call, outcome)
        if isinstance(outcome, SendError):
            if outcome.provider is None:
                outcome.provider = self.name
            send_log.warning(
                "%s did not take a request for %d recipient(s): %s",
                self.name,
                len(call.recipients),
                outcome,
            )
            delivery.errors.append(outcome)
            delivery.results.extend(
                RecipientResult(
                    recipient=r.address.email,
                    tracking_id=r.tracking_id,
                    status=DeliveryStatus.FAILED,
                    provider=self.name,
                    error=str(outcome),
                )
                for r in call.recipients
            )
        else:
            delivery.results.extend(outcome)

    def deliver(self, email: Email, recipients: Sequence[Recipient]) -> Delivery:
        """Send ``email`` to ``recipients``; never raises for a provider failure, which is
        reported per recipient and in ``Delivery.errors``."""
        delivery = Delivery()
        if not recipients:
            return delivery
        for call in self.build_calls(email, recipients):
            outcome: list[RecipientResult] | SendError
            try:
                outcome = call_with_retry(self.retry, partial(self._run, call))
            except SendError as exc:
                outcome = exc
            self._settle(call, outcome, delivery)
        return delivery

    async def adeliver(self, email: Email, recipients: Sequence[Recipient]) -> Delivery:
        """The async twin of ``deliver``: a bulk send's requests run concurrently, at most
        ``max_concurrency`` in flight."""
        delivery = Delivery()
        if not recipients:
            return delivery
        calls = await self.abuild_calls(email, recipients)
        if len(calls) == 1:
            # Most sends are one request: awaited directly, it skips the task and the gate,
            # which cost more CPU than building and reading the request.
            outcomes = [await self._attempt(calls[0])]
        else:
            import asyncio  # here: parsing a webhook imports this module, not the event loop

            gate = asyncio.Semaphore(self.max_concurrency)

            async def run(call: Call) -> list[RecipientResult] | SendError:
                async with gate:
                    return await self._attempt(call)

            outcomes = await asyncio.gather(*(run(c) for c in calls))
        for call, outcome in zip(calls, outcomes, strict=True):
            self._settle(call, outcome, delivery)
        return delivery

    def _result(self, delivery: Delivery, bulk_id: str | None) -> SendResult:
        if delivery.errors and not any(
            r.status is DeliveryStatus.ACCEPTED for r in delivery.results
        ):
            raise delivery.errors[0]
        return SendResult(bulk_id=bulk_id or new_tracking_id(), recipients=delivery.results)

    def send(self, email: Email) -> SendResult:
        """Send ``email``, one tracked copy per recipient (contract). Raises the provider's
        ``SendError`` when no recipient was accepted."""
        return self._result(self.deliver(email, self.plan(email)), None)

    async def asend(self, email: Email) -> SendResult:
        """The async twin of ``send`` (contract)."""
        return self._result(await self.adeliver(email, self.plan(email)), None)

    # ------------------------------------------------------------------ webhooks

    @abstractmethod
    def verify_webhook(
        self, body: bytes, headers: Mapping[str, str], *, now: datetime | None = None
    ) -> None:
        """Raise ``SignatureError`` unless the request is authentic and fresh (contract)."""

    @classmethod
    @abstractmethod
    def parse_webhook_body(
        cls, body: bytes, headers: Mapping[str, str] | None = None
    ) -> list[EmailEvent]:
        """Map a webhook body onto canonical events without credentials; pure, no I/O, raises
        only ``PayloadError``. ``unimailtrack.parse_webhook(name, ...)`` calls this."""

    def parse_webhook(
        self, body: bytes, headers: Mapping[str, str] | None = None
    ) -> list[EmailEvent]:
        """Map a webhook body onto canonical events (contract); pure, raises only
        ``PayloadError``."""
        return self.parse_webhook_body(body, headers)

    def unwrap(
        self, body: bytes, headers: Mapping[str, str], *, now: datetime | None = None
    ) -> list[EmailEvent]:
        """Verify, then parse: the one call a webhook endpoint needs."""
        with telemetry.span("webhook.verify", provider=self.name):
            self.verify_webhook(body, headers, now=now)
        with telemetry.span("webhook.parse", provider=self.name):
            return self.parse_webhook(body, headers)

    def unwrap_unspent(
        self, body: bytes, headers: Mapping[str, str], *, now: datetime | None = None
    ) -> tuple[list[EmailEvent], tuple[ReplayToken, ...]]:
        """Verify everything but the replay check, then parse; returns the events and the
        single-use tokens the request carries, which the caller must spend in the same
        transaction that stores the events (``Tracker.ingest_once``). Providers without
        single-use tokens return none and are verified whole."""
        return self.unwrap(body, headers, now=now), ()

    def release_webhook(self, body: bytes, headers: Mapping[str, str]) -> None:
        """Kept for compatibility; nothing to do. A request that could not be stored needs
        no give-back: the retry of the same request is admitted by the replay check itself
        (:func:`spend_token`), and a different request under a spent token stays refused."""
        del body, headers

    def _verification_disabled(self) -> bool:
        if not self.verify_webhooks:
            webhook_log.debug("%s: webhook verification is turned off by configuration", self.name)
            return True
        return False

    # ------------------------------------------------------------------ suppression lists
    #
    # An adapter whose provider keeps a suppression list with an API overrides the three
    # pure methods below (request builders and a response reader, nothing else); the shells
    # that page, retry (429 with Retry-After included, through ``self.retry``) and push are
    # shared, sync and async. The default refuses with ``NotSupported``.

    def suppression_page_request(self, cursor: str | None) -> httpx.Request:
        """The request for the page of the provider's suppression list after ``cursor``
        (None: the first page). ``cursor`` is whatever ``read_suppression_page`` returned."""
        raise NotSupported(self.name, "reading its suppression list")

    async def asuppression_page_request(self, cursor: str | None) -> httpx.Request:
        """``suppression_page_request`` for the async path; override when building may block
        (credentials)."""
        return self.suppression_page_request(cursor)

    def read_suppression_page(
        self, cursor: str | None, response: httpx.Response
    ) -> SuppressionPage:
        """The page in ``response`` and the cursor after it; raises a ``SendError`` (e.g.
        ``RateLimited``, retried by the shell) when the provider refused the request."""
        raise NotSupported(self.name, "reading its suppression list")

    def suppression_push_calls(
        self, entries: Sequence[RemoteSuppression]
    ) -> tuple[list[PushCall], list[tuple[RemoteSuppression, str]]]:
        """The requests that write ``entries`` into the provider's list, and the entries it
        cannot hold, with why."""
        raise NotSupported(self.name, "writing its suppression list")

    async def asuppression_push_calls(
        self, entries: Sequence[RemoteSuppression]
    ) -> tuple[list[PushCall], list[tuple[RemoteSuppression, str]]]:
        return self.suppression_push_calls(entries)

    @classmethod
    def list_change(cls, provider_event: str, type: EventType) -> str | None:
        """``"added"`` or ``"lifted"`` when an event of this provider says that the
        provider's own suppression list changed (the tracker then records it with source
        ``provider-sync``), else None."""
        del provider_event, type
        return None

    def _fetch_page(self, cursor: str | None) -> SuppressionPage:
        return self.read_suppression_page(
            cursor, self.transport.send(self.suppression_page_request(cursor))
        )

    async def _afetch_page(self, cursor: str | None) -> SuppressionPage:
        request = await self.asuppression_page_request(cursor)
        return self.read_suppression_page(cursor, await self.async_transport.send(request))

    def list_suppressions(self, *, cursor: str | None = None) -> Iterator[SuppressionPage]:
        """The provider's suppression list, a page at a time, from after ``cursor`` (to
        resume a pull that failed). Each page is retried as ``self.retry`` says; an error
        that ends the retries is raised, and the pages already yielded stay valid."""
        while True:
            page = call_with_retry(self.retry, partial(self._fetch_page, cursor))
            yield page
            if page.cursor is None:
                return
            cursor = page.cursor

    async def alist_suppressions(
        self, *, cursor: str | None = None
    ) -> AsyncIterator[SuppressionPage]:
        """The async twin of ``list_suppressions``."""
        while True:
            page = await acall_with_retry(self.retry, partial(self._afetch_page, cursor))
            yield page
            if page.cursor is None:
                return
            cursor = page.cursor

    def _push_one(self, call: PushCall) -> Sequence[tuple[RemoteSuppression, str]] | None:
        return call.check(self.transport.send(call.request))

    async def _apush_one(self, call: PushCall) -> Sequence[tuple[RemoteSuppression, str]] | None:
        return call.check(await self.async_transport.send(call.request))

    @staticmethod
    def _pushed(
        call: PushCall, refused: Sequence[tuple[RemoteSuppression, str]] | None, result: PushResult
    ) -> None:
        if not refused:
            result.pushed.extend(call.entries)
            return
        gone = {entry for entry, _ in refused}
        result.pushed.extend(e for e in call.entries if e not in gone)
        result.skipped.extend(refused)

    def push_suppressions(self, entries: Sequence[RemoteSuppression]) -> PushResult:
        """Write ``entries`` into the provider's own suppression list, so that it refuses
        them as well."""
        calls, skipped = self.suppression_push_calls(entries)
        result = PushResult(skipped=list(skipped))
        for call in calls:
            try:
                refused = call_with_retry(self.retry, partial(self._push_one, call))
            except SendError as exc:
                result.errors.append(exc)
            else:
                self._pushed(call, refused, result)
        return result

    async def apush_suppressions(self, entries: Sequence[RemoteSuppression]) -> PushResult:
        calls, skipped = await self.asuppression_push_calls(entries)
        result = PushResult(skipped=list(skipped))
        for call in calls:
            try:
                refused = await acall_with_retry(self.retry, partial(self._apush_one, call))
            except SendError as exc:
                result.errors.append(exc)
            else:
                self._pushed(call, refused, result)
        return result

    @classmethod
    def message_key(cls, message_id: str) -> str:
        """The part of an event's ``message_id`` that equals the message id a send returned.

        Most providers report the same id in both places; one that decorates its event ids
        (SendGrid appends a filter suffix) overrides this so the tracker can join an event to
        its send when the event carries no tracking id."""
        return message_id

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


# --------------------------------------------------------------------------- replay guard


class NonceStore(Protocol):
    """Remembers webhook tokens so a replayed request is refused (shared across processes when
    the tracker provides it)."""

    def add_if_absent(self, key: str, expires_at: datetime) -> bool:
        """Remember ``key`` until ``expires_at``; True when it was new, False when it was
        already remembered (a replay). Must be atomic."""
        ...

    def discard(self, key: str) -> None:
        """Forget ``key`` (``spend_token`` forgets the trace of a refused request)."""
        ...


@dataclass(frozen=True, slots=True)
class ReplayToken:
    """A single-use token of a verified request, to be spent once the request is stored.

    ``key`` is exactly what was signed (with the provider's name in front), so that a
    re-cut of the signed string cannot pass for a new token; ``digest`` identifies the
    request's content, so that the provider's retry of the *same* request is told apart from
    a different request carrying a captured token; ``expires_at`` is when the key may be
    forgotten (a replay could no longer pass the freshness check)."""

    key: str
    digest: str
    expires_at: datetime


def spend_token(store: NonceStore, token: ReplayToken) -> bool:
    """Spend ``token`` in a ``NonceStore``: True when the request may be stored (the token is
    new, or it was spent by this very request, whose retry is then answered as a
    duplicate); False for a replay under a different request.

    Two keys make this safe with nothing but ``add_if_absent``: ``key#digest`` (this request
    was seen) is remembered *before* ``key`` (the token is spent), so a crash or a failed
    store between the two, or after both, never turns the provider's retry of the same
    request into a refusal, and a request that finds ``key`` spent is admitted only when its
    own ``key#digest`` was there before it came."""
    seen = f"{token.key}#{token.digest}"
    first_sight = store.add_if_absent(seen, token.expires_at)
    if store.add_if_absent(token.key, token.expires_at):
        return True
    if first_sight:  # the token was spent by another request: keep no trace of this one
        store.discard(seen)
        return False
    return True


class InMemoryNonceStore:
    """The default ``NonceStore``: one process, bounded, expired keys pruned on the way."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self._keys: dict[str, datetime] = {}
        self._max_keys = max_keys
        self._lock = threading.Lock()

    def add_if_absent(self, key: str, expires_at: datetime) -> bool:
        now = datetime.now(UTC)
        with self._lock:
            known = self._keys.get(key)
            if known is not None and known > now:
                return False
            if len(self._keys) >= self._max_keys:
                self._keys = {k: v for k, v in self._keys.items() if v > now}
                while len(self._keys) >= self._max_keys:  # still full: forget the oldest
                    del self._keys[next(iter(self._keys))]
            self._keys[key] = expires_at
            return True

    def discard(self, key: str) -> None:
        with self._lock:
            self._keys.pop(key, None)


# --------------------------------------------------------------------------- helpers


def lower_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """Headers with lower-cased names, for case-insensitive look-up."""
    if not headers:
        return {}
    if isinstance(headers, httpx.Headers):
        return {k.lower(): v for k, v in headers.items()}
    return {k.lower(): v for k, v in headers.items()}


def event_digest(*parts: str | bytes) -> str:
    """A deterministic id for an event that has none of its own (32 hex digits)."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        data = part.encode("utf-8", "surrogatepass") if isinstance(part, str) else part
        h.update(len(data).to_bytes(4, "big"))
        h.update(data)
    return h.hexdigest()


def from_unix(value: Any) -> datetime:
    """A timezone-aware UTC datetime from unix seconds (int, float or numeric string)."""
    return datetime.fromtimestamp(float(value), UTC)


def is_fresh(timestamp: float, now: datetime | None, tolerance: timedelta) -> bool:
    """True when ``timestamp`` is within ``tolerance`` of ``now``, in either direction."""
    clock = (now or datetime.now(UTC)).timestamp()
    return abs(clock - timestamp) <= tolerance.total_seconds()


def signature_failure(
    provider: str, why: str, cause: SignatureCause = SignatureCause.BAD_SIGNATURE
) -> SignatureError:
    """The one error every signature failure raises; ``why`` is logged for the operator only,
    ``cause`` (one of a closed set) travels on the error for metrics."""
    webhook_log.warning("%s webhook refused: %s [%s]", provider, why, cause.value)
    return SignatureError(provider=provider, cause=cause)


def unknown_event(
    provider: str,
    raw: Any,
    reason: str,
    *,
    provider_event: str = "",
    recipient: str = "",
    timestamp: datetime | None = None,
    digest_source: bytes | str = b"",
) -> EmailEvent:
    """An event that could not be mapped: kept whole as ``unknown`` with the reason why."""
    raw_dict = raw if isinstance(raw, dict) else {"value": raw}
    return EmailEvent(
        provider=provider,
        type=EventType.UNKNOWN,
        provider_event=provider_event,
        recipient=recipient,
        event_id=event_digest(provider, digest_source or repr(raw), recipient),
        timestamp=timestamp or datetime(1970, 1, 1, tzinfo=UTC),
        reason=reason,
        raw=raw_dict,
    )


def error_for_status(
    provider: str,
    response: httpx.Response,
    message: str,
    *,
    field_errors: Iterable[FieldError] = (),
    forbidden_is_permission: bool = False,
) -> SendError:
    """The ``SendError`` subclass for an HTTP error status; ``message`` is the provider's text."""
    status = response.status_code
    detail = message or None
    kwargs: dict[str, Any] = {"provider": provider, "status": status, "detail": detail}
    if status == 413:
        return PayloadTooLarge(
            "the request is larger than the provider accepts; send smaller attachments",
            field_errors=list(field_errors),
            **kwargs,
        )
    if status in (400, 404, 405, 409, 415, 422):
        return InvalidRequest(
            "the provider refused the request as invalid; correct the e-mail",
            field_errors=list(field_errors),
            **kwargs,
        )
    if status == 401 or (status == 403 and not forbidden_is_permission):
        return AuthenticationError(
            "the provider refused the credentials; check the API key in the DSN", **kwargs
        )
    if status in (402, 403):
        return NotPermitted(
            "the account or sending domain may not send; check it in the provider's console",
            **kwargs,
        )
    if status == 429:
        retry_after = parse_retry_after(
            response.headers.get("retry-after") or response.headers.get("x-ratelimit-reset")
        )
        return RateLimited(
            "the provider is rate limiting requests; slow down", retry_after=retry_after, **kwargs
        )
    if status >= 500:
        return ProviderUnavailable(
            "the provider failed to handle the request",
            retry_after=parse_retry_after(response.headers.get("retry-after")),
            **kwargs,
        )
    return SendError(f"the provider answered HTTP {status}", **kwargs)
