from __future__ import annotations

import asyncio
import gzip
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx
import pytest

from unimailtrack import ConfigurationError, ProviderUnavailable, RateLimited, SendError
from unimailtrack._asyncio_http import AsyncioTransport
from unimailtrack._http import (
    AiohttpTransport,
    HttpxAsyncTransport,
    HttpxTransport,
    RetryPolicy,
    _presets_body,
    acall_with_retry,
    call_with_retry,
    parse_retry_after,
    read_request,
    read_response,
    retry_delay,
)

POLICY = RetryPolicy(max_retries=3, initial_delay=0.5, max_delay=8.0, max_retry_after=60)


def test_backoff_grows_is_capped_and_jittered() -> None:
    err = ProviderUnavailable("down")
    assert retry_delay(POLICY, 1, err, rng=lambda: 0.0) == 0.5
    assert retry_delay(POLICY, 2, err, rng=lambda: 0.0) == 1.0
    assert retry_delay(POLICY, 3, err, rng=lambda: 1.0) == pytest.approx(2.0 * 0.75)
    long = RetryPolicy(max_retries=10)
    assert retry_delay(long, 10, err, rng=lambda: 0.0) == 8.0
    assert retry_delay(POLICY, 4, err) is None


def test_only_retryable_errors_retry() -> None:
    assert retry_delay(POLICY, 1, SendError("bad")) is None
    assert retry_delay(POLICY, 1, ValueError("x")) is None


def test_retry_after_is_honoured_up_to_a_bound() -> None:
    assert retry_delay(POLICY, 1, RateLimited("slow", retry_after=7)) == 7
    assert retry_delay(POLICY, 1, RateLimited("slow", retry_after=600)) is None


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after("12") == 12
    assert parse_retry_after("1700000100", now=1700000000) == 100
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470) == 10
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_call_with_retry_sleeps_between_attempts() -> None:
    outcomes: list[object] = [ProviderUnavailable("a"), RateLimited("b", retry_after=3), "ok"]
    slept: list[float] = []

    def attempt() -> str:
        item = outcomes.pop(0)
        if isinstance(item, Exception):
            raise item
        return str(item)

    assert call_with_retry(POLICY, attempt, sleep=slept.append) == "ok"
    assert len(slept) == 2
    assert slept[1] == 3


def test_async_retry_gives_up_after_the_budget() -> None:
    calls = 0

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        raise ProviderUnavailable("down")

    async def nosleep(_: float) -> None:
        return None

    with pytest.raises(ProviderUnavailable):
        asyncio.run(acall_with_retry(RetryPolicy(max_retries=2), attempt, sleep=nosleep))
    assert calls == 3


