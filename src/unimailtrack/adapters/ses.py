"""Amazon SES: send through the SES v2 API, read SES events as Amazon SNS delivers them.

Sending goes over the same HTTP seam as every other adapter: each recipient gets its own
``SendEmail`` request (``POST /v2/email/outbound-emails``) so that each copy carries its own
tracking id, as an SES message tag. boto3 is used for two things only, and imported only when
they are first needed: the AWS credential chain (or the session, profile or keys given) and
SigV4 signing through botocore. Building the requests resolves credentials, which may block on
STS or the instance metadata service, so the async path builds them in a worker thread.

Content is SES "simple" content (subject, text, HTML) unless the e-mail has attachments or
custom headers; then it is a raw MIME message built with the standard library. Tags, the
category and the metadata become SES message tags, sanitised to the characters SES accepts
(see :func:`sanitize_tag`), so that SES publishes them back with every event.

Events: SES publishes to an SNS topic (through a configuration set's event destination, or the
older per-identity notifications), and SNS posts them to the webhook. ``verify_webhook`` checks
the SNS signature (``unimailtrack.adapters._sns``); ``parse_webhook`` unwraps the envelope and
maps the SES event onto one ``EmailEvent`` per recipient concerned.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.utils import formataddr
from hashlib import blake2b
from typing import TYPE_CHECKING, Any, ClassVar, Final, Self

import httpx

from unimailtrack._http import parse_retry_after
from unimailtrack._json import load_untrusted
from unimailtrack.adapters import _sns
from unimailtrack.adapters._sns import CertificateLoader, SnsSigner, SnsVerifier
from unimailtrack.adapters.base import (
    Adapter,
    Call,
    PushCall,
    Recipient,
    RemoteSuppression,
    SuppressionPage,
    error_for_status,
    event_digest,
    signature_failure,
    unknown_event,
    webhook_log,
)
from unimailtrack.errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidRequest,
    MissingDependency,
    NotPermitted,
    PayloadError,
    ProviderUnavailable,
    RateLimited,
    SendError,
    SignatureCause,
)
from unimailtrack.model import (
    TRACKING_KEY,
    Address,
    BounceKind,
    DeliveryStatus,
    Email,
    EmailEvent,
    EventType,
    RecipientResult,
    make_event,
)

if TYPE_CHECKING:
    from email.message import EmailMessage

    import boto3
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from unimailtrack.config import Dsn

__all__ = [
    "CATEGORY_TAG",
    "TAG_PREFIX",
    "SESAdapter",
    "SnsSigner",
    "bounce_kind",
    "parse_body",
    "preference_change",
    "sanitize_tag",
    "ses_events",
]

PROVIDER: Final = "ses"
SEND_PATH: Final = "/v2/email/outbound-emails"

CATEGORY_TAG: Final = "unimailtrack_category"
"""The message tag that carries ``Email.category``."""
TAG_PREFIX: Final = "unimailtrack_tag_"
"""Each of ``Email.tags`` travels as a message tag named this prefix plus the tag."""
_RESERVED_PREFIX: Final = "unimailtrack_"

_MAX_TAG_LENGTH: Final = 256
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")

_CONFIGURATION_SET_HEADER: Final = "x-ses-configuration-set"
_LIST_MANAGEMENT_HEADER: Final = "x-ses-list-management-options"

_RESIGN_AFTER: Final = timedelta(minutes=1)
"""AWS refuses a request that arrives more than five minutes after its SigV4 time stamp; one
that waited this long in a paced or retried bulk send is signed again before it goes."""

_SNS_VALIDATION_MESSAGE: Final = "Successfully validated SNS topic for Amazon SES event publishing."
_CONTROL_NOTIFICATIONS: Final = frozenset({"AmazonSnsSubscriptionSucceeded"})
_SNS_CONTROL_TYPES: Final = frozenset(
    {_sns.SUBSCRIPTION_CONFIRMATION, _sns.UNSUBSCRIBE_CONFIRMATION}
)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


# --------------------------------------------------------------------------- optional boto3


@dataclass(frozen=True, slots=True)
class _Botocore:
    Session: type[boto3.Session]
    SigV4Auth: type[SigV4Auth]
    AWSRequest: type[AWSRequest]


@functools.cache
def _botocore() -> _Botocore:
    """boto3 and botocore, imported on first use so that the rest of the library never pays
    for them (nor needs them installed)."""
    try:
        import boto3
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
    except ImportError:  # pragma: no cover - exercised in the no-extras CI lane
        raise MissingDependency(
            "boto3", "ses", purpose="Sending through Amazon SES (AWS credentials and SigV4)"
        ) from None
    return _Botocore(Session=boto3.Session, SigV4Auth=SigV4Auth, AWSRequest=AWSRequest)


@dataclass(frozen=True, slots=True)
class _Signer:
    """Where SES v2 lives for this adapter and the credentials that sign requests to it."""

    credentials: Credentials
    region: str
    endpoint: str
    signing_name: str

    def sign(self, body: bytes) -> httpx.Request:
        aws = _botocore()
        url = self.endpoint + SEND_PATH
        request = aws.AWSRequest(
            method="POST", url=url, data=body, headers={"Content-Type": "application/json"}
        )
        # Refreshable credentials (STS, instance roles) renew here when they are about to expire.
        frozen = self.credentials.get_frozen_credentials()
        aws.SigV4Auth(frozen, self.signing_name, self.region).add_auth(request)
        return httpx.Request("POST", url, content=body, headers=dict(request.headers.items()))

    def sign_request(self, method: str, url: str, body: bytes) -> httpx.Request:
        """Any SES v2 request, signed (the suppression-list calls use it)."""
        aws = _botocore()
        headers = {"Content-Type": "application/json"} if body else {}
        request = aws.AWSRequest(method=method, url=url, data=body, headers=headers)
        frozen = self.credentials.get_frozen_credentials()
        aws.SigV4Auth(frozen, self.signing_name, self.region).add_auth(request)
        return httpx.Request(method, url, content=body, headers=dict(request.headers.items()))


def _stale(request: httpx.Request, now: datetime | None = None) -> bool:
    """True when ``request`` was signed long enough ago that SES may refuse the signature."""
    stamp = request.headers.get("x-amz-date", "")
    try:
        signed = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return False
    return (now or datetime.now(UTC)) - signed >= _RESIGN_AFTER


# --------------------------------------------------------------------------- pacing


class _Pacer:
    """Spaces requests at least ``1 / rate`` seconds apart, across threads and tasks alike.

    ``reserve`` books the next free slot and says how long to wait for it; the sync path sleeps
    that long, the async path awaits it. The base adapter already bounds how many requests are
    in flight; this bounds how many start per second, which is what SES's sending rate counts.
    """

    def __init__(self, rate: float | None, *, clock: Callable[[], float] = time.monotonic):
        if rate is not None and rate <= 0:
            raise ConfigurationError(f"send_rate must be a positive number, not {rate!r}")
        self.interval = 1.0 / rate if rate else 0.0
        self._clock = clock
        self._next = 0.0
        self._lock = threading.Lock()

    def reserve(self) -> float:
        if not self.interval:
            return 0.0
        with self._lock:
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
        return slot - now


# --------------------------------------------------------------------------- tags


def sanitize_tag(text: str) -> str:
    """``text`` as SES accepts a message tag name or value: every character other than ASCII
    letters, digits, ``_`` and ``-`` becomes ``_``, and the result is cut at 256 characters. An
    empty result becomes ``_`` (SES requires a value)."""
    return _TAG_UNSAFE.sub("_", text)[:_MAX_TAG_LENGTH] or "_"


def _shared_tags(email: Email) -> dict[str, str]:
    """The message tags every copy of ``email`` carries (all but the tracking id)."""
    tags: dict[str, str] = {}
    if email.category:
        tags[CATEGORY_TAG] = sanitize_tag(email.category)
    for tag in email.tags:
        tags.setdefault(sanitize_tag(TAG_PREFIX + tag), "1")
    for key, value in email.metadata.items():
        name = sanitize_tag(key)
        if not name.startswith(_RESERVED_PREFIX):
            tags.setdefault(name, sanitize_tag(value))
    return tags


# --------------------------------------------------------------------------- content


def _ses_address(address: Address) -> str:
    """An address as SES wants it: the display name as an RFC 2047 encoded word when it is not
    ASCII, the domain in IDNA form. SES refuses a non-ASCII local part; it is passed on as it is
    so that SES says so for that recipient alone."""
    local, _, domain = address.email.rpartition("@")
    with contextlib.suppress(UnicodeError):  # an unencodable domain is left for SES to refuse
        domain = domain.encode("idna").decode("ascii")
    mailbox = f"{local}@{domain}"
    if not address.name or not mailbox.isascii():
        return mailbox
    return formataddr((address.name, mailbox), charset="utf-8")


def _split_headers(headers: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """``(ses_options, mail_headers)``: the ``X-SES-*`` headers SES's own SMTP interface
    understands are taken as options of the request, the rest travel with the message."""
    options: dict[str, str] = {}
    rest: dict[str, str] = {}
    for name, value in headers.items():
        lowered = name.lower()
        if lowered in (_CONFIGURATION_SET_HEADER, _LIST_MANAGEMENT_HEADER):
            options[lowered] = value.strip()
        else:
            rest[name] = value
    return options, rest


def _list_management(value: str) -> dict[str, str]:
    """``"contact-list; topic=name"`` as SES's ``ListManagementOptions``."""
    name, _, rest = value.partition(";")
    options = {"ContactListName": name.strip()}
    key, _, topic = rest.partition("=")
    if key.strip().lower() == "topic" and topic.strip():
        options["TopicName"] = topic.strip()
    return options


