"""Mailgun webhook verification: HMAC-SHA256 over ``timestamp + token``.

Mailgun signs ``timestamp + token`` with HMAC-SHA256 under the account's webhook signing key
(not the API key). :class:`WebhookVerifier` checks every configured key (rotation, several
accounts), accepts only an all-digits timestamp and a token of Mailgun's documented shape (50
letters and digits), so that the signed string cannot be cut differently, and refuses stale or
future timestamps. The body is not signed, so the replay token it gives
(:meth:`WebhookVerifier.replay_token`) also carries a digest of what the request says: the
retry of the same request is admitted, a different request under a spent token is refused.
:class:`MailgunWebhookSigner` signs the same way, for tests and the emulator.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import urlencode

from unimailtrack.adapters.base import ReplayToken, is_fresh, signature_failure
from unimailtrack.adapters.mailgun.body import Form, content_digest, decode_body
from unimailtrack.errors import ConfigurationError, PayloadError, SignatureCause

__all__ = [
    "WEBHOOK_KEY_ENV",
    "MailgunWebhookSigner",
    "WebhookVerifier",
    "signature_fields",
]

PROVIDER: Final = "mailgun"

WEBHOOK_KEY_ENV: Final = "UNIMAILTRACK_MAILGUN_WEBHOOK_KEY"
"""Environment variable holding webhook signing keys (comma-separated) for ``from_dsn``."""

_TIMESTAMP: Final = re.compile(r"[0-9]{1,15}")
_TOKEN: Final = re.compile(r"[0-9A-Za-z]{50}")
"""Mailgun documents the token as a random string of length 50 (it sends lower-case hex);
with digits only in the timestamp, ``timestamp + token`` can be cut in one way only."""


class MailgunWebhookSigner:
    """Signs webhook requests exactly as Mailgun does, so that tests and a local emulator can
    produce requests the adapter verifies for real."""

    def __init__(self, key: str) -> None:
        if not key:
            raise ConfigurationError("a Mailgun webhook signing key cannot be empty")
        self._key = key.encode("utf-8")

    def signature(self, timestamp: str | int, token: str) -> str:
        """hex(HMAC-SHA256(key, timestamp + token))."""
        return hmac.new(self._key, f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()

    def signature_block(
        self, *, timestamp: str | int | None = None, token: str | None = None
    ) -> dict[str, str]:
        """A fresh ``{"timestamp", "token", "signature"}`` block (now, random token)."""
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        nonce = token if token is not None else secrets.token_hex(25)
        return {"timestamp": stamp, "token": nonce, "signature": self.signature(stamp, nonce)}

    def json_body(
        self,
        event_data: Mapping[str, Any],
        *,
        timestamp: str | int | None = None,
        token: str | None = None,
    ) -> bytes:
        """A signed JSON webhook body carrying ``event_data``."""
        block = self.signature_block(timestamp=timestamp, token=token)
        return json.dumps({"signature": block, "event-data": event_data}).encode()

    def form_body(
        self,
        fields: Mapping[str, str],
        *,
        timestamp: str | int | None = None,
        token: str | None = None,
    ) -> bytes:
        """A signed legacy form-encoded webhook body carrying ``fields``."""
        block = self.signature_block(timestamp=timestamp, token=token)
        return urlencode({**fields, **block}).encode()


def signature_fields(decoded: dict[str, Any] | Form) -> tuple[str, str, list[bytes]]:
    """``(timestamp, token, signatures)`` of a webhook; a subaccount's event also carries the
    parent account's ``parent-signature``. Refuses (``SignatureError``) a body without them."""
    if isinstance(decoded, Form):
        timestamp, token = decoded.last("timestamp"), decoded.last("token")
        signatures: list[Any] = [decoded.last("signature")]
    else:
        block = decoded.get("signature")
        if not isinstance(block, dict):
            raise signature_failure(
                PROVIDER, "the body has no signature block", SignatureCause.MISSING_HEADER
            )
        timestamp, token = block.get("timestamp"), block.get("token")
        signatures = [block.get("signature"), block.get("parent-signature")]
    if isinstance(timestamp, int) and not isinstance(timestamp, bool):
        timestamp = str(timestamp)
    if not (isinstance(timestamp, str) and isinstance(token, str) and timestamp and token):
        raise signature_failure(
            PROVIDER, "the timestamp or token is missing", SignatureCause.MISSING_HEADER
        )
    found = [s.encode("utf-8") for s in signatures if isinstance(s, str) and s]
    if not found:
        raise signature_failure(PROVIDER, "the signature is missing", SignatureCause.MISSING_HEADER)
    return timestamp, token, found


