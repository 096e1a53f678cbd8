"""Amazon SES, imitated: SES v2 ``SendEmail`` in, SES events inside signed SNS messages out.

``POST /v2/email/outbound-emails`` is what boto3 and the SES adapter send when given an
endpoint URL. The request must carry a well-formed SigV4 ``Authorization`` header dated
within five minutes; with ``credentials`` (access key id -> secret) the signature itself is
checked with botocore, exactly as AWS checks it. A request SES would refuse is answered the
way AWS's JSON APIs answer: the error code in ``x-amzn-ErrorType`` and ``{"message": ...}``.
An accepted one is answered ``200 {"MessageId": ...}``.

Every event is published the way an SES configuration set's SNS event destination publishes
it: an SES event (``eventType``, ``mail``, and the event's own object) as the ``Message`` of an
SNS ``Notification``, signed by ``SnsSigner`` with a key whose certificate the emulator serves
at its own URL. The SES adapter believes that certificate only when told to with
``trusted_certificate_urls``; never by default.

SES tracks opens and clicks per configuration set, not per message, so every copy reports
them; and SES reports an open, a click or an unsubscription per message: the adapter gives it
to every recipient of that message.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from typing import Any, ClassVar, Final
from urllib.parse import parse_qs, quote

from unimailtrack.adapters.ses import SEND_PATH, SESAdapter
from unimailtrack.adapters.ses.signing import SnsSigner, topic_region
from unimailtrack.emulator._model import (
    Answer,
    Incoming,
    Posting,
    SentCopy,
    SuppressionLists,
    iso_time,
    query_int,
    stable_token,
)
from unimailtrack.emulator.scenarios import CLICKED_URL, Step, StepKind, scenario_for
from unimailtrack.errors import ConfigurationError, InvalidAddress
from unimailtrack.model import Address, BounceKind

__all__ = ["DEFAULT_TOPIC_ARN", "SESEmulator"]

DEFAULT_TOPIC_ARN: Final = "arn:aws:sns:us-east-1:123456789012:unimailtrack-emulator"
DEFAULT_ACCESS_KEY: Final = "AKIAUNIMAILTRACKEMU"
DEFAULT_SECRET_KEY: Final = "emulator-secret-access-key"  # noqa: S105 - not a secret
"""Placeholder credentials for DSNs and adapters when no ``credentials`` are configured: the
emulator then takes any well-formed signature."""

MAX_RECIPIENTS: Final = 50
"""SES takes at most 50 recipients per message."""

SIGNATURE_WINDOW: Final = timedelta(minutes=5)
"""AWS refuses a SigV4 signature dated more than five minutes from its own clock."""

_AUTHORIZATION: Final = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/,\s]+)/(?P<day>\d{8})/(?P<region>[a-z0-9-]+)/"
    r"(?P<service>[a-z0-9-]+)/aws4_request,\s*SignedHeaders=(?P<headers>[a-z0-9;-]+),"
    r"\s*Signature=(?P<signature>[0-9a-f]{64})"
)
_TAG: Final = re.compile(r"[A-Za-z0-9_-]{1,256}")
_MTA: Final = "smtp-out.emulator.invalid"
_SENDING_IP: Final = "192.0.2.10"
_READER_IP: Final = "198.51.100.7"

_BOUNCES: Final[Mapping[BounceKind | None, tuple[str, str]]] = {
    BounceKind.HARD: ("Permanent", "General"),
    BounceKind.SOFT: ("Transient", "MailboxFull"),
    BounceKind.BLOCK: ("Transient", "General"),
}
"""``(bounceType, bounceSubType)`` for each kind of bounce; the status code refines it."""

_DELAY_TYPES: Final[Mapping[str, str]] = {"2": "MailboxFull", "4": "TransientCommunicationFailure"}
"""``delayType`` by the subject of the enhanced status code (``4.2.2`` -> ``2``)."""

_SNS_IDS: Final = uuid.UUID("6f2d3c1e-5a4b-4c8d-9e0f-1a2b3c4d5e6f")
"""The namespace of SNS message ids: one step of one copy always gets the same id, so that a
duplicated delivery is the same SNS message, as when SNS retries."""

_SUPPRESSED: Final = (
    "Amazon SES did not send the message to this address because it is on the suppression "
    "list for your account."
)


def _error(status: int, code: str, message: str) -> Answer:
    return Answer.json(
        status,
        {"message": message},
        {"x-amzn-ErrorType": f"{code}:", "x-amzn-RequestId": str(uuid.uuid4())},
    )


def _bad_request(message: str) -> Answer:
    return _error(400, "BadRequestException", message)


# --------------------------------------------------------------------------- signatures


@dataclass(frozen=True, slots=True)
class _Authorization:
    key: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str
    stamp: str


def _authorization(headers: Mapping[str, str]) -> _Authorization | Answer:
    header = headers.get("authorization")
    if not header:
        return _error(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
    found = _AUTHORIZATION.fullmatch(header.strip())
    stamp = headers.get("x-amz-date", "")
    if found is None or not stamp:
        return _error(
            403,
            "IncompleteSignatureException",
            "The Authorization header needs Credential, SignedHeaders and Signature, and the "
            "request an X-Amz-Date header",
        )
    return _Authorization(
        key=found["key"],
        region=found["region"],
        service=found["service"],
        signed_headers=tuple(found["headers"].split(";")),
        signature=found["signature"],
        stamp=stamp,
    )


def _signed_at(stamp: str) -> datetime | None:
    try:
        return datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def expected_signature(request: Incoming, auth: _Authorization, secret: str) -> str:
    """The SigV4 signature AWS would compute for ``request`` with ``secret`` (botocore's own
    canonical request and key derivation, dated as the request is)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    host = request.headers.get("host", "")
    signed = {name: request.headers.get(name, "") for name in auth.signed_headers}
    query = f"?{request.query}" if request.query else ""
    aws_request = AWSRequest(
        method=request.method,
        url=f"http://{host}{request.path}{query}",
        data=request.body,
        headers=signed,
    )
    aws_request.context["timestamp"] = auth.stamp
    signer = SigV4Auth(Credentials(auth.key, secret), auth.service, auth.region)
    canonical = signer.canonical_request(aws_request)
    return signer.signature(signer.string_to_sign(aws_request, canonical), aws_request)


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True, slots=True)
class _Message:
    """What a valid ``SendEmail`` request sends, and to whom."""

    sender: str
    subject: str
    recipients: tuple[str, ...]
    tags: Mapping[str, str]


