"""Resend sending: ``POST /emails`` and ``POST /emails/batch``, and Resend's error table.

Every recipient gets a copy of their own, tagged ``unimailtrack_id=<tracking id>``; Resend
returns an email's tags in every event about it, which is how an event finds its send. Copies go
out 100 to a ``/emails/batch`` request; a send with attachments or ``send_at`` goes one
``/emails`` request per recipient instead, because the batch endpoint takes neither. Each
request carries an ``Idempotency-Key`` derived from its tracking ids, so a retried request is
not sent twice.

Resend takes tag names and values of ASCII letters, digits, ``_`` and ``-`` only, at most 256
characters: the category, the tags and the metadata travel sanitised that way (see
docs/providers/resend.md). Open and click tracking are settings of the sending domain at
Resend, not of a message: an e-mail that asks for them is sent, with a warning in the log.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import partial
from types import MappingProxyType
from typing import Any, Final

import httpx

from unimailtrack._http import parse_retry_after, read_request
from unimailtrack._json import load_untrusted
from unimailtrack.adapters._encoding import dumps
from unimailtrack.adapters.base import Call, Recipient, event_digest
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
from unimailtrack.model import (
    TRACKING_KEY,
    Attachment,
    DeliveryStatus,
    Email,
    RecipientResult,
)

__all__ = [
    "API_BASE_URL",
    "BATCH_PATH",
    "CATEGORY_TAG",
    "ERRORS",
    "MAX_BATCH",
    "SEND_PATH",
    "TAG_PREFIX",
    "build_calls",
    "interpret_batch",
    "interpret_single",
    "resend_error",
    "sanitize_tag",
    "shared_tags",
]

PROVIDER: Final = "resend"
API_BASE_URL: Final = "https://api.resend.com"
SEND_PATH: Final = "/emails"
BATCH_PATH: Final = "/emails/batch"
MAX_BATCH: Final = 100
"""Resend takes at most 100 e-mails per batch request."""

CATEGORY_TAG: Final = "unimailtrack_category"
TAG_PREFIX: Final = "unimailtrack_tag_"
"""Each of ``Email.tags`` travels as a Resend tag named this prefix plus the tag, value ``1``."""
_RESERVED_PREFIX: Final = "unimailtrack_"
_MAX_TAG: Final = 256
_TAG_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_-]")
_FIELD: Final = re.compile(r"`([A-Za-z_][A-Za-z0-9_.\[\]]*)`")

# --------------------------------------------------------------------------- the error table

ERRORS: Final[Mapping[str, type[SendError]]] = MappingProxyType(
    {
        "invalid_idempotency_key": InvalidRequest,
        "validation_error": InvalidRequest,  # 401: a bad key; 403: an unverified domain
        "missing_api_key": AuthenticationError,
        "restricted_api_key": AuthenticationError,
        "invalid_api_key": AuthenticationError,
        "not_found": InvalidRequest,
        "method_not_allowed": InvalidRequest,
        "invalid_idempotent_request": InvalidRequest,
        "concurrent_idempotent_requests": ProviderUnavailable,
        "invalid_attachment": InvalidRequest,
        "invalid_from_address": InvalidRequest,
        "invalid_access": InvalidRequest,
        "invalid_parameter": InvalidRequest,
        "invalid_region": InvalidRequest,
        "missing_required_field": InvalidRequest,
        "monthly_quota_exceeded": NotPermitted,
        "daily_quota_exceeded": NotPermitted,
        "rate_limit_exceeded": RateLimited,
        "security_error": NotPermitted,
        "application_error": ProviderUnavailable,
        "internal_server_error": ProviderUnavailable,
    }
)
"""Resend's error ``name`` and the error it raises. A ``validation_error`` with status 401 is a
refused key and with status 403 a sender Resend will not send for (an unverified domain, or the
testing address to anyone but the account owner); a quota reached is ``NotPermitted``, since
retrying within seconds cannot help; a name this table does not know is read by its status."""

_ERRORS: Final = dict(ERRORS)

_HINTS: Final[Mapping[type[SendError], str]] = MappingProxyType(
    {
        InvalidRequest: "Resend refused the request as invalid; correct the e-mail",
        AuthenticationError: "Resend refused the API key; check the key in the DSN",
        NotPermitted: "Resend will not send this for the account; check its domains and quota",
        RateLimited: "Resend is rate limiting requests; slow down",
        ProviderUnavailable: "Resend failed to handle the request; it will be retried",
    }
)

# --------------------------------------------------------------------------- requests


def sanitize_tag(text: str) -> str:
    """``text`` as Resend accepts a tag name or value: every character other than ASCII
    letters, digits, ``_`` and ``-`` becomes ``_``, cut at 256 characters; empty becomes ``_``."""
    return _TAG_UNSAFE.sub("_", text)[:_MAX_TAG] or "_"


def shared_tags(email: Email) -> list[dict[str, str]]:
    """The tags every copy of ``email`` carries besides its tracking id (each name once)."""
    tags: dict[str, str] = {}
    if email.category:
        tags[CATEGORY_TAG] = sanitize_tag(email.category)
    for tag in email.tags:
        tags.setdefault(sanitize_tag(TAG_PREFIX + tag), "1")
    for key, value in email.metadata.items():
        name = sanitize_tag(key)
        if not name.startswith(_RESERVED_PREFIX):
            tags.setdefault(name, sanitize_tag(value))
    return [{"name": k, "value": v} for k, v in tags.items()]


def _attachment(attachment: Attachment) -> dict[str, str]:
    item = {
        "filename": attachment.filename,
        "content": attachment.base64,
        "content_type": attachment.content_type,
    }
    if attachment.content_id:
        item["content_id"] = attachment.content_id
    return item


def message_fields(email: Email) -> dict[str, Any]:
    """What every copy of ``email`` shares: everything but ``to`` and the tracking tag."""
    fields: dict[str, Any] = {"from": str(email.sender), "subject": email.subject}
    if email.html is not None:
        fields["html"] = email.html
    if email.text is not None:
        fields["text"] = email.text
    if email.reply_to is not None:
        fields["reply_to"] = [str(email.reply_to)]
    if email.headers:
        fields["headers"] = dict(email.headers)
    if email.attachments:
        fields["attachments"] = [_attachment(a) for a in email.attachments]
    if email.send_at is not None:
        fields["scheduled_at"] = email.send_at.isoformat()
    return fields


def _copy(
    fields: Mapping[str, Any], tags: list[dict[str, str]], recipient: Recipient
) -> dict[str, Any]:
    return {
        **fields,
        "to": [str(recipient.address)],
        "tags": [{"name": TRACKING_KEY, "value": recipient.tracking_id}, *tags],
    }


def idempotency_key(recipients: Sequence[Recipient]) -> str:
    """The same key for every attempt of one request, a different one for every request."""
    if len(recipients) == 1:
        return f"unimailtrack-{recipients[0].tracking_id}"
    return "unimailtrack-" + event_digest(*(r.tracking_id for r in recipients))


def build_calls(
    email: Email,
    recipients: Sequence[Recipient],
    *,
    base_url: str,
    headers: httpx.Headers,
) -> list[Call]:
    """The requests that send ``email`` to ``recipients`` (pure)."""
    fields = message_fields(email)
    tags = shared_tags(email)
    single = email.attachments or email.send_at is not None or len(recipients) == 1
    calls = []
    if single:
        url = httpx.URL(base_url + SEND_PATH)
        for recipient in recipients:
            chunk: tuple[Recipient, ...] = (recipient,)
            request = read_request("POST", url, headers, dumps(_copy(fields, tags, recipient)))
            request.headers["Idempotency-Key"] = idempotency_key(chunk)
            calls.append(Call(request, chunk, partial(interpret_single, chunk)))
        return calls
    url = httpx.URL(base_url + BATCH_PATH)
    for start in range(0, len(recipients), MAX_BATCH):
        chunk = tuple(recipients[start : start + MAX_BATCH])
        body = dumps([_copy(fields, tags, r) for r in chunk])
        request = read_request("POST", url, headers, body)
        request.headers["Idempotency-Key"] = idempotency_key(chunk)
        calls.append(Call(request, chunk, partial(interpret_batch, chunk)))
    return calls


# --------------------------------------------------------------------------- responses


def _accepted(recipient: Recipient, message_id: str | None) -> RecipientResult:
    return RecipientResult(
        recipient=recipient.address.email,
        tracking_id=recipient.tracking_id,
        status=DeliveryStatus.ACCEPTED,
        message_id=message_id,
        provider=PROVIDER,
    )


def _json(response: httpx.Response) -> Any:
    try:
        return load_untrusted(response.content)
    except ValueError:
        return None


def interpret_single(
    recipients: Sequence[Recipient], response: httpx.Response
) -> list[RecipientResult]:
    """``{"id": ...}`` for the one recipient, or the ``SendError`` Resend's answer means."""
    if not response.is_success:
        raise resend_error(response)
    body = _json(response)
    found = body.get("id") if isinstance(body, dict) else None
    message_id = found if isinstance(found, str) and found else None
    return [_accepted(r, message_id) for r in recipients]