def _simple_content(email: Email) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if email.text is not None:
        body["Text"] = {"Data": email.text, "Charset": "UTF-8"}
    if email.html is not None:
        body["Html"] = {"Data": email.html, "Charset": "UTF-8"}
    return {"Simple": {"Subject": {"Data": email.subject, "Charset": "UTF-8"}, "Body": body}}


def _mime_message(email: Email, headers: Mapping[str, str]) -> EmailMessage:
    """The raw MIME message for ``email``, without its ``To`` header (set per copy)."""
    from email.message import EmailMessage
    from email.policy import SMTP  # the MIME machinery is only loaded for raw content

    # Lines may run to RFC 5322's limit of 998: folded at 78, a header holding one token
    # longer than a line (a List-Unsubscribe URL) is written as RFC 2047 encoded-words,
    # which receivers do not read as a URI.
    message = EmailMessage(policy=SMTP.clone(max_line_length=998))
    message["From"] = _ses_address(email.sender)
    if email.reply_to is not None:
        message["Reply-To"] = _ses_address(email.reply_to)
    message["Subject"] = email.subject
    for name, value in headers.items():
        message[name] = value
    if email.text is not None:
        message.set_content(email.text)
        if email.html is not None:
            message.add_alternative(email.html, subtype="html")
    else:
        message.set_content(email.html or "", subtype="html")
    # Inline images belong to the HTML part (multipart/related); files to the whole message.
    html_part = message.get_body(preferencelist=("html",))
    files = list(email.attachments)
    if html_part is not None:
        files = [a for a in email.attachments if not a.inline]
        for attachment in email.attachments:
            if attachment.inline:
                html_part.add_related(
                    attachment.content,
                    *_mime_type(attachment.content_type),
                    cid=f"<{attachment.content_id}>",
                    filename=attachment.filename,
                    disposition="inline",
                )
    for attachment in files:
        message.add_attachment(
            attachment.content,
            *_mime_type(attachment.content_type),
            filename=attachment.filename,
            cid=f"<{attachment.content_id}>" if attachment.content_id else None,
        )
    return message


def _mime_type(content_type: str) -> tuple[str, str]:
    maintype, _, subtype = content_type.partition("/")
    return (maintype, subtype) if maintype and subtype else ("application", "octet-stream")