def test_httpx_transports_map_network_errors() -> None:
    def boom(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("slow", request=request)

    sync = HttpxTransport(httpx.Client(transport=httpx.MockTransport(boom)))
    with pytest.raises(ProviderUnavailable, match="timed out"):
        sync.send(httpx.Request("GET", "https://x.invalid/"))
    sync.close()

    async def run() -> None:
        transport = HttpxAsyncTransport(httpx.AsyncClient(transport=httpx.MockTransport(boom)))
        try:
            await transport.send(httpx.Request("GET", "https://x.invalid/"))
        finally:
            await transport.aclose()

    with pytest.raises(ProviderUnavailable):
        asyncio.run(run())


class _Echo(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(202)
        self.send_header("X-Echo-Header", self.headers.get("X-Test", ""))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def echo_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_aiohttp_transport_speaks_httpx_requests(echo_server: str) -> None:
    async def run() -> httpx.Response:
        transport = AiohttpTransport()
        try:
            request = httpx.Request(
                "POST", f"{echo_server}/v3/mail/send", headers={"X-Test": "yes"}, json={"a": 1}
            )
            return await transport.send(request)
        finally:
            await transport.aclose()

    response = asyncio.run(run())
    assert response.status_code == 202
    assert response.headers["x-echo-header"] == "yes"
    assert response.json() == {"a": 1}


def test_aiohttp_transport_maps_connection_errors() -> None:
    async def run() -> None:
        transport = AiohttpTransport(timeout=2)
        try:
            await transport.send(httpx.Request("POST", "http://127.0.0.1:9/", content=b"x"))
        finally:
            await transport.aclose()

    with pytest.raises(ProviderUnavailable, match="could not be reached"):
        asyncio.run(run())


class _Recorder(BaseHTTPRequestHandler):
    """Answers gzip-compressed and chunked, with a non-ASCII header, and remembers what came."""

    received: ClassVar[list[tuple[str, dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Recorder.received.append((self.path, dict(self.headers.items()), body))
        packed = gzip.compress(b'{"ok": true}')
        self.send_response(202)
        self.send_header("X-Message-Id", "m-1")
        self.send_header("X-Name", "Zo\u00eb".encode().decode("latin-1"))  # UTF-8 on the wire
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(packed), packed))

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def recorder() -> Iterator[str]:
    _Recorder.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_aiohttp_transport_sends_the_request_as_built(recorder: str) -> None:
    request = httpx.Request(
        "POST",
        f"{recorder}/v3/mail/send?x=1",
        headers={"Authorization": "Bearer k", "X-Test": "Zo\u00eb".encode()},
        content=b'{"a":1}',
    )

    async def run() -> httpx.Response:
        transport = AiohttpTransport()
        try:
            return await transport.send(request)
        finally:
            await transport.aclose()

    response = asyncio.run(run())
    [(path, headers, body)] = _Recorder.received
    assert path == "/v3/mail/send?x=1"
    assert body == b'{"a":1}'
    assert headers["Host"] == request.headers["host"]
    assert headers["Authorization"] == "Bearer k"
    assert headers["Content-Length"] == "7"
    assert headers["X-Test"].encode("latin-1") == "Zo\u00eb".encode()
    # Decoded by aiohttp, so neither encoding header survives; the rest arrive as sent.
    assert response.status_code == 202
    assert response.json() == {"ok": True}
    assert "content-encoding" not in response.headers
    assert "transfer-encoding" not in response.headers
    assert response.headers["x-message-id"] == "m-1"
    assert response.headers["x-name"] == "Zo\u00eb"
    assert response.request is request


RESPONSES = [
    (202, [(b"X-Message-Id", b"m-1"), (b"Content-Length", b"0")], b""),
    (400, [(b"Content-Type", b"application/json")], b'{"errors": [{"message": "bad"}]}'),
    (
        200,
        [(b"X-Name", "Zo\u00eb".encode()), (b"Set-Cookie", b"a=1"), (b"Set-Cookie", b"b=2")],
        b"x",
    ),
    (503, [], b""),
]


@pytest.mark.parametrize(("status", "headers", "content"), RESPONSES)
def test_a_read_response_is_what_httpx_builds_from_the_same_body(
    status: int, headers: list[tuple[bytes, bytes]], content: bytes
) -> None:
    request = httpx.Request("POST", "https://api.example.com/v3/mail/send")
    fast = read_response(status, headers, content, request)
    plain = httpx.Response(status, headers=headers, content=content, request=request)

    assert fast.status_code == plain.status_code
    assert fast.headers.multi_items() == plain.headers.multi_items()
    assert fast.content == plain.content == content
    assert fast.text == plain.text
    assert fast.read() == content
    assert asyncio.run(fast.aread()) == content
    assert (fast.is_closed, fast.is_stream_consumed) == (plain.is_closed, plain.is_stream_consumed)
    assert fast.request is request


def test_a_read_request_carries_its_body_and_length_to_any_transport() -> None:
    url = httpx.URL("https://api.example.com/v3/mail/send")
    headers = httpx.Headers({"Host": "api.example.com", "Authorization": "Bearer k"})
    request = read_request("POST", url, headers, b'{"a":1}')
    plain = httpx.Request("POST", url, headers=headers, content=b'{"a":1}')

    assert sorted(request.headers.multi_items()) == sorted(plain.headers.multi_items())
    assert request.content == request.read() == plain.content
    assert "content-length" not in headers  # the adapter's own headers are left alone

    seen: list[bytes] = []

    def handler(sent: httpx.Request) -> httpx.Response:
        seen.append(sent.read())
        return httpx.Response(202)

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        assert client.send(request).status_code == 202
    assert seen == [b'{"a":1}']


def test_the_installed_httpx_lets_a_read_body_be_given_to_requests_and_responses() -> None:
    # When a future httpx keeps its body elsewhere, read_request and read_response fall back
    # to its public ways and this says so.
    assert _presets_body()


def _send_through(kind: str, request: httpx.Request) -> None:
    if kind == "httpx":
        transport = HttpxTransport(httpx.Client())
        try:
            transport.send(request)
        finally:
            transport.close()
        return

    async def run() -> None:
        through: AsyncioTransport | HttpxAsyncTransport | AiohttpTransport = (
            AsyncioTransport()
            if kind == "default"
            else AiohttpTransport()
            if kind == "aiohttp"
            else HttpxAsyncTransport(httpx.AsyncClient())
        )
        try:
            await through.send(request)
        finally:
            await through.aclose()

    asyncio.run(run())


@pytest.mark.parametrize("kind", ["default", "httpx", "httpx-async", "aiohttp"])
def test_a_header_that_could_split_the_request_is_a_configuration_error_on_every_transport(
    kind: str, recorder: str
) -> None:
    """An API key read with its line break (or a header built from input) would end the
    request early and add one of its own: every transport refuses to send it, with the same
    typed error, which the mailer does not retry."""
    request = httpx.Request(
        "POST",
        f"{recorder}/v3/mail/send",
        headers={"Authorization": "Bearer key\r\nX-Injected: 1"},
        content=b"{}",
    )
    with pytest.raises(ConfigurationError, match="cannot be sent"):
        _send_through(kind, request)
    assert not any("X-Injected" in headers for _, headers, _ in _Recorder.received)
