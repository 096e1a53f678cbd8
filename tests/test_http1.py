"""HTTP/1.1 as the default async transport writes and reads it (``unimailtrack._http1``).

h11 is the oracle: every well-formed response hypothesis makes is read by both, cut into
pieces at random, and both must agree on the status, the fields, the body and whether the
connection can be used again; every request we write is read back by h11 acting as the
server. Then the responses that must be refused, one attack at a time.
"""

from __future__ import annotations

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unimailtrack._http1 import (
    MAX_BODY,
    MAX_HEAD,
    HttpProtocolError,
    ResponseReader,
    write_request,
)

TOKEN = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
VISIBLE = "".join(chr(c) for c in range(0x21, 0x7F))
FRAMING = {"content-length", "transfer-encoding", "connection"}

names = st.text(TOKEN, min_size=1, max_size=12).filter(lambda n: n.lower() not in FRAMING)
values = st.builds(
    lambda first, inner, last: (first + inner + last).strip(),
    st.text(VISIBLE, min_size=1, max_size=1),
    st.text(VISIBLE + " \t", max_size=20),
    st.text(VISIBLE, max_size=1),
)
fields = st.lists(st.tuples(names, values), max_size=6)


@st.composite
def responses(draw: st.DrawFn) -> tuple[bytes, bool]:
    """A well-formed response (maybe after informational ones) and whether it was to HEAD."""
    version = draw(st.sampled_from(["1.0", "1.1"]))
    status = draw(st.integers(200, 599))
    reason = draw(st.text("abcdefghij ABC", max_size=12))
    headers = [(n.encode(), v.encode()) for n, v in draw(fields)]
    body = draw(st.binary(max_size=300))
    framings = ["length", "chunked", "close"] if version == "1.1" else ["length", "close"]
    framing = draw(st.sampled_from(framings))
    if draw(st.booleans()):
        headers.append((b"Connection", draw(st.sampled_from([b"close", b"keep-alive", b"Close"]))))
    if status in (204, 304):
        body, framing = b"", "length"
    head_request = draw(st.booleans()) and framing == "length"
    payload = b""
    if framing == "length":
        headers.append((b"Content-Length", str(len(body)).encode()))
        payload = b"" if head_request else body
    elif framing == "chunked":
        headers.append((b"Transfer-Encoding", b"chunked"))
        cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=4)))
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
        for piece in pieces:
            if piece:
                extension = draw(st.sampled_from([b"", b";name=value", b";x"]))
                payload += b"%x%s\r\n%s\r\n" % (len(piece), extension, piece)
        payload += b"0\r\n"
        for name, value in draw(fields):
            payload += name.encode() + b": " + value.encode() + b"\r\n"
        payload += b"\r\n"
    else:
        payload = body
    informational = b""
    if version == "1.1":
        for code in draw(st.lists(st.sampled_from([100, 102, 103]), max_size=2)):
            informational += b"HTTP/1.1 %d Wait\r\nLink: </a>\r\n\r\n" % code
    line = f"HTTP/{version} {status}" + (f" {reason}" if reason or draw(st.booleans()) else "")
    head = line.encode() + b"\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in headers)
    return informational + head + b"\r\n" + payload, head_request


