"""Postmark sending: ``POST /email`` and ``POST /email/batch``, and Postmark's error table.

Every recipient gets a copy of their own whose ``Metadata`` carries ``unimailtrack_id`` (Postmark
returns a message's metadata in every webhook about it), 500 copies to a ``/email/batch``
request; a send to one recipient is one ``/email`` request. ``Tag`` is the category, else the
first tag (Postmark keeps one tag per message); the remaining tags travel in the metadata as
``unimailtrack_tags``. Open and link tracking are set on every message, off unless the e-mail
asks for them. Postmark cannot schedule a send: ``send_at`` is refused.

Postmark answers errors with ``{"ErrorCode": n, "Message": "..."}``; :data:`ERRORS` says what
each code raises. In a batch every message has its own ``ErrorCode``: 406 (the address is
inactive, after a hard bounce or a spam complaint) makes that recipient ``suppressed`` with
Postmark's message as the reason; another code makes it ``failed``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from types import MappingProxyType
from typing import Any, Final

import httpx

from unimailtrack._http import parse_retry_after, read_request
from unimailtrack._json import load_untrusted
from unimailtrack.adapters._encoding import dumps
from unimailtrack.adapters.base import Call, Recipient
from unimailtrack.errors import (
    AuthenticationError,
    FieldError,
    InvalidRequest,
    NotPermitted,
    PayloadTooLarge,
    ProviderUnavailable,
    RateLimited,
    SendError,
)
from unimailtrack.model import TRACKING_KEY, Attachment, DeliveryStatus, Email, RecipientResult

__all__ = [
    "API_BASE_URL",
    "BATCH_PATH",
    "ERRORS",
    "INACTIVE_RECIPIENT",
    "MAX_BATCH",
    "SEND_PATH",
    "TAGS_KEY",
    "build_calls",
    "interpret_batch",
    "interpret_single",
    "postmark_error",
]

PROVIDER: Final = "postmark"
API_BASE_URL: Final = "https://api.postmarkapp.com"
SEND_PATH: Final = "/email"
BATCH_PATH: Final = "/email/batch"
MAX_BATCH: Final = 500
"""Postmark takes at most 500 messages per batch request."""
TAGS_KEY: Final = "unimailtrack_tags"
"""The metadata key that carries the tags Postmark's single ``Tag`` cannot, comma-separated."""
_RESERVED_PREFIX: Final = "unimailtrack_"
INACTIVE_RECIPIENT: Final = 406

ERRORS: Final[Mapping[int, type[SendError]]] = MappingProxyType(
    {
        10: AuthenticationError,  # bad or missing server token
        100: ProviderUnavailable,  # maintenance
        300: InvalidRequest,  # invalid email request
        400: NotPermitted,  # sender signature not found
        401: NotPermitted,  # sender signature not confirmed
        402: InvalidRequest,  # invalid JSON
        403: InvalidRequest,  # incompatible JSON
        405: NotPermitted,  # not allowed to send (out of credits)
        406: InvalidRequest,  # inactive recipient: per recipient, 'suppressed'
        409: InvalidRequest,  # JSON required
        410: InvalidRequest,  # too many batch messages
        411: InvalidRequest,  # forbidden attachment type
        412: NotPermitted,  # account is pending approval
        413: NotPermitted,  # account may not send
        429: RateLimited,  # rate limit exceeded
    }
)
"""Postmark's ``ErrorCode`` and what it raises; a code missing here is read by HTTP status."""

_ERRORS: Final = dict(ERRORS)

_HINTS: Final[Mapping[type[SendError], str]] = MappingProxyType(
    {
        InvalidRequest: "Postmark refused the request as invalid; correct the e-mail",
        AuthenticationError: "Postmark refused the server token; check the token in the DSN",
        NotPermitted: "Postmark will not send this for the server; check its sender signatures",
        RateLimited: "Postmark is rate limiting requests; slow down",
        ProviderUnavailable: "Postmark failed to handle the request; it will be retried",
        PayloadTooLarge: "the e-mail is larger than Postmark accepts",
    }
)

# --------------------------------------------------------------------------- requests


def _attachment(attachment: Attachment) -> dict[str, str]:
    item = {
        "Name": attachment.filename,
        "Content": attachment.base64,
        "ContentType": attachment.content_type,
    }
    if attachment.content_id:
        item["ContentID"] = f"cid:{attachment.content_id}"
    return item


def _labels(email: Email) -> list[str]:
    names = [email.category, *email.tags] if email.category else list(email.tags)
    return list(dict.fromkeys(names))


def message_fields(email: Email, message_stream: str) -> dict[str, Any]:
    """What every copy of ``email`` shares: everything but ``To`` and the tracking id."""
    if email.send_at is not None:
        raise InvalidRequest(
            "Postmark cannot schedule a send; send it at send_at from your own scheduler",
            provider=PROVIDER,
            field_errors=[FieldError("Postmark cannot schedule a send", field="send_at")],
        )
    fields: dict[str, Any] = {
        "From": str(email.sender),
        "Subject": email.subject,
        "MessageStream": message_stream,
        "TrackOpens": email.track_opens,
        "TrackLinks": "HtmlAndText" if email.track_clicks else "None",
    }
    if email.html is not None:
        fields["HtmlBody"] = email.html
    if email.text is not None:
        fields["TextBody"] = email.text
    if email.reply_to is not None:
        fields["ReplyTo"] = str(email.reply_to)
    if email.headers:
        fields["Headers"] = [{"Name": k, "Value": v} for k, v in email.headers.items()]
    if email.attachments:
        fields["Attachments"] = [_attachment(a) for a in email.attachments]
    labels = _labels(email)
    if labels:
        fields["Tag"] = labels[0]
    return fields


