"""The one HTTP seam every adapter sends through.

Adapters build ``httpx.Request`` objects and interpret ``httpx.Response`` objects as pure
functions; a transport only moves them. ``HttpxTransport`` and ``HttpxAsyncTransport`` are the
transports over httpx; the default async transport, ``AsyncioTransport``, lives in ``_asyncio_http``
(imported when first used); ``AiohttpTransport`` is the optional aiohttp one
(``unimailtrack[aiohttp]``). Tests inject ``httpx.MockTransport`` or use respx: nothing here is
patched.

Retrying is one pure function, :func:`retry_delay`; the sync and async shells only sleep.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from functools import cache
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar, runtime_checkable

import httpx

from unimailtrack import _constants as C
from unimailtrack.errors import (
    ConfigurationError,
    MissingDependency,
    ProviderUnavailable,
    SendError,
)

if TYPE_CHECKING:
    import aiohttp

__all__ = [
    "AiohttpTransport",
    "AsyncTransport",
    "HttpxAsyncTransport",
    "HttpxTransport",
    "RetryPolicy",
    "SyncTransport",
    "parse_retry_after",
    "read_request",
    "read_response",
    "retry_delay",
]

T = TypeVar("T")


@runtime_checkable
class SyncTransport(Protocol):
    """Sends one request and returns its response with the body read."""

    def send(self, request: httpx.Request) -> httpx.Response: ...

    def close(self) -> None: ...


@runtime_checkable
class AsyncTransport(Protocol):
    async def send(self, request: httpx.Request) -> httpx.Response: ...

    async def aclose(self) -> None: ...


def unwritable(exc: Exception) -> ConfigurationError:
    """A request that no transport may send as it is: a header (the API key, most often, with
    a line break read from a file or a variable) would end the request early or add to it.
    Sending it again cannot help, so it is not the provider's outage."""
    return ConfigurationError(f"the request cannot be sent as HTTP/1.1: {exc}")


def _unavailable(provider: str | None, exc: Exception) -> ProviderUnavailable:
    kind = (
        "timed out"
        if isinstance(exc, httpx.TimeoutException | TimeoutError)
        else ("could not be reached")
    )
    return ProviderUnavailable(
        f"the provider {kind}",
        provider=provider,
        detail=type(exc).__name__,
    )


class HttpxTransport:
    """Synchronous transport over an ``httpx.Client`` (one keep-alive pool per transport)."""

    def __init__(
        self, client: httpx.Client | None = None, *, timeout: float = C.DEFAULT_TIMEOUT
    ) -> None:
        self._client = client or httpx.Client(timeout=timeout)

    def send(self, request: httpx.Request) -> httpx.Response:
        try:
            response = self._client.send(request)
            response.read()
        except httpx.LocalProtocolError as exc:
            raise unwritable(exc) from exc
        except httpx.TransportError as exc:
            raise _unavailable(None, exc) from exc
        return response

    def close(self) -> None:
        self._client.close()