@dataclass(frozen=True, slots=True)
class _Plan:
    """What every copy of one e-mail shares; ``request_body`` adds what one recipient needs.
    A raw message is re-addressed in place for each copy, so a plan serves one build at a time.
    """

    payload: Mapping[str, Any]
    tags: Mapping[str, str]
    mime: EmailMessage | None  # the message when the content is raw MIME

    @classmethod
    def of(cls, email: Email, configuration_set: str | None) -> _Plan:
        options, headers = _split_headers(email.headers)
        payload: dict[str, Any] = {"FromEmailAddress": _ses_address(email.sender)}
        if email.reply_to is not None:
            payload["ReplyToAddresses"] = [_ses_address(email.reply_to)]
        chosen_set = options.get(_CONFIGURATION_SET_HEADER) or configuration_set
        if chosen_set:
            payload["ConfigurationSetName"] = chosen_set
        if _LIST_MANAGEMENT_HEADER in options:
            payload["ListManagementOptions"] = _list_management(options[_LIST_MANAGEMENT_HEADER])
        raw = bool(email.attachments or headers)
        if not raw:
            payload["Content"] = _simple_content(email)
        return cls(
            payload=payload,
            tags=_shared_tags(email),
            mime=_mime_message(email, headers) if raw else None,
        )

    def request_body(self, recipient: Recipient) -> bytes:
        payload = dict(self.payload)
        payload["Destination"] = {"ToAddresses": [_ses_address(recipient.address)]}
        tags = {TRACKING_KEY: recipient.tracking_id, **self.tags}
        payload["EmailTags"] = [{"Name": k, "Value": v} for k, v in tags.items()]
        if self.mime is not None:
            del self.mime["To"]
            self.mime["To"] = _ses_address(recipient.address)
            payload["Content"] = {
                "Raw": {"Data": base64.b64encode(self.mime.as_bytes()).decode("ascii")}
            }
        return json.dumps(payload, separators=(",", ":")).encode("utf-8")


# --------------------------------------------------------------------------- responses

_ErrorClass = type[SendError]

_ERRORS: Final[Mapping[str, tuple[_ErrorClass, str]]] = {
    "MessageRejected": (
        InvalidRequest,
        "SES rejected the message (its content, or an address it will not send to)",
    ),
    "BadRequestException": (InvalidRequest, "SES refused the request as invalid"),
    "ValidationException": (InvalidRequest, "SES refused the request as invalid"),
    "SerializationException": (InvalidRequest, "SES could not read the request"),
    "NotFoundException": (
        InvalidRequest,
        "SES does not know a resource the request names (the configuration set?)",
    ),
    "MailFromDomainNotVerifiedException": (
        NotPermitted,
        "the sending domain (or its custom MAIL FROM domain) is not verified in SES",
    ),
    "AccountSuspendedException": (
        NotPermitted,
        "the SES account's ability to send is suspended; see the SES console",
    ),
    "SendingPausedException": (
        NotPermitted,
        "sending is paused for this SES account or configuration set",
    ),
    "AccessDeniedException": (
        NotPermitted,
        "these AWS credentials may not send this message (IAM ses:SendEmail)",
    ),
    "TooManyRequestsException": (RateLimited, "SES is throttling requests; slow down"),
    "ThrottlingException": (RateLimited, "SES is throttling requests; slow down"),
    "Throttling": (RateLimited, "SES is throttling requests; slow down"),
    "LimitExceededException": (RateLimited, "an SES sending quota is exhausted"),
    "UnrecognizedClientException": (AuthenticationError, "AWS does not know this access key"),
    "InvalidClientTokenId": (AuthenticationError, "AWS does not know this access key"),
    "InvalidSignatureException": (
        AuthenticationError,
        "the request signature is wrong; check the secret access key",
    ),
    "SignatureDoesNotMatch": (
        AuthenticationError,
        "the request signature is wrong; check the secret access key",
    ),
    "IncompleteSignature": (AuthenticationError, "the request signature is incomplete"),
    "MissingAuthenticationToken": (AuthenticationError, "the request carries no credentials"),
    "ExpiredToken": (AuthenticationError, "the AWS session token has expired"),
    "ExpiredTokenException": (AuthenticationError, "the AWS session token has expired"),
    "RequestExpired": (
        AuthenticationError,
        "the request signature expired; check this machine's clock",
    ),
    "InternalFailure": (ProviderUnavailable, "SES failed to handle the request"),
    "InternalServiceErrorException": (ProviderUnavailable, "SES failed to handle the request"),
    "ServiceUnavailable": (ProviderUnavailable, "SES is unavailable"),
}
"""SES error codes (``x-amzn-ErrorType``) and what they mean for the sender."""

_SANDBOX_HINT: Final = "not verified"


