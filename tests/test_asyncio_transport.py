"""The default async transport (asyncio + unimailtrack._http1) against a real local HTTP server.

The server is a few lines of asyncio in the test's own event loop; each test scripts its
answers as raw HTTP/1.1, so that keep-alive, connection limits, chunked and compressed bodies,
closed connections and silence are what a real server would send.
"""

from __future__ import annotations

import asyncio
import gzip
import ssl
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import respx

from unimailtrack._asyncio_http import AsyncioTransport
from unimailtrack._http import read_request
from unimailtrack.adapters.sendgrid import SendGridAdapter
from unimailtrack.errors import ConfigurationError, ProviderUnavailable

Answer = Callable[[int], bytes]
"""The raw bytes to answer the n-th request with (b"" to stay silent)."""


class Server:
    def __init__(self, answer: Answer, *, tls: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.tls = tls
        self.requests: list[bytes] = []
        self.connections = 0
        self.open = 0
        self.most_open = 0
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                self.requests.append(head + body)
                answer = self.answer(len(self.requests))
                await asyncio.sleep(0.01)  # let other requests pile up
                if not answer:
                    await asyncio.sleep(30)
                    return
                writer.write(answer)
                await writer.drain()
                if b"connection: close" in answer.lower() or answer.endswith(b"<cut>"):
                    return
        finally:
            self.open -= 1
            writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0, ssl=self.tls)
        port = self.server.sockets[0].getsockname()[1]
        return f"https://localhost:{port}" if self.tls else f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


def ok(body: bytes = b'{"ok": true}', *extra: bytes) -> bytes:
    headers = b"".join(h + b"\r\n" for h in extra)
    return (
        b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\n"
        + headers
        + b"Content-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


def post(base: str, body: bytes = b'{"n": 1}') -> httpx.Request:
    url = httpx.URL(base + "/v3/mail/send")
    headers = httpx.Headers({"Host": url.netloc.decode(), "Content-Type": "application/json"})
    return read_request("POST", url, headers, body)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())


def answers(server: Server, count: int) -> list[httpx.Response]:
    """The responses to ``count`` requests sent one after another through one transport."""

    async def test() -> list[httpx.Response]:
        async with server as base:
            transport = AsyncioTransport(timeout=5)
            try:
                return [await transport.send(post(base)) for _ in range(count)]
            finally:
                await transport.aclose()

    return asyncio.run(test())


def test_sequential_requests_share_one_keep_alive_connection() -> None:
    server = Server(lambda n: ok(f'{{"n": {n}}}'.encode()))

    async def test() -> None:
        async with server as base:
            transport = AsyncioTransport(timeout=5)
            for n in range(1, 6):
                response = await transport.send(post(base))
                assert response.status_code == 202
                assert response.json() == {"n": n}
            await transport.aclose()
        assert server.connections == 1
        assert server.requests[0].startswith(b"POST /v3/mail/send HTTP/1.1\r\n")
        assert server.requests[0].endswith(b'\r\n\r\n{"n": 1}')

    run(test)


def test_no_more_connections_than_the_limit_however_many_requests_wait() -> None:
    server = Server(lambda n: ok())

    async def test() -> None:
        async with server as base:
            transport = AsyncioTransport(timeout=5, max_connections=2)
            answers = await asyncio.gather(*(transport.send(post(base)) for _ in range(9)))
            await transport.aclose()
        assert [a.status_code for a in answers] == [202] * 9
        assert server.most_open <= 2
        assert server.connections == 2

    run(test)


def test_a_connection_the_server_closes_is_replaced() -> None:
    server = Server(lambda n: ok(b"{}", b"Connection: close") if n == 1 else ok())

    async def test() -> None:
        async with server as base:
            transport = AsyncioTransport(timeout=5)
            assert (await transport.send(post(base))).status_code == 202
            await asyncio.sleep(0.05)
            assert (await transport.send(post(base))).status_code == 202
            await transport.aclose()
        assert server.connections == 2

    run(test)


def test_chunked_and_compressed_bodies_are_read_whole_and_decoded() -> None:
    packed = gzip.compress(b'{"message": "ok"}')
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\r\n"
        + b"".join(
            f"{len(part):x}\r\n".encode() + part + b"\r\n" for part in (packed[:5], packed[5:])
        )
        + b"0\r\n\r\n"
    )
    server = Server(lambda n: chunked)
    assert [r.json() for r in answers(server, 2)] == [{"message": "ok"}] * 2
    assert server.connections == 1


