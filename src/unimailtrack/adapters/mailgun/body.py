"""Reading a Mailgun webhook body: a JSON object, or the fields of a legacy form.

Mailgun posts JSON webhooks, and legacy webhooks as ``application/x-www-form-urlencoded`` or
``multipart/form-data`` forms. The content type decides which; without one, the body's first
bytes do. Before the signature holds only the three signing fields of a form are decoded
(``signing_only``), a multipart body located by one bounded pass: a boundary of RFC 2046's
shape, at most ``MAX_FORM_FIELDS`` parts of at most ``MAX_PART_HEADER`` bytes of headers each,
every search a linear scan. A JSON body is read through the shared bounded reader.
"""

from __future__ import annotations

import binascii
import codecs
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, unquote_plus

from unimailtrack.adapters._vocabulary import read_json
from unimailtrack.adapters.base import lower_headers
from unimailtrack.errors import PayloadError

__all__ = [
    "MAX_BOUNDARY",
    "MAX_FORM_FIELDS",
    "MAX_PART_HEADER",
    "SIGNED_FIELDS",
    "SIGNING_FIELDS",
    "Form",
    "SigningFields",
    "content_digest",
    "decode_body",
    "form_pairs",
]

PROVIDER: Final = "mailgun"

SIGNING_FIELDS: Final = frozenset({"token", "signature"})
SIGNED_FIELDS: Final = frozenset({"timestamp", "token", "signature"})
"""The fields of a form the signature check reads: the only ones decoded before it holds."""