def pieces_of(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    cut = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    return [piece for piece in cut if piece]  # an empty piece would tell h11 the stream ended


Read = tuple[int, list[tuple[bytes, bytes]], bytes, bool]
"""Status, fields, body, and whether the connection can carry another request."""


def by_h11(pieces: list[bytes], head_request: bool) -> Read:
    conn = h11.Connection(h11.CLIENT)
    method = b"HEAD" if head_request else b"GET"
    conn.send(h11.Request(method=method, target=b"/", headers=[(b"Host", b"x")]))
    conn.send(h11.EndOfMessage())
    status, headers, body = 0, [], b""
    for piece in [*pieces, b""]:
        conn.receive_data(piece)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                break
            if type(event) is h11.Response:
                status, headers = event.status_code, list(event.headers.raw_items())
            elif type(event) is h11.Data:
                body += event.data
            elif type(event) is h11.EndOfMessage:
                reusable = conn.their_state is h11.DONE and piece != b""  # not ended by the close
                return status, headers, body, reusable
    raise AssertionError("h11 did not finish the response")


def by_us(pieces: list[bytes], head_request: bool) -> Read:
    reader = ResponseReader(head_request=head_request)
    done = False
    for piece in pieces:
        done = reader.feed(piece)
        if done:
            break
    if not done:
        assert reader.eof()
    return reader.status, reader.headers, reader.body, reader.keep_alive


@settings(max_examples=400, deadline=None)
@given(responses(), st.lists(st.integers(0, 2000), max_size=8))
def test_every_well_formed_response_reads_as_h11_reads_it(
    response: tuple[bytes, bool], cuts: list[int]
) -> None:
    data, head_request = response
    pieces = pieces_of(data, cuts)
    assert by_us(pieces, head_request) == by_h11(pieces, head_request)


@settings(max_examples=100, deadline=None)
@given(responses())
def test_a_response_fed_one_byte_at_a_time_reads_the_same(response: tuple[bytes, bool]) -> None:
    data, head_request = response
    whole = by_us([data], head_request)
    assert by_us([data[i : i + 1] for i in range(len(data))], head_request) == whole


def test_a_head_in_lines_ending_in_lf_alone_reads_as_h11_reads_it() -> None:
    data = b"HTTP/1.1 200 OK\nContent-Type: text/plain\nContent-Length: 2\n\nok"
    assert (
        by_us([data], False)
        == by_h11([data], False)
        == (
            200,
            [(b"Content-Type", b"text/plain"), (b"Content-Length", b"2")],
            b"ok",
            True,
        )
    )


def test_an_obsolete_line_fold_joins_its_field_with_a_space() -> None:
    reader = ResponseReader()
    assert reader.feed(b"HTTP/1.1 200 OK\r\nX-Long: one\r\n  two\r\nContent-Length: 0\r\n\r\n")
    assert reader.headers[0] == (b"X-Long", b"one two")


def test_repeated_equal_content_lengths_are_one_length() -> None:
    reader = ResponseReader()
    assert reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nok")
    assert reader.body == b"ok"


def test_bytes_after_the_response_mark_the_connection_spent() -> None:
    reader = ResponseReader()
    assert reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n")
    assert (reader.body, reader.keep_alive, reader.leftover) == (b"ok", True, True)
    late = ResponseReader()
    assert late.feed(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert late.feed(b"x") and late.leftover


def test_a_body_cut_short_by_the_close_is_refused() -> None:
    reader = ResponseReader()
    assert not reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
    with pytest.raises(HttpProtocolError, match="closed the connection"):
        reader.eof()
    chunked = ResponseReader()
    assert not chunked.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab")
    with pytest.raises(HttpProtocolError):
        chunked.eof()


REFUSED = {
    "not HTTP": b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    "HTTP/2 status line": b"HTTP/2 200\r\n\r\n",
    "two-digit status": b"HTTP/1.1 20 OK\r\n\r\n",
    "switching protocols unasked": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n",
    "CR inside a value": b"HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 0\r\n\r\n",
    "NUL inside a value": b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 0\r\n\r\n",
    "space before the colon": b"HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n",
    "no colon": b"HTTP/1.1 200 OK\r\nContent-Length\r\n\r\n",
    "fold before any field": b"HTTP/1.1 200 OK\r\n folded\r\nContent-Length: 0\r\n\r\n",
    "length and chunks both": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "a coding under chunked": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"
    ),
    "chunked twice": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
    "conflicting lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
    "negative length": b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    "signed length": b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok",
    "hex length": b"HTTP/1.1 200 OK\r\nContent-Length: 0x2\r\n\r\nok",
    "huge length": b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
    "length over the cap": b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1),
    "chunk size not hex": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "chunk size overflow": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n"
    ),
    "chunks over the cap": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % (MAX_BODY + 1)
    ),
    "chunk longer than its size": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n"
    ),
    "chunk line in LF alone": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\nab\r\n",
    "bad trailer": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nno colon\r\n\r\n"),
}


@pytest.mark.parametrize("attack", REFUSED.values(), ids=REFUSED.keys())
def test_a_malformed_response_is_refused(attack: bytes) -> None:
    with pytest.raises(HttpProtocolError):
        ResponseReader().feed(attack)


def feed_all(reader: ResponseReader, pieces: list[bytes], *, then_close: bool = False) -> None:
    for piece in pieces:
        reader.feed(piece)
    if then_close:
        reader.eof()


@pytest.mark.parametrize("attack", REFUSED.values(), ids=REFUSED.keys())
def test_a_malformed_response_is_refused_however_it_is_cut(attack: bytes) -> None:
    bytewise = [attack[i : i + 1] for i in range(len(attack))]
    with pytest.raises(HttpProtocolError):
        feed_all(ResponseReader(), bytewise, then_close=True)


