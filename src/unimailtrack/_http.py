"""The one HTTP seam every adapter sends through.

Adapters build ``httpx.Request`` objects and interpret ``httpx.Response`` objects as pure
functions; a transport only moves them. ``HttpxTransport`` and ``HttpxAsyncTransport`` are the
defaults; ``AiohttpTransport`` is the faster async choice for high concurrency
(``unimailtrack[aiohttp]``). Tests inject ``httpx.MockTransport`` or use respx: nothing here is
patched.

Retrying is one pure function, :func:`retry_delay`; the sync and async shells only sleep.
"""

from __future__ import annotations

import asyncio
import os
import random
import ssl
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from functools import cache
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar, runtime_checkable

import h11
import httpx

from unimailtrack import _constants as C
from unimailtrack.errors import MissingDependency, ProviderUnavailable, SendError

if TYPE_CHECKING:
    import aiohttp

__all__ = [
    "AiohttpTransport",
    "AsyncTransport",
    "AsyncioTransport",
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


def _unavailable(provider: str | None, exc: Exception) -> ProviderUnavailable:
    kind = (
        "timed out"
        if isinstance(exc, httpx.TimeoutException | asyncio.TimeoutError)
        else ("could not be reached")
    )
    return ProviderUnavailable(
        f"the provider {kind}; the request will be retried if retries remain",
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
        except httpx.TransportError as exc:
            raise _unavailable(None, exc) from exc
        return response

    async def aclose(self) -> None:
        await self._client.aclose()


class AsyncioTransport:
    """The default asynchronous transport: HTTP/1.1 over asyncio's own sockets, with h11 (the
    HTTP/1.1 state machine under httpcore) reading and writing the messages.

    httpcore's async pool pays for every request in locks and events routed through anyio's
    cancel scopes (each event asking whether it runs under trio by importing ``sniffio``
    anew when it is not installed), and rescans every queued request against every
    connection whenever one starts or ends; with 50 requests in flight that is most of a
    send's CPU. Here a connection is an ``asyncio.Protocol`` feeding h11, and the pool is a
    list of idle connections per origin with at most ``max_connections`` open: taking one
    and giving it back are constant-time. Requests and responses are the same ``httpx``
    objects as on every other transport. TLS uses the context httpx would build (so
    ``SSL_CERT_FILE`` and the like apply). Requests go through an ``httpx.AsyncClient``
    instead when the environment names a proxy (``HTTPS_PROXY`` and the like), which httpx
    applies, and while a test has replaced httpcore's pool to mock it (as respx does), so
    that the mock sees them.
    """

    def __init__(self, *, timeout: float = C.DEFAULT_TIMEOUT, max_connections: int = 100) -> None:
        self._timeout = timeout
        self._limit = max(1, max_connections)
        self._idle: dict[tuple[bytes, bytes, int], list[_H11Connection]] = {}
        self._open = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._tls: ssl.SSLContext | None = None
        self._fallback: HttpxAsyncTransport | None = None
        self._mocked: HttpxAsyncTransport | None = None
        if _environment_proxies():
            self._fallback = HttpxAsyncTransport(
                httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=self._limit))
            )

    async def send(self, request: httpx.Request) -> httpx.Response:
        if self._fallback is not None:
            return await self._fallback.send(request)
        if _httpcore_replaced():
            return await self._through_httpx().send(request)
        url = request.url
        origin = (url.raw_scheme, url.raw_host, url.port or _DEFAULT_PORTS.get(url.raw_scheme, 0))
        try:
            connection = await self._acquire(origin)
            try:
                status, headers, content = await connection.exchange(request, self._timeout)
            except BaseException:
                connection.close()
                self._release(origin, connection)
                raise
            self._release(origin, connection)
        except (OSError, TimeoutError, h11.ProtocolError, ssl.SSLError) as exc:
            raise _unavailable(None, exc) from exc
        if any(name.lower() == b"content-encoding" for name, _ in headers):
            response = httpx.Response(
                status, headers=headers, stream=httpx.ByteStream(content), request=request
            )
            await response.aread()  # undoes the encoding, as httpx does
            return response
        return read_response(status, headers, content, request)

    def _through_httpx(self) -> HttpxAsyncTransport:
        if self._mocked is None:
            self._mocked = HttpxAsyncTransport(
                httpx.AsyncClient(
                    timeout=self._timeout, limits=httpx.Limits(max_connections=self._limit)
                )
            )
        return self._mocked

    async def _acquire(self, origin: tuple[bytes, bytes, int]) -> _H11Connection:
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            if connection.reusable:
                return connection
            connection.close()
            self._open -= 1
        while self._open >= self._limit:
            waiter = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            try:
                await waiter  # a connection was given back or closed
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # the turn it was given goes to the next in line
                raise
            idle = self._idle.get(origin)
            while idle:
                connection = idle.pop()
                if connection.reusable:
                    return connection
                connection.close()
                self._open -= 1
        self._open += 1
        try:
            return await self._connect(origin)
        except BaseException:
            self._open -= 1
            self._wake()
            raise

    async def _connect(self, origin: tuple[bytes, bytes, int]) -> _H11Connection:
        scheme, host, port = origin
        name = host.decode("ascii")
        tls: ssl.SSLContext | None = None
        if scheme == b"https":
            if self._tls is None:
                self._tls = httpx.create_ssl_context()
            tls = self._tls
        loop = asyncio.get_running_loop()
        _, connection = await asyncio.wait_for(
            loop.create_connection(
                _H11Connection, name, port, ssl=tls, server_hostname=name if tls else None
            ),
            self._timeout,
        )
        return connection

    def _release(self, origin: tuple[bytes, bytes, int], connection: _H11Connection) -> None:
        if connection.reusable:
            self._idle.setdefault(origin, []).append(connection)
        else:
            connection.close()
            self._open -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def aclose(self) -> None:
        for other in (self._fallback, self._mocked):
            if other is not None:
                await other.aclose()
        self._mocked = None
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()
                self._open -= 1


