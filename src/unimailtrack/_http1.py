"""HTTP/1.1 for the default async transport: requests written, responses read (RFC 9112).

Only the client's half, and only what a provider's API needs: one request at a time on a
connection, its whole body in memory, the whole response read before it is returned. Written
here rather than taken from h11 because h11, pure Python and general, costs about 50 us an
exchange, a third of an async send's CPU with many sends in flight; this costs a fifth of
that (``bench/http1.py``). The rules it follows are h11's where h11 has one (the tests run
both on the same bytes), and stricter where a response could be read two ways:

- Field names are tokens and field values visible characters, spaces and tabs; anything
  else (a CR or NUL in a value, a space before the colon) refuses the response, as it refuses
  a request header we were asked to write. A head's lines may end in LF alone (RFC 9112 2.2
  allows it); a chunked body's lines must end in CR LF.
- The body's length is ``Content-Length`` (several copies must agree), or ``chunked``, or
  the rest of the connection; a response that carries both ``Transfer-Encoding`` and
  ``Content-Length`` is refused (RFC 9112 6.3: "ought to be handled as an error"), as is any
  transfer coding but ``chunked``.
- The head is at most ``MAX_HEAD`` bytes and the body at most ``MAX_BODY``.
- Bytes after the end of the response, before a next request was sent, are not kept for that
  request: the connection is not used again.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

__all__ = [
    "MAX_BODY",
    "MAX_HEAD",
    "HttpProtocolError",
    "ResponseReader",
    "UnwritableRequest",
    "write_request",
]

MAX_HEAD: Final = 64 * 1024
"""The most bytes a response's head (status line and fields) or its trailers may take."""
MAX_BODY: Final = 64 * 1024 * 1024
"""The most bytes a response's body may take, decoded from its chunks."""


class HttpProtocolError(Exception):
    """A request that cannot be written, or a response that breaks HTTP/1.1 (the connection
    it came on is not used again)."""


class UnwritableRequest(HttpProtocolError):
    """A request whose method, target or a header field would let it be read as something
    else (a line break in a value, a space in a name): it is not sent."""


_TOKEN: Final = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_VALUE: Final = rb"(?:[\x21-\x7e\x80-\xff](?:[ \t\x21-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)?"
_NAME = re.compile(_TOKEN)
_FIELD_VALUE = re.compile(_VALUE)
_FIELD = re.compile(rb"(" + _TOKEN + rb"):[ \t]*(" + _VALUE + rb")[ \t]*")
_TARGET = re.compile(rb"[\x21-\x7e]+")
_STATUS = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: [\t\x20-\x7e\x80-\xff]*)?")
_CHUNK = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[\t\x20-\x7e\x80-\xff]*)?")
_HEAD_END = re.compile(rb"\n\r?\n")
_CR: Final = 13
_FRAMING: Final = frozenset({b"content-length", b"transfer-encoding"})


def write_request(
    method: str, target: bytes, headers: Sequence[tuple[bytes, bytes]], body: bytes
) -> bytes:
    """The bytes of one request, its framing (``Content-Length``) derived from ``body``
    whatever ``headers`` said of it. Raises ``HttpProtocolError`` for a method, target or
    field that would let one request be read as something else (``UnwritableRequest``)."""
    verb = method.encode("ascii", "replace")
    if _NAME.fullmatch(verb) is None:
        raise UnwritableRequest(f"not a request method: {method!r}")
    if _TARGET.fullmatch(target) is None:
        raise UnwritableRequest(f"not a request target: {target!r}")
    parts = [verb, b" ", target, b" HTTP/1.1\r\n"]
    framed = bool(body)
    for name, value in headers:
        if _NAME.fullmatch(name) is None or _FIELD_VALUE.fullmatch(value) is None:
            raise UnwritableRequest(f"not a header field that can be sent: {name!r}")
        if name.lower() in _FRAMING:
            framed = True
            continue
        parts += (name, b": ", value, b"\r\n")
    if framed:
        parts += (b"Content-Length: ", str(len(body)).encode("ascii"), b"\r\n")
    parts += (b"\r\n", body)
    return b"".join(parts)