def test_silence_past_the_timeout_is_provider_unavailable() -> None:
    server = Server(lambda n: b"")

    async def test() -> None:
        async with server as base:
            transport = AsyncioTransport(timeout=0.2)
            with pytest.raises(ProviderUnavailable, match="timed out"):
                await transport.send(post(base))
            await transport.aclose()

    run(test)


def test_a_refused_connection_is_provider_unavailable() -> None:
    async def test() -> None:
        async with Server(lambda n: ok()) as base:
            pass  # closed again: nothing listens on that port now
        transport = AsyncioTransport(timeout=2)
        with pytest.raises(ProviderUnavailable, match="could not be reached"):
            await transport.send(post(base))
        await transport.aclose()

    run(test)


def test_an_adapter_sends_through_it_by_default_and_a_respx_mock_still_sees_the_request() -> None:
    adapter = SendGridAdapter("SG.key")
    assert isinstance(adapter.async_transport, AsyncioTransport)

    async def test() -> None:
        with respx.mock() as router:
            route = router.post("https://api.sendgrid.com/v3/mail/send").respond(
                202, headers={"X-Message-Id": "m1"}
            )
            response = await adapter.async_transport.send(post("https://api.sendgrid.com"))
            assert route.called
            assert response.status_code == 202
        await adapter.aclose()

    run(test)


def test_an_idle_connection_to_another_host_makes_room_at_the_limit() -> None:
    first, second = Server(lambda n: ok(b'{"host": 1}')), Server(lambda n: ok(b'{"host": 2}'))

    async def test() -> None:
        async with first as one, second as two:
            transport = AsyncioTransport(timeout=5, max_connections=1)
            assert (await transport.send(post(one))).json() == {"host": 1}
            # The one connection allowed is idle, to the first host: the second gets it.
            answer = await asyncio.wait_for(transport.send(post(two)), 5)
            assert answer.json() == {"host": 2}
            assert (await transport.send(post(one))).json() == {"host": 1}
            await transport.aclose()
        assert (first.connections, second.connections) == (2, 1)

    run(test)


def test_form_and_multipart_bodies_go_whole_with_their_length() -> None:
    server = Server(lambda n: ok())

    async def test() -> None:
        async with server as base:
            transport = AsyncioTransport(timeout=5)
            form = httpx.Request("POST", base + "/v3/d/messages", data={"to": "a@example.com"})
            files = httpx.Request(
                "POST",
                base + "/v3/d/messages",
                data={"to": "a@example.com"},
                files={"attachment": ("a.txt", b"attached bytes", "text/plain")},
            )
            assert (await transport.send(form)).status_code == 202
            assert (await transport.send(files)).status_code == 202
            await transport.aclose()
        assert server.requests[0].endswith(b"\r\n\r\nto=a%40example.com")
        assert b"attached bytes" in server.requests[1]
        assert b'name="to"' in server.requests[1]

    run(test)


def test_one_transport_serves_one_event_loop_after_another_and_after_closing() -> None:
    transport = AsyncioTransport(timeout=5)
    for _ in range(2):  # two asyncio.run calls, as a script calling a helper twice does
        server = Server(lambda n: ok())

        async def test(server: Server = server) -> None:
            async with server as base:
                assert (await transport.send(post(base))).status_code == 202
                await transport.aclose()
                assert (await transport.send(post(base))).status_code == 202

        run(test)


def test_bytes_after_a_response_are_never_taken_for_the_next_ones() -> None:
    smuggled = ok(b'{"n": "smuggled"}')
    server = Server(
        lambda n: ok(b'{"n": 1}') + smuggled if n == 1 else ok(f'{{"n": {n}}}'.encode())
    )

    assert [r.json() for r in answers(server, 2)] == [{"n": 1}, {"n": 2}]
    assert server.connections == 2


def test_informational_responses_are_read_past() -> None:
    early = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
    server = Server(lambda n: early + ok())

    assert [(r.status_code, r.json()) for r in answers(server, 2)] == [(202, {"ok": True})] * 2
    assert server.connections == 1