def _error_code(response: httpx.Response) -> tuple[str, str]:
    """``(code, message)`` of an SES error response, the way AWS's own clients read it: the
    ``x-amzn-ErrorType`` header first, then the body's ``__type`` or ``code``."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {}
    code = response.headers.get("x-amzn-errortype") or body.get("__type") or body.get("code")
    code = str(code or "").split(":", 1)[0].rsplit("#", 1)[-1]
    message = body.get("message") or body.get("Message") or response.text[:500]
    return code, str(message)


def _send_error(response: httpx.Response) -> SendError:
    code, message = _error_code(response)
    detail = f"{code}: {message}" if code else message
    known = _ERRORS.get(code)
    if known is None:
        return error_for_status(PROVIDER, response, detail)
    cls, text = known
    if code == "MessageRejected" and _SANDBOX_HINT in message.lower():
        cls, text = NotPermitted, "an address is not verified in SES (is the account in sandbox?)"
    fields: dict[str, Any] = {
        "provider": PROVIDER,
        "status": response.status_code,
        "detail": detail,
    }
    if cls is RateLimited or cls is ProviderUnavailable:
        fields["retry_after"] = parse_retry_after(response.headers.get("retry-after"))
    return cls(text, **fields)


def _interpret(recipient: Recipient, response: httpx.Response) -> list[RecipientResult]:
    """One copy's outcome: accepted with SES's ``MessageId``, or the error SES gave."""
    if not response.is_success:
        raise _send_error(response)
    try:
        message_id = response.json().get("MessageId")
    except (ValueError, AttributeError):
        message_id = None  # SES took it; a garbled answer must not cause a second send
    return [
        RecipientResult(
            recipient=recipient.address.email,
            tracking_id=recipient.tracking_id,
            status=DeliveryStatus.ACCEPTED,
            message_id=message_id,
            provider=PROVIDER,
        )
    ]


_SUBSCRIPTION_ARN = re.compile(r"<SubscriptionArn>([^<]+)</SubscriptionArn>")


def _confirmed(response: httpx.Response) -> str:
    """The subscription ARN SNS answers a confirmation with, or the error it gave."""
    if response.status_code >= 500 or response.status_code == 429:
        raise ProviderUnavailable(
            "SNS could not confirm the subscription now; the confirmation can be retried",
            provider=PROVIDER,
            status=response.status_code,
            detail=response.text[:500],
        )
    if not response.is_success:
        raise InvalidRequest(
            "SNS refused the subscription confirmation (an expired token?); confirm it in the "
            "SNS console instead",
            provider=PROVIDER,
            status=response.status_code,
            detail=response.text[:500],
        )
    found = _SUBSCRIPTION_ARN.search(response.text)
    return found.group(1) if found else ""


# --------------------------------------------------------------------------- the adapter


def _topic_set(topics: str | Iterable[str] | None) -> frozenset[str] | None:
    if topics is None:
        return None
    found = frozenset([topics] if isinstance(topics, str) else topics)
    malformed = sorted(t for t in found if _sns.topic_region(t) is None)
    if malformed:
        raise ConfigurationError(f"not SNS topic ARNs: {', '.join(malformed)}")
    return found


class SESAdapter(Adapter):
    """Amazon SES (contract): SES v2 ``SendEmail`` over SigV4, SNS-verified events.

    Credentials come from ``access_key_id`` / ``secret_access_key`` (and ``session_token``), a
    ``boto3_session``, a ``profile``, or else the standard AWS chain; the region from
    ``region`` or that session. ``configuration_set`` names the SES configuration set whose
    event destination publishes to SNS (an ``X-SES-CONFIGURATION-SET`` header picks another per
    e-mail). ``send_rate`` caps requests started per second (SES's maximum send rate).

    Webhooks: ``allowed_topic_arns`` restricts which SNS topics are believed (and is required to
    confirm subscriptions); ``certificate_loader(url) -> PEM`` replaces the HTTPS fetch of the
    signing certificate and is only called for URLs on an SNS host. ``trusted_certificate_urls``
    trusts exact extra certificate URLs: for a local emulator only. ``allow_raw_delivery``
    accepts unsigned SES events posted without the SNS envelope.
    """

    name: ClassVar[str] = PROVIDER
    dsn_options: ClassVar[frozenset[str]] = frozenset(
        {
            "region",
            "configuration_set",
            "topic_arns",
            "profile",
            "session_token",
            "endpoint_url",
            "send_rate",
            "allow_raw_delivery",
            "trusted_certificate_urls",
        }
    )

    def __init__(
        self,
        *,
        region: str | None = None,
        configuration_set: str | None = None,
        allowed_topic_arns: str | Iterable[str] | None = None,
        certificate_loader: CertificateLoader | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        boto3_session: boto3.Session | None = None,
        profile: str | None = None,
        endpoint_url: str | None = None,
        trusted_certificate_urls: Iterable[str] = (),
        allow_raw_delivery: bool = False,
        send_rate: float | None = None,
        max_message_age: timedelta | None = _sns.DEFAULT_MAX_AGE,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if (access_key_id is None) != (secret_access_key is None):
            raise ConfigurationError(
                "SES needs both access_key_id and secret_access_key, or neither"
            )
        if boto3_session is not None and (access_key_id is not None or profile is not None):
            raise ConfigurationError("give SES a boto3_session, or keys, or a profile: not several")
        self.region = region
        self.configuration_set = configuration_set
        self.allowed_topic_arns = _topic_set(allowed_topic_arns)
        self.endpoint_url = endpoint_url
        self._keys = (access_key_id, secret_access_key, session_token)
        self._session = boto3_session
        self._profile = profile
        self._signer: _Signer | None = None
        self._signer_lock = threading.Lock()
        self._pacer = _Pacer(send_rate)
        trusted = tuple(trusted_certificate_urls)
        if trusted:
            webhook_log.warning(
                "ses: trusting SNS signing certificates from %s although they are not on SNS "
                "hosts; this is for a local emulator only",
                ", ".join(trusted),
            )
        self._verifier = SnsVerifier(
            provider=PROVIDER,
            allowed_topic_arns=self.allowed_topic_arns,
            certificate_loader=certificate_loader,
            trusted_urls=trusted,
            allow_raw_delivery=allow_raw_delivery,
            max_age=max_message_age,
        )

    @classmethod
    def from_dsn(cls, dsn: Dsn, *, env: Mapping[str, str] | None = None) -> Self:
        """``ses://ACCESS_KEY:SECRET@default?region=eu-west-1&configuration_set=X&topic_arns=A,B``
        or ``ses://default?region=...`` for the AWS credential chain. Without ``region`` the
        chain's region (``AWS_REGION``, the profile) applies; without ``topic_arns``,
        ``UNIMAILTRACK_SES_TOPIC_ARNS``."""
        environ = env or {}
        if dsn.host != "default":
            raise ConfigurationError(
                f"an SES DSN names no host (use ?endpoint_url= for another endpoint): "
                f"{dsn.redacted()}"
            )
        if (dsn.user is None) != (dsn.password is None):
            raise ConfigurationError(
                f"an SES DSN needs ACCESS_KEY:SECRET (URL-encoded) or no credentials at all: "
                f"{dsn.redacted()}"
            )
        topics = dsn.list_option("topic_arns") or tuple(
            t.strip()
            for t in environ.get("UNIMAILTRACK_SES_TOPIC_ARNS", "").split(",")
            if t.strip()
        )
        return cls(
            region=dsn.option("region") or environ.get("AWS_REGION") or None,
            configuration_set=dsn.option("configuration_set"),
            allowed_topic_arns=topics or None,
            access_key_id=dsn.user,
            secret_access_key=dsn.password,
            session_token=dsn.option("session_token"),
            profile=dsn.option("profile"),
            endpoint_url=dsn.option("endpoint_url"),
            send_rate=dsn.float_option("send_rate") if "send_rate" in dsn.options else None,
            allow_raw_delivery=(
                dsn.bool_option("allow_raw_delivery")
                if "allow_raw_delivery" in dsn.options
                else False
            ),
            trusted_certificate_urls=dsn.list_option("trusted_certificate_urls"),
            **cls.common_options(dsn),
        )

    # ------------------------------------------------------------------ AWS

    def _aws_signer(self) -> _Signer:
        """Credentials, region and endpoint, resolved once (boto3 is imported here)."""
        with self._signer_lock:
            if self._signer is None:
                self._signer = self._resolve()
            return self._signer

    def _resolve(self) -> _Signer:
        aws = _botocore()
        access_key, secret, token = self._keys
        session = self._session or aws.Session(
            aws_access_key_id=access_key,
            aws_secret_access_key=secret,
            aws_session_token=token,
            profile_name=self._profile,
        )
        region = self.region or session.region_name
        if not region:
            raise ConfigurationError(
                "SES needs a region: ?region= in the DSN, region=..., or AWS_REGION"
            )
        credentials = session.get_credentials()
        if credentials is None:
            raise ConfigurationError(
                "no AWS credentials found: put ACCESS_KEY:SECRET in the DSN, or configure the "
                "AWS credential chain (environment, profile, instance role)"
            )
        # botocore's resolver knows the FIPS, China and GovCloud endpoints and honours
        # AWS_USE_FIPS_ENDPOINT / AWS_ENDPOINT_URL_SESV2; a client is built once to ask it.
        client = session.client("sesv2", region_name=region, endpoint_url=self.endpoint_url)
        return _Signer(
            credentials=credentials,
            region=region,
            endpoint=client.meta.endpoint_url.rstrip("/"),
            signing_name=client.meta.service_model.signing_name or PROVIDER,
        )

    # ------------------------------------------------------------------ sending

    def build_calls(self, email: Email, recipients: Sequence[Recipient]) -> list[Call]:
        """One signed SES v2 ``SendEmail`` per recipient, each with its own tracking tag."""
        if email.send_at is not None:
            raise InvalidRequest(
                "SES cannot schedule a send; send it at send_at from your own scheduler",
                provider=PROVIDER,
            )
        signer = self._aws_signer()
        plan = _Plan.of(email, self.configuration_set)
        return [
            Call(
                request=signer.sign(plan.request_body(recipient)),
                recipients=(recipient,),
                interpret=functools.partial(_interpret, recipient),
            )
            for recipient in recipients
        ]

    async def abuild_calls(self, email: Email, recipients: Sequence[Recipient]) -> list[Call]:
        """``build_calls`` in a worker thread: resolving or refreshing AWS credentials may
        block on STS or the instance metadata service."""
        return await asyncio.to_thread(self.build_calls, email, recipients)

    def _resign(self, call: Call) -> Call:
        return replace(call, request=self._aws_signer().sign(call.request.content))

    def _run(self, call: Call) -> list[RecipientResult]:
        wait = self._pacer.reserve()
        if wait:
            time.sleep(wait)
        if _stale(call.request):
            call = self._resign(call)
        return super()._run(call)

    async def _arun(self, call: Call) -> list[RecipientResult]:
        wait = self._pacer.reserve()
        if wait:
            await asyncio.sleep(wait)
        if _stale(call.request):
            call = await asyncio.to_thread(self._resign, call)
        return await super()._arun(call)

    # ------------------------------------------------------------------ webhooks

    # Suppression list (adapters/_suppressions_ses.py holds the wire format).

    def suppression_page_request(self, cursor: str | None) -> httpx.Request:
        from unimailtrack.adapters import _suppressions_ses as lists

        signer = self._aws_signer()
        return lists.page_request(signer.endpoint, signer.sign_request, cursor)

    async def asuppression_page_request(self, cursor: str | None) -> httpx.Request:
        return await asyncio.to_thread(self.suppression_page_request, cursor)

    def read_suppression_page(
        self, cursor: str | None, response: httpx.Response
    ) -> SuppressionPage:
        from unimailtrack.adapters import _suppressions_ses as lists

        return lists.read_page(cursor, response)

    def suppression_push_calls(
        self, entries: Sequence[RemoteSuppression]
    ) -> tuple[list[PushCall], list[tuple[RemoteSuppression, str]]]:
        from unimailtrack.adapters import _suppressions_ses as lists

        signer = self._aws_signer()
        return lists.push_calls(signer.endpoint, signer.sign_request, entries)

    async def asuppression_push_calls(
        self, entries: Sequence[RemoteSuppression]
    ) -> tuple[list[PushCall], list[tuple[RemoteSuppression, str]]]:
        return await asyncio.to_thread(self.suppression_push_calls, entries)

    @classmethod
    def list_change(cls, provider_event: str, type: EventType) -> str | None:
        """A subscription event is the contact list itself changing."""
        if provider_event != "Subscription":
            return None
        return {EventType.UNSUBSCRIBED: "added", EventType.RESUBSCRIBED: "lifted"}.get(type)

    def verify_webhook(
        self, body: bytes, headers: Mapping[str, str], *, now: datetime | None = None
    ) -> None:
        """Raise ``SignatureError`` unless ``body`` is a message Amazon SNS signed for an
        allowed topic, fresh, and consistent with its headers (contract)."""
        if self._verification_disabled():
            return
        self._verifier.verify(body, headers, now=now)

    def _confirmation_request(
        self, body: bytes, headers: Mapping[str, str], now: datetime | None
    ) -> httpx.Request:
        if self.allowed_topic_arns is None:
            raise ConfigurationError(
                "confirming SNS subscriptions needs allowed_topic_arns (?topic_arns= in the DSN): "
                "otherwise anyone's topic could subscribe this endpoint"
            )
        envelope = self._verifier.verify(body, headers, now=now)
        if envelope is None:
            raise signature_failure(
                PROVIDER,
                "a raw delivery cannot confirm a subscription",
                SignatureCause.MISSING_HEADER,
            )
        if envelope.get("Type") != _sns.SUBSCRIPTION_CONFIRMATION:
            raise PayloadError(
                f"not an SNS subscription confirmation (Type={envelope.get('Type')!r})",
                provider=PROVIDER,
            )
        url = envelope.get("SubscribeURL")
        if not isinstance(url, str) or not _sns.subscribe_url_ok(url, envelope):
            raise signature_failure(
                PROVIDER,
                f"SubscribeURL {url!r} does not confirm this topic on its SNS host",
                SignatureCause.UNTRUSTED_SOURCE,
            )
        return httpx.Request("GET", url)

    def confirm_subscription(
        self, body: bytes, headers: Mapping[str, str], *, now: datetime | None = None
    ) -> str:
        """Verify an SNS ``SubscriptionConfirmation`` and confirm it by GETting its
        ``SubscribeURL`` (only an SNS URL in the topic's own region); return the subscription
        ARN. The signature is checked even when ``verify_webhooks`` is off."""
        request = self._confirmation_request(body, headers, now)
        return _confirmed(self.transport.send(request))

    async def aconfirm_subscription(
        self, body: bytes, headers: Mapping[str, str], *, now: datetime | None = None
    ) -> str:
        """The async twin of ``confirm_subscription`` (the certificate fetch runs in a worker
        thread)."""
        request = await asyncio.to_thread(self._confirmation_request, body, headers, now)
        return _confirmed(await self.async_transport.send(request))

    @classmethod
    def parse_webhook_body(
        cls, body: bytes, headers: Mapping[str, str] | None = None
    ) -> list[EmailEvent]:
        """SNS-enveloped SES events (or raw deliveries) as canonical events, one per recipient;
        SNS control messages parse to ``[]``. Raises only ``PayloadError``."""
        return parse_body(body, headers)

    def __repr__(self) -> str:
        return f"<SESAdapter region={self.region!r} configuration_set={self.configuration_set!r}>"


# --------------------------------------------------------------------------- parsing


def _load(text: str | bytes, what: str) -> Any:
    try:
        return load_untrusted(text)
    except (ValueError, UnicodeDecodeError):  # orjson's JSONDecodeError is a ValueError
        raise PayloadError(f"{what} is not JSON", provider=PROVIDER) from None


def _bounded(text: str | bytes, what: str) -> str | bytes:
    """``text`` when it nests no deeper than an SES event can (checked before decoding: what is
    kept of an event must stay storable and readable); else ``PayloadError``."""
    if not _sns.nesting_ok(text):
        raise PayloadError(
            f"{what} nests deeper than {_sns.MAX_DEPTH} levels, or holds more arrays, objects "
            "or strings than any SES event",
            provider=PROVIDER,
        )
    return text


def parse_body(body: bytes, headers: Mapping[str, str] | None = None) -> list[EmailEvent]:
    """Unwrap an SNS envelope (or take a raw delivery as it is) and map the SES event.

    Event ids are seeded with a digest of the SES event's own text (the signed ``Message``, or
    the body of a raw delivery, which is that same text): a retried delivery yields the same
    ids, and so does the same event under another SNS ``MessageId``, which is not what the
    event is."""
    # Both decoders stop a body nested too deep for them (a PayloadError); an envelope's values
    # are strings, and what is kept of a message, the SES event, is bounded before decoding.
    document = _load(body, "the body")
    if not isinstance(document, dict):
        raise PayloadError("the body is not an SNS message object", provider=PROVIDER)
    kind = document.get("Type")
    if kind == _sns.NOTIFICATION:
        message = document.get("Message")
        if not isinstance(message, str):
            raise PayloadError("the SNS notification has no Message", provider=PROVIDER)
        if message == _SNS_VALIDATION_MESSAGE:
            return []
        event = _load(_bounded(message, "the SNS Message"), "the SNS Message")
        seed = event_digest(message)
        published = document.get("Timestamp")
    elif isinstance(kind, str) and kind in _SNS_CONTROL_TYPES:
        return []
    elif kind is None and _sns.looks_like_raw_delivery(document, {}):
        _bounded(body, "the body")  # the body is the event
        event = document
        seed = event_digest(body)
        published = None
    else:
        raise PayloadError(f"not an SNS message (Type={kind!r})", provider=PROVIDER)
    if not isinstance(event, dict):
        raise PayloadError("the SES event is not an object", provider=PROVIDER)
    return ses_events(event, seed, published)


def _timestamp(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


@dataclass(slots=True)
class _Source:
    """What every event from one SES notification shares (not frozen: built once per
    notification on the hot path, and a frozen init costs more than the rest of it)."""

    name: str
    seed: str
    message_id: str
    tracking_id: str | None
    tags: list[str]
    metadata: dict[str, str]
    sent: datetime
    raw: dict[str, Any]

    def event(
        self,
        recipient: str,
        kind: EventType,
        timestamp: datetime | None,
        *,
        reason: str | None = None,
        bounce: BounceKind | None = None,
        smtp_status: str | None = None,
        url: str | None = None,
        user_agent: str | None = None,
    ) -> EmailEvent:
        if not isinstance(recipient, str):
            raise TypeError(f"recipient {recipient!r} is not an address")
        return make_event(
            PROVIDER,
            kind,
            self.name,
            recipient,
            _event_id(self.seed, recipient, self.name),
            timestamp or self.sent,
            self.message_id,
            self.tracking_id,
            reason,
            bounce,
            smtp_status,
            None,
            url,
            user_agent,
            None,
            self.tags,
            self.metadata,
            self.raw,
        )

    def everyone(
        self, kind: EventType, timestamp: datetime | None, **fields: Any
    ) -> list[EmailEvent]:
        """One event per destination of the mail (for events SES reports about the message
        as a whole: send, reject, open, click, rendering failure, subscription)."""
        destination = self.raw["mail"].get("destination")
        if not isinstance(destination, list):
            raise TypeError("mail.destination is not a list")
        return [self.event(r, kind, timestamp, **fields) for r in destination]


def _event_id(seed: str, recipient: str, name: str) -> str:
    """The id of one recipient's event from one SES event: a digest of the event's seed (a
    digest of its text), the recipient and the SES event type, so a retried delivery yields the
    same ids. (One hash over NUL-joined parts: the seed is hexadecimal and the event type is
    the same for every recipient, so no two recipients' parts join alike; half the cost of the
    general ``event_digest`` on a path that runs for every recipient of every notification.)"""
    data = f"{seed}\0{recipient}\0{name}".encode("utf-8", "surrogatepass")
    return blake2b(data, digest_size=16).hexdigest()


def _read_tags(tags: object) -> tuple[str | None, list[str], dict[str, str]]:
    """``(tracking_id, tags, metadata)`` from an SES event's ``mail.tags`` (each value a list
    of strings); SES's own ``ses:*`` tags are left out."""
    tracking_id: str | None = None
    labels: list[str] = []
    metadata: dict[str, str] = {}
    if not isinstance(tags, dict):
        return tracking_id, labels, metadata
    for name, values in tags.items():
        if name.startswith("ses:"):
            continue
        value = values[0] if isinstance(values, list) and values else ""
        if not isinstance(value, str):
            continue
        if name == TRACKING_KEY:
            tracking_id = value or None
        elif name == CATEGORY_TAG:
            labels.insert(0, value)
        elif name.startswith(TAG_PREFIX):
            labels.append(name[len(TAG_PREFIX) :])
        else:
            metadata[name] = value
    return tracking_id, labels, metadata