def shared_metadata(email: Email) -> dict[str, str]:
    """The metadata every copy carries besides its tracking id; ``unimailtrack_`` keys of the
    e-mail's own metadata are reserved and not sent."""
    metadata = {k: v for k, v in email.metadata.items() if not k.startswith(_RESERVED_PREFIX)}
    rest = _labels(email)[1:]
    if rest:
        metadata[TAGS_KEY] = ",".join(rest)
    return metadata


def _copy(
    fields: Mapping[str, Any], metadata: Mapping[str, str], recipient: Recipient
) -> dict[str, Any]:
    return {
        **fields,
        "To": str(recipient.address),
        "Metadata": {TRACKING_KEY: recipient.tracking_id, **metadata},
    }


def build_calls(
    email: Email,
    recipients: Sequence[Recipient],
    *,
    base_url: str,
    headers: httpx.Headers,
    message_stream: str,
) -> list[Call]:
    """The requests that send ``email`` to ``recipients`` (pure)."""
    fields = message_fields(email, message_stream)
    metadata = shared_metadata(email)
    if len(recipients) == 1:
        chunk: tuple[Recipient, ...] = (recipients[0],)
        body = dumps(_copy(fields, metadata, recipients[0]))
        request = read_request("POST", httpx.URL(base_url + SEND_PATH), headers, body)
        return [Call(request, chunk, partial(interpret_single, chunk))]
    url = httpx.URL(base_url + BATCH_PATH)
    calls = []
    for start in range(0, len(recipients), MAX_BATCH):
        chunk = tuple(recipients[start : start + MAX_BATCH])
        body = dumps([_copy(fields, metadata, r) for r in chunk])
        request = read_request("POST", url, headers, body)
        calls.append(Call(request, chunk, partial(interpret_batch, chunk)))
    return calls


# --------------------------------------------------------------------------- responses


def _json(response: httpx.Response) -> Any:
    try:
        return load_untrusted(response.content)
    except ValueError:
        return None


def _result(recipient: Recipient, item: object) -> RecipientResult:
    """One recipient's outcome from Postmark's per-message answer."""
    code = item.get("ErrorCode") if isinstance(item, dict) else None
    message = item.get("Message") if isinstance(item, dict) else None
    message_id = item.get("MessageID") if isinstance(item, dict) else None
    common = {
        "recipient": recipient.address.email,
        "tracking_id": recipient.tracking_id,
        "provider": PROVIDER,
    }
    if code == 0:
        return RecipientResult(
            status=DeliveryStatus.ACCEPTED,
            message_id=message_id if isinstance(message_id, str) else None,
            **common,
        )
    text = message if isinstance(message, str) else "no message"
    status = DeliveryStatus.SUPPRESSED if code == INACTIVE_RECIPIENT else DeliveryStatus.FAILED
    return RecipientResult(status=status, error=f"Postmark error {code}: {text}", **common)


def interpret_single(
    recipients: Sequence[Recipient], response: httpx.Response
) -> list[RecipientResult]:
    """The one recipient's outcome: accepted, suppressed (error 406), or the ``SendError``."""
    body = _json(response)
    code = body.get("ErrorCode") if isinstance(body, dict) else None
    if response.is_success and code == 0:
        return [_result(r, body) for r in recipients]
    if code == INACTIVE_RECIPIENT:
        return [_result(r, body) for r in recipients]
    raise postmark_error(response, body)


def interpret_batch(
    recipients: Sequence[Recipient], response: httpx.Response
) -> list[RecipientResult]:
    """Every recipient's outcome from the batch answer, in request order; when the request as
    a whole was refused, or every message was refused for one reason that is not an inactive
    address, the ``SendError`` that reason means."""
    body = _json(response)
    if not response.is_success or not isinstance(body, list):
        raise postmark_error(response, body)
    items: list[object] = list(body) + [None] * (len(recipients) - len(body))
    results = [_result(r, item) for r, item in zip(recipients, items, strict=False)]
    if not any(r.status is not DeliveryStatus.FAILED for r in results):
        first = next((i for i in items if isinstance(i, dict)), None)
        if first is not None:
            raise postmark_error(response, first)
    return results


def postmark_error(response: httpx.Response, body: object = None) -> SendError:
    """The ``SendError`` for a Postmark error answer ``{"ErrorCode", "Message"}``."""
    status = response.status_code
    if body is None:
        body = _json(response)
    code = body.get("ErrorCode") if isinstance(body, dict) else None
    message = body.get("Message") if isinstance(body, dict) else None
    if not isinstance(message, str):
        message = response.text.strip()[:500]
    kind = _ERRORS.get(code) if isinstance(code, int) else None
    if kind is None:
        kind = _by_status(status)
    detail = f"ErrorCode {code}: {message}" if code is not None else message or None
    common: dict[str, Any] = {"provider": PROVIDER, "status": status, "detail": detail}
    hint = _HINTS.get(kind, f"Postmark answered HTTP {status}")
    if kind is RateLimited:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return RateLimited(hint, retry_after=retry_after, **common)
    if kind is ProviderUnavailable:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return ProviderUnavailable(hint, retry_after=retry_after, **common)
    if kind is InvalidRequest or kind is PayloadTooLarge:
        return kind(hint, field_errors=[FieldError(message or "invalid")], **common)
    return kind(hint, **common)


def _by_status(status: int) -> type[SendError]:
    if status == 413:
        return PayloadTooLarge
    if status == 429:
        return RateLimited
    if status >= 500:
        return ProviderUnavailable
    if status in (401, 403):
        return AuthenticationError
    if 400 <= status < 500:
        return InvalidRequest
    return SendError
