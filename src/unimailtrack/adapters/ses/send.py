"""SES sending: one SES v2 ``SendEmail`` per recipient, signed with SigV4, and SES's errors.

Each recipient gets its own ``SendEmail`` request (``POST /v2/email/outbound-emails``) so that
each copy carries its own tracking id, as an SES message tag. boto3 is used for two things only,
and imported only when they are first needed: the AWS credential chain (or the session, profile
or keys given) and SigV4 signing through botocore. A request that waited too long (a paced or
retried bulk send) is signed again before it goes (:func:`stale`); :class:`Pacer` spaces
requests to SES's sending rate.

Content is SES "simple" content (subject, text, HTML) unless the e-mail has attachments or
custom headers; then it is a raw MIME message built with the standard library. Tags, the
category and the metadata become SES message tags, sanitised to the characters SES accepts
(see :func:`sanitize_tag`), so that SES publishes them back with every event. :data:`ERRORS` is
SES's error table.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import formataddr
from typing import TYPE_CHECKING, Any, Final

import httpx

from unimailtrack._http import parse_retry_after
from unimailtrack._json import load_untrusted
from unimailtrack.adapters.base import Call, Recipient, error_for_status
from unimailtrack.errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidRequest,
    MissingDependency,
    NotPermitted,
    ProviderUnavailable,
    RateLimited,
    SendError,
)
from unimailtrack.model import TRACKING_KEY, Address, DeliveryStatus, Email, RecipientResult

if TYPE_CHECKING:
    from email.message import EmailMessage

    import boto3
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

__all__ = [
    "CATEGORY_TAG",
    "ERRORS",
    "SEND_PATH",
    "TAG_PREFIX",
    "AwsSigner",
    "Pacer",
    "build_calls",
    "interpret",
    "resolve_signer",
    "sanitize_tag",
    "stale",
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
class AwsSigner:
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


def stale(request: httpx.Request, now: datetime | None = None) -> bool:
    """True when ``request`` was signed long enough ago that SES may refuse the signature."""
    stamp = request.headers.get("x-amz-date", "")
    try:
        signed = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return False
    return (now or datetime.now(UTC)) - signed >= _RESIGN_AFTER


# --------------------------------------------------------------------------- pacing


class Pacer:
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

ERRORS: Final[Mapping[str, tuple[_ErrorClass, str]]] = {
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
        body = load_untrusted(response.content)
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
    known = ERRORS.get(code)
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


def interpret(recipient: Recipient, response: httpx.Response) -> list[RecipientResult]:
    """One copy's outcome: accepted with SES's ``MessageId``, or the error SES gave."""
    if not response.is_success:
        raise _send_error(response)
    try:
        message_id = load_untrusted(response.content).get("MessageId")
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


def resolve_signer(
    *,
    keys: tuple[str | None, str | None, str | None],
    session: boto3.Session | None,
    profile: str | None,
    region: str | None,
    endpoint_url: str | None,
) -> AwsSigner:
    """Credentials, region and endpoint, resolved (boto3 is imported here)."""
    aws = _botocore()
    access_key, secret, token = keys
    session = session or aws.Session(
        aws_access_key_id=access_key,
        aws_secret_access_key=secret,
        aws_session_token=token,
        profile_name=profile,
    )
    region = region or session.region_name
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
    client = session.client("sesv2", region_name=region, endpoint_url=endpoint_url)
    return AwsSigner(
        credentials=credentials,
        region=region,
        endpoint=client.meta.endpoint_url.rstrip("/"),
        signing_name=client.meta.service_model.signing_name or PROVIDER,
    )


def build_calls(
    email: Email,
    recipients: Sequence[Recipient],
    *,
    signer: AwsSigner,
    configuration_set: str | None,
) -> list[Call]:
    """One signed SES v2 ``SendEmail`` per recipient, each with its own tracking tag."""
    if email.send_at is not None:
        raise InvalidRequest(
            "SES cannot schedule a send; send it at send_at from your own scheduler",
            provider=PROVIDER,
        )
    plan = _Plan.of(email, configuration_set)
    return [
        Call(
            request=signer.sign(plan.request_body(recipient)),
            recipients=(recipient,),
            interpret=functools.partial(interpret, recipient),
        )
        for recipient in recipients
    ]