def ses_events(event: dict[str, Any], seed: str, published: object = None) -> list[EmailEvent]:
    """Map one SES event (event publishing's ``eventType`` or a legacy ``notificationType``)
    onto canonical events, one per recipient it concerns. ``seed`` seeds the event ids (the
    parser gives a digest of the event's text); ``published`` (the SNS ``Timestamp``) dates an
    event whose mail carries no time."""
    name = str(event.get("eventType") or event.get("notificationType") or "")
    if name in _CONTROL_NOTIFICATIONS:
        return []
    mail = event.get("mail")
    message_id = mail.get("messageId") if isinstance(mail, dict) else None
    if not isinstance(mail, dict) or not isinstance(message_id, str) or not message_id:
        raise PayloadError("the SES event has no mail.messageId", provider=PROVIDER)
    tracking_id, tags, metadata = _read_tags(mail.get("tags"))
    source = _Source(
        name=name,
        seed=seed,
        message_id=message_id,
        tracking_id=tracking_id,
        tags=tags,
        metadata=metadata,
        sent=_timestamp(mail.get("timestamp")) or _timestamp(published) or _EPOCH,
        raw=event,
    )
    mapper = _MAPPERS.get(source.name)
    if mapper is None:
        return [
            _unknown(source, f"SES event type {name!r} is not mapped" if name else "no eventType")
        ]
    try:
        return mapper(event, source)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return [_unknown(source, f"the {name} event could not be read: {exc!r}")]