def interpret_batch(
    recipients: Sequence[Recipient], response: httpx.Response
) -> list[RecipientResult]:
    """``{"data": [{"id": ...}, ...]}`` in request order, or the ``SendError``."""
    if not response.is_success:
        raise resend_error(response)
    body = _json(response)
    data = body.get("data") if isinstance(body, dict) else None
    ids: list[str | None] = []
    if isinstance(data, list):
        for item in data:
            found = item.get("id") if isinstance(item, dict) else None
            ids.append(found if isinstance(found, str) and found else None)
    ids += [None] * (len(recipients) - len(ids))
    return [_accepted(r, m) for r, m in zip(recipients, ids, strict=False)]


def resend_error(response: httpx.Response) -> SendError:
    """The ``SendError`` for a Resend error answer ``{"statusCode", "name", "message"}``."""
    status = response.status_code
    body = _json(response)
    name = body.get("name") if isinstance(body, dict) else None
    message = body.get("message") if isinstance(body, dict) else None
    if not isinstance(message, str):
        message = response.text.strip()[:500]
    name = name if isinstance(name, str) else ""
    kind = _ERRORS.get(name)
    if name == "validation_error" and status == 401:
        kind = AuthenticationError
    elif name == "validation_error" and status == 403:
        kind = NotPermitted
    if kind is None:
        kind = _by_status(status)
    detail = f"{name}: {message}" if name else message or None
    common: dict[str, Any] = {"provider": PROVIDER, "status": status, "detail": detail}
    hint = _HINTS.get(kind, f"Resend answered HTTP {status}")
    if kind is RateLimited:
        retry_after = parse_retry_after(
            response.headers.get("retry-after") or response.headers.get("ratelimit-reset")
        )
        return RateLimited(hint, retry_after=retry_after, **common)
    if kind is ProviderUnavailable:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return ProviderUnavailable(hint, retry_after=retry_after, **common)
    if kind is PayloadTooLarge:
        return PayloadTooLarge("the e-mail is larger than Resend accepts", **common)
    if kind is InvalidRequest:
        found = _FIELD.search(message or "")
        fields = [FieldError(message or "invalid", field=found.group(1) if found else None)]
        return InvalidRequest(hint, field_errors=fields, **common)
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
    if status in (402, 451):
        return NotPermitted
    if 400 <= status < 500:
        return InvalidRequest
    return SendError
