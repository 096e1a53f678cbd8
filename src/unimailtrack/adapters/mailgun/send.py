"""Mailgun sending: the messages API as batch sends, and what its answers mean.

Sending posts ``/v3/{domain}/messages`` as a form (multipart when there are files). Every send is
a *batch send*: each recipient (to, cc and bcc alike) is a ``to`` of the batch and
``recipient-variables`` gives each their own tracking id, which Mailgun substitutes into the
``v:unimailtrack_id`` variable of their copy. Mailgun then sends one message per recipient that
shows only that recipient's address, and every event about that copy carries the id back in
``user-variables``. A batch holds at most 1,000 recipients, Mailgun's documented limit, so
larger sends become several requests.

Mailgun's errors are its HTTP statuses (``error_for_status``, a 403 being a permission) with
the body's ``message`` as the detail.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC
from email.utils import format_datetime
from functools import partial
from typing import Any, Final

import httpx

from unimailtrack._json import load_untrusted
from unimailtrack.adapters.base import Call, Recipient, error_for_status
from unimailtrack.model import TRACKING_KEY, DeliveryStatus, Email, RecipientResult

__all__ = [
    "BATCH_LIMIT",
    "REGIONS",
    "bare_message_id",
    "basic_auth",
    "batch_fields",
    "batches",
    "build_calls",
    "interpret_response",
    "message_fields",
    "message_files",
]

PROVIDER: Final = "mailgun"

BATCH_LIMIT: Final = 1000
"""Recipients per batch request, Mailgun's documented maximum."""

REGIONS: Final[Mapping[str, str]] = {
    "us": "https://api.mailgun.net",
    "eu": "https://api.eu.mailgun.net",
}
"""API base URL per region: a domain lives in one region and must be sent from there."""

_RECIPIENT_TRACKING: Final = f"%recipient.{TRACKING_KEY}%"


def basic_auth(api_key: str) -> str:
    return "Basic " + base64.b64encode(f"api:{api_key}".encode()).decode("ascii")


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def message_fields(email: Email) -> dict[str, str | list[str]]:
    """The form fields every batch of ``email`` shares (pure)."""
    fields: dict[str, str | list[str]] = {"from": str(email.sender), "subject": email.subject}
    if email.text is not None:
        fields["text"] = email.text
    if email.html is not None:
        fields["html"] = email.html
    if email.reply_to is not None:
        fields["h:Reply-To"] = str(email.reply_to)
    for name, value in email.headers.items():
        fields[f"h:{name}"] = value
    tags = list(dict.fromkeys([email.category, *email.tags] if email.category else email.tags))
    if tags:
        fields["o:tag"] = tags
    for key, value in email.metadata.items():
        fields[f"v:{key}"] = value
    fields[f"v:{TRACKING_KEY}"] = _RECIPIENT_TRACKING
    fields["o:tracking-opens"] = _yes_no(email.track_opens)
    fields["o:tracking-clicks"] = _yes_no(email.track_clicks)
    if email.send_at is not None:
        fields["o:deliverytime"] = format_datetime(email.send_at.astimezone(UTC), usegmt=True)
    return fields


def message_files(email: Email) -> list[tuple[str, tuple[str, bytes, str]]]:
    """Attachments, and inline images named by their content id (Mailgun's ``cid:``)."""
    return [
        (
            "inline" if a.inline else "attachment",
            (a.content_id if a.inline and a.content_id else a.filename, a.content, a.content_type),
        )
        for a in email.attachments
    ]


def batch_fields(chunk: Sequence[Recipient]) -> dict[str, str | list[str]]:
    """The recipients of one batch and each one's tracking id."""
    variables = {r.address.email: {TRACKING_KEY: r.tracking_id} for r in chunk}
    return {
        "to": [str(r.address) for r in chunk],
        "recipient-variables": json.dumps(variables, separators=(",", ":")),
    }


def batches(recipients: Iterable[Recipient], limit: int) -> list[tuple[Recipient, ...]]:
    """Recipients split into batches of at most ``limit``; an address met twice starts a new
    batch, since recipient variables are keyed by address."""
    chunks: list[tuple[Recipient, ...]] = []
    current: list[Recipient] = []
    seen: set[str] = set()
    for recipient in recipients:
        key = recipient.address.email.casefold()
        if len(current) >= limit or key in seen:
            chunks.append(tuple(current))
            current, seen = [], set()
        current.append(recipient)
        seen.add(key)
    if current:
        chunks.append(tuple(current))
    return chunks


def interpret_response(
    chunk: Sequence[Recipient], response: httpx.Response
) -> list[RecipientResult]:
    """Every recipient of the batch accepted under the batch's message id, or the error."""
    if not response.is_success:
        raise error_for_status(
            PROVIDER, response, _error_text(response), forbidden_is_permission=True
        )
    message_id = _response_id(response)
    return [
        RecipientResult(
            recipient=r.address.email,
            tracking_id=r.tracking_id,
            status=DeliveryStatus.ACCEPTED,
            message_id=message_id,
            provider=PROVIDER,
        )
        for r in chunk
    ]


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        data = load_untrusted(response.content)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _response_id(response: httpx.Response) -> str | None:
    value = _json_object(response).get("id")
    return bare_message_id(value) if isinstance(value, str) else None


def _error_text(response: httpx.Response) -> str:
    message = _json_object(response).get("message")
    if isinstance(message, str):
        return message
    return response.text.strip()[:500]


def bare_message_id(value: str) -> str:
    """A Message-Id without whitespace and angle brackets, as sends and events both use it."""
    return value.strip().removeprefix("<").removesuffix(">")


def build_calls(
    email: Email,
    recipients: Sequence[Recipient],
    *,
    base_url: str,
    domain: str,
    authorization: str,
) -> list[Call]:
    """One batch request per chunk of at most ``BATCH_LIMIT`` recipients."""
    url = f"{base_url}/v3/{domain}/messages"
    headers = {"Authorization": authorization, "Accept": "application/json"}
    fields = message_fields(email)
    files = message_files(email)
    return [
        Call(
            request=httpx.Request(
                "POST",
                url,
                headers=headers,
                data={**fields, **batch_fields(chunk)},
                files=files or None,
            ),
            recipients=chunk,
            interpret=partial(interpret_response, chunk),
        )
        for chunk in batches(recipients, BATCH_LIMIT)
    ]
