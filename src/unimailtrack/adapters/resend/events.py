"""Resend's webhook vocabulary, and how each event becomes canonical events.

A webhook body is one event, ``{"type": "email.bounced", "created_at": ..., "data": {...}}``.
An ``email.*`` event names its message's recipients in ``data.to`` and becomes one event per
recipient (our sends have one each); its tags (``data.tags``) carry the tracking id back.
Resend's webhook is account-wide: events about contacts, domains, inboxes and inbound mail, and
events about mail this application never sent, arrive as well. They are kept, never refused:
the first as ``unknown`` with recipient ``""``, the others as what they are, with no tracking id.

Only a body that is not a JSON object raises ``PayloadError``; anything inside it that cannot be
mapped becomes ``unknown`` with the reason why.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final

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
from unimailtrack.adapters.resend.send import CATEGORY_TAG, TAG_PREFIX
from unimailtrack.errors import PayloadError
from unimailtrack.model import TRACKING_KEY, BounceKind, EmailEvent, EventType, make_event

__all__ = ["BOUNCE_KINDS", "EVENTS", "SUBTYPE_KINDS", "bounce_kind", "parse_events"]

PROVIDER: Final = "resend"

_NO_RECIPIENT: Final = "concerns no recipient of a send"

EVENTS: Final[Vocabulary] = vocabulary(
    {
        "email.sent": Term(EventType.ACCEPTED),
        "email.scheduled": Term(EventType.ACCEPTED, reason="scheduled for later"),
        "email.delivered": Term(EventType.DELIVERED),
        "email.delivery_delayed": Term(EventType.DEFERRED),
        "email.bounced": Term(EventType.BOUNCED),
        "email.complained": Term(EventType.COMPLAINED),
        "email.opened": Term(EventType.OPENED),
        "email.clicked": Term(EventType.CLICKED),
        "email.failed": Term(EventType.FAILED),
        "email.suppressed": Term(EventType.DROPPED),
        "email.received": Term(
            EventType.UNKNOWN, reason="an inbound e-mail, not a send", recipient=False
        ),
        "suppression.added": Term(
            EventType.UNKNOWN, reason="Resend added the address to its suppression list"
        ),
        "suppression.removed": Term(
            EventType.UNKNOWN, reason="Resend removed the address from its suppression list"
        ),
        **{
            f"{kind}.{change}": Term(
                EventType.UNKNOWN, reason=f"a Resend {kind} was {change}", recipient=False
            )
            for kind in ("contact", "domain")
            for change in ("created", "updated", "deleted")
        },
        **{
            name: Term(EventType.UNKNOWN, reason="a Resend Inbox event", recipient=False)
            for name in (
                "inbox.created",
                "inbox.updated",
                "inbox.deleted",
                "inbox.thread.created",
                "inbox.thread.folder.updated",
                "inbox.thread.assigned",
                "inbox.thread.unassigned",
                "inbox.thread.labels.updated",
                "inbox.email.received",
                "inbox.email.sent",
                "inbox.draft.created",
                "inbox.draft.updated",
                "inbox.draft.sent",
                "inbox.draft.deleted",
            )
        },
    }
)
"""Every event type Resend documents and what it becomes; any other type is ``unknown`` (for
each recipient in ``data.to`` when it is an ``email.*`` type). ``suppression.*`` events name the
address in ``data.email`` and are kept for it."""

BOUNCE_KINDS: Final[Mapping[str, BounceKind]] = MappingProxyType(
    {
        "Permanent": BounceKind.HARD,
        "Transient": BounceKind.SOFT,
        "Undetermined": BounceKind.UNDETERMINED,
    }
)
"""``data.bounce.type``: Resend's three bounce types."""

SUBTYPE_KINDS: Final[Mapping[str, BounceKind]] = MappingProxyType(
    {
        "ContentRejected": BounceKind.BLOCK,
        "AttachmentRejected": BounceKind.BLOCK,
    }
)
"""``data.bounce.subType`` values that overrule the type: the message was refused for what it
contains, and the address is fine. (Resend's other subtypes: General, NoEmail, Suppressed and
OnAccountSuppressionList under Permanent; General, MailboxFull and MessageTooLarge under
Transient: the type decides those.)"""

_EVENTS: Final = lookup(EVENTS)
_BOUNCE_KINDS: Final = dict(BOUNCE_KINDS)
_SUBTYPE_KINDS: Final = dict(SUBTYPE_KINDS)
_STATUS: Final = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_BOUNCED: Final = EventType.BOUNCED
_CLICKED: Final = EventType.CLICKED
_UNKNOWN: Final = EventType.UNKNOWN


def bounce_kind(bounce_type: object, subtype: object, status: str | None) -> BounceKind:
    """A bounce's kind: the subtype when it names a content refusal, else the type; an address
    error (a 5.1.x status) is hard whatever the type says."""
    if type(subtype) is str and subtype in _SUBTYPE_KINDS:
        return _SUBTYPE_KINDS[subtype]
    if status is not None and status.startswith("5.1."):
        return BounceKind.HARD
    if type(bounce_type) is str:
        return _BOUNCE_KINDS.get(bounce_type, BounceKind.UNDETERMINED)
    return BounceKind.UNDETERMINED


def _time(value: object) -> datetime | None:
    if type(value) is not str:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    zone = moment.tzinfo
    if zone is UTC:
        return moment
    return moment.astimezone(UTC) if zone is not None else moment.replace(tzinfo=UTC)


