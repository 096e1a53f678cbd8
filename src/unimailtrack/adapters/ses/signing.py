"""SES webhook verification: Amazon SNS message signatures, as SES events arrive through SNS.

SNS signs every message it posts to an HTTPS endpoint: an RSA PKCS#1 v1.5 signature over a
canonical string of the message's fields (SHA-1 for ``SignatureVersion`` 1, SHA-256 for 2),
made with a key whose certificate SNS publishes at ``SigningCertURL``. The certificate is only
as trustworthy as the place it comes from, so :func:`certificate_url_ok` accepts nothing but
``https://sns.<region>.amazonaws.com/SimpleNotificationService-<hex>.pem`` (``.amazonaws.com.cn``
in China) in the region and partition of the message's own ``TopicArn``: one strict pattern over
the whole URL, so that no URL parser can be talked into another host or path. Certificates are
fetched once, without following redirects, and kept in a small cache that expires.

The signed string is ``Name\nValue\n`` for each signed field, and nothing in it marks where a
value ends: a newline inside a value could move bytes from one field into the next and keep the
signature. So every signed field but ``Message`` must be free of newlines (SNS never puts one
there: ids, times, ARNs, URLs, tokens, and a ``Subject`` that SNS refuses with a line break),
and ``Message`` comes first: read from the end, the string then splits into fields one way only.

The envelope is read before anything is known about it, so it is bounded before the JSON
decoder runs: its size (SNS posts nothing near :data:`MAX_ENVELOPE_BYTES` to an HTTPS endpoint),
then its nesting and how many arrays, objects and strings it holds (:func:`nesting_ok`, a scan in
linear time done by bytes operations, that recurses nowhere). The SES event inside a message is
bounded the same way before it is decoded.

:class:`SnsVerifier` runs every check in order, cheapest first, and fails closed: any doubt is a
``SignatureError`` whose cause is logged for the operator only. :class:`SnsSigner` is the other
half: a throwaway key and self-signed certificate that sign envelopes exactly as SNS does, for
tests and the local emulator. :func:`topic_set` checks the topics an adapter allows, and
:func:`confirmed` reads SNS's answer to a subscription confirmation.
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
from unimailtrack._json import openings
from unimailtrack.adapters._vocabulary import read_json
from unimailtrack.adapters.base import lower_headers, signature_failure
from unimailtrack.errors import (
    ConfigurationError,
    InvalidRequest,
    PayloadError,
    ProviderUnavailable,
    SignatureCause,
    SignatureError,
)

__all__ = [
    "DEFAULT_MAX_AGE",
    "CertificateCache",
    "SnsSigner",
    "SnsVerifier",
    "canonical_string",
    "certificate_url_ok",
    "confirmed",
    "fetch_certificate",
    "looks_like_raw_delivery",
    "nesting_ok",
    "subscribe_url_ok",
    "topic_region",
    "topic_set",
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
_MULTILINE_FIELDS: Final = frozenset({"Message"})
"""The one signed field that may hold newlines (a subscription confirmation's text does): it is
the first of the string, so the fields after it, newline-free, delimit it."""
_HASHES: Final[Mapping[str, type[hashes.HashAlgorithm]]] = {"1": hashes.SHA1, "2": hashes.SHA256}

# Regions look like us-east-1, us-gov-west-1, cn-northwest-1, ap-southeast-2.
_REGION = r"[a-z]{2}(?:-[a-z]+)+-\d{1,2}"
_SNS_HOST = rf"sns\.(?P<region>{_REGION})\.amazonaws\.com(?P<cn>\.cn)?"
# SNS names its signing certificates after a hexadecimal key id, at the root of the host.
_CERT_URL = re.compile(
    rf"https://{_SNS_HOST}(?::443)?/SimpleNotificationService-[0-9A-Fa-f]{{1,64}}\.pem"
)
_SUBSCRIBE_URL = re.compile(rf"https://{_SNS_HOST}(?::443)?/\?(?P<query>[A-Za-z0-9._~:%=&+-]+)")
_TOPIC_ARN = re.compile(
    rf"arn:(?P<partition>aws|aws-cn|aws-us-gov):sns:(?P<region>{_REGION}):\d{{12}}:"
    r"[A-Za-z0-9_-]{1,256}(?:\.fifo)?"
)

DEFAULT_MAX_AGE: Final = timedelta(hours=1) + C.DEFAULT_WEBHOOK_TOLERANCE
"""SNS gives up retrying an HTTPS delivery within an hour (a hard limit of its delivery
policies), and a retry keeps the original ``Timestamp``: anything older is a replay."""

MAX_ENVELOPE_BYTES: Final = 2 * 1024 * 1024
"""SNS posts to HTTP(S) endpoints only from topics whose messages are at most 256 KiB (larger
messages go to SQS, Lambda and Firehose alone); even with every byte escaped as ``\\u00XX``, such
a message and the rest of its envelope stay under this. Anything larger was not sent by SNS."""

MAX_DEPTH: Final = 32
"""How deep arrays and objects may nest in an SNS envelope or an SES event: an envelope nests
three deep (its ``MessageAttributes``), an SES event five (a subscription's topic preferences)."""

MAX_CONTAINERS: Final = 10_000
MAX_STRINGS: Final = 50_000
"""How many arrays and objects, and how many strings, an SNS envelope or an SES event may hold:
an SES event about fifty recipients with a hundred headers holds a few hundred arrays and
objects and a few thousand strings; anything with more was not written by SES and is not
scanned further."""

_MAX_CERTIFICATE_BYTES = 64 * 1024
_CERTIFICATE_TIMEOUT = 5.0
_CERTIFICATE_DEADLINE = 10.0
_PAIRS_TO_DROP: Final = (b"\\\\", b'\\"')  # an escaped backslash, then an escaped quote
_KEEP_STRUCTURE: Final = bytes(b for b in range(256) if b not in b'[]{}"')
_ONE_BRACKET: Final = bytes.maketrans(b"{}", b"[]")


# --------------------------------------------------------------------------- pure checks


def canonical_string(envelope: Mapping[str, Any]) -> bytes:
    """The bytes SNS signs for ``envelope``: ``Name\\nValue\\n`` for each signed field, in the
    documented order. Raises ``ValueError`` when a required field is missing or not text, or
    when a field other than ``Message`` holds a newline (the string would be ambiguous)."""
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
        if "\n" in value and name not in _MULTILINE_FIELDS:
            raise ValueError(f"the signed field {name} holds a newline")
        parts.append(f"{name}\n{value}\n")
    return "".join(parts).encode("utf-8")


_PARTITION_REGIONS: Final[Mapping[str, Callable[[str], bool]]] = {
    "aws": lambda region: not region.startswith(("cn-", "us-gov-")),
    "aws-cn": lambda region: region.startswith("cn-"),
    "aws-us-gov": lambda region: region.startswith("us-gov-"),
}


def topic_region(topic_arn: str) -> tuple[str, str] | None:
    """``(partition, region)`` of a well-formed SNS topic ARN whose region belongs to its
    partition (``aws-cn`` holds the ``cn-`` regions, ``aws-us-gov`` the ``us-gov-`` ones), else
    None."""
    match = _TOPIC_ARN.fullmatch(topic_arn)
    if match is None or not _PARTITION_REGIONS[match["partition"]](match["region"]):
        return None
    return match["partition"], match["region"]


def certificate_url_ok(url: str, topic_arn: str) -> bool:
    """True only for ``https://sns.<region>.amazonaws.com/SimpleNotificationService-<hex>.pem``
    (``.amazonaws.com.cn`` in China) whose region and partition are those of ``topic_arn``: no
    user info, no port other than 443, no other path, no query, no fragment, no encoding."""
    match = _CERT_URL.fullmatch(url)
    where = topic_region(topic_arn)
    if match is None or where is None:
        return False
    partition, region = where
    return match["region"] == region and bool(match["cn"]) == (partition == "aws-cn")


def nesting_ok(text: bytes | str, limit: int = MAX_DEPTH) -> bool:
    """False when the JSON ``text`` nests arrays and objects deeper than ``limit``, holds more
    than :data:`MAX_CONTAINERS` of them or :data:`MAX_STRINGS` strings, or its brackets do not
    pair up; True otherwise, also for text that is not JSON at all, which the decoder refuses
    next. Linear in the size of ``text``, done by bytes operations that run at memory speed,
    and recursion-free, so that it can run before anything is known about the text.

    Escaped backslashes and escaped quotes are dropped, so that the quotes left delimit the
    strings; what lies outside them is reduced to its brackets, and innermost pairs are
    removed one level at a time."""
    # Fewer brackets than the limit cannot nest deeper than it, nor fewer quotes make more
    # strings (and a text shorter than twice the bound holds fewer quotes). Counted in bytes:
    # encoding is a copy, and brackets are counted faster in bytes than in text.
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    if openings(data) <= limit and (
        len(data) <= 2 * MAX_STRINGS or data.count(b'"') <= 2 * MAX_STRINGS
    ):
        return True
    for pair in _PAIRS_TO_DROP:
        data = data.replace(pair, b"")
    data = data.translate(None, _KEEP_STRUCTURE)
    if data.count(b'"') > 2 * MAX_STRINGS:
        return False
    skeleton = b"".join(data.split(b'"')[0::2]).translate(_ONE_BRACKET)
    if len(skeleton) > 2 * MAX_CONTAINERS or b"[" * (limit + 1) in skeleton:
        return False
    for _ in range(limit):
        if not skeleton:
            return True
        inner = skeleton.replace(b"[]", b"")
        if len(inner) == len(skeleton):
            return False
        skeleton = inner
    return not skeleton


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
    """The default certificate loader: a GET that takes nothing but a 200 (a redirect is
    refused, never followed), with a short timeout, an overall deadline and a size cap. Only
    ever called for a URL that passed :func:`certificate_url_ok` (or one trusted exactly)."""
    give_up = time.monotonic() + _CERTIFICATE_DEADLINE
    with httpx.stream("GET", url, timeout=_CERTIFICATE_TIMEOUT, follow_redirects=False) as resp:
        if resp.status_code != 200:
            raise ValueError(f"the certificate URL answered {resp.status_code}, not 200")
        data = bytearray()
        for chunk in resp.iter_bytes():
            data += chunk
            if len(data) > _MAX_CERTIFICATE_BYTES:
                raise ValueError("the signing certificate is larger than any real one")
            if time.monotonic() > give_up:
                raise ValueError("the signing certificate is taking too long to arrive")
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

    def _fail(self, why: str, cause: SignatureCause = SignatureCause.MALFORMED) -> SignatureError:
        return signature_failure(self.provider, why, cause)

    def verify(
        self, body: bytes, headers: Mapping[str, str] | None, *, now: datetime | None = None
    ) -> dict[str, Any] | None:
        """Return the verified SNS envelope, or None for an allowed raw delivery; raise
        ``SignatureError`` otherwise."""
        if len(body) > MAX_ENVELOPE_BYTES:
            raise self._fail(f"the body is larger than any SNS message ({len(body)} bytes)")
        if not nesting_ok(body):
            raise self._fail(
                f"the body nests deeper than {MAX_DEPTH} levels or holds more arrays, objects "
                "or strings than any SNS message"
            )
        try:
            document = read_json(body, provider=self.provider, decode=_load_unique)
        except PayloadError:
            raise self._fail(
                "the body is not JSON, nests too deep, or names a field twice"
            ) from None
        if not isinstance(document, dict):
            raise self._fail("the body is not an SNS message object")
        lowered = lower_headers(headers)
        if looks_like_raw_delivery(document, lowered):
            if self.allow_raw_delivery:
                return None
            raise self._fail(
                "raw message delivery carries no signature; turn it off on the SNS "
                "subscription (or pass allow_raw_delivery=True behind your own authentication)",
                SignatureCause.MISSING_HEADER,
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
            raise self._fail(
                "the x-amz-sns-message-type header does not match the body's Type",
                _absent(headers, "x-amz-sns-message-type"),
            )
        topic = envelope.get("TopicArn")
        if not isinstance(topic, str) or headers.get("x-amz-sns-topic-arn") != topic:
            raise self._fail(
                "the x-amz-sns-topic-arn header does not match the body's TopicArn",
                _absent(headers, "x-amz-sns-topic-arn"),
            )
        # SNS sends all three headers with every request; the message id must be the one
        # signed in the body (a request without it did not come from SNS).
        if headers.get("x-amz-sns-message-id") != envelope.get("MessageId"):
            raise self._fail(
                "the x-amz-sns-message-id header is missing or not the MessageId",
                SignatureCause.MISSING_HEADER,
            )
        if topic_region(topic) is None:
            raise self._fail(f"{topic!r} is not an SNS topic ARN")
        if self.allowed_topic_arns is not None and topic not in self.allowed_topic_arns:
            raise self._fail(
                f"topic {topic} is not in allowed_topic_arns", SignatureCause.UNTRUSTED_SOURCE
            )
        published = _parse_time(envelope.get("Timestamp"))
        if published is None:
            raise self._fail("the Timestamp is missing or malformed")
        if published - now > C.DEFAULT_WEBHOOK_TOLERANCE:
            raise self._fail("the message is dated in the future", SignatureCause.STALE)
        if self.max_age is not None and now - published > self.max_age:
            raise self._fail(
                "the message is older than SNS keeps retrying: a replay", SignatureCause.STALE
            )

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
        topic = envelope.get("TopicArn")
        if not isinstance(url, str) or not isinstance(topic, str):
            raise self._fail("the SigningCertURL is missing", SignatureCause.MISSING_HEADER)
        if url not in self.trusted_urls and not certificate_url_ok(url, topic):
            raise self._fail(
                f"SigningCertURL {url[:200]!r} is not an SNS signing certificate in the region "
                f"of {topic}",
                SignatureCause.UNTRUSTED_SOURCE,
            )
        try:
            certificate = self.cache.get(url)
        except Exception as exc:  # the loader is user code: whatever it raises, refuse
            raise self._fail(
                f"could not load the signing certificate: {exc!r}", SignatureCause.CERTIFICATE
            ) from None
        if not certificate.not_before <= now <= certificate.not_after:
            raise self._fail(
                "the signing certificate is not valid at the message's time",
                SignatureCause.CERTIFICATE,
            )
        try:
            certificate.key.verify(signature, signed, padding.PKCS1v15(), algorithm())
        except InvalidSignature:
            raise self._fail(
                "the signature does not match the message", SignatureCause.BAD_SIGNATURE
            ) from None


def _load_unique(text: bytes | str) -> Any:
    return json.loads(text, object_pairs_hook=_unique_keys)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose keys are all distinct: a field given twice could be read one way by
    this check and another way by the parser."""
    document = dict(pairs)
    if len(document) != len(pairs):
        raise ValueError("a field is given twice")
    return document


# --------------------------------------------------------------------------- signing


class SnsSigner:
    """Signs SNS envelopes with a generated RSA key and a self-signed certificate, exactly as
    SNS does, so that tests and the local emulator produce messages that verify for real.

    Give ``load_certificate`` to the adapter as its ``certificate_loader``: it serves this
    signer's certificate for whichever URL passed the host check. Without ``certificate_url``
    each message names a certificate on the SNS host of its topic's region, as SNS does.
    """

    CERTIFICATE_NAME = "SimpleNotificationService-756e696d61696c747261636b2d74657374.pem"

    def __init__(
        self,
        *,
        certificate_url: str | None = None,
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

    def certificate_url_for(self, topic_arn: str) -> str:
        """The ``SigningCertURL`` this signer puts on a message of ``topic_arn``."""
        if self.certificate_url is not None:
            return self.certificate_url
        return f"{_sns_host(topic_arn)}/{self.CERTIFICATE_NAME}"

    def load_certificate(self, url: str) -> bytes:
        """A ``certificate_loader`` that serves this signer's certificate."""
        return self.certificate_pem

    def signature(self, envelope: Mapping[str, Any], version: str = "2") -> str:
        """The base64 ``Signature`` SNS would put on ``envelope`` with ``SignatureVersion``
        ``version``."""
        return self.sign_bytes(canonical_string(envelope), version)

    def sign_bytes(self, data: bytes, version: str = "2") -> str:
        """The base64 signature of ``data`` as it is, unchecked: for tests that show what a
        verifier does with a string SNS would never sign."""
        raw = self._key.sign(data, padding.PKCS1v15(), _HASHES[version]())
        return base64.b64encode(raw).decode("ascii")

    def sign(self, envelope: Mapping[str, Any], version: str = "2") -> dict[str, Any]:
        """A copy of ``envelope`` with ``SignatureVersion``, ``SigningCertURL`` and
        ``Signature`` set."""
        url = self.certificate_url_for(str(envelope.get("TopicArn")))
        signed = {**envelope, "SignatureVersion": version, "SigningCertURL": url}
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


def _sns_host(topic_arn: str) -> str:
    """``https://sns.<region>.amazonaws.com`` (``.cn`` in China) for the topic's region."""
    where = topic_region(topic_arn)
    if where is None:
        raise ValueError(f"{topic_arn!r} is not an SNS topic ARN")
    partition, region = where
    suffix = ".cn" if partition == "aws-cn" else ""
    return f"https://sns.{region}.amazonaws.com{suffix}"


def _sns_url(topic_arn: str, query: str) -> str:
    return f"{_sns_host(topic_arn)}/?{quote(query, safe='=&:')}"


def _absent(headers: Mapping[str, str], name: str) -> SignatureCause:
    """A header check's cause: the header is missing, or it says something else."""
    return SignatureCause.MALFORMED if name in headers else SignatureCause.MISSING_HEADER


# --------------------------------------------------------------------------- subscriptions


_SUBSCRIPTION_ARN = re.compile(r"<SubscriptionArn>([^<]+)</SubscriptionArn>")


def confirmed(response: httpx.Response) -> str:
    """The subscription ARN SNS answers a confirmation with, or the error it gave."""
    if response.status_code >= 500 or response.status_code == 429:
        raise ProviderUnavailable(
            "SNS could not confirm the subscription now; the confirmation can be retried",
            provider="ses",
            status=response.status_code,
            detail=response.text[:500],
        )
    if not response.is_success:
        raise InvalidRequest(
            "SNS refused the subscription confirmation (an expired token?); confirm it in the "
            "SNS console instead",
            provider="ses",
            status=response.status_code,
            detail=response.text[:500],
        )
    found = _SUBSCRIPTION_ARN.search(response.text)
    return found.group(1) if found else ""


def topic_set(topics: str | Iterable[str] | None) -> frozenset[str] | None:
    if topics is None:
        return None
    found = frozenset([topics] if isinstance(topics, str) else topics)
    malformed = sorted(t for t in found if topic_region(t) is None)
    if malformed:
        raise ConfigurationError(f"not SNS topic ARNs: {', '.join(malformed)}")
    return found
