"""SendGrid sending: v3 Mail Send, and what its answers mean.

One ``POST /v3/mail/send`` per 1,000 recipients (SendGrid's limit on personalizations per
request). Every recipient is a personalization of its own whose ``custom_args`` carry its
tracking id, so each webhook event names exactly one (send, recipient). The e-mail's
``metadata`` travels once per request as message-level ``custom_args``, which SendGrid merges
into every personalization; ``tags`` and ``category`` become SendGrid ``categories``. Open and
click tracking are always set explicitly, off unless the e-mail asks for them.

SendGrid's errors are its HTTP statuses (``error_for_status``) with the body's
``{"errors": [{"message", "field"}]}`` as the detail and the field errors; a 403 that names the
``from`` field is an unverified sender, any other 403 a key without the Mail Send permission.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from types import MappingProxyType
from typing import Any, Final

import httpx

from unimailtrack._http import read_request
from unimailtrack._json import load_untrusted
from unimailtrack.adapters.base import Call, Recipient, error_for_status
from unimailtrack.adapters.sendgrid.events import NOT_METADATA
from unimailtrack.errors import FieldError, InvalidRequest
from unimailtrack.model import (
    TRACKING_KEY,
    Address,
    Attachment,
    DeliveryStatus,
    Email,
    RecipientResult,
)

__all__ = [
    "API_BASE_URLS",
    "MAIL_SEND_PATH",
    "MAX_PERSONALIZATIONS",
    "build_calls",
    "interpret_response",
    "mail_send_message",
]

PROVIDER: Final = "sendgrid"

API_BASE_URLS: Final[Mapping[str, str]] = MappingProxyType(
    {"global": "https://api.sendgrid.com", "eu": "https://api.eu.sendgrid.com"}
)
"""The v3 API host for each data residency region."""

MAIL_SEND_PATH: Final = "/v3/mail/send"

MAX_PERSONALIZATIONS: Final = 1000
"""SendGrid takes at most 1,000 personalizations (and 1,000 recipients) per Mail Send request."""


def _address(address: Address) -> dict[str, str]:
    if address.name:
        return {"email": address.email, "name": address.name}
    return {"email": address.email}


def _categories(email: Email) -> list[str]:
    """Tags then the category, each once (SendGrid refuses repeated categories)."""
    names = [*email.tags, email.category] if email.category else email.tags
    return list(dict.fromkeys(names))


def _attachment(attachment: Attachment) -> dict[str, str]:
    item = {
        "content": attachment.base64,
        "type": attachment.content_type,
        "filename": attachment.filename,
        "disposition": "inline" if attachment.inline else "attachment",
    }
    if attachment.content_id:
        item["content_id"] = attachment.content_id
    return item


def _check_metadata(email: Email) -> None:
    if NOT_METADATA.isdisjoint(email.metadata):
        return
    raise InvalidRequest(
        "metadata keys must not be names SendGrid uses in its events; rename them",
        provider=PROVIDER,
        field_errors=[
            FieldError("is a name SendGrid uses in its events", field=f"metadata.{key}")
            for key in sorted(NOT_METADATA.intersection(email.metadata))
        ],
    )


def mail_send_message(email: Email) -> dict[str, Any]:
    """The Mail Send body for ``email``, without its personalizations (pure)."""
    content = []
    if email.text is not None:  # SendGrid wants text/plain before text/html
        content.append({"type": "text/plain", "value": email.text})
    if email.html is not None:
        content.append({"type": "text/html", "value": email.html})
    message: dict[str, Any] = {
        "from": _address(email.sender),
        "subject": email.subject,
        "content": content,
        "tracking_settings": {
            "open_tracking": {"enable": email.track_opens},
            "click_tracking": {"enable": email.track_clicks, "enable_text": email.track_clicks},
        },
    }
    if email.reply_to is not None:
        message["reply_to"] = _address(email.reply_to)
    if email.attachments:
        message["attachments"] = [_attachment(a) for a in email.attachments]
    if email.headers:
        message["headers"] = dict(email.headers)
    categories = _categories(email)
    if categories:
        message["categories"] = categories
    if email.metadata:
        message["custom_args"] = dict(email.metadata)
    if email.send_at is not None:
        message["send_at"] = int(email.send_at.timestamp())
    return message


_stdlib_encoder: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _stdlib_dumps(body: dict[str, Any]) -> bytes:
    return _stdlib_encoder.encode(body).encode()


def _json_dumps() -> Callable[[dict[str, Any]], bytes]:
    """Compact UTF-8 JSON for a request body: orjson's encoder when installed
    (``unimailtrack[fast]``), a fifteenth of the standard library's time and the same bytes.
    Whatever orjson refuses (a lone surrogate, an integer beyond 64 bits) goes to the standard
    library, which encodes it or fails exactly as it always did."""
    try:
        from orjson import dumps
    except ImportError:  # pragma: no cover - exercised where the fast extra is absent
        return _stdlib_dumps

    def encode(body: dict[str, Any]) -> bytes:
        try:
            return dumps(body)
        except TypeError:  # orjson.JSONEncodeError
            return _stdlib_dumps(body)

    return encode


_dumps: Final = _json_dumps()


def _personalization(recipient: Recipient) -> dict[str, Any]:
    return {
        "to": [_address(recipient.address)],
        "custom_args": {TRACKING_KEY: recipient.tracking_id},
    }


def build_calls(
    email: Email, recipients: Sequence[Recipient], *, url: httpx.URL, headers: httpx.Headers
) -> list[Call]:
    """One Mail Send request per 1,000 recipients, each with a pure ``interpret``."""
    _check_metadata(email)
    message = mail_send_message(email)
    calls = []
    for start in range(0, len(recipients), MAX_PERSONALIZATIONS):
        chunk = tuple(recipients[start : start + MAX_PERSONALIZATIONS])
        body = {"personalizations": [_personalization(r) for r in chunk], **message}
        content = _dumps(body)
        calls.append(
            Call(
                read_request("POST", url, headers, content),
                chunk,
                partial(interpret_response, chunk),
            )
        )
    return calls


def _error_details(response: httpx.Response) -> tuple[str, list[FieldError]]:
    """SendGrid's ``{"errors": [{"message", "field", "help"}]}`` as text and field errors."""
    try:
        errors = load_untrusted(response.content).get("errors")
    except (ValueError, AttributeError):
        return response.text.strip()[:500], []
    if not isinstance(errors, list):
        return response.text.strip()[:500], []
    found = [
        FieldError(
            str(e.get("message") or "").strip() or "no message",
            field=e["field"] if isinstance(e.get("field"), str) else None,
        )
        for e in errors
        if isinstance(e, dict)
    ]
    return "; ".join(f.message for f in found), found


def interpret_response(
    recipients: Sequence[Recipient], response: httpx.Response
) -> list[RecipientResult]:
    """Every recipient accepted with the request's ``X-Message-Id``, or the ``SendError`` that
    says why SendGrid refused the request (pure)."""
    if response.is_success:
        message_id = response.headers.get("x-message-id")
        return [
            RecipientResult(
                recipient=r.address.email,
                tracking_id=r.tracking_id,
                status=DeliveryStatus.ACCEPTED,
                message_id=message_id,
                provider=PROVIDER,
            )
            for r in recipients
        ]
    message, field_errors = _error_details(response)
    # SendGrid answers 403 both for a key without the Mail Send permission and for a sender
    # that is not a verified Sender Identity; only the latter names the "from" field.
    unverified_sender = any(f.field == "from" for f in field_errors)
    raise error_for_status(
        PROVIDER,
        response,
        message,
        field_errors=field_errors,
        forbidden_is_permission=unverified_sender,
    )
