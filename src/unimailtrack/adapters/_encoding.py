"""How adapters encode request bodies: compact UTF-8 JSON, orjson's encoder when installed.

orjson (``unimailtrack[fast]``) encodes a send request in a fraction of the standard library's
time and gives the same bytes; whatever it refuses (a lone surrogate, an integer beyond 64 bits)
goes to the standard library, which encodes it or fails exactly as it always did.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

__all__ = ["dumps"]

_stdlib_encoder: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


_ascii_encoder: Final = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"))


def _stdlib_dumps(body: Any) -> bytes:
    try:
        return _stdlib_encoder.encode(body).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: escaped, the JSON stays valid
        return _ascii_encoder.encode(body).encode("ascii")


def _encoder() -> Callable[[Any], bytes]:
    try:
        from orjson import dumps as orjson_dumps
    except ImportError:  # pragma: no cover - exercised where the fast extra is absent
        return _stdlib_dumps

    def encode(body: Any) -> bytes:
        try:
            return orjson_dumps(body)
        except TypeError:  # orjson.JSONEncodeError
            return _stdlib_dumps(body)

    return encode


dumps: Final[Callable[[Any], bytes]] = _encoder()
"""Compact JSON bytes of a request body."""