_DEFAULT_PORTS: Final = {b"http": 80, b"https": 443}


def _httpcore_replaced() -> bool:
    """Whether something replaced httpcore's async pool method: a test mock (respx's default
    way), which can only see requests that go through httpx. httpx imports httpcore on first
    use, so while nothing did, nothing can have replaced it."""
    core = sys.modules.get("httpcore")
    if core is None:
        return False
    method = vars(core.AsyncConnectionPool).get("handle_async_request")
    return getattr(method, "__qualname__", "") != "AsyncConnectionPool.handle_async_request"


def _environment_proxies() -> bool:
    """Whether the environment names a proxy, which only ``httpx.AsyncClient`` applies."""
    return any(
        os.environ.get(name) or os.environ.get(name.upper())
        for name in ("http_proxy", "https_proxy", "all_proxy")
    )


class _H11Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: asyncio moves the bytes, h11 reads the messages.
    One exchange at a time (the pool sees to that)."""

    def __init__(self) -> None:
        self._h11 = h11.Connection(h11.CLIENT)
        self._transport: asyncio.Transport | None = None
        self._done: asyncio.Future[None] | None = None
        self._response: h11.Response | None = None
        self._body: list[bytes] = []
        self._lost = False

    @property
    def reusable(self) -> bool:
        return not self._lost and self._h11.our_state is h11.IDLE

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._fail(exc or ConnectionResetError("the server closed the connection"))

    def _fail(self, exc: BaseException) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_exception(exc)

    def data_received(self, data: bytes) -> None:
        self._feed(data)

    def eof_received(self) -> bool | None:
        self._feed(b"")  # h11 takes an empty chunk as the end of the stream
        return None  # asyncio closes the transport; connection_lost follows

    def _feed(self, data: bytes) -> None:
        connection = self._h11
        try:
            connection.receive_data(data)
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA or event is h11.PAUSED:
                    return
                kind = type(event)
                if kind is h11.Data:
                    self._body.append(event.data)  # type: ignore[union-attr]
                elif kind is h11.Response:
                    self._response = event  # type: ignore[assignment]
                elif kind is h11.EndOfMessage:
                    if self._done is not None and not self._done.done():
                        self._done.set_result(None)
                    return
                elif kind is h11.ConnectionClosed:
                    self._fail(ConnectionResetError("the server closed the connection"))
                    return
        except h11.RemoteProtocolError as exc:
            self._fail(exc)
            self.close()

    async def exchange(
        self, request: httpx.Request, timeout: float
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Send ``request``, wait for its whole response (at most ``timeout`` seconds of
        silence in all), and leave the connection ready for the next one."""
        transport = self._transport
        if transport is None or self._lost:
            raise ConnectionResetError("the connection is closed")
        connection = self._h11
        if connection.our_state is h11.DONE and connection.their_state is h11.DONE:
            connection.start_next_cycle()
        loop = asyncio.get_running_loop()
        done = self._done = loop.create_future()
        self._response = None
        self._body = []
        url = request.url
        content = request.content
        head = connection.send(
            h11.Request(method=request.method, target=url.raw_path, headers=request.headers.raw)
        )
        assert head is not None
        tail = connection.send(h11.Data(data=content)) if content else b""
        end = connection.send(h11.EndOfMessage())
        transport.write(b"".join((head, tail or b"", end or b"")))
        timer = loop.call_later(timeout, _time_out, done)
        try:
            await done
        finally:
            timer.cancel()
            self._done = None
        response = self._response
        assert response is not None
        if connection.our_state is h11.DONE and connection.their_state is h11.DONE:
            connection.start_next_cycle()
        return response.status_code, list(response.headers.raw_items()), b"".join(self._body)

    def close(self) -> None:
        self._lost = True
        if self._transport is not None:
            self._transport.close()


def _time_out(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_exception(TimeoutError("the provider did not answer in time"))


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
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> T:
    """The async twin of :func:`call_with_retry`."""
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
