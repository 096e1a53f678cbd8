"""Amazon SNS message signatures, as Amazon SES event notifications arrive through SNS.

SNS signs every message it posts to an HTTPS endpoint: an RSA PKCS#1 v1.5 signature over a
canonical string of the message's fields (SHA-1 for ``SignatureVersion`` 1, SHA-256 for 2),
made with a key whose certificate SNS publishes at ``SigningCertURL``. The certificate is only
as trustworthy as the place it comes from, so :func:`certificate_url_ok` accepts nothing but an
``https`` URL on an SNS host (``sns.<region>.amazonaws.com``, or ``.amazonaws.com.cn`` in
China): one strict pattern over the whole URL, so that no URL parser can be talked into
another host. Certificates are fetched once and kept in a small cache that expires.

:class:`SnsVerifier` runs every check in order, cheapest first, and fails closed: any doubt is a
``SignatureError`` whose cause is logged for the operator only. :class:`SnsSigner` is the other
half: a throwaway key and self-signed certificate that sign envelopes exactly as SNS does, for
tests and the local emulator.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import parse_qs, quote

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from unimailtrack import _constants as C
from unimailtrack._json import load_untrusted
from unimailtrack.adapters.base import lower_headers, signature_failure
from unimailtrack.errors import SignatureError

__all__ = [
    "DEFAULT_MAX_AGE",
    "CertificateCache",
    "SnsSigner",
    "SnsVerifier",
    "canonical_string",
    "certificate_url_ok",
    "fetch_certificate",
    "looks_like_raw_delivery",
    "subscribe_url_ok",
    "topic_region",
]

CertificateLoader = Callable[[str], bytes]
"""``loader(url) -> PEM bytes``: how a signing certificate is fetched."""

NOTIFICATION: Final = "Notification"
SUBSCRIPTION_CONFIRMATION: Final = "SubscriptionConfirmation"
UNSUBSCRIBE_CONFIRMATION: Final = "UnsubscribeConfirmation"

# The fields each message type signs, in the order SNS documents them. ``Subject`` is signed
# only when the message has one.
_SIGNED_FIELDS: Final[Mapping[str, tuple[str, ...]]] = {
    NOTIFICATION: ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    SUBSCRIPTION_CONFIRMATION: (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
    UNSUBSCRIBE_CONFIRMATION: (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
_OPTIONAL_FIELDS: Final = frozenset({"Subject"})
_HASHES: Final[Mapping[str, type[hashes.HashAlgorithm]]] = {"1": hashes.SHA1, "2": hashes.SHA256}

# Regions look like us-east-1, us-gov-west-1, cn-northwest-1, ap-southeast-2.
_REGION = r"[a-z]{2}(?:-[a-z]+)+-\d{1,2}"
_SNS_HOST = rf"sns\.(?P<region>{_REGION})\.amazonaws\.com(?P<cn>\.cn)?"
_CERT_URL = re.compile(rf"https://{_SNS_HOST}(?::443)?/[A-Za-z0-9._-]+(?:/[A-Za-z0-9._-]+)*\.pem")
_SUBSCRIBE_URL = re.compile(rf"https://{_SNS_HOST}(?::443)?/\?(?P<query>[A-Za-z0-9._~:%=&+-]+)")
_TOPIC_ARN = re.compile(
    rf"arn:(?P<partition>aws|aws-cn|aws-us-gov):sns:(?P<region>{_REGION}):\d{{12}}:"
    r"[A-Za-z0-9_-]{1,256}(?:\.fifo)?"
)

DEFAULT_MAX_AGE: Final = timedelta(hours=1) + C.DEFAULT_WEBHOOK_TOLERANCE
"""SNS gives up retrying an HTTPS delivery within an hour (a hard limit of its delivery
policies), and a retry keeps the original ``Timestamp``: anything older is a replay."""

_MAX_CERTIFICATE_BYTES = 64 * 1024
_CERTIFICATE_TIMEOUT = 5.0


# --------------------------------------------------------------------------- pure checks


def canonical_string(envelope: Mapping[str, Any]) -> bytes:
    """The bytes SNS signs for ``envelope``: ``Name\\nValue\\n`` for each signed field, in the
    documented order. Raises ``ValueError`` when a required field is missing or not text."""
    kind = envelope.get("Type")
    fields = _SIGNED_FIELDS.get(kind) if isinstance(kind, str) else None
    if fields is None:
        raise ValueError(f"unknown SNS message type {envelope.get('Type')!r}")
    parts: list[str] = []
    for name in fields:
        value = envelope.get(name)
        if value is None and name in _OPTIONAL_FIELDS:
            continue
        if not isinstance(value, str):
            raise ValueError(f"the signed field {name} is missing or not a string")
        parts.append(f"{name}\n{value}\n")
    return "".join(parts).encode("utf-8")


def topic_region(topic_arn: str) -> tuple[str, str] | None:
    """``(partition, region)`` of a well-formed SNS topic ARN, else None."""
    match = _TOPIC_ARN.fullmatch(topic_arn)
    return (match["partition"], match["region"]) if match else None


def certificate_url_ok(url: str) -> bool:
    """True only for an ``https`` URL of a ``.pem`` file on an SNS host, with no user info, no
    port other than 443, no query and no fragment."""
    return _CERT_URL.fullmatch(url) is not None


def subscribe_url_ok(url: str, envelope: Mapping[str, Any]) -> bool:
    """True only when ``url`` confirms this very subscription: an ``https`` SNS URL in the
    topic's own region and partition, whose query asks to confirm this topic with this token."""
    match = _SUBSCRIBE_URL.fullmatch(url)
    topic = envelope.get("TopicArn")
    where = topic_region(topic) if isinstance(topic, str) else None
    if match is None or where is None:
        return False
    partition, region = where
    if match["region"] != region or bool(match["cn"]) != (partition == "aws-cn"):
        return False
    query = parse_qs(match["query"], keep_blank_values=True)
    return (
        query.get("Action") == ["ConfirmSubscription"]
        and query.get("TopicArn") == [topic]
        and query.get("Token") == [envelope.get("Token")]
    )


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def looks_like_raw_delivery(document: Mapping[str, Any], headers: Mapping[str, str]) -> bool:
    """True for an SES event posted without the SNS envelope (raw message delivery)."""
    if headers.get("x-amz-sns-rawdelivery", "").lower() == "true":
        return True
    return "Type" not in document and (
        "eventType" in document or "notificationType" in document or "mail" in document
    )


