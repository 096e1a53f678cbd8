"""Reading JSON: the one bounded way to decode what a provider sent.

orjson when it is installed (``unimailtrack[fast]``): it decodes a webhook body in about a
third of the standard library's time, and decoding is a third to a half of what parsing a
webhook costs. Without it the standard library's decoder does the same job. Both raise a
``ValueError`` subclass on malformed input.

:func:`load_untrusted` is how every adapter reads a provider's body. Before anything decodes
it, it bounds the size (``MAX_BYTES``) and the nesting (``MAX_DEPTH``): the standard library's
decoder recurses (a body nested 1,000 deep raises ``RecursionError``), orjson stops at 1,024
levels but then everything downstream that walks the value recurses in turn (``repr``,
``json.dumps``, orjson's own encoder stops at 254). Real provider events nest six or seven
levels, so 64 is generous. The nesting is measured on the bytes, without decoding: escaped
backslashes and quotes are removed, everything but brackets and quotes deleted (one
``bytes.translate``), strings dropped, and matched pairs of brackets removed level by level;
about a quarter of what orjson takes to decode the same body. A body with no more brackets than
the limit cannot nest deeper than it (balanced or not) and is not scanned at all. Anything
refused raises :class:`UntrustedJSONError`, a ``ValueError``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

__all__ = [
    "MAX_BYTES",
    "MAX_DEPTH",
    "UntrustedJSONError",
    "load_untrusted",
    "loads",
    "nesting_exceeds",
    "openings",
]

MAX_DEPTH = 64
"""Levels of nested arrays and objects a provider body may have."""
MAX_BYTES = 64 * 1024 * 1024
"""The largest JSON text decoded; a webhook receiver refuses bodies beyond its own (smaller)
``max_body_size`` before anything reads them."""


class UntrustedJSONError(ValueError):
    """A JSON text over the size or nesting bound, refused before it was decoded."""


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


# NaN and Infinity are not JSON (orjson refuses them too); stores refuse them later.
_STDLIB = json.JSONDecoder(parse_constant=_refuse_constant)
_scan: Callable[[str, int], tuple[Any, int]] = _STDLIB.scan_once  # type: ignore[attr-defined]
_WHITESPACE = " \t\n\r"


def stdlib_loads(data: bytes | str) -> Any:
    """The standard library's decoder, as unimailtrack uses it without the fast extra.

    A body that starts with a value and ends in nothing but JSON whitespace is scanned
    straight away (``JSONDecoder.scan_once``, the C scanner); anything else goes through
    ``JSONDecoder.decode``, which skips leading whitespace and raises its own error for what
    is not JSON, so that both paths accept and refuse the same texts. The shortcut spares
    ``decode``'s two whitespace matches and two calls, about 0.7 us a body: a sixth of
    decoding a single-event webhook."""
    if type(data) is bytes:
        text = data.decode()
    elif isinstance(data, str):
        text = data
    else:  # a bytearray, a memoryview, a subclass of bytes
        text = bytes(data).decode()
    try:
        value, end = _scan(text, 0)
    except StopIteration:  # no value at the very start: leading whitespace, or not JSON
        return _STDLIB.decode(text)
    if end != len(text) and text[end:].strip(_WHITESPACE):
        return _STDLIB.decode(text)  # raises the decoder's "Extra data"
    return value


def _decoder() -> Callable[[bytes | str], Any]:
    try:
        from orjson import loads as orjson_loads
    except ImportError:  # pragma: no cover - exercised where the fast extra is absent
        return stdlib_loads
    return orjson_loads


loads: Callable[[bytes | str], Any] = _decoder()
"""Decode JSON from bytes or text, unbounded: for what unimailtrack wrote itself."""

_KEEP = b'[]{}"'
_DELETE = bytes(c for c in range(256) if c not in _KEEP)
_STRING = re.compile(rb'"[^"]*"')


def openings(data: bytes) -> int:
    """How many ``[`` and ``{`` ``data`` holds: the length that removing them takes away.
    ``bytes.count`` of one byte compares every byte in turn, where ``replace`` finds each by
    ``memchr``: four to five times faster on webhook bodies, whose brackets are sparse, copy
    included. (Not for dense bytes such as quotes, where the copies cost more than the
    scan.)"""
    size = len(data)
    return 2 * size - len(data.replace(b"[", b"")) - len(data.replace(b"{", b""))


def nesting_exceeds(data: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether ``data`` (JSON text) nests arrays and objects deeper than ``limit``, or its
    brackets do not balance so that a decoder could not tell; strings are skipped, so a
    bracket inside one does not count."""
    if openings(data) <= limit:  # too few to nest deeper, balanced or not
        return False
    if b"\\" in data:  # an escaped quote would end a string early: remove escapes first
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    marks = data.translate(None, _DELETE)
    quotes = marks.count(b'"')
    if quotes:
        if quotes == 2 * marks.count(b'""'):  # no string holds a bracket: drop every quote
            marks = marks.translate(None, b'"')
        else:
            marks = _STRING.sub(b"", marks)
    for level in range(limit):
        if not marks:
            return False
        shorter = marks.replace(b"[]", b"").replace(b"{}", b"")
        if len(shorter) == len(marks):  # unbalanced: how deep could a decoder go?
            return level + marks.count(b"[") + marks.count(b"{") > limit
        marks = shorter
    return bool(marks)


def load_untrusted(
    data: bytes | str,
    *,
    decode: Callable[[bytes | str], Any] | None = None,
    max_depth: int = MAX_DEPTH,
    max_bytes: int = MAX_BYTES,
) -> Any:
    """Decode JSON a provider sent, within the bounds: ``UntrustedJSONError`` beyond them,
    the decoder's ``ValueError`` when it is not JSON. ``decode`` replaces the decoder."""
    if data.__class__ is bytes:  # the usual case: bytes(data) would cost a call to find out
        raw = data
    else:
        raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if len(raw) > max_bytes:
        raise UntrustedJSONError(f"the JSON text is larger than {max_bytes} bytes")
    if nesting_exceeds(raw, max_depth):
        raise UntrustedJSONError(
            f"the JSON text nests deeper than {max_depth} levels, or its brackets do not balance"
        )
    try:
        return (decode or loads)(data)
    except RecursionError:  # a decoder given here that recurses deeper than Python allows
        raise UntrustedJSONError("the JSON text nests too deeply to decode") from None