def _addresses(destination: Any) -> list[str] | None:
    if not isinstance(destination, dict):
        return []
    found = []
    for field in ("ToAddresses", "CcAddresses", "BccAddresses"):
        for value in destination.get(field) or ():
            try:
                found.append(Address.parse(value).email)
            except InvalidAddress:
                return None
    return found


def _subject(content: Any) -> str | Answer:
    if not isinstance(content, dict):
        return _bad_request("Content is required: Simple, Raw or Template")
    simple, raw, template = content.get("Simple"), content.get("Raw"), content.get("Template")
    if isinstance(simple, dict):
        body = simple.get("Body")
        if not isinstance(body, dict) or not (body.get("Text") or body.get("Html")):
            return _bad_request("Content.Simple.Body needs Text or Html")
        subject = simple.get("Subject")
        return str(subject.get("Data", "")) if isinstance(subject, dict) else ""
    if isinstance(raw, dict):
        try:
            data = base64.b64decode(str(raw.get("Data", "")), validate=True)
        except (binascii.Error, ValueError):
            return _bad_request("Content.Raw.Data is not base64")
        headers = BytesHeaderParser(policy=default_policy).parsebytes(data)
        return str(headers.get("Subject", ""))
    if isinstance(template, dict) and (template.get("TemplateName") or template.get("TemplateArn")):
        return ""
    return _bad_request("Content is required: Simple, Raw or Template")