def _unknown(source: _Source, reason: str) -> EmailEvent:
    return unknown_event(
        PROVIDER,
        source.raw,
        reason,
        provider_event=source.name,
        timestamp=source.sent,
        digest_source=f"{source.seed}\n{source.name}",
    )


# RFC 3463 enhanced status codes, as SES reports them or as they appear in the diagnostic text.
_STATUS = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")
_DIAGNOSTIC_TYPE = re.compile(r"^\s*[A-Za-z][A-Za-z0-9-]*;\s*")

_BOUNCE_KINDS: Final[Mapping[str, BounceKind]] = {
    "Permanent": BounceKind.HARD,
    "Transient": BounceKind.SOFT,
    "Undetermined": BounceKind.UNDETERMINED,
}
_BLOCK_SUBTYPES: Final = frozenset({"ContentRejected", "AttachmentRejected"})
_DROPPED_SUBTYPES: Final[Mapping[str, BounceKind | None]] = {
    # SES's global list holds addresses with a recent history of hard bounces; the
    # account-level list may hold an address for a bounce or a complaint.
    "Suppressed": BounceKind.HARD,
    "OnAccountSuppressionList": None,
}
_DELAY_KINDS: Final[Mapping[str, BounceKind | None]] = {
    "MailboxFull": BounceKind.SOFT,
    "General": BounceKind.SOFT,
    "RecipientServerError": BounceKind.SOFT,
    "TransientCommunicationFailure": BounceKind.SOFT,
    "SpamDetected": BounceKind.BLOCK,
    "IPFailure": BounceKind.BLOCK,
    "Undetermined": BounceKind.UNDETERMINED,
    # InternalFailure, SendingDeferral, BYOIPHostNameLookupUnavailable: SES's side, no kind.
}


