"""Brevo's transactional webhook vocabulary, and how each event becomes a canonical event.

A webhook body is one event object, or a JSON array of them when the webhook is batched. Each
names its recipient (``email``), Brevo's ``message-id`` and the ``X-Mailin-custom`` header of
the copy, whose JSON carries the tracking id and the metadata back. Times are ``ts_event``
(unix seconds, UTC), else ``ts_epoch`` (milliseconds, UTC); ``date`` is local to the account and
never read. A bounce whose status is an address error (5.1.x) is hard and one refused for
security or policy (x.7.x) is a block, whichever of hard or soft Brevo called it. Brevo reports
opens by a privacy proxy (Apple Mail Privacy Protection) as their own
events, so every open says whether a machine made it.

Only a body that is neither a JSON object nor an array raises ``PayloadError``; an item that
cannot be mapped becomes ``unknown`` with the reason why, and the rest of the batch is kept.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any, Final

from unimailtrack import _json
from unimailtrack.adapters._vocabulary import (
    UNMAPPED,
    Term,
    Vocabulary,
    event_key,
    lookup,
    read_json,
    vocabulary,
)
from unimailtrack.adapters.base import event_digest, unknown_event
from unimailtrack.adapters.brevo.send import CUSTOM_HEADER
from unimailtrack.errors import PayloadError
from unimailtrack.model import TRACKING_KEY, BounceKind, EmailEvent, EventType, make_event

__all__ = ["EVENTS", "parse_events"]

PROVIDER: Final = "brevo"

EVENTS: Final[Vocabulary] = vocabulary(
    {
        "request": Term(EventType.ACCEPTED),
        "delivered": Term(EventType.DELIVERED),
        "deferred": Term(EventType.DEFERRED, bounce=BounceKind.SOFT),
        "soft_bounce": Term(EventType.BOUNCED, bounce=BounceKind.SOFT),
        "hard_bounce": Term(EventType.BOUNCED, bounce=BounceKind.HARD),
        "invalid_email": Term(EventType.FAILED, reason="the address is not valid"),
        "blocked": Term(EventType.DROPPED, reason="the address is blocked in Brevo"),
        "error": Term(EventType.FAILED),
        "spam": Term(EventType.COMPLAINED),
        "complaint": Term(EventType.COMPLAINED),
        "opened": Term(EventType.OPENED, machine=False),
        "unique_opened": Term(EventType.OPENED, machine=False),
        "proxy_open": Term(EventType.OPENED, machine=True),
        "unique_proxy_open": Term(EventType.OPENED, machine=True),
        "click": Term(EventType.CLICKED),
        "unsubscribed": Term(EventType.UNSUBSCRIBED),
    }
)
"""Every transactional e-mail event Brevo documents and what it becomes; any other becomes
``unknown``. ``unique_*`` are the first of their kind for a message; ``proxy_*`` opens are
made by a privacy proxy, not by a person. ``blocked`` is Brevo refusing to send to an address
on its blocklist; ``invalid_email`` an address Brevo could not send to at all."""

_EVENTS: Final = lookup(EVENTS)
_STATUS: Final = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_BOUNCED: Final = EventType.BOUNCED
_CLICKED: Final = EventType.CLICKED
_UNKNOWN: Final = EventType.UNKNOWN
_WITH_REASON: Final = frozenset(
    {EventType.BOUNCED, EventType.DEFERRED, EventType.FAILED, EventType.DROPPED}
)


def _time(item: dict[str, Any]) -> datetime | None:
    for name, scale in (("ts_event", 1.0), ("ts_epoch", 1000.0), ("ts", 1.0)):
        value = item.get(name)
        if value is None or type(value) is bool:
            continue
        try:
            return datetime.fromtimestamp(float(value) / scale, UTC)
        except (TypeError, ValueError, OverflowError, OSError):
            return None
    return None


def _text(value: object) -> str | None:
    if type(value) is str:
        return value or None
    if type(value) is int or type(value) is float:
        return str(value)
    return None


def _custom(value: object) -> tuple[str | None, dict[str, str]]:
    """The tracking id and metadata from ``X-Mailin-custom``: our JSON object, or any other
    string (kept as metadata ``X-Mailin-custom``)."""
    if type(value) is not str or not value:
        return None, {}
    try:
        found = _json.loads(value)
    except (ValueError, RecursionError):
        found = None
    if type(found) is not dict:
        return None, {CUSTOM_HEADER: value}
    tracking = found.pop(TRACKING_KEY, None)
    for key, value in found.items():  # JSON keys are strings; values become text
        if type(value) is not str:
            found[key] = json.dumps(value, ensure_ascii=False)
    return (tracking if type(tracking) is str and tracking else None), found


def map_event(item: Any, body: bytes | str, index: int) -> EmailEvent:
    """One Brevo event as a canonical event (pure, never raises)."""
    if type(item) is not dict:
        return _malformed({"value": item}, body, index, "the batch item is not a JSON object")
    name = item.get("event")
    if type(name) is not str or not name:
        return _malformed(item, body, index, "the Brevo event has no 'event' name")
    timestamp = _time(item)
    if timestamp is None:
        return _malformed(item, body, index, "the Brevo event has no valid time", name)
    email = item.get("email")
    recipient = email if type(email) is str else ""
    term = _EVENTS.get(name, UNMAPPED)
    event_type = term.type
    reason = term.reason
    if event_type in _WITH_REASON:
        reason = _text(item.get("reason")) or reason
    if term is UNMAPPED:
        reason = f"Brevo event {name!r} is not mapped"
    elif not recipient:
        event_type = _UNKNOWN
        reason = "the Brevo event names no recipient ('email')"
    found = _STATUS.search(reason) if reason and event_type in _WITH_REASON else None
    status = found.group(1) if found else None
    bounce = term.bounce
    if event_type is _BOUNCED and status is not None:
        if status.startswith("5.1."):  # the address: hard, whatever Brevo called it
            bounce = BounceKind.HARD
        elif status[1:4] == ".7.":  # security or policy: the sender refused, not the address
            bounce = BounceKind.BLOCK
    url = _text(item.get("link")) if event_type is _CLICKED else None
    message_id = _text(item.get("message-id"))
    tracking_id, metadata = _custom(item.get(CUSTOM_HEADER))
    tags = item.get("tags")
    if type(tags) is list:
        labels = [t for t in tags if type(t) is str]
    else:
        tag = item.get("tag")
        labels = [tag] if type(tag) is str and tag else []
    stamp = item.get("ts_epoch") or item.get("ts_event") or item.get("ts")
    event_id = (
        event_key(f"brevo\x1f{name}\x1f{message_id}\x1f{stamp}\x1f{url or ''}\x1f{recipient}")
        if message_id
        else event_digest(PROVIDER, event_digest(str(index), body), recipient)
    )
    user_agent = item.get("user_agent")
    return make_event(
        PROVIDER,
        event_type,  # type
        name,  # provider_event
        recipient,
        event_id,
        timestamp,
        message_id,
        tracking_id,
        reason,
        bounce if event_type is _BOUNCED or event_type is EventType.DEFERRED else None,
        status,  # smtp_status
        None,  # attempt
        url,
        user_agent if type(user_agent) is str and user_agent else None,
        term.machine if event_type is EventType.OPENED else None,  # machine
        labels,  # tags
        metadata,
        item,  # raw
    )


def _malformed(
    item: dict[str, Any], body: bytes | str, index: int, why: str, name: str = ""
) -> EmailEvent:
    email = item.get("email")
    return unknown_event(
        PROVIDER,
        item,
        why,
        provider_event=name,
        recipient=email if type(email) is str else "",
        timestamp=_EPOCH,
        digest_source=event_digest(str(index), body),
    )


def parse_events(body: bytes | str) -> list[EmailEvent]:
    """A Brevo webhook body (one event, or a batch as a JSON array) as canonical events, in
    body order. Raises ``PayloadError`` only when the body is neither."""
    found = read_json(body, provider=PROVIDER)
    if type(found) is dict:
        return [map_event(found, body, 0)]
    if type(found) is list:
        return [map_event(item, body, i) for i, item in enumerate(found)]
    raise PayloadError(
        "a Brevo webhook body is a JSON object or an array of them",
        provider=PROVIDER,
        detail=type(found).__name__,
    )