def _tags(raw: object) -> tuple[str | None, list[str], dict[str, str]]:
    """``(tracking id, tags, metadata)`` from ``data.tags``: an object of name -> value, or the
    ``[{"name", "value"}]`` list a send takes."""
    if type(raw) is list:
        raw = {
            t.get("name"): t.get("value")
            for t in raw
            if type(t) is dict and type(t.get("name")) is str
        }
    if type(raw) is not dict or not raw:
        return None, [], {}
    tracking_id: str | None = None
    labels: list[str] = []
    metadata: dict[str, str] = {}
    for name, value in raw.items():
        if type(value) is not str:
            value = "" if value is None else str(value)
        if name == TRACKING_KEY:
            tracking_id = value or None
        elif name == CATEGORY_TAG:
            labels.insert(0, value)
        elif name.startswith(TAG_PREFIX):
            labels.append(name[len(TAG_PREFIX) :])
        else:
            metadata[name] = value
    return tracking_id, labels, metadata


def _recipients(data: dict[str, Any]) -> list[str]:
    to = data.get("to")
    if type(to) is str:
        return [to] if to else []
    if type(to) is list:
        return [r for r in to if type(r) is str and r]
    return []


def _text(value: object) -> str | None:
    return value if type(value) is str and value else None


def map_event(item: dict[str, Any], body: bytes | str) -> list[EmailEvent]:
    """One Resend event as canonical events (pure, never raises)."""
    name = item.get("type")
    if type(name) is not str or not name:
        return [_malformed(item, body, "the Resend event has no 'type'")]
    data = item.get("data")
    if type(data) is not dict:
        return [_malformed(item, body, "the Resend event has no 'data' object", name)]
    term = _EVENTS.get(name, UNMAPPED)
    timestamp = _time(item.get("created_at")) or _time(data.get("created_at"))
    if timestamp is None:
        return [_malformed(item, body, "the Resend event has no valid 'created_at'", name)]
    if not term.recipient:
        return [_unmapped(item, body, name, term.reason or _NO_RECIPIENT, "", timestamp)]
    if name.startswith("suppression."):
        address = _text(data.get("email")) or ""
        origin = _text(data.get("origin"))
        why = f"{term.reason} ({origin})" if origin else term.reason or ""
        return [_unmapped(item, body, name, why, address, timestamp)]
    recipients = _recipients(data)
    if term is UNMAPPED:
        why = f"Resend event {name!r} is not mapped"
        if not name.startswith("email.") or not recipients:
            return [_unmapped(item, body, name, why, "", timestamp)]
        return [_unmapped(item, body, name, why, r, timestamp) for r in recipients]
    if not recipients:
        return [_malformed(item, body, "the Resend event names no recipient ('data.to')", name)]
    event_type = term.type
    reason: str | None = term.reason
    bounce: BounceKind | None = term.bounce
    status: str | None = None
    url: str | None = None
    user_agent: str | None = None
    if event_type is _BOUNCED:
        details = data.get("bounce")
        details = details if type(details) is dict else {}
        reason = _text(details.get("message"))
        found = _STATUS.search(reason) if reason else None
        status = found.group(1) if found else None
        bounce = bounce_kind(details.get("type"), details.get("subType"), status)
        if reason is None:
            reason = f"{details.get('type') or 'Undetermined'} bounce"
    elif event_type is _CLICKED:
        click = data.get("click")
        if type(click) is dict:
            url = _text(click.get("link"))
            user_agent = _text(click.get("userAgent"))
    elif name == "email.failed":
        failed = data.get("failed")
        reason = _text(failed.get("reason")) if type(failed) is dict else None
    elif name == "email.suppressed":
        suppressed = data.get("suppressed")
        if type(suppressed) is dict:
            reason = _text(suppressed.get("message")) or _text(suppressed.get("type"))
    message_id = _text(data.get("email_id"))
    tracking_id, tags, metadata = _tags(data.get("tags"))
    stamp = item.get("created_at")
    key = f"resend\x1f{name}\x1f{stamp}\x1f{message_id}\x1f{url or ''}\x1f" if message_id else None
    events = []
    for recipient in recipients:
        events.append(
            make_event(
                PROVIDER,
                event_type,  # type
                name,  # provider_event
                recipient,
                event_key(key + recipient)
                if key is not None
                else event_digest(PROVIDER, name, body, recipient),  # event_id
                timestamp,
                message_id,
                tracking_id,
                reason,
                bounce,
                status,  # smtp_status
                None,  # attempt
                url,
                user_agent,
                None,  # machine
                tags,
                metadata,
                item,  # raw
            )
        )
    return events


def _unmapped(
    item: dict[str, Any],
    body: bytes | str,
    name: str,
    reason: str,
    recipient: str,
    timestamp: datetime,
) -> EmailEvent:
    return unknown_event(
        PROVIDER,
        item,
        reason,
        provider_event=name,
        recipient=recipient,
        timestamp=timestamp,
        digest_source=body,
    )


def _malformed(item: dict[str, Any], body: bytes | str, why: str, name: str = "") -> EmailEvent:
    return unknown_event(
        PROVIDER, item, why, provider_event=name, timestamp=_EPOCH, digest_source=body
    )


def parse_events(body: bytes | str) -> list[EmailEvent]:
    """A Resend webhook body as canonical events. Raises ``PayloadError`` only when the body is
    not a JSON object."""
    item = read_json(body, provider=PROVIDER)
    if type(item) is not dict:
        raise PayloadError(
            "a Resend webhook body is one JSON object",
            provider=PROVIDER,
            detail=type(item).__name__,
        )
    return map_event(item, body)