def _status_of(status: object, diagnostic: str | None) -> str | None:
    if isinstance(status, str) and _STATUS.fullmatch(status.strip()):
        return status.strip()
    found = _STATUS.search(diagnostic) if diagnostic else None
    return found.group(1) if found else None


def bounce_kind(bounce_type: str, subtype: str, status: str | None) -> BounceKind:
    """The canonical kind of an SES bounce: its ``bounceType``, refined by the subtype and the
    RFC 3463 status. An address error (5.1.x) is hard whatever SES labelled it; a full mailbox
    (x.2.2) is soft; a content or policy rejection (x.7.x on a bounce SES did not call
    permanent) is a block."""
    kind = _BOUNCE_KINDS.get(bounce_type, BounceKind.UNDETERMINED)
    if subtype in _BLOCK_SUBTYPES:
        return BounceKind.BLOCK
    if status is None:
        return kind
    if status.startswith("5.1."):
        return BounceKind.HARD
    if status[1:].startswith(".2.2"):
        return BounceKind.SOFT
    if status[1:].startswith(".7.") and kind is not BounceKind.HARD:
        return BounceKind.BLOCK
    return kind


def _diagnostic(text: object) -> str | None:
    """A DSN ``Diagnostic-Code`` without its type prefix (``smtp; 550 ...`` -> ``550 ...``)."""
    return _DIAGNOSTIC_TYPE.sub("", text, count=1) if isinstance(text, str) and text else None


def _bounce(event: dict[str, Any], source: _Source) -> list[EmailEvent]:
    bounce = event["bounce"]
    bounce_type = str(bounce.get("bounceType") or "Undetermined")
    subtype = str(bounce.get("bounceSubType") or "")
    when = _timestamp(bounce.get("timestamp"))
    dropped = subtype in _DROPPED_SUBTYPES
    events = []
    for item in bounce["bouncedRecipients"]:
        diagnostic = _diagnostic(item.get("diagnosticCode"))
        status = _status_of(item.get("status"), diagnostic)
        reason = diagnostic or f"{bounce_type} bounce ({subtype or 'no subtype'})"
        if dropped:
            kind, bounce_as = EventType.DROPPED, _DROPPED_SUBTYPES[subtype]
        else:
            kind, bounce_as = EventType.BOUNCED, bounce_kind(bounce_type, subtype, status)
        events.append(
            source.event(
                item["emailAddress"],
                kind,
                when,
                reason=reason,
                bounce=bounce_as,
                smtp_status=status,
            )
        )
    return events


