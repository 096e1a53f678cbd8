"""Reading a request body from a blocking stream without holding more than the limit."""

from __future__ import annotations

from typing import Protocol

__all__ = ["Readable", "read_limited"]

_PIECE = 64 * 1024


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def read_limited(stream: Readable, limit: int) -> bytes | None:
    """Read ``stream`` to its end, or return None as soon as it passes ``limit`` bytes."""
    body = bytearray()
    while piece := stream.read(_PIECE):
        body += piece
        if len(body) > limit:
            return None
    return bytes(body)
