"""SendGrid webhook verification: the Signed Event Webhook's ECDSA signature.

SendGrid signs ``timestamp header + raw body`` with ECDSA P-256/SHA-256 and sends the DER
signature in base64. The account's verification key is a base64 DER SubjectPublicKeyInfo (PEM
is accepted too); several keys may be configured for rotation. Keys are decoded once, when the
adapter is built (:func:`load_webhook_key`); :func:`verify` checks a request against them.
:class:`SendGridWebhookSigner` signs the same way, for tests and the emulator.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Final

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from unimailtrack.adapters.base import is_fresh, lower_headers, signature_failure
from unimailtrack.errors import ConfigurationError, SignatureCause

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WEBHOOK_KEY_ENV",
    "SendGridWebhookSigner",
    "WebhookKey",
    "load_webhook_key",
    "load_webhook_keys",
    "verify",
]

PROVIDER: Final = "sendgrid"

SIGNATURE_HEADER: Final = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER: Final = "X-Twilio-Email-Event-Webhook-Timestamp"
_SIGNATURE_KEY: Final = SIGNATURE_HEADER.lower()
_TIMESTAMP_KEY: Final = TIMESTAMP_HEADER.lower()

WEBHOOK_KEY_ENV: Final = "UNIMAILTRACK_SENDGRID_WEBHOOK_KEY"
"""Comma-separated verification keys, read by ``from_dsn`` besides the DSN's ``webhook_key``."""

_MAX_STAMP_DIGITS: Final = 12
"""Unix seconds have 10 digits until the year 2286; anything much longer is not a time."""

_ECDSA_SHA256: Final = ec.ECDSA(hashes.SHA256())
_ECDSA_PREHASHED: Final = ec.ECDSA(Prehashed(hashes.SHA256()))


WebhookKey = str | bytes | ec.EllipticCurvePublicKey
"""A verification key: base64 DER (as SendGrid shows it), PEM, or a loaded key."""


def load_webhook_key(value: WebhookKey) -> ec.EllipticCurvePublicKey:
    """A verification key from its base64 DER form (as SendGrid shows it) or PEM.

    Raises ``ConfigurationError`` for anything that is not a P-256 public key.
    """
    if isinstance(value, ec.EllipticCurvePublicKey):
        key: object = value
    else:
        try:
            text = value.decode("ascii") if isinstance(value, bytes) else value
            text = text.strip()
            if text.startswith("-----BEGIN"):
                key = serialization.load_pem_public_key(text.encode("ascii"))
            else:
                der = base64.b64decode("".join(text.split()), validate=True)
                key = serialization.load_der_public_key(der)
        except (ValueError, UnsupportedAlgorithm):
            raise ConfigurationError(
                "a SendGrid webhook verification key must be the base64 DER public key shown in "
                "the Event Webhook settings (or its PEM form); this one cannot be decoded"
            ) from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ConfigurationError("a SendGrid webhook verification key must be a P-256 ECDSA key")
    return key


def load_webhook_keys(keys: WebhookKey | Iterable[WebhookKey]) -> list[ec.EllipticCurvePublicKey]:
    """One key or several, each through :func:`load_webhook_key`."""
    if isinstance(keys, str | bytes | ec.EllipticCurvePublicKey):
        keys = [keys]
    return [load_webhook_key(k) for k in keys]


def verify(
    body: bytes,
    headers: Mapping[str, str],
    keys: Sequence[ec.EllipticCurvePublicKey],
    tolerance: timedelta,
    now: datetime | None = None,
) -> None:
    """Raise ``SignatureError`` unless ``body`` carries a fresh SendGrid signature by one of
    ``keys``. ``body`` must be the raw bytes as received."""
    if not keys:
        raise signature_failure(
            PROVIDER, "no webhook verification key is configured", SignatureCause.NO_KEY
        )
    found = lower_headers(headers)
    signature = found.get(_SIGNATURE_KEY)
    stamp = found.get(_TIMESTAMP_KEY)
    if not signature or not stamp:
        raise signature_failure(
            PROVIDER,
            "the signature or timestamp header is missing",
            SignatureCause.MISSING_HEADER,
        )
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= _MAX_STAMP_DIGITS):
        raise signature_failure(
            PROVIDER, "the timestamp header is not a unix time", SignatureCause.MALFORMED
        )
    if not is_fresh(int(stamp), now, tolerance):
        raise signature_failure(
            PROVIDER, f"the timestamp {stamp} is outside the tolerance", SignatureCause.STALE
        )
    try:
        der = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise signature_failure(
            PROVIDER, "the signature header is not base64", SignatureCause.MALFORMED
        ) from None
    digest = hashlib.sha256(stamp.encode("ascii"))
    digest.update(body)  # no copy of the body; hashed once for every key
    signed = digest.digest()
    for key in keys:
        try:
            key.verify(der, signed, _ECDSA_PREHASHED)
        except InvalidSignature:
            continue
        return
    raise signature_failure(
        PROVIDER, "the signature matches no configured key", SignatureCause.BAD_SIGNATURE
    )


def _public_key_text(key: ec.EllipticCurvePublicKey) -> str:
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode("ascii")


class SendGridWebhookSigner:
    """Signs webhook bodies exactly as SendGrid does, so tests and local emulators can post
    requests that :meth:`SendGridAdapter.verify_webhook` accepts.

    ``private_key`` is a P-256 private key object or its PEM; a fresh key is generated when it
    is omitted. Give :attr:`public_key` to the adapter as its ``webhook_keys``.
    """

    def __init__(self, private_key: ec.EllipticCurvePrivateKey | str | bytes | None = None) -> None:
        if private_key is None:
            private_key = ec.generate_private_key(ec.SECP256R1())
        elif not isinstance(private_key, ec.EllipticCurvePrivateKey):
            pem = private_key.encode("ascii") if isinstance(private_key, str) else private_key
            try:
                loaded = serialization.load_pem_private_key(pem, password=None)
            except (ValueError, TypeError, UnsupportedAlgorithm):
                raise ConfigurationError(
                    "a SendGrid signing key must be an unencrypted PEM"
                ) from None
            if not isinstance(loaded, ec.EllipticCurvePrivateKey):
                raise ConfigurationError("a SendGrid signing key must be a P-256 ECDSA key")
            private_key = loaded
        if not isinstance(private_key.curve, ec.SECP256R1):
            raise ConfigurationError("a SendGrid signing key must be a P-256 ECDSA key")
        self._private_key = private_key
        self.public_key = _public_key_text(private_key.public_key())
        """The verification key in SendGrid's own form: base64 DER SubjectPublicKeyInfo."""

    @property
    def private_key_pem(self) -> str:
        """The signing key as unencrypted PKCS#8 PEM, to keep it across runs."""
        return self._private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii")

    def signature(self, body: bytes, timestamp: str) -> str:
        """The signature header value for ``body`` sent with ``timestamp``."""
        der = self._private_key.sign(timestamp.encode("utf-8") + body, _ECDSA_SHA256)
        return base64.b64encode(der).decode("ascii")

    def sign(self, body: bytes, *, timestamp: int | datetime | None = None) -> dict[str, str]:
        """The two headers SendGrid sends with ``body`` (timestamp: now unless given)."""
        if timestamp is None:
            seconds = int(time.time())
        elif isinstance(timestamp, datetime):
            seconds = int(timestamp.timestamp())
        else:
            seconds = int(timestamp)
        stamp = str(seconds)
        return {SIGNATURE_HEADER: self.signature(body, stamp), TIMESTAMP_HEADER: stamp}