def _tags(value: Any) -> dict[str, str] | Answer:
    tags: dict[str, str] = {}
    for item in value or ():
        name = item.get("Name") if isinstance(item, dict) else None
        tag_value = item.get("Value") if isinstance(item, dict) else None
        if not isinstance(name, str) or not _TAG.fullmatch(name):
            return _bad_request(
                f"Invalid tag name <{name}>: only ASCII letters, digits, '_' and '-' are allowed"
            )
        if not isinstance(tag_value, str) or not _TAG.fullmatch(tag_value):
            return _bad_request(
                f"Invalid tag value <{tag_value}>: only ASCII letters, digits, '_' and '-' "
                "are allowed"
            )
        tags[name] = tag_value
    return tags


def read_request(body: bytes) -> _Message | Answer:
    """The message a ``SendEmail`` body sends, or SES's answer refusing it."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return _error(400, "SerializationException", "The request body is not valid JSON")
    if not isinstance(payload, dict):
        return _error(400, "SerializationException", "The request body is not a JSON object")
    sender = payload.get("FromEmailAddress")
    if not isinstance(sender, str) or not sender:
        return _bad_request("FromEmailAddress is required")
    recipients = _addresses(payload.get("Destination"))
    if recipients is None:
        return _bad_request("Destination holds an address that is not valid")
    if not recipients:
        return _bad_request("Destination needs at least one recipient")
    if len(recipients) > MAX_RECIPIENTS:
        return _bad_request(f"Recipient count exceeds {MAX_RECIPIENTS}.")
    subject = _subject(payload.get("Content"))
    if isinstance(subject, Answer):
        return subject
    tags = _tags(payload.get("EmailTags"))
    if isinstance(tags, Answer):
        return tags
    configuration_set = payload.get("ConfigurationSetName")
    if isinstance(configuration_set, str) and configuration_set:
        tags = {"ses:configuration-set": configuration_set, **tags}
    return _Message(sender, subject, tuple(recipients), tags)


# --------------------------------------------------------------------------- events


def _recipient(copy: SentCopy) -> dict[str, str]:
    return {"emailAddress": copy.recipient}


def _send(copy: SentCopy, step: Step, at: datetime) -> dict[str, Any]:
    return {"eventType": "Send", "send": {}}


def _delay(copy: SentCopy, step: Step, at: datetime) -> dict[str, Any]:
    smtp = step.smtp
    status = smtp.status if smtp else "4.0.0"
    return {
        "eventType": "DeliveryDelay",
        "deliveryDelay": {
            "timestamp": iso_time(at),
            "delayType": _DELAY_TYPES.get(status.split(".")[1], "General"),
            "expirationTime": iso_time(at + timedelta(hours=12)),
            "delayedRecipients": [
                {**_recipient(copy), "status": status, "diagnosticCode": f"smtp; {smtp}"}
            ],
            "reportingMTA": _MTA,
        },
    }


def _delivery(copy: SentCopy, step: Step, at: datetime) -> dict[str, Any]:
    elapsed = int((at - copy.accepted_at).total_seconds() * 1000)
    return {
        "eventType": "Delivery",
        "delivery": {
            "timestamp": iso_time(at),
            "processingTimeMillis": elapsed,
            "recipients": [copy.recipient],
            "smtpResponse": str(step.smtp),
            "reportingMTA": _MTA,
            "remoteMtaIp": "203.0.113.25",
        },
    }


def _bounce(copy: SentCopy, step: Step, at: datetime) -> dict[str, Any]:
    bounce_type, subtype = _BOUNCES.get(step.bounce, ("Undetermined", "Undetermined"))
    smtp = step.smtp
    recipient: dict[str, Any] = {**_recipient(copy), "action": "failed"}
    if smtp is not None:
        recipient |= {"status": smtp.status, "diagnosticCode": f"smtp; {smtp}"}
    return {
        "eventType": "Bounce",
        "bounce": {
            "bounceType": bounce_type,
            "bounceSubType": subtype,
            "bouncedRecipients": [recipient],
            "timestamp": iso_time(at),
            "feedbackId": stable_token(copy.message_id, copy.recipient, "bounce"),
            "reportingMTA": f"dsn; {_MTA}",
        },
    }


def _suppressed(copy: SentCopy, step: Step, at: datetime) -> dict[str, Any]:
    return {
        "eventType": "Bounce",
        "bounce": {
            "bounceType": "Permanent",
            "bounceSubType": "OnAccountSuppressionList",
            "bouncedRecipients": [
                {**_recipient(copy), "action": "failed", "diagnosticCode": _SUPPRESSED}
            ],
            "timestamp": iso_time(at),
            "feedbackId": stable_token(copy.message_id, copy.recipient, "suppressed"),
            "reportingMTA": "dns; amazonses.com",
        },
    }


def _complaint(copy: SentCopy, step: Step, at: datetime) -> dict[str, Any]:
    return {
        "eventType": "Complaint",
        "complaint": {
            "complainedRecipients": [_recipient(copy)],
            "timestamp": iso_time(at),
            "feedbackId": stable_token(copy.message_id, copy.recipient, "complaint"),
            "userAgent": "emulated-feedback-loop/1.0",
            "complaintFeedbackType": "abuse",
            "arrivalDate": iso_time(at),
        },
    }


def _open(copy: SentCopy, step: Step, at: datetime) -> dict[str, Any]:
    return {
        "eventType": "Open",
        "open": {"ipAddress": _READER_IP, "timestamp": iso_time(at), "userAgent": step.user_agent},
    }


def _click(copy: SentCopy, step: Step, at: datetime) -> dict[str, Any]:
    return {
        "eventType": "Click",
        "click": {
            "ipAddress": _READER_IP,
            "timestamp": iso_time(at),
            "userAgent": step.user_agent,
            "link": CLICKED_URL,
            "linkTags": {},
        },
    }


def _subscription(copy: SentCopy, step: Step, at: datetime) -> dict[str, Any]:
    return {
        "eventType": "Subscription",
        "subscription": {
            "contactList": "emulator",
            "timestamp": iso_time(at),
            "source": "UnsubscribeHeader",
            "newTopicPreferences": {"unsubscribeAll": True, "topicSubscriptionStatus": []},
            "oldTopicPreferences": {"unsubscribeAll": False, "topicSubscriptionStatus": []},
        },
    }


_EVENTS: Final[Mapping[StepKind, Callable[[SentCopy, Step, datetime], dict[str, Any]]]] = {
    StepKind.QUEUED: _send,
    StepKind.DEFERRED: _delay,
    StepKind.DELIVERED: _delivery,
    StepKind.BOUNCED: _bounce,
    StepKind.DROPPED: _suppressed,
    StepKind.COMPLAINED: _complaint,
    StepKind.OPENED: _open,
    StepKind.CLICKED: _click,
    StepKind.UNSUBSCRIBED: _subscription,
}
"""What each step of a scenario is in SES event publishing."""


class SESEmulator:
    """SES v2 ``SendEmail`` and SES event publishing through SNS.

    ``certificate_url``: where the emulator serves the SNS signing certificate.
    ``topic_arn``: the SNS topic the events come from (its region is the one SES runs in).
    ``credentials``: access key id -> secret access key; when given, only these keys are
    accepted and every signature is checked.
    """

    name: ClassVar[str] = "ses"

    def __init__(
        self,
        *,
        certificate_url: str,
        topic_arn: str = DEFAULT_TOPIC_ARN,
        credentials: Mapping[str, str] | None = None,
    ) -> None:
        where = topic_region(topic_arn)
        if where is None:
            raise ConfigurationError(f"{topic_arn!r} is not an SNS topic ARN")
        self.topic_arn = topic_arn
        self.suppressions = SuppressionLists()
        self.region = where[1]
        self.account = topic_arn.split(":")[4]
        self.credentials = dict(credentials or {})
        self.signer = SnsSigner(certificate_url=certificate_url)

    @property
    def certificate_url(self) -> str:
        return self.signer.certificate_url_for(self.topic_arn)

    @property
    def certificate_pem(self) -> bytes:
        return self.signer.certificate_pem

    def handles(self, path: str) -> bool:
        return path == SEND_PATH

    def _refusal(self, request: Incoming, now: datetime) -> Answer | None:
        """SES's answer to a request whose signature it does not accept (None if it does)."""
        auth = _authorization(request.headers)
        if isinstance(auth, Answer):
            return auth
        signed_at = _signed_at(auth.stamp)
        if signed_at is None or abs(now - signed_at) > SIGNATURE_WINDOW:
            return _error(
                403,
                "InvalidSignatureException",
                f"Signature expired: {auth.stamp} is not within five minutes of the server time",
            )
        if not self.credentials:
            return None
        secret = self.credentials.get(auth.key)
        if secret is None:
            return _error(
                403,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            )
        if not secrets.compare_digest(expected_signature(request, auth, secret), auth.signature):
            return _error(
                403,
                "InvalidSignatureException",
                "The request signature we calculated does not match the signature you "
                "provided. Check your AWS Secret Access Key and signing method.",
            )
        return None

    def accept(self, request: Incoming, now: datetime) -> tuple[Answer, list[SentCopy]]:
        refusal = self._refusal(request, now)
        if refusal is not None:
            return refusal, []
        message = read_request(request.body)
        if isinstance(message, Answer):
            return message, []
        message_id = f"0100{int(now.timestamp() * 1000):012x}-{uuid.uuid4()}-000000"
        copies = list(self._copies(message, message_id, now))
        answer = Answer.json(
            200, {"MessageId": message_id}, {"x-amzn-RequestId": str(uuid.uuid4())}
        )
        return answer, copies

    def _copies(self, message: _Message, message_id: str, now: datetime) -> Iterator[SentCopy]:
        for recipient in message.recipients:
            yield SentCopy(
                provider=self.name,
                recipient=recipient,
                message_id=message_id,
                scenario=scenario_for(recipient),
                sender=message.sender,
                subject=message.subject,
                accepted_at=now,
                variables=message.tags,
                destination=message.recipients,
                opens=True,
                clicks=True,
            )

    def throttled(self, retry_after: int) -> Answer:
        return _error(429, "TooManyRequestsException", "Too Many Requests")

    def _mail(self, copy: SentCopy) -> dict[str, Any]:
        domain = Address.parse(copy.sender).domain
        tags = {
            "ses:operation": ["SendEmail"],
            "ses:source-ip": [_SENDING_IP],
            "ses:from-domain": [domain],
            "ses:caller-identity": ["unimailtrack-emulator"],
            **{name: [value] for name, value in copy.variables.items()},
        }
        return {
            "timestamp": iso_time(copy.accepted_at),
            "source": copy.sender,
            "sourceArn": f"arn:aws:ses:{self.region}:{self.account}:identity/{domain}",
            "sendingAccountId": self.account,
            "messageId": copy.message_id,
            "destination": list(copy.destination),
            "headersTruncated": False,
            "headers": [
                {"name": "From", "value": copy.sender},
                {"name": "To", "value": ", ".join(copy.destination)},
                {"name": "Subject", "value": copy.subject},
            ],
            "commonHeaders": {
                "from": [copy.sender],
                "to": list(copy.destination),
                "subject": copy.subject,
            },
            "tags": tags,
        }

    def event(self, copy: SentCopy, index: int, at: datetime) -> dict[str, Any]:
        step = copy.steps[index]
        # SES dates each event to the millisecond and no two of one message share one; the
        # adapter tells events apart by their text, so steps planned for the same instant (no
        # delay) are a millisecond apart each, in their order.
        at += timedelta(milliseconds=index)
        detail = _EVENTS[step.kind](copy, step, at)
        return {
            "MessageId": str(uuid.uuid5(_SNS_IDS, f"{copy.message_id}/{copy.recipient}/{index}")),
            "Timestamp": at,
            "Message": {"eventType": detail.pop("eventType"), "mail": self._mail(copy), **detail},
        }

    def postings(self, events: Sequence[dict[str, Any]]) -> list[Posting]:
        postings = []
        for event in events:
            body, headers = self.signer.notification(
                event["Message"],
                topic_arn=self.topic_arn,
                message_id=event["MessageId"],
                timestamp=event["Timestamp"],
            )
            postings.append(Posting(body, headers))
        return postings

    def _keys(self) -> tuple[str, str]:
        return next(iter(self.credentials.items()), (DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY))

    def dsn(self, base_url: str) -> str:
        key, secret = self._keys()
        return (
            f"ses://{quote(key, safe='')}:{quote(secret, safe='')}@default"
            f"?region={self.region}&endpoint_url={quote(base_url, safe=':/')}"
            f"&topic_arns={quote(self.topic_arn, safe=':')}"
            f"&trusted_certificate_urls={quote(self.certificate_url, safe=':/')}"
        )

    def adapter(self, base_url: str, **options: Any) -> SESAdapter:
        key, secret = self._keys()
        settings: dict[str, Any] = {
            "region": self.region,
            "access_key_id": key,
            "secret_access_key": secret,
            "endpoint_url": base_url,
            "allowed_topic_arns": [self.topic_arn],
            "trusted_certificate_urls": [self.certificate_url],
        }
        return SESAdapter(**{**settings, **options})