# --------------------------------------------------------------------------- certificates


def fetch_certificate(url: str) -> bytes:
    """The default certificate loader: an HTTPS GET with a short timeout, no redirects, and a
    size cap. Only ever called for a URL that passed :func:`certificate_url_ok`."""
    with httpx.stream("GET", url, timeout=_CERTIFICATE_TIMEOUT, follow_redirects=False) as resp:
        resp.raise_for_status()
        data = bytearray()
        for chunk in resp.iter_bytes():
            data += chunk
            if len(data) > _MAX_CERTIFICATE_BYTES:
                raise ValueError("the signing certificate is larger than any real one")
    return bytes(data)


@dataclass(frozen=True, slots=True)
class _Certificate:
    key: rsa.RSAPublicKey
    not_before: datetime
    not_after: datetime
    cached_until: float


class CertificateCache:
    """Signing certificates by URL: bounded (least recently used out), each entry kept for at
    most ``ttl`` seconds. The validity dates are checked on every use against the clock of the
    verification, not only when the certificate is fetched."""

    def __init__(
        self,
        loader: CertificateLoader,
        *,
        max_entries: int = 16,
        ttl: float = 24 * 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._loader = loader
        self._max_entries = max(1, max_entries)
        self._ttl = ttl
        self._clock = clock
        self._entries: OrderedDict[str, _Certificate] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, url: str) -> _Certificate:
        """The certificate at ``url``, fetched when it is not cached or its entry expired.
        Raises ``ValueError`` (or whatever the loader raises) when it cannot be had."""
        now = self._clock()
        with self._lock:
            entry = self._entries.get(url)
            if entry is not None and entry.cached_until > now:
                self._entries.move_to_end(url)
                return entry
        entry = self._load(url, now)
        with self._lock:
            self._entries[url] = entry
            self._entries.move_to_end(url)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        return entry

    def _load(self, url: str, now: float) -> _Certificate:
        certificate = x509.load_pem_x509_certificate(self._loader(url))
        key = certificate.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise ValueError("the signing certificate does not hold an RSA key")
        return _Certificate(
            key=key,
            not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc,
            cached_until=now + self._ttl,
        )


# --------------------------------------------------------------------------- verifying