def test_an_endless_head_is_refused_once_it_passes_the_bound_and_holds_no_more() -> None:
    reader = ResponseReader()
    reader.feed(b"HTTP/1.1 200 OK\r\n")
    line = b"X-Pad: " + b"a" * 1000 + b"\r\n"
    with pytest.raises(HttpProtocolError, match="too large"):
        feed_all(reader, [line] * (MAX_HEAD // len(line) + 2))
    dripped = ResponseReader()
    for _ in range(MAX_HEAD):
        dripped.feed(b"a")
    assert len(dripped._pending) == MAX_HEAD
    with pytest.raises(HttpProtocolError, match="too large"):
        dripped.feed(b"a")


def test_endless_trailers_are_refused() -> None:
    reader = ResponseReader()
    reader.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n")
    with pytest.raises(HttpProtocolError):
        feed_all(reader, [b"X-T: " + b"a" * 93 + b"\r\n"] * (MAX_HEAD // 100 + 2))


def test_a_body_that_runs_to_the_close_is_refused_past_the_cap() -> None:
    reader = ResponseReader()
    reader.feed(b"HTTP/1.1 200 OK\r\n\r\n")
    block = b"a" * (1 << 20)
    with pytest.raises(HttpProtocolError, match="too large"):
        feed_all(reader, [block] * (MAX_BODY // len(block) + 1))


# --------------------------------------------------------------------------- requests

request_fields = st.lists(
    st.tuples(names, values).map(lambda f: (f[0].encode(), f[1].encode())), max_size=6
)


def read_by_h11_server(data: bytes) -> tuple[bytes, bytes, list[tuple[bytes, bytes]], bytes]:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    request = conn.next_event()
    assert type(request) is h11.Request
    body = b""
    while True:
        event = conn.next_event()
        if type(event) is h11.Data:
            body += event.data
        else:
            assert type(event) is h11.EndOfMessage
            break
    return request.method, request.target, list(request.headers.raw_items()), body


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"]),
    st.text(VISIBLE, min_size=1, max_size=30).map(lambda t: ("/" + t).encode()),
    request_fields,
    st.binary(max_size=200),
)
def test_every_request_written_reads_back_through_h11(
    method: str, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    data = write_request(method, target, [(b"Host", b"api.example.com"), *headers], body)
    got = read_by_h11_server(data)
    assert got[0] == method.encode() and got[1] == target and got[3] == body
    sent = [(b"Host", b"api.example.com"), *headers]
    if body:
        sent.append((b"Content-Length", str(len(body)).encode()))
    assert got[2] == sent


def test_the_length_written_is_the_bodys_whatever_the_headers_said() -> None:
    headers = [(b"Host", b"h"), (b"Content-Length", b"999"), (b"Transfer-Encoding", b"chunked")]
    data = write_request("POST", b"/", headers, b"abc")
    assert read_by_h11_server(data)[2:] == ([(b"Host", b"h"), (b"Content-Length", b"3")], b"abc")
    empty = write_request("POST", b"/", [(b"Host", b"h"), (b"Content-Length", b"0")], b"")
    assert empty.endswith(b"Content-Length: 0\r\n\r\n")


INJECTIONS = {
    "CR LF in a value": ("POST", b"/", [(b"X-A", b"a\r\nX-Injected: 1")]),
    "LF in a value": ("POST", b"/", [(b"X-A", b"a\nb")]),
    "NUL in a value": ("POST", b"/", [(b"X-A", b"a\x00b")]),
    "colon in a name": ("POST", b"/", [(b"X-A: b\r\nX", b"c")]),
    "space in a name": ("POST", b"/", [(b"X A", b"b")]),
    "empty name": ("POST", b"/", [(b"", b"b")]),
    "space in the target": ("GET", b"/a HTTP/1.1\r\nX: y", []),
    "empty target": ("GET", b"", []),
    "space in the method": ("GET /evil", b"/", []),
    "non-ASCII method": ("GÉT", b"/", []),
}


@pytest.mark.parametrize("injection", INJECTIONS.values(), ids=INJECTIONS.keys())
def test_a_request_that_could_be_read_as_two_is_not_written(
    injection: tuple[str, bytes, list[tuple[bytes, bytes]]],
) -> None:
    method, target, headers = injection
    with pytest.raises(HttpProtocolError):
        write_request(method, target, [(b"Host", b"h"), *headers], b"")