def test_an_http_1_0_answer_is_not_followed_on_its_connection() -> None:
    server = Server(lambda n: b"HTTP/1.0 202 Accepted\r\nContent-Length: 2\r\n\r\n{}")

    assert [r.json() for r in answers(server, 3)] == [{}] * 3
    assert server.connections == 3


def test_a_body_that_runs_to_the_close_is_read_whole() -> None:
    server = Server(lambda n: b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall<cut>")

    assert [r.content for r in answers(server, 2)] == [b"all<cut>"] * 2
    assert server.connections == 2


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Bad: a\x00b\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"a" * 70_000 + b"\r\n\r\n",
        b"garbage\r\n\r\n",
        b"HTTP/1.1 202 Accepted\r\nContent-Length: 100\r\n\r\n{<cut>",
    ],
    ids=["length-and-chunks", "nul-in-field", "head-too-large", "not-http", "cut-short"],
)
def test_a_malformed_answer_is_provider_unavailable_and_the_next_request_works(
    answer: bytes,
) -> None:
    server = Server(lambda n: answer if n == 1 else ok())

    async def test() -> None:
        async with server as base:
            transport = AsyncioTransport(timeout=5)
            with pytest.raises(ProviderUnavailable):
                await transport.send(post(base))
            assert (await transport.send(post(base))).status_code == 202
            await transport.aclose()
        assert server.connections == 2

    run(test)


def test_a_header_that_would_split_the_request_is_refused_before_anything_is_sent() -> None:
    server = Server(lambda n: ok())

    async def test() -> None:
        async with server as base:
            transport = AsyncioTransport(timeout=5)
            request = post(base)
            request.headers["X-Note"] = "a\r\nX-Injected: 1"
            with pytest.raises(ConfigurationError, match="cannot be sent"):
                await transport.send(request)
            assert (await transport.send(post(base))).status_code == 202
            await transport.aclose()
        assert len(server.requests) == 1
        assert b"X-Injected" not in server.requests[0]

    run(test)


def test_an_answer_dripped_a_byte_at_a_time_is_cut_off_by_the_timeout() -> None:
    """The timeout bounds the whole exchange, not each read: a server that keeps sending one
    byte at a time never finishes its answer before the transport gives up."""
    answer = ok(b'{"slow": true}')
    sent: list[int] = []

    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        try:
            for count, byte in enumerate(answer, start=1):
                writer.write(bytes([byte]))
                await writer.drain()
                sent.append(count)
                await asyncio.sleep(0.02)
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def test() -> None:
        server = await asyncio.start_server(drip, "127.0.0.1", 0)
        base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        transport = AsyncioTransport(timeout=0.3)
        with pytest.raises(ProviderUnavailable, match="timed out"):
            await transport.send(post(base))
        await transport.aclose()
        server.close()

    run(test)
    assert 0 < max(sent) < len(answer)


# --------------------------------------------------------------------------- TLS


@pytest.fixture
def server_tls(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context with a self-signed certificate for localhost, and the certificate's
    file, which a client trusts through SSL_CERT_FILE."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context, cert_file


def test_over_tls_requests_share_a_connection_and_read_chunked_and_closing_answers(
    server_tls: tuple[ssl.SSLContext, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every provider is reached over TLS: the same reading of each answer through the TLS
    transport, whose end of a body that runs to the close is a close_notify."""
    context, cert_file = server_tls
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
    closing = b"HTTP/1.1 200 OK\r\n\r\nto the end<cut>"
    server = Server(lambda n: ok() if n == 1 else chunked if n == 2 else closing, tls=context)
    found = answers(server, 4)
    closed = b"to the end<cut>"
    assert [r.content for r in found] == [b'{"ok": true}', b"{}", closed, closed]
    assert server.connections == 2  # the third answer ran to the close: the fourth reconnected
    assert server.requests[0].startswith(b"POST /v3/mail/send HTTP/1.1\r\n")


def test_a_certificate_not_trusted_is_provider_unavailable_and_nothing_is_sent(
    server_tls: tuple[ssl.SSLContext, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    server = Server(lambda n: ok(), tls=server_tls[0])
    with pytest.raises(ProviderUnavailable):
        answers(server, 1)
    assert server.requests == []