class HttpxAsyncTransport:
    """Asynchronous transport over an ``httpx.AsyncClient``."""

    def __init__(
        self, client: httpx.AsyncClient | None = None, *, timeout: float = C.DEFAULT_TIMEOUT
    ) -> None:
        self._client = client or httpx.AsyncClient(timeout=timeout)

    async def send(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await self._client.send(request)
            await response.aread()
        except httpx.LocalProtocolError as exc:
            raise unwritable(exc) from exc
        except httpx.TransportError as exc:
            raise _unavailable(None, exc) from exc
        return response

    async def aclose(self) -> None:
        await self._client.aclose()


_DECODED_AWAY: Final = frozenset({b"content-encoding", b"transfer-encoding"})
"""Response headers that describe an encoding aiohttp has already undone."""


@cache
def _presets_body() -> bool:
    """Whether a body already in memory can be given to an ``httpx.Request`` or
    ``httpx.Response`` as their ``read()`` leaves it (the installed httpx keeps it in
    ``_content``)."""
    request = httpx.Request("POST", "http://probe.invalid/", content=b"probe")
    response = httpx.Response(200, content=b"probe")
    return (
        vars(request).get("_content") == b"probe"
        and vars(response).get("_content") == b"probe"
        and response.is_closed
    )


def read_request(
    method: str, url: httpx.URL, headers: httpx.Headers, content: bytes
) -> httpx.Request:
    """A request of ``content`` with its body read, for ``headers`` that already say all but
    its length (``Host`` included).

    ``httpx.Request(method, url, headers=headers, content=content)`` would derive and
    re-normalise every header; this copies them, adds ``Content-Length`` and stores the body as
    ``read()`` stores it, without iterating the stream to do so (a quarter of what building the
    request costs). Where the installed httpx keeps its body some other way, ``read()`` is
    called.
    """
    request = httpx.Request(method, url, headers=headers, stream=httpx.ByteStream(content))
    request.headers["Content-Length"] = str(len(content))
    if _presets_body():
        request._content = content
    else:
        request.read()
    return request


def read_response(
    status: int,
    headers: Sequence[tuple[bytes, bytes]],
    content: bytes,
    request: httpx.Request,
) -> httpx.Response:
    """The ``httpx.Response`` that ``httpx.Response(status, headers=headers, content=content,
    request=request)`` builds, for a body that is already read and decoded.

    httpx would replay the body through its decoder chain just to store it again (three
    quarters of what building a response costs); instead it is stored as ``read()`` stores it,
    and the response is as closed and consumed as after ``read()``. Where the installed httpx
    keeps its body some other way, the public constructor is used.
    """
    if not _presets_body():
        return httpx.Response(status, headers=headers, content=content, request=request)
    if content and not any(name.lower() == b"content-length" for name, _ in headers):
        headers = [*headers, (b"Content-Length", str(len(content)).encode("ascii"))]
    response = httpx.Response(
        status, headers=headers, stream=httpx.ByteStream(content), request=request
    )
    response._content = content
    response.is_stream_consumed = True
    response.is_closed = True
    return response


class AiohttpTransport:
    """Asynchronous transport over an ``aiohttp.ClientSession``.

    httpx's async pool slows down sharply with many requests in flight; aiohttp does not.
    Select it with ``?transport=aiohttp`` in the DSN or ``AsyncMailer(..., transport="aiohttp")``.
    The session is created lazily inside the running event loop, once, and kept: one keep-alive
    pool of ``limit`` connections.

    Converting between the two libraries' objects is kept to what each needs: request headers
    go over as they were set (bytes decoded once, ``Host`` left to aiohttp, which derives the
    same value from the URL), and response headers come back as the raw bytes aiohttp read,
    without being decoded and encoded again.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession | None = None,
        *,
        timeout: float = C.DEFAULT_TIMEOUT,
        limit: int = 100,
    ) -> None:
        try:
            import aiohttp
        except ImportError:  # pragma: no cover - exercised in the no-extras CI lane
            raise MissingDependency("aiohttp", "aiohttp", purpose="The aiohttp transport") from None
        self._aiohttp = aiohttp
        self._session = session
        self._timeout = timeout
        self._limit = limit

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            aiohttp = self._aiohttp
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                connector=aiohttp.TCPConnector(limit=self._limit),
                auto_decompress=True,
            )
        return self._session

    async def send(self, request: httpx.Request) -> httpx.Response:
        session = self._ensure_session()
        fields = request.headers
        encoding = fields.encoding  # what httpx itself decodes these headers with
        headers = [
            (name.decode(encoding), value.decode(encoding))
            for name, value in fields.raw
            if name.lower() != b"host"
        ]
        try:
            resp = await session.request(
                request.method,
                str(request.url),
                headers=headers,
                data=request.content or None,
                allow_redirects=False,
            )
            try:
                content = await resp.read()
            finally:
                resp.release()
        except (TimeoutError, self._aiohttp.ClientError) as exc:
            raise _unavailable(None, exc) from exc
        except ValueError as exc:  # aiohttp refuses a header that could split the request
            raise unwritable(exc) from exc
        return read_response(
            resp.status,
            [
                (name, value)
                for name, value in resp.raw_headers
                if name.lower() not in _DECODED_AWAY
            ],
            content,
            request,
        )

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()


# --------------------------------------------------------------------------- retrying


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Which failures are retried, and how long to wait between attempts.

    Exponential backoff from ``initial_delay`` capped at ``max_delay``, with up to 25 % jitter
    taken off, and a provider's ``Retry-After`` honoured up to ``max_retry_after`` seconds.
    """

    max_retries: int = C.DEFAULT_MAX_RETRIES
    initial_delay: float = C.INITIAL_RETRY_DELAY
    max_delay: float = C.MAX_RETRY_DELAY
    max_retry_after: float = C.MAX_RETRY_AFTER

    @classmethod
    def none(cls) -> RetryPolicy:
        return cls(max_retries=0)


def retry_delay(
    policy: RetryPolicy,
    attempt: int,
    error: BaseException,
    *,
    rng: Callable[[], float] = random.random,
) -> float | None:
    """How long to wait before retrying after ``error`` on attempt ``attempt`` (1-based), or
    None when the error is not retryable or no retries remain."""
    if not isinstance(error, SendError) or not error.retryable:
        return None
    if attempt > policy.max_retries:
        return None
    retry_after: float | None = getattr(error, "retry_after", None)
    if retry_after is not None:
        if retry_after > policy.max_retry_after:
            return None
        return max(0.0, float(retry_after))
    backoff = min(policy.initial_delay * 2.0 ** (attempt - 1), policy.max_delay)
    return float(backoff * (1 - 0.25 * rng()))


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` (delta-seconds or HTTP date) or a unix reset time."""
    if not value:
        return None
    value = value.strip()
    try:
        number = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - (now if now is not None else time.time()))
    if number > 1_000_000_000:  # a unix timestamp (X-RateLimit-Reset style)
        return max(0.0, number - (now if now is not None else time.time()))
    return max(0.0, number)


def call_with_retry(
    policy: RetryPolicy,
    fn: Callable[[], T],
    *,
    sleep: Callable[[float], Any] = time.sleep,
) -> T:
    """Run ``fn`` and retry it on retryable ``SendError`` as the policy says."""
    attempt = 1
    while True:
        try:
            return fn()
        except SendError as exc:
            delay = retry_delay(policy, attempt, exc)
            if delay is None:
                raise
        sleep(delay)
        attempt += 1


async def acall_with_retry(
    policy: RetryPolicy,
    fn: Callable[[], Awaitable[T]],
    *,
    sleep: Callable[[float], Awaitable[Any]] | None = None,
) -> T:
    """The async twin of :func:`call_with_retry` (``sleep``: ``asyncio.sleep`` unless given)."""
    if sleep is None:
        import asyncio  # here, so that parsing a webhook never imports the event loop

        sleep = asyncio.sleep
    attempt = 1
    while True:
        try:
            return await fn()
        except SendError as exc:
            delay = retry_delay(policy, attempt, exc)
            if delay is None:
                raise
        await sleep(delay)
        attempt += 1
