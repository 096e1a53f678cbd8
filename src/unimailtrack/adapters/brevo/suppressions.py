"""Brevo's blocked transactional contacts, read: a pure request builder and reader (the
adapter's base class pages and retries).

Reading: ``GET /v3/smtp/blockedContacts``, 100 a page (Brevo's most), by ``offset``, oldest
first (``sort=asc``), so that contacts Brevo blocks while a pull runs land after the pages
already read rather than shifting them. The cursor is this module's JSON holding the offset of
the next page; the list ends with a page shorter than asked for, or at Brevo's ``count``.

What each entry becomes, by its ``reason.code``: ``hardBounce`` is a bounce, and
``contactFlaggedAsSpam`` a complaint, that Brevo blocks for every sender, so they suppress
every stream; ``adminBlocked`` (blocked by hand in Brevo) does too. The unsubscribes
(``unsubscribedViaEmail``, ``unsubscribedViaApi``, ``unsubscribedViaMA``) are from one sender
(``senderEmail``) at Brevo, which is no stream here: like any unsubscribe whose send is not
known, they concern the default stream, and their reason names the sender. A code Brevo may add
later is taken as a block. Brevo keeps no temporary entries: nothing here expires by itself.

Writing: Brevo documents no request that adds a blocked transactional contact (only reading
them and unblocking one), so the adapter refuses a push with ``NotSupported``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

import httpx

from unimailtrack._json import load_untrusted
from unimailtrack.adapters.base import RemoteSuppression, SuppressionPage, error_for_status
from unimailtrack.errors import PayloadError
from unimailtrack.model import DEFAULT_STREAM

__all__ = ["CAUSES", "LIST_PATH", "PAGE_SIZE", "page_request", "read_page"]

PROVIDER: Final = "brevo"
LIST_PATH: Final = "/v3/smtp/blockedContacts"
PAGE_SIZE: Final = 100
CAUSES: Final[Mapping[str, str]] = {
    "hardBounce": "bounced",
    "contactFlaggedAsSpam": "complained",
    "adminBlocked": "blocked",
    "unsubscribedViaEmail": "unsubscribed",
    "unsubscribedViaApi": "unsubscribed",
    "unsubscribedViaMA": "unsubscribed",
}
"""Brevo's ``reason.code`` values and the cause each becomes."""


def _offset(cursor: str | None) -> int:
    if cursor is None:
        return 0
    try:
        value = json.loads(cursor)
    except ValueError:
        value = None
    offset = value.get("offset") if isinstance(value, dict) else None
    if type(offset) is not int or offset < 0:
        raise ValueError(f"not a Brevo suppression cursor: {cursor!r}")
    return offset


def page_request(base_url: str, headers: Mapping[str, str], cursor: str | None) -> httpx.Request:
    return httpx.Request(
        "GET",
        base_url + LIST_PATH,
        params={"limit": PAGE_SIZE, "offset": _offset(cursor), "sort": "asc"},
        headers=headers,
    )


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _entry(item: Any) -> RemoteSuppression | None:
    if not isinstance(item, dict) or not isinstance(item.get("email"), str):
        return None
    found = item.get("reason")
    reason: dict[str, Any] = found if isinstance(found, dict) else {}
    code = reason.get("code")
    code = code if isinstance(code, str) else ""
    message = reason.get("message")
    message = message if isinstance(message, str) else ""
    cause = CAUSES.get(code, "blocked")
    sender = item.get("senderEmail") if isinstance(item.get("senderEmail"), str) else ""
    told = message or code or "blocked"
    if cause == "unsubscribed" and sender:
        told = f"{told}, from the sender {sender}"
    return RemoteSuppression(
        address=item["email"],
        cause=cause,
        scope=DEFAULT_STREAM if cause == "unsubscribed" else None,
        reason=f"a blocked transactional contact at Brevo ({told})",
        created_at=_time(item.get("blockedAt")),
        origin=code or "blocked",
    )


def read_page(cursor: str | None, response: httpx.Response) -> SuppressionPage:
    offset = _offset(cursor)
    if response.status_code >= 300:
        try:
            body = load_untrusted(response.content)
        except ValueError:
            body = None
        message = body.get("message") if isinstance(body, dict) else None
        raise error_for_status(
            PROVIDER, response, message if isinstance(message, str) else response.text[:500]
        )
    try:
        body = load_untrusted(response.content)
    except ValueError:
        raise PayloadError("Brevo answered a blocked-contacts page that is not JSON") from None
    if not isinstance(body, dict):
        raise PayloadError("Brevo's blocked-contacts page is not a JSON object")
    contacts = body.get("contacts")
    if contacts is None:  # Brevo leaves the array out when there is nothing to list
        contacts = []
    if not isinstance(contacts, list):
        raise PayloadError("Brevo's blocked-contacts page has no contacts array")
    items = tuple(e for e in (_entry(item) for item in contacts) if e is not None)
    following = offset + len(contacts)
    count = body.get("count")
    done = len(contacts) < PAGE_SIZE or (type(count) is int and following >= count)
    return SuppressionPage(items, None if done else json.dumps({"offset": following}))