class SnsVerifier:
    """Checks that a request body is a message Amazon SNS signed, for an allowed topic.

    ``allowed_topic_arns`` (None: any topic) restricts the topics believed. ``max_age`` (None:
    no limit) refuses messages published longer ago than SNS keeps retrying. ``trusted_urls`` are
    exact certificate URLs trusted although they are not on an SNS host: for a local emulator
    only, never in production. ``allow_raw_delivery`` accepts SES events posted without the SNS
    envelope, which carry no signature at all.
    """

    def __init__(
        self,
        *,
        provider: str,
        allowed_topic_arns: frozenset[str] | None = None,
        certificate_loader: CertificateLoader | None = None,
        trusted_urls: Iterable[str] = (),
        allow_raw_delivery: bool = False,
        max_age: timedelta | None = DEFAULT_MAX_AGE,
        cache: CertificateCache | None = None,
    ) -> None:
        self.provider = provider
        self.allowed_topic_arns = allowed_topic_arns
        self.trusted_urls = frozenset(trusted_urls)
        self.allow_raw_delivery = allow_raw_delivery
        self.max_age = max_age
        self.cache = cache or CertificateCache(certificate_loader or fetch_certificate)

    def _fail(self, why: str) -> SignatureError:
        return signature_failure(self.provider, why)

    def verify(
        self, body: bytes, headers: Mapping[str, str] | None, *, now: datetime | None = None
    ) -> dict[str, Any] | None:
        """Return the verified SNS envelope, or None for an allowed raw delivery; raise
        ``SignatureError`` otherwise."""
        try:
            document = load_untrusted(body)
        except (ValueError, UnicodeDecodeError):
            raise self._fail("the body is not JSON") from None
        if not isinstance(document, dict):
            raise self._fail("the body is not an SNS message object")
        lowered = lower_headers(headers)
        if looks_like_raw_delivery(document, lowered):
            if self.allow_raw_delivery:
                return None
            raise self._fail(
                "raw message delivery carries no signature; turn it off on the SNS "
                "subscription (or pass allow_raw_delivery=True behind your own authentication)"
            )
        clock = now or datetime.now(UTC)
        self._check_envelope(document, lowered, clock)
        self._check_signature(document, clock)
        return document

    def _check_envelope(
        self, envelope: Mapping[str, Any], headers: Mapping[str, str], now: datetime
    ) -> None:
        kind = envelope.get("Type")
        if not isinstance(kind, str) or kind not in _SIGNED_FIELDS:
            raise self._fail(f"unknown SNS message type {kind!r}")
        if headers.get("x-amz-sns-message-type") != kind:
            raise self._fail("the x-amz-sns-message-type header does not match the body's Type")
        topic = envelope.get("TopicArn")
        if not isinstance(topic, str) or headers.get("x-amz-sns-topic-arn") != topic:
            raise self._fail("the x-amz-sns-topic-arn header does not match the body's TopicArn")
        header_id = headers.get("x-amz-sns-message-id")
        if header_id is not None and header_id != envelope.get("MessageId"):
            raise self._fail("the x-amz-sns-message-id header does not match the body")
        if topic_region(topic) is None:
            raise self._fail(f"{topic!r} is not an SNS topic ARN")
        if self.allowed_topic_arns is not None and topic not in self.allowed_topic_arns:
            raise self._fail(f"topic {topic} is not in allowed_topic_arns")
        published = _parse_time(envelope.get("Timestamp"))
        if published is None:
            raise self._fail("the Timestamp is missing or malformed")
        if published - now > C.DEFAULT_WEBHOOK_TOLERANCE:
            raise self._fail("the message is dated in the future")
        if self.max_age is not None and now - published > self.max_age:
            raise self._fail("the message is older than SNS keeps retrying: a replay")

    def _check_signature(self, envelope: Mapping[str, Any], now: datetime) -> None:
        version = envelope.get("SignatureVersion")
        algorithm = _HASHES.get(version) if isinstance(version, str) else None
        if algorithm is None:
            raise self._fail(f"unsupported SignatureVersion {envelope.get('SignatureVersion')!r}")
        try:
            signature = base64.b64decode(envelope.get("Signature") or "", validate=True)
            signed = canonical_string(envelope)
        except (ValueError, TypeError, binascii.Error) as exc:
            raise self._fail(f"unreadable signature or fields: {exc}") from None
        url = envelope.get("SigningCertURL")
        if not isinstance(url, str) or not (url in self.trusted_urls or certificate_url_ok(url)):
            raise self._fail(f"SigningCertURL {url!r} is not an https URL on an SNS host")
        try:
            certificate = self.cache.get(url)
        except Exception as exc:  # the loader is user code: whatever it raises, refuse
            raise self._fail(f"could not load the signing certificate: {exc!r}") from None
        if not certificate.not_before <= now <= certificate.not_after:
            raise self._fail("the signing certificate is not valid at the message's time")
        try:
            certificate.key.verify(signature, signed, padding.PKCS1v15(), algorithm())
        except InvalidSignature:
            raise self._fail("the signature does not match the message") from None


# --------------------------------------------------------------------------- signing


