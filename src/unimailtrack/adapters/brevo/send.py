"""Brevo sending: ``POST /v3/smtp/email``, with ``messageVersions`` for a bulk send, and Brevo's
error table.

Every recipient gets a copy of their own: a send to one recipient is one plain request; a bulk
send goes 1,000 recipients to a request, one message version each. Each copy carries an
``X-Mailin-custom`` header with a JSON object of its tracking id and the e-mail's metadata,
which Brevo returns as ``X-Mailin-custom`` in every webhook event about it. The category and
tags become Brevo ``tags``. A request carries an ``idempotencyKey`` (a UUID derived from its
tracking ids) so a retried request is not sent twice. Open and click tracking are settings of
the Brevo account, not of a message: an e-mail that asks for them is sent, with a warning.

Brevo answers errors with ``{"code": "...", "message": "..."}``; :data:`ERRORS` says what each
code raises.
"""

from __future__ import annotations

import json
import uuid
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
    Address,
    Attachment,
    DeliveryStatus,
    Email,
    RecipientResult,
)

__all__ = [
    "API_BASE_URL",
    "CUSTOM_HEADER",
    "ERRORS",
    "MAX_VERSIONS",
    "SEND_PATH",
    "brevo_error",
    "build_calls",
    "interpret_response",
]

PROVIDER: Final = "brevo"
API_BASE_URL: Final = "https://api.brevo.com"
SEND_PATH: Final = "/v3/smtp/email"
MAX_VERSIONS: Final = 1000
"""Brevo takes at most 1,000 message versions per request."""
CUSTOM_HEADER: Final = "X-Mailin-custom"
_RESERVED_PREFIX: Final = "unimailtrack_"

ERRORS: Final[Mapping[str, type[SendError]]] = MappingProxyType(
    {
        "invalid_parameter": InvalidRequest,
        "missing_parameter": InvalidRequest,
        "out_of_range": InvalidRequest,
        "duplicate_parameter": InvalidRequest,
        "bad_request": InvalidRequest,
        "not_acceptable": InvalidRequest,
        "method_not_allowed": InvalidRequest,
        "document_not_found": InvalidRequest,
        "duplicate_request": InvalidRequest,
        "unauthorized": AuthenticationError,
        "not_enough_credits": NotPermitted,
        "permission_denied": NotPermitted,
        "reseller_permission_denied": NotPermitted,
        "account_under_validation": NotPermitted,
    }
)
"""Brevo's error ``code`` and what it raises; a code missing here is read by HTTP status (401:
the key, 402 and 403: the account may not send, 429: slow down, 5xx: retried)."""

_ERRORS: Final = dict(ERRORS)

_HINTS: Final[Mapping[type[SendError], str]] = MappingProxyType(
    {
        InvalidRequest: "Brevo refused the request as invalid; correct the e-mail",
        AuthenticationError: "Brevo refused the API key; check the key in the DSN",
        NotPermitted: "Brevo will not send this for the account; check its senders and credits",
        RateLimited: "Brevo is rate limiting requests; slow down",
        ProviderUnavailable: "Brevo failed to handle the request; it will be retried",
        PayloadTooLarge: "the e-mail is larger than Brevo accepts",
    }
)

# --------------------------------------------------------------------------- requests


def _address(address: Address) -> dict[str, str]:
    if address.name:
        return {"email": address.email, "name": address.name}
    return {"email": address.email}


def _attachment(attachment: Attachment) -> dict[str, str]:
    return {"name": attachment.filename, "content": attachment.base64}


def message_fields(email: Email) -> dict[str, Any]:
    """What every copy of ``email`` shares: everything but the recipient and its header."""
    fields: dict[str, Any] = {"sender": _address(email.sender), "subject": email.subject}
    if email.html is not None:
        fields["htmlContent"] = email.html
    if email.text is not None:
        fields["textContent"] = email.text
    if email.reply_to is not None:
        fields["replyTo"] = _address(email.reply_to)
    if email.attachments:
        fields["attachment"] = [_attachment(a) for a in email.attachments]
    labels = [email.category, *email.tags] if email.category else list(email.tags)
    if labels:
        fields["tags"] = list(dict.fromkeys(labels))
    if email.send_at is not None:
        fields["scheduledAt"] = email.send_at.isoformat()
    return fields


