"""Backfill from SendGrid's Email Activity API, where the account has it.

The Email Activity Feed is a paid add-on (and an API key with ``messages.read``); it is
limited to 6 requests a minute, answers at most 1,000 messages a request and has no paging.
``GET /v3/messages?limit=1000&query=last_event_time BETWEEN TIMESTAMP "..." AND TIMESTAMP
"..."`` answers one entry per message and recipient: its ``msg_id`` (the webhook's
``sg_message_id``), ``to_email``, ``status`` (``processed``, ``delivered`` or
``not_delivered``), ``opens_count``, ``clicks_count`` and ``last_event_time``. A full page
means the range holds more: it is split in two and each half asked again.

Each entry becomes the events its status implies, with ids made of the message, the recipient
and the kind, so a second backfill stores nothing twice; they join their send by message id
(the part before the first ``.``). The feed says ``not_delivered`` without telling a bounce
from a drop: that is a ``bounced`` event with an ``undetermined`` bounce kind, which does not
suppress the address. Opens and clicks carry the last event's time, the only time given.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

import httpx

from unimailtrack._http import call_with_retry
from unimailtrack._json import load_untrusted
from unimailtrack.adapters.base import error_for_status, event_digest
from unimailtrack.errors import ConfigurationError, SendError
from unimailtrack.model import BounceKind, EmailEvent, EventType

if TYPE_CHECKING:
    from unimailtrack.adapters.sendgrid import SendGridAdapter

__all__ = ["LIMIT", "events"]

PROVIDER = "sendgrid"

log = logging.getLogger("unimailtrack.backfill")

LIMIT = 1000
"""The most messages one Email Activity request answers."""
ACTIVITY_PATH = "/v3/messages"
_SHORTEST = timedelta(seconds=1)

_STATUS: dict[str, tuple[EventType, BounceKind | None]] = {
    "processed": (EventType.PROCESSED, None),
    "delivered": (EventType.DELIVERED, None),
    "not_delivered": (EventType.BOUNCED, BounceKind.UNDETERMINED),
}


def events(
    adapter: SendGridAdapter, since: datetime, until: datetime
) -> Iterator[list[EmailEvent]]:
    """The events the Email Activity feed implies for messages whose last event falls from
    ``since`` to ``until``, one list per request."""
    headers = getattr(adapter, "_send_headers", None)
    if headers is None:
        raise ConfigurationError("a SendGrid backfill needs the API key in the DSN")
    authorization = {"Authorization": headers["Authorization"], "Accept": "application/json"}
    windows = [(since, until)]
    while windows:
        start, end = windows.pop()
        query = f'last_event_time BETWEEN TIMESTAMP "{_iso(start)}" AND TIMESTAMP "{_iso(end)}"'
        request = httpx.Request(
            "GET",
            adapter.base_url + ACTIVITY_PATH,
            params={"query": query, "limit": str(LIMIT)},
            headers=authorization,
        )
        messages = call_with_retry(adapter.retry, partial(_messages, adapter, request))
        if len(messages) >= LIMIT:
            if end - start > _SHORTEST:
                middle = start + (end - start) / 2
                windows += [(start, middle), (middle, end)]  # more than a page: ask each half
                continue
            log.warning(
                "sendgrid backfill: more than %d messages had their last event between %s and "
                "%s; the Email Activity API shows only %d of them",
                LIMIT,
                _iso(start),
                _iso(end),
                LIMIT,
            )
        yield [event for message in messages for event in _events(message)]


def _events(message: dict[str, Any]) -> list[EmailEvent]:
    msg_id, recipient = message.get("msg_id"), message.get("to_email")
    if not isinstance(msg_id, str) or not isinstance(recipient, str):
        return []
    when = _time(message.get("last_event_time"))
    found = []
    mapped = _STATUS.get(str(message.get("status")))
    kinds: list[tuple[EventType, BounceKind | None, str]] = []
    if mapped is not None:
        kinds.append((*mapped, str(message.get("status"))))
    if _count(message.get("opens_count")):
        kinds.append((EventType.OPENED, None, "open"))
    if _count(message.get("clicks_count")):
        kinds.append((EventType.CLICKED, None, "click"))
    for kind, bounce, name in kinds:
        found.append(
            EmailEvent(
                provider=PROVIDER,
                type=kind,
                provider_event=name,
                recipient=recipient,
                message_id=msg_id,
                event_id=event_digest(PROVIDER, "activity", msg_id, recipient.lower(), name),
                timestamp=when,
                bounce=bounce,
                reason="not delivered (Email Activity)" if bounce is not None else None,
                raw=message,
            )
        )
    return found


def _messages(adapter: SendGridAdapter, request: httpx.Request) -> list[dict[str, Any]]:
    response = adapter.transport.send(request)
    if response.status_code != 200:
        raise error_for_status("sendgrid", response, response.text[:200])
    try:
        answer = load_untrusted(response.content)
    except ValueError:
        raise SendError(
            "SendGrid's Email Activity API answered something that is not JSON",
            provider="sendgrid",
        ) from None
    messages = answer.get("messages") if isinstance(answer, dict) else None
    if not isinstance(messages, list):
        raise SendError("SendGrid's Email Activity API answered an unexpected shape")
    return [m for m in messages if isinstance(m, dict)]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _time(value: Any) -> datetime:
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return datetime.now(UTC)


def _count(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