class SnsSigner:
    """Signs SNS envelopes with a generated RSA key and a self-signed certificate, exactly as
    SNS does, so that tests and the local emulator produce messages that verify for real.

    Give ``load_certificate`` to the adapter as its ``certificate_loader``: it serves this
    signer's certificate for whichever URL passed the host check.
    """

    DEFAULT_CERTIFICATE_URL = (
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-unimailtrack.pem"
    )

    def __init__(
        self,
        *,
        certificate_url: str = DEFAULT_CERTIFICATE_URL,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        key_size: int = 2048,
    ) -> None:
        self.certificate_url = certificate_url
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        start = not_before or datetime(2000, 1, 1, tzinfo=UTC)
        end = not_after or datetime.now(UTC) + timedelta(days=3650)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .sign(self._key, hashes.SHA256())
        )
        self.certificate_pem = certificate.public_bytes(serialization.Encoding.PEM)

    def load_certificate(self, url: str) -> bytes:
        """A ``certificate_loader`` that serves this signer's certificate."""
        return self.certificate_pem

    def signature(self, envelope: Mapping[str, Any], version: str = "2") -> str:
        """The base64 ``Signature`` SNS would put on ``envelope`` with ``SignatureVersion``
        ``version``."""
        digest = _HASHES[version]()
        raw = self._key.sign(canonical_string(envelope), padding.PKCS1v15(), digest)
        return base64.b64encode(raw).decode("ascii")

    def sign(self, envelope: Mapping[str, Any], version: str = "2") -> dict[str, Any]:
        """A copy of ``envelope`` with ``SignatureVersion``, ``SigningCertURL`` and
        ``Signature`` set."""
        signed = {**envelope, "SignatureVersion": version, "SigningCertURL": self.certificate_url}
        signed["Signature"] = self.signature(signed, version)
        return signed

    @staticmethod
    def headers(envelope: Mapping[str, Any]) -> dict[str, str]:
        """The headers SNS sends with ``envelope``."""
        return {
            "Content-Type": "text/plain; charset=UTF-8",
            "x-amz-sns-message-type": envelope["Type"],
            "x-amz-sns-message-id": envelope["MessageId"],
            "x-amz-sns-topic-arn": envelope["TopicArn"],
        }

    def notification(
        self,
        message: str | Mapping[str, Any],
        *,
        topic_arn: str,
        message_id: str | None = None,
        subject: str | None = None,
        timestamp: datetime | None = None,
        version: str = "2",
    ) -> tuple[bytes, dict[str, str]]:
        """A signed ``Notification`` carrying ``message`` (a dict is JSON-encoded, as SES
        publishes its events): the request body and headers SNS would post."""
        envelope: dict[str, Any] = {
            "Type": NOTIFICATION,
            "MessageId": message_id or str(uuid.uuid4()),
            "TopicArn": topic_arn,
            "Message": message if isinstance(message, str) else json.dumps(message),
            "Timestamp": _sns_time(timestamp),
        }
        if subject is not None:
            envelope["Subject"] = subject
        envelope["UnsubscribeURL"] = _sns_url(
            topic_arn, f"Action=Unsubscribe&SubscriptionArn={topic_arn}:{uuid.uuid4()}"
        )
        return self._post(self.sign(envelope, version))

    def subscription_confirmation(
        self,
        *,
        topic_arn: str,
        token: str | None = None,
        message_id: str | None = None,
        timestamp: datetime | None = None,
        version: str = "2",
        kind: str = SUBSCRIPTION_CONFIRMATION,
    ) -> tuple[bytes, dict[str, str]]:
        """A signed ``SubscriptionConfirmation`` (or ``UnsubscribeConfirmation``) for
        ``topic_arn`` whose ``SubscribeURL`` confirms it in the topic's own region."""
        token = token or uuid.uuid4().hex * 4
        envelope = {
            "Type": kind,
            "MessageId": message_id or str(uuid.uuid4()),
            "Token": token,
            "TopicArn": topic_arn,
            "Message": f"You have chosen to subscribe to the topic {topic_arn}.\n"
            "To confirm the subscription, visit the SubscribeURL included in this message.",
            "SubscribeURL": _sns_url(
                topic_arn, f"Action=ConfirmSubscription&TopicArn={topic_arn}&Token={token}"
            ),
            "Timestamp": _sns_time(timestamp),
        }
        return self._post(self.sign(envelope, version))

    def _post(self, envelope: Mapping[str, Any]) -> tuple[bytes, dict[str, str]]:
        return json.dumps(envelope, indent=2).encode("utf-8"), self.headers(envelope)


def _sns_time(when: datetime | None) -> str:
    moment = (when or datetime.now(UTC)).astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _sns_url(topic_arn: str, query: str) -> str:
    where = topic_region(topic_arn)
    if where is None:
        raise ValueError(f"{topic_arn!r} is not an SNS topic ARN")
    partition, region = where
    suffix = ".cn" if partition == "aws-cn" else ""
    return f"https://sns.{region}.amazonaws.com{suffix}/?{quote(query, safe='=&:')}"