class WebhookVerifier:
    """Checks a webhook's signature under any of ``keys`` and its freshness within
    ``tolerance``; spending its token once is the adapter's (it holds the nonce store)."""

    def __init__(self, keys: str | Iterable[str], tolerance: timedelta) -> None:
        found = [keys] if isinstance(keys, str) else list(keys)
        self.tolerance = tolerance
        self._macs = tuple(
            hmac.new(key.strip().encode("utf-8"), digestmod=hashlib.sha256)
            for key in found
            if key.strip()
        )

    def verified_body(self, body: bytes, headers: Mapping[str, str]) -> dict[str, Any] | Form:
        """The body decoded as far as the signature check needs: a JSON object, or the
        signing fields of a form. Any failure to read it is a ``SignatureError``."""
        if not self._macs:
            raise signature_failure(
                PROVIDER, "no webhook signing key is configured", SignatureCause.NO_KEY
            )
        try:
            return decode_body(body, headers, signing_only=True)
        except PayloadError as exc:
            raise signature_failure(
                PROVIDER, f"the body cannot be read: {exc.message}", SignatureCause.MALFORMED
            ) from None

    def checked(self, decoded: dict[str, Any] | Form, now: datetime | None) -> tuple[str, int]:
        """The exact signed string and the timestamp, once the signature and the freshness
        are checked."""
        if not self._macs:
            raise signature_failure(
                PROVIDER, "no webhook signing key is configured", SignatureCause.NO_KEY
            )
        timestamp, token, signatures = signature_fields(decoded)
        if not _TIMESTAMP.fullmatch(timestamp):
            raise signature_failure(
                PROVIDER, "the timestamp is not a whole number of seconds", SignatureCause.MALFORMED
            )
        if not _TOKEN.fullmatch(token):
            raise signature_failure(
                PROVIDER, "the token is not 50 letters and digits", SignatureCause.MALFORMED
            )
        signed = f"{timestamp}{token}"
        if not any(self._matches(signed.encode(), candidate) for candidate in signatures):
            raise signature_failure(
                PROVIDER,
                "the signature matches no configured signing key",
                SignatureCause.BAD_SIGNATURE,
            )
        stamp = int(timestamp)
        if not is_fresh(stamp, now, self.tolerance):
            raise signature_failure(
                PROVIDER, "the timestamp is outside the tolerance", SignatureCause.STALE
            )
        return signed, stamp

    def replay_token(
        self, signed: str, stamp: int, decoded: dict[str, Any] | Form | bytes
    ) -> ReplayToken:
        """The single-use token of a verified request."""
        # Remember the token for as long as a replay could pass the freshness check; the
        # store's clock is the real one even when ``now`` replays an old request.
        horizon = max(stamp, time.time()) + self.tolerance.total_seconds()
        return ReplayToken(
            key=f"{PROVIDER}:{signed}",
            digest=content_digest(decoded),
            expires_at=datetime.fromtimestamp(horizon, UTC),
        )

    def _matches(self, signed: bytes, candidate: bytes) -> bool:
        """Whether ``candidate`` is the signature under any configured key. Every key is tried,
        so the time taken does not tell which key matched, or how many were tried."""
        matched = False
        for mac in self._macs:
            digest = mac.copy()
            digest.update(signed)
            matched |= hmac.compare_digest(digest.hexdigest().encode(), candidate)
        return matched