# --------------------------------------------------------------------------- suppression list

SUPPRESSION_PATH: Final = "/v2/email/suppression/addresses"


def handles_api(path: str) -> bool:
    return path == SUPPRESSION_PATH


def answer_api(emulator: SESEmulator, request: Incoming, now: datetime) -> Answer:
    """SES v2's ``ListSuppressedDestinations`` (``PageSize`` up to 1000, ``NextToken``: the
    offset, as an opaque token) and ``PutSuppressedDestination``, signed like every call."""
    refusal = emulator._refusal(request, now)
    if refusal is not None:
        return refusal
    lists = emulator.suppressions
    if request.method == "GET":
        query = parse_qs(request.query)
        token = query.get("NextToken", [""])[0]
        try:
            offset = int(base64.urlsafe_b64decode(token.encode()).decode()) if token else 0
        except (ValueError, binascii.Error):
            return _error(400, "BadRequestException", "The NextToken is not valid.")
        size = query_int(query, "PageSize", 1000, 1000) or 1000
        page = lists.page("addresses", offset, size)
        if page is None:
            return _error(500, "InternalFailure", "The request processing has failed.")
        body: dict[str, Any] = {"SuppressedDestinationSummaries": page}
        if len(lists.records("addresses")) > offset + size:
            body["NextToken"] = base64.urlsafe_b64encode(str(offset + size).encode()).decode()
        return Answer.json(200, body)
    if request.method == "PUT":
        try:
            data = json.loads(request.body)
            address, reason = data["EmailAddress"], data["Reason"]
            if not isinstance(address, str) or reason not in ("BOUNCE", "COMPLAINT"):
                raise ValueError("EmailAddress or Reason is wrong")
        except (ValueError, KeyError, TypeError):
            return _error(400, "BadRequestException", "EmailAddress and Reason are required.")
        lists.add(
            "addresses",
            {"EmailAddress": address, "Reason": reason, "LastUpdateTime": int(now.timestamp())},
        )
        return Answer.json(200, {})
    return _error(405, "MethodNotAllowed", "The method is not allowed.")
