"""Postmark's webhook vocabulary, and how each event becomes a canonical event.

A webhook body is one JSON object whose ``RecordType`` says what happened: ``Delivery``,
``Bounce``, ``SpamComplaint``, ``Open``, ``Click`` or ``SubscriptionChange``. A bounce's ``Type``
says which bounce (:data:`BOUNCE_TYPES`), with ``Details`` (the remote server's words) or else
``Description`` (Postmark's) as the reason. ``Inactive: true`` on a bounce means Postmark
deactivated the address and refuses to send to it until it is reactivated, so such a bounce is
hard unless it was a block. Every event's ``Metadata`` carries the tracking id back.

Only a body that is not a JSON object raises ``PayloadError``; an event that cannot be mapped
becomes ``unknown`` with the reason why.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
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
from unimailtrack.adapters.postmark.send import TAGS_KEY
from unimailtrack.errors import PayloadError
from unimailtrack.model import TRACKING_KEY, BounceKind, EmailEvent, EventType, make_event

__all__ = ["BOUNCE_TYPES", "RECORD_TYPES", "parse_events"]

PROVIDER: Final = "postmark"

RECORD_TYPES: Final[Vocabulary] = vocabulary(
    {
        "Delivery": Term(EventType.DELIVERED),
        "Bounce": Term(EventType.BOUNCED),
        "SpamComplaint": Term(EventType.COMPLAINED),
        "Open": Term(EventType.OPENED),
        "Click": Term(EventType.CLICKED),
        "SubscriptionChange": Term(EventType.UNSUBSCRIBED),
    }
)
"""Postmark's ``RecordType`` values. A ``Bounce`` is refined by :data:`BOUNCE_TYPES`; a
``SubscriptionChange`` with ``SuppressSending: false`` is a resubscription."""

BOUNCE_TYPES: Final[Vocabulary] = vocabulary(
    {
        "HardBounce": Term(EventType.BOUNCED, bounce=BounceKind.HARD),
        "Transient": Term(EventType.DEFERRED, bounce=BounceKind.SOFT),
        "Unsubscribe": Term(EventType.UNSUBSCRIBED, reason="an unsubscribe request"),
        "Subscribe": Term(EventType.RESUBSCRIBED, reason="a subscribe request"),
        "AutoResponder": Term(EventType.DELIVERED, reason="an automatic reply (out of office)"),
        "AddressChange": Term(
            EventType.BOUNCED,
            bounce=BounceKind.UNDETERMINED,
            reason="the recipient asked for an address change",
        ),
        "DnsError": Term(EventType.DEFERRED, bounce=BounceKind.SOFT),
        "SpamNotification": Term(EventType.BOUNCED, bounce=BounceKind.BLOCK),
        "OpenRelayTest": Term(
            EventType.UNKNOWN, reason="an open relay test by the receiving server"
        ),
        "Unknown": Term(EventType.BOUNCED, bounce=BounceKind.UNDETERMINED),
        "SoftBounce": Term(EventType.BOUNCED, bounce=BounceKind.SOFT),
        "VirusNotification": Term(EventType.BOUNCED, bounce=BounceKind.BLOCK),
        "ChallengeVerification": Term(
            EventType.DEFERRED, reason="held until the sender answers a challenge"
        ),
        "BadEmailAddress": Term(EventType.BOUNCED, bounce=BounceKind.HARD),
        "SpamComplaint": Term(EventType.COMPLAINED),
        "ManuallyDeactivated": Term(
            EventType.DROPPED, reason="the address was deactivated by hand in Postmark"
        ),
        "Unconfirmed": Term(EventType.DROPPED, reason="the subscriber has not confirmed"),
        "Blocked": Term(EventType.BOUNCED, bounce=BounceKind.BLOCK),
        "SMTPApiError": Term(EventType.FAILED),
        "InboundError": Term(EventType.UNKNOWN, reason="an inbound message failed"),
        "DMARCPolicy": Term(EventType.BOUNCED, bounce=BounceKind.BLOCK),
        "TemplateRenderingFailed": Term(EventType.FAILED),
    }
)
"""Every bounce ``Type`` Postmark documents and what it becomes. A hard bounce and a bad
address are the address's fault; a spam notification, a virus notification, an ISP block and a
DMARC refusal are the message's or the sender's (``block``: the address is fine); a transient
failure and a DNS error are deferrals Postmark keeps retrying; a soft bounce is final for the
message but says nothing against the address. An automatic reply proves the mail arrived."""

_RECORDS: Final = lookup(RECORD_TYPES)
_BOUNCES: Final = lookup(BOUNCE_TYPES)
_TIMES: Final = ("DeliveredAt", "BouncedAt", "ReceivedAt", "ChangedAt")
_STATUS: Final = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_BOUNCED: Final = EventType.BOUNCED
_OPENED: Final = EventType.OPENED
_CLICKED: Final = EventType.CLICKED
_UNKNOWN: Final = EventType.UNKNOWN


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


def _text(value: object) -> str | None:
    if type(value) is str:
        return value or None
    if type(value) is int or type(value) is float:
        return str(value)
    return None


def _metadata(raw: object) -> tuple[str | None, list[str], dict[str, str]]:
    if type(raw) is not dict or not raw:
        return None, [], {}
    tracking_id: str | None = None
    tags: list[str] = []
    metadata: dict[str, str] = {}
    for key, value in raw.items():
        text = value if type(value) is str else ("" if value is None else str(value))
        if key == TRACKING_KEY:
            tracking_id = text or None
        elif key == TAGS_KEY:
            tags = [t for t in text.split(",") if t]
        else:
            metadata[key] = text
    return tracking_id, tags, metadata


def map_event(item: dict[str, Any], body: bytes | str) -> EmailEvent:
    """One Postmark event as a canonical event (pure, never raises)."""
    record = item.get("RecordType")
    if type(record) is not str or not record:
        return _malformed(item, body, "the Postmark event has no 'RecordType'")
    timestamp = None
    for name in _TIMES:
        stamp = item.get(name)
        if stamp is not None:
            timestamp = _time(stamp)
            break
    if timestamp is None:
        return _malformed(item, body, "the Postmark event has no valid time", record)
    recipient = item.get("Email") or item.get("Recipient")
    recipient = recipient if type(recipient) is str else ""
    term = _RECORDS.get(record, UNMAPPED)
    provider_event = record
    reason: str | None = None
    bounce: BounceKind | None = None
    status: str | None = None
    if record == "Bounce" or record == "SpamComplaint":
        kind = item.get("Type")
        kind = kind if type(kind) is str else ""
        if kind:
            provider_event = f"{record}:{kind}"
        term = _BOUNCES.get(kind, term if record == "SpamComplaint" else UNMAPPED)
        reason = _text(item.get("Details")) or _text(item.get("Description")) or term.reason
        found = _STATUS.search(reason) if reason else None
        status = found.group(1) if found else None
        bounce = term.bounce
        if term.type is _BOUNCED:
            if bounce is None:
                bounce = BounceKind.UNDETERMINED
            address_error = status is not None and status.startswith("5.1.")
            deactivated = item.get("Inactive") is True and bounce is not BounceKind.BLOCK
            if address_error or deactivated:
                bounce = BounceKind.HARD
        if term is UNMAPPED:
            reason = f"Postmark bounce type {kind!r} is not mapped"
    elif record == "SubscriptionChange":
        suppress = item.get("SuppressSending")
        cause = _text(item.get("SuppressionReason"))
        if suppress is False:
            term = Term(EventType.RESUBSCRIBED)
            reason = "sending to the address was resumed"
        else:
            reason = f"sending suppressed: {cause}" if cause else "sending suppressed"
    elif record == "Delivery":
        reason = _text(item.get("Details"))
    elif term is UNMAPPED:
        reason = f"Postmark record type {record!r} is not mapped"
    event_type = term.type
    if not recipient:
        event_type = _UNKNOWN
        reason = "the Postmark event names no recipient"
    url = _text(item.get("OriginalLink")) if event_type is _CLICKED else None
    user_agent = _text(item.get("UserAgent")) if event_type in (_OPENED, _CLICKED) else None
    message_id = _text(item.get("MessageID"))
    tracking_id, tags, metadata = _metadata(item.get("Metadata"))
    tag = item.get("Tag")
    if type(tag) is str and tag and tag not in tags:
        tags.insert(0, tag)
    record_id = item.get("ID")
    if type(record_id) is int or (type(record_id) is str and record_id):
        event_id = event_key(f"postmark\x1f{record}\x1f{record_id}\x1f{recipient}")
    elif message_id:
        event_id = event_key(
            f"postmark\x1f{record}\x1f{message_id}\x1f{stamp}\x1f{url or ''}\x1f{recipient}"
        )
    else:
        event_id = event_digest(PROVIDER, body, recipient)
    return make_event(
        PROVIDER,
        event_type,  # type
        provider_event,
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
        user_agent,
        None,  # machine
        tags,
        metadata,
        item,  # raw
    )


def _malformed(item: dict[str, Any], body: bytes | str, why: str, name: str = "") -> EmailEvent:
    recipient = item.get("Email") or item.get("Recipient")
    return unknown_event(
        PROVIDER,
        item,
        why,
        provider_event=name,
        recipient=recipient if type(recipient) is str else "",
        timestamp=_EPOCH,
        digest_source=body,
    )


def parse_events(body: bytes | str) -> list[EmailEvent]:
    """A Postmark webhook body as canonical events (one). Raises ``PayloadError`` only when the
    body is not a JSON object."""
    item = read_json(body, provider=PROVIDER)
    if type(item) is not dict:
        raise PayloadError(
            "a Postmark webhook body is one JSON object",
            provider=PROVIDER,
            detail=type(item).__name__,
        )
    return [map_event(item, body)]
