"""The default asynchronous transport: HTTP/1.1 (``_http1``) over asyncio's own sockets.

Imported only when an adapter first sends asynchronously, so that importing unimailtrack or
parsing a webhook never loads the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import sys
from collections import deque
from typing import Final

import httpx

from unimailtrack import _constants as C
from unimailtrack._http import HttpxAsyncTransport, _unavailable, read_response, unwritable
from unimailtrack._http1 import (
    HttpProtocolError,
    ResponseReader,
    UnwritableRequest,
    write_request,
)

__all__ = ["AsyncioTransport"]


class AsyncioTransport:
    """The default asynchronous transport: HTTP/1.1 over asyncio's own sockets, each request
    written and its response read by ``_http1``.

    httpcore's async pool pays for every request in locks and events routed through anyio's
    cancel scopes (each event asking whether it runs under trio by importing ``sniffio``
    anew when it is not installed), and rescans every queued request against every
    connection whenever one starts or ends; with 50 requests in flight that is most of a
    send's CPU. Here a connection is an ``asyncio.Protocol`` feeding a ``ResponseReader``
    (h11, which httpcore uses, costs a third of a send of its own), and the pool is a
    list of idle connections per origin with at most ``max_connections`` open: taking one
    and giving it back are constant-time. Requests and responses are the same ``httpx``
    objects as on every other transport. TLS uses the context httpx would build (so
    ``SSL_CERT_FILE`` and the like apply). Requests go through an ``httpx.AsyncClient``
    instead when the environment names a proxy (``HTTPS_PROXY`` and the like), which httpx
    applies, and while a test has replaced httpcore's pool to mock it (as respx does), so
    that the mock sees them.
    """

    def __init__(
        self,
        *,
        timeout: float = C.DEFAULT_TIMEOUT,
        max_connections: int = C.DEFAULT_MAX_CONCURRENCY,
    ) -> None:
        self._timeout = timeout
        self._limit = max(1, max_connections)
        self._idle: dict[tuple[bytes, bytes, int], list[_Connection]] = {}
        self._open = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._tls: ssl.SSLContext | None = None
        self._fallback: HttpxAsyncTransport | None = None
        self._mocked: HttpxAsyncTransport | None = None
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        if _environment_proxies():
            self._fallback = HttpxAsyncTransport(
                httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=self._limit))
            )

    async def send(self, request: httpx.Request) -> httpx.Response:
        if self._fallback is not None:
            return await self._fallback.send(request)
        if _httpcore_replaced():
            return await self._through_httpx().send(request)
        if asyncio.get_running_loop() is not self._loop:
            self._start_over()
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
        except UnwritableRequest as exc:
            raise unwritable(exc) from exc
        except (OSError, TimeoutError, HttpProtocolError, ssl.SSLError) as exc:
            raise _unavailable(None, exc) from exc
        if any(name.lower() == b"content-encoding" for name, _ in headers):
            response = httpx.Response(
                status, headers=headers, stream=httpx.ByteStream(content), request=request
            )
            await response.aread()  # undoes the encoding, as httpx does
            return response
        return read_response(status, headers, content, request)

    def _start_over(self) -> None:
        """Forget the connections of another event loop (one that ``asyncio.run`` ended, say):
        they cannot be used from this one."""
        for connections in self._idle.values():
            for connection in connections:
                with contextlib.suppress(RuntimeError):  # their loop may be closed
                    connection.close()
        self._idle, self._open, self._waiting = {}, 0, deque()
        self._loop = asyncio.get_running_loop()
        self._closed = False

    def _through_httpx(self) -> HttpxAsyncTransport:
        if self._mocked is None:
            self._mocked = HttpxAsyncTransport(
                httpx.AsyncClient(
                    timeout=self._timeout, limits=httpx.Limits(max_connections=self._limit)
                )
            )
        return self._mocked

    def _reuse(self, origin: tuple[bytes, bytes, int]) -> _Connection | None:
        """An idle connection to ``origin`` still fit for a request (the unfit ones closed)."""
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            if connection.reusable:
                return connection
            connection.close()
            self._open -= 1
        return None

    async def _acquire(self, origin: tuple[bytes, bytes, int]) -> _Connection:
        connection = self._reuse(origin)
        if connection is not None:
            return connection
        while self._open >= self._limit:
            if self._evict_idle():  # an idle connection to another host makes room
                break
            waiter = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            try:
                await waiter  # a connection was given back or closed
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # the turn it was given goes to the next in line
                raise
            connection = self._reuse(origin)
            if connection is not None:
                return connection
        self._open += 1
        try:
            return await self._connect(origin)
        except BaseException:
            self._open -= 1
            self._wake()
            raise

    async def _connect(self, origin: tuple[bytes, bytes, int]) -> _Connection:
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
                _Connection, name, port, ssl=tls, server_hostname=name if tls else None
            ),
            self._timeout,
        )
        return connection

    def _evict_idle(self) -> bool:
        """Close one idle connection (to whichever host), if there is one."""
        for connections in self._idle.values():
            if connections:
                connections.pop(0).close()
                self._open -= 1
                return True
        return False

    def _release(self, origin: tuple[bytes, bytes, int], connection: _Connection) -> None:
        if connection.reusable and not self._closed:
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
        self._closed = True  # a connection still in use closes when it is given back
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


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: asyncio moves the bytes, a ``ResponseReader``
    reads each response. One exchange at a time (the pool sees to that)."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._done: asyncio.Future[None] | None = None
        self._reader: ResponseReader | None = None
        self._lost = False
        self._keep_alive = True

    @property
    def reusable(self) -> bool:
        return not self._lost and self._keep_alive and self._reader is None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._fail(exc or ConnectionResetError("the server closed the connection"))

    def _fail(self, exc: BaseException) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_exception(exc)

    def _complete(self) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        if reader is None:  # nothing was asked: whatever this is, the connection is spent
            self.close()
            return
        try:
            if reader.feed(data):
                self._complete()
        except HttpProtocolError as exc:
            self._fail(exc)
            self.close()

    def eof_received(self) -> bool | None:
        self._lost = True
        reader = self._reader
        if reader is not None:
            try:
                if reader.eof():
                    self._complete()
            except HttpProtocolError as exc:
                self._fail(exc)
        return None  # asyncio closes the transport; connection_lost follows

    async def exchange(
        self, request: httpx.Request, timeout: float
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Send ``request``, wait for its whole response (at most ``timeout`` seconds in all),
        and leave the connection ready for the next one if both sides allow it."""
        transport = self._transport
        if transport is None or self._lost:
            raise ConnectionResetError("the connection is closed")
        try:
            content = request.content
        except httpx.RequestNotRead:  # a streamed body (multipart): read it whole
            content = await request.aread()
        method = request.method
        headers = request.headers.raw
        data = write_request(method, request.url.raw_path, headers, content)
        reader = self._reader = ResponseReader(head_request=method == "HEAD")
        loop = asyncio.get_running_loop()
        done = self._done = loop.create_future()
        transport.write(data)
        timer = loop.call_later(timeout, _time_out, done)
        try:
            await done
        finally:
            timer.cancel()
            self._done = None
            self._reader = None
        self._keep_alive = reader.keep_alive and not reader.leftover and not _asks_to_close(headers)
        return reader.status, reader.headers, reader.body

    def close(self) -> None:
        self._lost = True
        if self._transport is not None:
            self._transport.close()


def _asks_to_close(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(
        name.lower() == b"connection" and b"close" in value.lower() for name, value in headers
    )


def _time_out(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_exception(TimeoutError("the provider did not answer in time"))
