"""The envelope: a verified webhook request as it travels from the receiver to a worker.

An envelope holds what a worker needs to parse the request and store its events exactly as the
receiver would have: the provider, the headers parsing reads, the raw body, when it arrived,
and what verification concluded (whether a signature was checked, and the single-use tokens
still to be spent with the events). It is encoded as one JSON document of bounded size; the
body travels compressed when that makes it smaller (SQS takes at most 256 KiB a message).

An envelope a receiver wrote is ``trusted``: only a verified request is ever enqueued. One a
worker built from a message it read off a queue that others can write (an SQS queue subscribed
to an SNS topic) is not, and the worker verifies it before believing anything in it.
"""

from __future__ import annotations

import base64
import json
import uuid
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from unimailtrack.adapters.base import ReplayToken
from unimailtrack.errors import PayloadError

__all__ = ["ENVELOPE_VERSION", "Envelope", "decode_envelope"]

ENVELOPE_VERSION = 1

_DROPPED_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization", "x-api-key"})
"""Credentials a proxy may have added: never written to a queue."""
_MAX_HEADERS = 64
_MAX_HEADER_LENGTH = 8192
_COMPRESS_FROM = 1024
"""Bodies shorter than this travel as they are: compressing them saves nothing."""


def _kept_headers(headers: Mapping[str, str]) -> dict[str, str]:
    kept: dict[str, str] = {}
    for name, value in headers.items():
        lowered = name.lower()
        if lowered in _DROPPED_HEADERS or len(kept) >= _MAX_HEADERS:
            continue
        kept[lowered] = value[:_MAX_HEADER_LENGTH]
    return kept


@dataclass(frozen=True, slots=True)
class Envelope:
    """One webhook request on its way to the store.

    ``verified`` is False only when the adapter's verification is turned off by
    configuration; ``tokens`` are the request's single-use tokens (Mailgun), to be spent in the
    transaction that stores its events. ``trusted`` is False for a message read from a queue
    the receiver did not write (the worker verifies it first); it is never encoded.
    """

    provider: str
    body: bytes
    headers: Mapping[str, str]
    received_at: datetime
    verified: bool = True
    tokens: Sequence[ReplayToken] = ()
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    trusted: bool = True

    @classmethod
    def of(
        cls,
        provider: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        verified: bool = True,
        tokens: Sequence[ReplayToken] = (),
        received_at: datetime | None = None,
    ) -> Envelope:
        """The envelope of a request the receiver verified; credentials are left out."""
        return cls(
            provider,
            bytes(body),
            _kept_headers(headers),
            received_at or datetime.now(UTC),
            verified,
            tuple(tokens),
        )

    def encode(self) -> bytes:
        """The envelope as one JSON document (ASCII, so that any queue carries it)."""
        body, encoding = self.body, "b64"
        if len(body) >= _COMPRESS_FROM:
            squeezed = zlib.compress(body, 6)
            if len(squeezed) < len(body):
                body, encoding = squeezed, "zlib+b64"
        document = {
            "v": ENVELOPE_VERSION,
            "id": self.id,
            "provider": self.provider,
            "received_at": self.received_at.astimezone(UTC).isoformat(),
            "headers": dict(self.headers),
            "verified": self.verified,
            "tokens": [
                {"key": t.key, "digest": t.digest, "expires_at": t.expires_at.isoformat()}
                for t in self.tokens
            ],
            "encoding": encoding,
            "body": base64.b64encode(body).decode("ascii"),
        }
        return json.dumps(document, separators=(",", ":")).encode("ascii")

    def describe(self) -> str:
        return f"{self.provider} envelope {self.id} ({len(self.body)} bytes)"


def _text(document: Mapping[str, Any], name: str) -> str:
    value = document.get(name)
    if not isinstance(value, str):
        raise PayloadError(f"the envelope's {name!r} is missing or not text")
    return value


def decode_envelope(data: bytes | str, *, max_body: int = 64 * 1024 * 1024) -> Envelope:
    """Read an envelope :meth:`Envelope.encode` wrote; ``PayloadError`` for anything else."""
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError(f"the queue message is not an envelope: {exc}") from None
    if not isinstance(document, dict) or document.get("v") != ENVELOPE_VERSION:
        raise PayloadError("the queue message is not an envelope of a known version")
    try:
        raw = base64.b64decode(_text(document, "body"), validate=True)
        encoding = _text(document, "encoding")
        if encoding == "zlib+b64":
            inflater = zlib.decompressobj()
            body = inflater.decompress(raw, max_body)
            if inflater.unconsumed_tail:
                raise PayloadError(f"the envelope's body is larger than {max_body} bytes")
        elif encoding == "b64":
            body = raw
        else:
            raise PayloadError(f"unknown envelope body encoding {encoding!r}")
        headers = document.get("headers")
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise PayloadError("the envelope's headers are not a map of text")
        tokens = tuple(
            ReplayToken(t["key"], t["digest"], datetime.fromisoformat(t["expires_at"]))
            for t in document.get("tokens", ())
        )
        return Envelope(
            provider=_text(document, "provider"),
            body=body,
            headers=headers,
            received_at=datetime.fromisoformat(_text(document, "received_at")),
            verified=bool(document.get("verified", True)),
            tokens=tokens,
            id=_text(document, "id"),
        )
    except PayloadError:
        raise
    except (ValueError, TypeError, KeyError, zlib.error) as exc:
        raise PayloadError(f"the envelope cannot be read: {exc}") from None