MAX_FORM_FIELDS: Final = 1000
"""Fields (or multipart parts, files included) a legacy webhook body may have."""
MAX_BOUNDARY: Final = 70
"""RFC 2046's longest multipart boundary."""
MAX_PART_HEADER: Final = 4096
"""Bytes of one multipart part's header block."""
_MAX_PREAMBLE: Final = 1024
_MAX_CONTENT_TYPE: Final = 512
_BOUNDARY: Final = re.compile(rb"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
_BAD_ESCAPE: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")
_PARAM: Final = re.compile(
    r';\s*([A-Za-z0-9_\-*]{1,64})\s*=\s*("(?:[^"\\]|\\.){0,1024}"|[^;\s"]{0,1024})'
)


class Form:
    """The fields of a legacy form-encoded webhook, in order, with repeated names kept."""

    __slots__ = ("fields",)

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self.fields: dict[str, list[str]] = {}
        for name, value in pairs:
            self.fields.setdefault(name, []).append(value)

    def first(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[0] if values else None

    def last(self, name: str) -> str | None:
        # Mailgun appends its signature fields after the custom variables, so a variable
        # that happens to be named like one cannot shadow the real field.
        values = self.fields.get(name)
        return values[-1] if values else None

    def getlist(self, name: str) -> list[str]:
        return list(self.fields.get(name, ()))

    def raw(self) -> dict[str, Any]:
        return {k: v[0] if len(v) == 1 else list(v) for k, v in self.fields.items()}


def _payload_error(why: str) -> PayloadError:
    return PayloadError(f"unreadable Mailgun webhook: {why}", provider=PROVIDER)


def _media_type(headers: Mapping[str, str] | None) -> tuple[str, str]:
    """``(media type, whole header)`` of the Content-Type; the usual spellings are looked up
    directly before any other spelling is searched for."""
    if not headers:
        return "", ""
    content_type = headers.get("content-type") or headers.get("Content-Type")
    if content_type is None:
        content_type = lower_headers(headers).get("content-type", "")
    return content_type.partition(";")[0].strip().lower(), content_type


class SigningFields(Form):
    """The signing fields of a form, decoded alone before the signature is checked."""

    __slots__ = ()


def decode_body(
    body: bytes, headers: Mapping[str, str] | None, *, signing_only: bool = False
) -> dict[str, Any] | Form:
    """The JSON object of a webhook body, or the fields of a legacy form body. The content
    type decides; without one, the body's first bytes do. ``signing_only`` decodes only the
    signing fields of a form (a JSON body is read whole: its signature block is inside)."""
    media, content_type = _media_type(headers)
    if media == "application/json":
        return _json_body(body)
    if media == "application/x-www-form-urlencoded":
        return _form_body(body, signing_only)
    if media == "multipart/form-data":
        return _multipart_body(body, content_type, signing_only)
    start = body.lstrip()[:2]
    if start.startswith(b"{"):
        return _json_body(body)
    if start == b"--":
        return _multipart_body(body, "", signing_only)
    return _form_body(body, signing_only)


def _json_body(body: bytes) -> dict[str, Any]:
    data = read_json(body, provider=PROVIDER)
    if not isinstance(data, dict):
        raise _payload_error("the body is not a JSON object")
    return data


def _unescape(text: str) -> str:
    """``unquote_plus(text)`` for ASCII text whose every ``%`` starts a valid escape: with no
    literal ``=``, percent escapes are quoted-printable's ``=XX`` ones, which
    ``binascii.a2b_qp`` decodes in C."""
    if "+" in text:
        text = text.replace("+", " ")
    if "%" not in text:
        return text
    if "=" in text:
        return unquote(text)
    return binascii.a2b_qp(text.replace("%", "=")).decode("utf-8", "replace")


def form_pairs(text: str) -> list[tuple[str, str]]:
    """The fields of a form-encoded body, exactly as ``parse_qsl(text, keep_blank_values=True)``
    reads them, in about a quarter of its time: a legacy webhook percent-encodes its JSON
    header list, and ``unquote`` decodes each escape in Python. Text that is not ASCII, or has
    a ``%`` that starts no valid escape, is read by ``parse_qsl`` itself. More than
    ``MAX_FORM_FIELDS`` fields is a ``PayloadError``."""
    if text.count("&") >= MAX_FORM_FIELDS:
        raise _payload_error(f"the form has more than {MAX_FORM_FIELDS} fields")
    if not text.isascii() or _BAD_ESCAPE.search(text):
        return parse_qsl(text, keep_blank_values=True)
    pairs = []
    for field in text.split("&"):
        if field:
            name, _, value = field.partition("=")
            pairs.append((_unescape(name), _unescape(value)))
    return pairs


def _form_body(body: bytes, signing_only: bool = False) -> Form:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _payload_error("the form body is not UTF-8") from None
    if not signing_only:
        return Form(form_pairs(text))
    if text.count("&") >= MAX_FORM_FIELDS:
        raise _payload_error(f"the form has more than {MAX_FORM_FIELDS} fields")
    pairs = []
    for field_text in text.split("&"):
        name, _, value = field_text.partition("=")
        name = unquote_plus(name) if "%" in name or "+" in name else name
        if name in SIGNED_FIELDS:
            pairs.append((name, unquote_plus(value)))
    return SigningFields(pairs)


@dataclass(frozen=True, slots=True)
class _Part:
    """Where one field of a multipart body is, and how its bytes are encoded."""

    name: str
    start: int
    end: int
    charset: str
    encoding: str


def _boundary(body: bytes, content_type: str) -> bytes:
    """The boundary the Content-Type gives, or the body's first line when it gives none;
    refused unless it has RFC 2046's shape (1 to 70 characters of a small set)."""
    if len(content_type) > _MAX_CONTENT_TYPE:
        raise _payload_error(f"the Content-Type is longer than {_MAX_CONTENT_TYPE} characters")
    boundary: bytes | None = None
    for found in _PARAM.finditer(content_type):
        if found[1].lower() == "boundary":
            boundary = _unquote_param(found[2]).encode("latin-1", "replace")
    if boundary is None:
        if "boundary" in content_type.lower():
            raise _payload_error("the multipart boundary is malformed")
        start = len(body) - len(body.lstrip())
        if body[start : start + 2] != b"--":
            raise _payload_error("the multipart body has no boundary")
        line = body[start + 2 : start + 2 + MAX_BOUNDARY + 2]
        end = min(i for i in (line.find(b"\r"), line.find(b"\n"), len(line)) if i >= 0)
        boundary = line[:end]
    if not _BOUNDARY.fullmatch(boundary):
        raise _payload_error(
            f"the multipart boundary is not 1 to {MAX_BOUNDARY} of the characters RFC 2046 allows"
        )
    return boundary


def _unquote_param(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def _line_end(body: bytes, at: int) -> int:
    """The offset after the line break at ``at`` (transport padding allowed before it)."""
    limit = min(len(body), at + 64)
    while at < limit and body[at] in b" \t":
        at += 1
    if body.startswith(b"\r\n", at):
        return at + 2
    if body.startswith(b"\n", at):
        return at + 1
    raise _payload_error("a multipart delimiter is not followed by a line break")


def _part_header(block: bytes) -> tuple[str | None, bool, str, str]:
    """``(name, is a file, charset, transfer encoding)`` of one part's header block."""
    name: str | None = None
    is_file = False
    charset, encoding = "utf-8", "8bit"
    lines = block.decode("latin-1").replace("\r\n", "\n").split("\n")
    if len(lines) > 16:
        raise _payload_error("a multipart part has more than 16 header lines")
    for line in lines:
        field, colon, value = line.partition(":")
        if not colon:
            if line.strip():
                raise _payload_error("a multipart part header is malformed")
            continue
        field = field.strip().lower()
        params = {m[1].lower(): _unquote_param(m[2]) for m in _PARAM.finditer(value)}
        if field == "content-disposition":
            name = params.get("name")
            is_file = "filename" in params or "filename*" in params
        elif field == "content-type":
            charset = params.get("charset", charset)
        elif field == "content-transfer-encoding":
            encoding = value.strip().lower()
    return name, is_file, charset, encoding


def _multipart_parts(body: bytes, content_type: str) -> list[_Part]:
    """The form fields of a multipart body, located in one bounded pass: a boundary of RFC
    2046's shape, at most ``MAX_FORM_FIELDS`` parts of at most ``MAX_PART_HEADER`` bytes of
    headers each, every search a linear scan. Files are passed over."""
    boundary = _boundary(body, content_type)
    delimiter = b"--" + boundary
    if body.count(b"\n" + delimiter) > MAX_FORM_FIELDS:  # one scan at C speed, before any work
        raise _payload_error(f"the multipart body has more than {MAX_FORM_FIELDS} parts")
    first = body.find(delimiter)
    if first < 0 or first > _MAX_PREAMBLE or (first and body[first - 1 : first] != b"\n"):
        raise _payload_error("the multipart body does not start with its boundary")
    parts: list[_Part] = []
    at = first + len(delimiter)
    for _ in range(MAX_FORM_FIELDS + 1):
        if body.startswith(b"--", at):
            return parts  # the closing delimiter
        if len(parts) >= MAX_FORM_FIELDS:
            break
        at = _line_end(body, at)
        window = body[at : at + MAX_PART_HEADER + 4]
        crlf, lf = window.find(b"\r\n\r\n"), window.find(b"\n\n")
        if crlf < 0 and lf < 0:
            raise _payload_error(
                f"a multipart part header is longer than {MAX_PART_HEADER} bytes or unended"
            )
        head_end, gap = (crlf, 4) if crlf >= 0 and (lf < 0 or crlf <= lf) else (lf, 2)
        name, is_file, charset, encoding = _part_header(window[:head_end])
        content = at + head_end + gap
        following = body.find(b"\n" + delimiter, content - 1)
        if following < 0:
            raise _payload_error("the multipart body is not closed by its boundary")
        end = following - 1 if body[following - 1 : following] == b"\r" else following
        if name is not None and not is_file:
            parts.append(_Part(name, content, max(content, end), charset, encoding))
        at = following + 1 + len(delimiter)
    raise _payload_error(f"the multipart body has more than {MAX_FORM_FIELDS} parts")


def _part_text(body: bytes, part: _Part) -> str:
    data = body[part.start : part.end]
    try:
        if part.encoding == "base64":
            data = binascii.a2b_base64(data)
        elif part.encoding == "quoted-printable":
            data = binascii.a2b_qp(data)
        elif part.encoding not in ("7bit", "8bit", "binary"):
            raise _payload_error(f"unknown transfer encoding {part.encoding[:32]!r}")
    except binascii.Error:
        raise _payload_error(f"the field {part.name[:64]!r} is not valid {part.encoding}") from None
    try:
        codecs.lookup(part.charset)
        charset = part.charset
    except LookupError:
        charset = "utf-8"
    return data.decode(charset, "replace")


def _multipart_body(body: bytes, content_type: str, signing_only: bool = False) -> Form:
    parts = _multipart_parts(body, content_type)
    if signing_only:
        return SigningFields(
            (p.name, _part_text(body, p)) for p in parts if p.name in SIGNED_FIELDS
        )
    if not parts:
        raise _payload_error("the multipart body has no form fields")
    return Form((p.name, _part_text(body, p)) for p in parts)


def content_digest(decoded: dict[str, Any] | Form | bytes) -> str:
    """A digest of what a request says (its JSON object, its form fields in order), not of
    how it is framed: a retry that re-encodes the same request keeps the digest."""
    if isinstance(decoded, bytes):
        text = decoded
    elif isinstance(decoded, Form):
        pairs = [[k, v] for k, values in decoded.fields.items() for v in values]
        text = json.dumps(pairs, separators=(",", ":")).encode("utf-8", "surrogatepass")
    else:
        text = json.dumps(decoded, sort_keys=True, separators=(",", ":")).encode(
            "utf-8", "surrogatepass"
        )
    return hashlib.sha256(text).hexdigest()