def _complaint(event: dict[str, Any], source: _Source) -> list[EmailEvent]:
    complaint = event["complaint"]
    feedback = complaint.get("complaintFeedbackType")
    when = _timestamp(complaint.get("timestamp"))
    if complaint.get("complaintSubType") == "OnAccountSuppressionList":
        # SES accepted the message but did not send it: the address is on the account's list.
        kind, reason = EventType.DROPPED, "on the account-level suppression list"
    elif feedback == "not-spam":
        # A feedback report that withdraws a spam verdict is not a complaint.
        return [_unknown(source, "a not-spam feedback report")]
    else:
        kind, reason = EventType.COMPLAINED, feedback or "complaint"
    user_agent = complaint.get("userAgent")
    return [
        source.event(item["emailAddress"], kind, when, reason=reason, user_agent=user_agent)
        for item in complaint["complainedRecipients"]
    ]


def _delivery(event: dict[str, Any], source: _Source) -> list[EmailEvent]:
    delivery = event["delivery"]
    response = delivery.get("smtpResponse")
    status = _status_of(None, response if isinstance(response, str) else None)
    when = _timestamp(delivery.get("timestamp"))
    return [
        source.event(r, EventType.DELIVERED, when, reason=response, smtp_status=status)
        for r in delivery["recipients"]
    ]


def _delay(event: dict[str, Any], source: _Source) -> list[EmailEvent]:
    delay = event["deliveryDelay"]
    delay_type = str(delay.get("delayType") or "Undetermined")
    reporter = delay.get("reportingMTA")
    when = _timestamp(delay.get("timestamp"))
    events = []
    for item in delay["delayedRecipients"]:
        diagnostic = _diagnostic(item.get("diagnosticCode"))
        reason = f"{delay_type}: {diagnostic}" if diagnostic else delay_type
        if reporter:
            reason += f" (reported by {reporter})"
        events.append(
            source.event(
                item["emailAddress"],
                EventType.DEFERRED,
                when,
                reason=reason,
                bounce=_DELAY_KINDS.get(delay_type),
                smtp_status=_status_of(item.get("status"), diagnostic),
            )
        )
    return events


def _send(event: dict[str, Any], source: _Source) -> list[EmailEvent]:
    return source.everyone(EventType.ACCEPTED, source.sent)


def _reject(event: dict[str, Any], source: _Source) -> list[EmailEvent]:
    reason = (event.get("reject") or {}).get("reason") or "rejected"
    return source.everyone(EventType.REJECTED, source.sent, reason=reason)


def _rendering_failure(event: dict[str, Any], source: _Source) -> list[EmailEvent]:
    failure = event.get("failure") or {}
    template = failure.get("templateName")
    message = failure.get("errorMessage") or "rendering failure"
    reason = f"template {template}: {message}" if template else message
    return source.everyone(EventType.FAILED, source.sent, reason=reason)


def _open(event: dict[str, Any], source: _Source) -> list[EmailEvent]:
    opened = event["open"]
    return source.everyone(
        EventType.OPENED, _timestamp(opened.get("timestamp")), user_agent=opened.get("userAgent")
    )


def _click(event: dict[str, Any], source: _Source) -> list[EmailEvent]:
    click = event["click"]
    return source.everyone(
        EventType.CLICKED,
        _timestamp(click.get("timestamp")),
        url=click.get("link"),
        user_agent=click.get("userAgent"),
    )


def _statuses(preferences: Mapping[str, Any]) -> tuple[dict[str, str], str | None]:
    """A contact's explicit status per topic, and the list's default status."""
    explicit = {
        str(t["topicName"]): str(t["subscriptionStatus"])
        for t in preferences.get("topicSubscriptionStatus") or ()
    }
    default = preferences.get("topicDefaultSubscriptionStatus")
    return explicit, str(default) if default is not None else None


def preference_change(
    old: Mapping[str, Any], new: Mapping[str, Any], contact_list: str
) -> tuple[EventType, str] | None:
    """What a change of a contact's topic preferences means: unsubscribed when they left the
    whole list or opted out of a topic, resubscribed when they came back to the list or to a
    topic they had left; None when nothing changed."""
    before, before_default = _statuses(old)
    after, _ = _statuses(new)
    was = {topic: before.get(topic, before_default) for topic in after}
    opted_out = sorted(t for t, s in after.items() if s == "OptOut" and was[t] != "OptOut")
    opted_in = sorted(t for t, s in after.items() if s == "OptIn" and was[t] == "OptOut")
    left_all = bool(new.get("unsubscribeAll")) and not old.get("unsubscribeAll")
    came_back = bool(old.get("unsubscribeAll")) and not new.get("unsubscribeAll")
    if left_all:
        return EventType.UNSUBSCRIBED, f"unsubscribed from every topic of {contact_list}"
    if opted_out:
        return EventType.UNSUBSCRIBED, f"opted out of {', '.join(opted_out)} in {contact_list}"
    if came_back or opted_in:
        topics = f" ({', '.join(opted_in)})" if opted_in else ""
        return EventType.RESUBSCRIBED, f"subscribed again to {contact_list}{topics}"
    return None


def _subscription(event: dict[str, Any], source: _Source) -> list[EmailEvent]:
    subscription = event["subscription"]
    change = preference_change(
        subscription.get("oldTopicPreferences") or {},
        subscription.get("newTopicPreferences") or {},
        str(subscription.get("contactList") or "the contact list"),
    )
    if change is None:
        return [_unknown(source, "the subscription preferences did not change")]
    kind, reason = change
    return source.everyone(kind, _timestamp(subscription.get("timestamp")), reason=reason)


_MAPPERS: Final[Mapping[str, Callable[[dict[str, Any], _Source], list[EmailEvent]]]] = {
    "Send": _send,
    "Delivery": _delivery,
    "Bounce": _bounce,
    "Complaint": _complaint,
    "Reject": _reject,
    "Rendering Failure": _rendering_failure,
    "DeliveryDelay": _delay,
    "Open": _open,
    "Click": _click,
    "Subscription": _subscription,
}
"""SES event types (event publishing and legacy notifications share the names) and their
mapping; anything else becomes ``unknown``."""