def custom_header(email: Email, recipient: Recipient) -> str:
    """The ``X-Mailin-custom`` value of one copy: JSON of the tracking id and the metadata
    (ASCII only: Brevo would pass other characters on as raw 8-bit bytes)."""
    values = {k: v for k, v in email.metadata.items() if not k.startswith(_RESERVED_PREFIX)}
    return json.dumps({TRACKING_KEY: recipient.tracking_id, **values}, separators=(",", ":"))


def idempotency_key(recipients: Sequence[Recipient]) -> str:
    """A UUID (Brevo requires one) that is the same for every attempt of one request."""
    digest = event_digest(*(r.tracking_id for r in recipients))
    return str(uuid.UUID(hex=digest))


def build_calls(
    email: Email,
    recipients: Sequence[Recipient],
    *,
    base_url: str,
    headers: httpx.Headers,
) -> list[Call]:
    """The requests that send ``email`` to ``recipients`` (pure)."""
    fields = message_fields(email)
    shared_headers = dict(email.headers)
    url = httpx.URL(base_url + SEND_PATH)
    calls = []
    for start in range(0, len(recipients), MAX_VERSIONS):
        chunk = tuple(recipients[start : start + MAX_VERSIONS])
        body: dict[str, Any] = dict(fields)
        request_headers = {**shared_headers, "idempotencyKey": idempotency_key(chunk)}
        if len(chunk) == 1:
            body["to"] = [_address(chunk[0].address)]
            request_headers[CUSTOM_HEADER] = custom_header(email, chunk[0])
        else:
            body["messageVersions"] = [
                {
                    "to": [_address(r.address)],
                    "headers": {CUSTOM_HEADER: custom_header(email, r)},
                }
                for r in chunk
            ]
        body["headers"] = request_headers
        request = read_request("POST", url, headers, dumps(body))
        calls.append(Call(request, chunk, partial(interpret_response, chunk)))
    return calls


# --------------------------------------------------------------------------- responses


def _json(response: httpx.Response) -> Any:
    try:
        return load_untrusted(response.content)
    except ValueError:
        return None


def interpret_response(
    recipients: Sequence[Recipient], response: httpx.Response
) -> list[RecipientResult]:
    """Every recipient accepted with its message id (``messageId``, or ``messageIds`` in
    version order), or the ``SendError`` Brevo's answer means."""
    if not response.is_success:
        raise brevo_error(response)
    body = _json(response)
    ids: list[str | None] = []
    if isinstance(body, dict):
        found = body.get("messageIds")
        if isinstance(found, list):
            ids = [i if isinstance(i, str) and i else None for i in found]
        elif isinstance(body.get("messageId"), str):
            ids = [body["messageId"]]
    ids += [None] * (len(recipients) - len(ids))
    return [
        RecipientResult(
            recipient=r.address.email,
            tracking_id=r.tracking_id,
            status=DeliveryStatus.ACCEPTED,
            message_id=m,
            provider=PROVIDER,
        )
        for r, m in zip(recipients, ids, strict=False)
    ]


def brevo_error(response: httpx.Response) -> SendError:
    """The ``SendError`` for a Brevo error answer ``{"code", "message"}``."""
    status = response.status_code
    body = _json(response)
    code = body.get("code") if isinstance(body, dict) else None
    message = body.get("message") if isinstance(body, dict) else None
    if not isinstance(message, str):
        message = response.text.strip()[:500]
    code = code if isinstance(code, str) else ""
    kind = _ERRORS.get(code) or _by_status(status)
    if status == 429:
        kind = RateLimited
    elif status >= 500:
        kind = ProviderUnavailable
    detail = f"{code}: {message}" if code else message or None
    common: dict[str, Any] = {"provider": PROVIDER, "status": status, "detail": detail}
    hint = _HINTS.get(kind, f"Brevo answered HTTP {status}")
    if kind is RateLimited:
        retry_after = parse_retry_after(
            response.headers.get("retry-after") or response.headers.get("x-sib-ratelimit-reset")
        )
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
    if status == 401:
        return AuthenticationError
    if status in (402, 403):
        return NotPermitted
    if 400 <= status < 500:
        return InvalidRequest
    return SendError