_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _UNTIL_CLOSE, _DONE = range(8)


class ResponseReader:
    """Reads one response from the bytes ``feed`` is given, as they arrive.

    ``feed`` returns True once the response is complete; ``status``, ``headers`` (raw name and
    value pairs, in order) and ``body`` then hold it, and ``keep_alive`` says whether the
    connection can carry another request. ``eof`` is how the end of the connection is told.
    Informational (1xx) responses are read past. Raises ``HttpProtocolError``.

    A body is taken as it comes, piece by piece; only a head, a chunk's size line or the
    trailers wait in a buffer for the rest of their line (at most ``MAX_HEAD`` bytes, searched
    from where the last search stopped), so a server that sends one byte at a time costs time,
    not memory or a rescan per byte."""

    __slots__ = (
        "_chunks",
        "_no_body",
        "_pending",
        "_remaining",
        "_scanned",
        "_size",
        "_state",
        "body",
        "headers",
        "keep_alive",
        "leftover",
        "status",
    )

    def __init__(self, *, head_request: bool = False) -> None:
        self._state = _HEAD
        self._pending = bytearray()
        self._scanned = 0
        self._no_body = head_request
        self._chunks: list[bytes] = []
        self._remaining = 0
        self._size = 0
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.keep_alive = False
        self.leftover = False
        """Whether bytes came after the response (the connection is then not used again)."""

    def feed(self, data: bytes) -> bool:
        buffer: bytes | bytearray = data
        if self._pending:
            self._pending += data
            buffer, self._pending = self._pending, bytearray()
        while True:
            state = self._state
            if state is _DONE:
                self.leftover = self.leftover or bool(buffer)
                return True
            if not buffer:
                return False
            if state is _LENGTH or state is _CHUNK_DATA:
                piece = buffer[: self._remaining]
                self._chunks.append(bytes(piece))
                self._remaining -= len(piece)
                buffer = buffer[len(piece) :]
                if not self._remaining:
                    if state is _LENGTH:
                        self._finish()
                    else:
                        self._state = _CHUNK_END
                continue
            if state is _UNTIL_CLOSE:
                self._add(bytes(buffer))
                return False
            rest = self._read_head(buffer) if state is _HEAD else self._read_line(buffer)
            if rest is None:  # the line goes on in bytes still to come
                self._pending = buffer if isinstance(buffer, bytearray) else bytearray(buffer)
                return False
            self._scanned = 0
            buffer = rest

    def eof(self) -> bool:
        """The server closed the connection: whether that ends the response (it does when
        the body runs to the close); raises ``HttpProtocolError`` when it cuts it short."""
        if self._state is _DONE:
            return True
        if self._state is _UNTIL_CLOSE:
            self._finish()
            return True
        raise HttpProtocolError("the server closed the connection before the response ended")

    # ------------------------------------------------------------------ the parts

    def _read_head(self, buffer: bytes | bytearray) -> bytes | bytearray | None:
        end = _HEAD_END.search(buffer, max(0, self._scanned - 2))
        if end is None or end.start() > MAX_HEAD:
            if len(buffer) > MAX_HEAD:
                raise HttpProtocolError("the response's head is too large")
            self._scanned = len(buffer)
            return None
        lines = bytes(buffer[: end.start()]).split(b"\n")
        rest = buffer[end.end() :]
        status_line = lines[0].removesuffix(b"\r")
        found = _STATUS.fullmatch(status_line)
        if found is None:
            raise HttpProtocolError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
        status = int(found[2])
        headers = _fields(lines[1:])
        if status < 200:
            if status == 101:
                raise HttpProtocolError("the server switched protocols, which was not asked for")
            return rest  # an informational response: the real one follows
        self.status, self.headers = status, headers
        lengths: list[bytes] = []
        codings: list[bytes] = []
        close = found[1] == b"0"  # HTTP/1.0 closes after each response
        for name, value in headers:
            lower = name.lower()
            if lower == b"content-length":
                lengths.extend(part.strip(b" \t") for part in value.split(b","))
            elif lower == b"transfer-encoding":
                codings.extend(part.strip(b" \t").lower() for part in value.split(b","))
            elif lower == b"connection":
                close = close or any(
                    token.strip(b" \t").lower() == b"close" for token in value.split(b",")
                )
        self.keep_alive = not close
        if self._no_body or status in (204, 304):
            self._finish()
        elif codings:
            if lengths:
                raise HttpProtocolError("a response framed by both its length and its chunks")
            if codings != [b"chunked"]:
                raise HttpProtocolError("a transfer coding other than chunked")
            self._state = _CHUNK_SIZE
        elif lengths:
            if len(set(lengths)) != 1 or not lengths[0].isdigit() or len(lengths[0]) > 19:
                raise HttpProtocolError("a response whose Content-Length cannot be read")
            self._remaining = self._check_size(int(lengths[0]))
            if self._remaining:
                self._state = _LENGTH
            else:
                self._finish()
        else:
            self.keep_alive = False
            self._state = _UNTIL_CLOSE
        return rest

    def _read_line(self, buffer: bytes | bytearray) -> bytes | bytearray | None:
        end = buffer.find(b"\n", self._scanned)
        if end < 0:
            if len(buffer) > MAX_HEAD:
                raise HttpProtocolError("a chunk's size line or the trailers are too large")
            self._scanned = len(buffer)
            return None
        if end == 0 or buffer[end - 1] != _CR:
            raise HttpProtocolError("a line of a chunked body ends in LF alone")
        line, rest = bytes(buffer[: end - 1]), buffer[end + 1 :]
        state = self._state
        if state is _CHUNK_END:
            if line:
                raise HttpProtocolError("a chunk is longer than its size says")
            self._state = _CHUNK_SIZE
        elif state is _TRAILERS:
            if not line:
                self._finish()
                return rest
            self._size += len(line) + 2
            if self._size > MAX_HEAD or _FIELD.fullmatch(line) is None:
                raise HttpProtocolError("a trailer field that cannot be read")
        else:
            found = _CHUNK.fullmatch(line)
            if found is None:
                raise HttpProtocolError("a chunk's size line cannot be read")
            size = int(found[1], 16)
            if size:
                self._remaining = self._check_size(self._size + size) - self._size
                self._size += size
                self._state = _CHUNK_DATA
            else:
                self._size = 0
                self._state = _TRAILERS
        return rest

    def _check_size(self, total: int) -> int:
        if total > MAX_BODY:
            raise HttpProtocolError("the response's body is too large")
        return total

    def _add(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > MAX_BODY:
            raise HttpProtocolError("the response's body is too large")
        self._chunks.append(data)

    def _finish(self) -> None:
        self.body = b"".join(self._chunks)
        self._chunks = []
        self._state = _DONE


def _fields(lines: Sequence[bytes]) -> list[tuple[bytes, bytes]]:
    """The fields of a head's lines (line endings of CR LF or LF), an obsolete line fold
    joined to its field with a space (RFC 9112 5.2)."""
    fields: list[tuple[bytes, bytes]] = []
    for raw in lines:
        line = raw.removesuffix(b"\r")
        if line[:1] in (b" ", b"\t"):
            if not fields:
                raise HttpProtocolError("a response's first field starts with a space")
            folded = line.strip(b" \t")
            name, value = fields[-1]
            fields[-1] = (name, value + b" " + folded if value else folded)
            if _FIELD_VALUE.fullmatch(fields[-1][1]) is None:
                raise HttpProtocolError("a header field that cannot be read")
            continue
        found = _FIELD.fullmatch(line)
        if found is None:
            raise HttpProtocolError(f"a header field that cannot be read: {line[:80]!r}")
        fields.append((found[1], found[2]))
    return fields
