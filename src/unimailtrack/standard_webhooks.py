"""Standard Webhooks: one verifier and signer for every sender that uses the scheme.

The scheme (https://www.standardwebhooks.com, version 1): a request carries three headers,

- ``webhook-id``: the message's unique id (the same on every retry of it);
- ``webhook-timestamp``: unix seconds when this attempt was signed, digits only;
- ``webhook-signature``: space-separated ``v1,<base64>`` entries; any one matching is enough
  (a sender rotating its secret signs with the old and the new one).

Svix, and every provider that sends through it (Resend among them), uses the same scheme
under ``svix-id``, ``svix-timestamp`` and ``svix-signature``; both families are read. A
signature is HMAC-SHA256 over ``id.timestamp.body`` keyed with the bytes of the base64 part of a
``whsec_`` secret.

:class:`StandardWebhooks` verifies and signs with one or more secrets (the first signs; any may
verify, for rotation). What it checks, in order, each failure raising the same
``SignatureError`` (the cause goes to the ``unimailtrack.webhooks`` logger only):

1. at least one secret is configured (fail closed);
2. the three headers are present, all from one family, and within bounds: an id of at most
   :data:`MAX_ID_LENGTH` printable characters without a ``.`` (so that ``id.timestamp.body``
   cannot be cut again into another id and timestamp), a timestamp of ASCII digits only, a
   signature header of at most :data:`MAX_SIGNATURE_HEADER` characters;
3. the timestamp is within the tolerance of the clock, in both directions;
4. one ``v1`` entry equals the HMAC under one secret, compared in constant time.

Asymmetric ``v1a`` entries (Ed25519, ``whpk_`` keys) are not supported; they are skipped, so a
request signed only that way is refused. There is no replay cache: a sender retries a message
with the same id and a fresh timestamp and signature, and the tracker already stores each event
once by its id, so a replay inside the window changes nothing.

Why not the ``standardwebhooks`` package: it reads only the ``webhook-*`` names, takes one
secret, and would be a dependency for about forty lines of the standard library (``hmac`` and
``base64``). The tests check this module against the scheme's published vectors.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import secrets as _secrets
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Final

from unimailtrack import _constants as C
from unimailtrack.errors import ConfigurationError, SignatureError

__all__ = [
    "MAX_ID_LENGTH",
    "MAX_SIGNATURE_HEADER",
    "SECRET_PREFIX",
    "StandardWebhooks",
    "new_secret",
]

SECRET_PREFIX: Final = "whsec_"  # noqa: S105 - the scheme's prefix, not a secret
MIN_SECRET_BYTES: Final = 24
"""The scheme asks for secrets of 24 to 64 bytes; a shorter key is refused as a mistake."""
MAX_SECRET_BYTES: Final = 64
MAX_ID_LENGTH: Final = 256
MAX_SIGNATURE_HEADER: Final = 4096
"""Characters of a signature header read at most: about 80 entries, far beyond any rotation."""
_MAX_STAMP_DIGITS: Final = 12
_FAMILIES: Final = ("webhook", "svix")

_log = logging.getLogger("unimailtrack.webhooks")


def new_secret(length: int = 32) -> str:
    """A fresh random ``whsec_`` secret of ``length`` bytes (24 to 64)."""
    if not MIN_SECRET_BYTES <= length <= MAX_SECRET_BYTES:
        raise ValueError(f"a secret is {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes long")
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(length)).decode("ascii")


def _key(secret: str | bytes) -> bytes:
    """The HMAC key of a secret: ``whsec_<base64>`` (or the bare base64, as the scheme's own
    libraries accept it), or the key bytes themselves."""
    if isinstance(secret, bytes):
        key = secret
    else:
        text = secret.strip()
        text = text.removeprefix(SECRET_PREFIX)
        try:
            key = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ConfigurationError(
                "a Standard Webhooks secret is 'whsec_' followed by base64, as the sender shows "
                "it; this one is not base64"
            ) from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise ConfigurationError(
            f"a Standard Webhooks secret decodes to {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} "
            f"bytes; this one has {len(key)}"
        )
    return key


def _valid_id(msg_id: str) -> bool:
    return (
        0 < len(msg_id) <= MAX_ID_LENGTH
        and msg_id.isascii()
        and msg_id.isprintable()
        and "." not in msg_id
        and " " not in msg_id
    )


def _seconds(timestamp: int | datetime) -> int:
    if isinstance(timestamp, datetime):
        if timestamp.tzinfo is None:
            raise ValueError("a timestamp must be timezone-aware")
        return int(timestamp.timestamp())
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp < 0:
        raise ValueError("a timestamp is non-negative unix seconds or an aware datetime")
    return timestamp


class StandardWebhooks:
    """Verify and sign Standard Webhooks requests with one or more secrets.

    ``secrets``: one ``whsec_...`` secret or several (rotation: any verifies, the first signs).
    None at all is allowed, and then every request is refused. ``tolerance``: how far the
    timestamp may be from the clock, either way. ``provider`` names the sender in errors and
    logs.
    """

    __slots__ = ("_keys", "provider", "tolerance")

    def __init__(
        self,
        secrets: str | bytes | Iterable[str | bytes] = (),
        *,
        tolerance: timedelta = C.DEFAULT_WEBHOOK_TOLERANCE,
        provider: str = "standard-webhooks",
    ) -> None:
        if isinstance(secrets, str | bytes):
            secrets = [secrets]
        if tolerance <= timedelta(0):
            raise ConfigurationError("the webhook tolerance must be a positive duration")
        self._keys: tuple[bytes, ...] = tuple(_key(s) for s in secrets)
        self.tolerance = tolerance
        self.provider = provider

    @property
    def configured(self) -> bool:
        """True when at least one secret is configured."""
        return bool(self._keys)

    # ------------------------------------------------------------------ verifying

    def _refuse(self, why: str) -> SignatureError:
        _log.warning("%s webhook refused: %s", self.provider, why)
        return SignatureError(provider=self.provider)

    def verify(
        self, body: bytes | str, headers: Mapping[str, str], *, now: datetime | None = None
    ) -> None:
        """Raise ``SignatureError`` unless ``body`` with ``headers`` is signed by a configured
        secret and fresh at ``now`` (the real clock unless given). ``body`` is the raw body."""
        if not self._keys:
            raise self._refuse("no webhook secret is configured")
        found = {k.lower(): v for k, v in headers.items()}
        msg_id = stamp = signature = None
        for family in _FAMILIES:
            signature = found.get(f"{family}-signature")
            if signature is not None:
                msg_id = found.get(f"{family}-id")
                stamp = found.get(f"{family}-timestamp")
                break
        if not msg_id or not stamp or not signature:
            raise self._refuse("the id, timestamp or signature header is missing")
        if len(signature) > MAX_SIGNATURE_HEADER:
            raise self._refuse(f"the signature header is over {MAX_SIGNATURE_HEADER} characters")
        if not _valid_id(msg_id):
            raise self._refuse("the id header is not a plain printable id without '.'")
        if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= _MAX_STAMP_DIGITS):
            raise self._refuse("the timestamp header is not unix seconds in digits")
        clock = (now or datetime.now(UTC)).timestamp()
        if abs(clock - int(stamp)) > self.tolerance.total_seconds():
            raise self._refuse(f"the timestamp {stamp} is outside the tolerance")
        data = body.encode("utf-8") if isinstance(body, str) else body
        prefix = f"{msg_id}.{stamp}.".encode("ascii")
        expected = []
        for key in self._keys:
            mac = hmac.new(key, prefix, hashlib.sha256)
            mac.update(data)
            expected.append(mac.digest())
        matched = False
        for entry in signature.split(" "):
            version, _, value = entry.partition(",")
            if version != "v1" or not value:
                continue
            try:
                candidate = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                continue
            for digest in expected:
                # Every pair is compared, so the time taken does not tell which one matched.
                matched |= hmac.compare_digest(candidate, digest)
        if not matched:
            raise self._refuse("no v1 signature matches a configured secret")

    # ------------------------------------------------------------------ signing

    def sign(self, msg_id: str, timestamp: int | datetime, body: bytes | str) -> str:
        """The ``v1,<base64>`` signature of ``body`` sent as ``msg_id`` at ``timestamp``, under
        the first secret."""
        if not self._keys:
            raise ConfigurationError("signing needs a Standard Webhooks secret")
        if not _valid_id(msg_id):
            raise ValueError("a message id is printable ASCII without '.' or spaces")
        data = body.encode("utf-8") if isinstance(body, str) else body
        mac = hmac.new(self._keys[0], f"{msg_id}.{_seconds(timestamp)}.".encode(), hashlib.sha256)
        mac.update(data)
        return "v1," + base64.b64encode(mac.digest()).decode("ascii")

    def headers(
        self,
        msg_id: str,
        timestamp: int | datetime | None,
        body: bytes | str,
        *,
        prefix: str = "webhook",
    ) -> dict[str, str]:
        """The three headers a sender posts with ``body``: ``webhook-*`` names, or ``svix-*``
        with ``prefix="svix"``. ``timestamp`` None means now."""
        if prefix not in _FAMILIES:
            raise ValueError(f"prefix is one of {', '.join(_FAMILIES)}")
        seconds = int(time.time()) if timestamp is None else _seconds(timestamp)
        return {
            f"{prefix}-id": msg_id,
            f"{prefix}-timestamp": str(seconds),
            f"{prefix}-signature": self.sign(msg_id, seconds, body),
        }

    def __repr__(self) -> str:
        return f"<StandardWebhooks provider={self.provider!r} secrets={len(self._keys)}>"
