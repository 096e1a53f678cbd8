"""SendGrid's event vocabulary, and how each Event Webhook item becomes a canonical event.

A body is a JSON array of events. Each known event name maps through :data:`EVENTS`; an event
this version does not know, or an item that cannot be mapped, becomes ``unknown`` with a reason
and its raw item, never an exception. Only a body that is not a JSON array raises
``PayloadError``. Custom args come back as top-level keys beside SendGrid's own, so every key
SendGrid itself sets (:data:`SENDGRID_KEYS`) is kept out of ``metadata``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final

from unimailtrack.adapters._vocabulary import (
    UNMAPPED,
    Term,
    Vocabulary,
    lookup,
    read_json,
    vocabulary,
)
from unimailtrack.adapters.base import event_digest, unknown_event
from unimailtrack.errors import PayloadError
from unimailtrack.model import TRACKING_KEY, BounceKind, EmailEvent, EventType, make_event

__all__ = [
    "BOUNCE_KINDS",
    "CLASSIFIED_KINDS",
    "EVENTS",
    "EVENT_TYPES",
    "SENDGRID_KEYS",
    "parse_events",
]

PROVIDER: Final = "sendgrid"

EVENTS: Final[Vocabulary] = vocabulary(
    {
        "processed": Term(EventType.PROCESSED),
        "deferred": Term(EventType.DEFERRED),
        "delivered": Term(EventType.DELIVERED),
        "bounce": Term(EventType.BOUNCED),
        "dropped": Term(EventType.DROPPED),
        "spamreport": Term(EventType.COMPLAINED),
        "unsubscribe": Term(EventType.UNSUBSCRIBED),
        "group_unsubscribe": Term(EventType.UNSUBSCRIBED),
        "group_resubscribe": Term(EventType.RESUBSCRIBED),
        "open": Term(EventType.OPENED),
        "click": Term(EventType.CLICKED),
        "account_status_change": Term(
            EventType.UNKNOWN, reason="the SendGrid account status changed"
        ),
    }
)
"""SendGrid's event names and what each becomes; any other name becomes ``unknown``. A
``bounce`` is refined by its ``type`` (:data:`BOUNCE_KINDS`), its ``bounce_classification``
(:data:`CLASSIFIED_KINDS`) and its status; an ``open`` by ``sg_machine_open``."""

EVENT_TYPES: Final[Mapping[str, EventType]] = MappingProxyType(
    {name: term.type for name, term in EVENTS.items() if term.type is not EventType.UNKNOWN}
)
"""The event type of each name :data:`EVENTS` maps to a known type (derived from it)."""

BOUNCE_KINDS: Final[Mapping[str, BounceKind]] = MappingProxyType(
    {"bounce": BounceKind.HARD, "blocked": BounceKind.BLOCK}
)
"""A ``bounce`` event's ``type``: ``bounce`` is the address, ``blocked`` is the sender's
reputation or the receiver's policy (never a reason to suppress the address)."""

CLASSIFIED_KINDS: Final[Mapping[str, BounceKind]] = MappingProxyType(
    {
        "Reputation": BounceKind.BLOCK,
        "Content": BounceKind.BLOCK,
        "Frequency or Volume Too High": BounceKind.BLOCK,
        "Technical": BounceKind.UNDETERMINED,
    }
)
"""``bounce_classification`` values that overrule ``type=bounce``: SendGrid reports a refusal
for the sender's reputation, the content or the sending rate as a bounce, yet the address is
fine, and a technical failure of the receiving server says nothing about the address either.
"Invalid Address", "Mailbox Unavailable" and "Unclassified" leave ``type`` to decide."""

SENDGRID_KEYS: Final = frozenset(
    {
        # every event
        "email",
        "timestamp",
        "event",
        "smtp-id",
        "sg_event_id",
        "sg_message_id",
        "category",
        "unique_args",
        "asm_group_id",
        "sg_user_id",
        # delivery
        "reason",
        "response",
        "status",
        "attempt",
        "type",
        "bounce_classification",
        "ip",
        "tls",
        "cert_err",
        "pool",
        "send_at",
        # engagement
        "useragent",
        "url",
        "url_offset",
        "sg_machine_open",
        "sg_content_type",
        "post_type",
        # templates and Marketing Campaigns
        "sg_template_id",
        "sg_template_name",
        "template_id",
        "template_name",
        "template_version_id",
        "template_hash",
        "marketing_campaign_id",
        "marketing_campaign_name",
        "marketing_campaign_version",
        "marketing_campaign_split_id",
        "singlesend_id",
        "singlesend_name",
        "mc_stats",
        "mc_auto_id",
        "mc_auto_name",
        "mc_auto_step_id",
        "phase_id",
        "variation",
        "ab_variation",
        "ab_phase_id",
        "newsletter",
        "nlvx_campaign_id",
        "nlvx_campaign_split_id",
        "nlvx_user_id",
    }
)
"""Keys SendGrid itself sets on events. Custom args arrive beside them as top-level keys, so
these never reach ``EmailEvent.metadata``, and a send whose metadata uses one is refused (it
would overwrite SendGrid's own field in every event)."""

NOT_METADATA: Final = SENDGRID_KEYS | {TRACKING_KEY}
"""Top-level keys of an event that are not custom args: SendGrid's own and the tracking id."""

# Plain dicts for the parser: a mappingproxy's get() costs three times a dict's.
_EVENTS: Final = lookup(EVENTS)
_BOUNCE_KINDS: Final = dict(BOUNCE_KINDS)
_CLASSIFIED_KINDS: Final = dict(CLASSIFIED_KINDS)
_UNKNOWN: Final = EventType.UNKNOWN
_BOUNCED: Final = EventType.BOUNCED
_OPENED: Final = EventType.OPENED

_GROUP_EVENTS: Final = frozenset({"group_unsubscribe", "group_resubscribe"})


def _text(value: Any) -> str | None:
    if type(value) is str:
        return value or None
    if type(value) is int or type(value) is float:
        return str(value)
    return None


def _metadata_value(value: Any) -> str:
    return value if type(value) is str else json.dumps(value, ensure_ascii=False)


def _whole_number(value: Any) -> int | None:
    if type(value) is int:
        return value
    if type(value) is str and value.isascii() and value.isdigit():
        return int(value)
    return None


def _flag(value: Any) -> bool | None:
    if type(value) is bool:
        return value
    if value in ("true", "false", 1, 0, "1", "0"):
        return value in ("true", 1, "1")
    return None


def _tags(value: Any) -> list[str]:
    """Tags from a ``category`` that is not a list: one string, or nothing."""
    return [value] if type(value) is str else []


def _bounce_kind(item: dict[str, Any]) -> BounceKind:
    """``type`` decides, refined by what says the address is not at fault: a classification
    (reputation, content, rate, technical) or an RFC 3463 status of a full mailbox (x.2.2) or
    a transient class (4.x.x), which make a bounce soft."""
    value = item.get("type")
    kind = _BOUNCE_KINDS.get(value) if type(value) is str else None
    if kind is not BounceKind.HARD:
        return kind or BounceKind.UNDETERMINED
    classification = item.get("bounce_classification")
    if type(classification) is str and classification in _CLASSIFIED_KINDS:
        return _CLASSIFIED_KINDS[classification]
    status = item.get("status")
    if type(status) is str and (status.startswith("4.") or status[1:] == ".2.2"):
        return BounceKind.SOFT
    return kind


def _canonical(item: Any) -> str:
    return json.dumps(item, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _timestamp(value: Any) -> datetime | None:
    if type(value) is bool:
        return None
    try:
        return datetime.fromtimestamp(value if type(value) is int else float(value), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _reason(name: str, term: Term, recipient: str, item: dict[str, Any]) -> str | None:
    """The reason of an event that is unknown, names no recipient, or concerns a group."""
    if term.type is _UNKNOWN:
        return term.reason or f"SendGrid event {name!r} is not mapped"
    if not recipient:
        return "the SendGrid event names no recipient ('email')"
    group = _text(item.get("asm_group_id"))
    return f"unsubscribe group {group}" if group else None


def _malformed(item: Any, why: str) -> EmailEvent:
    name = item.get("event") if type(item) is dict else None
    email = item.get("email") if type(item) is dict else None
    return unknown_event(
        PROVIDER,
        item,
        why,
        provider_event=name if type(name) is str else "",
        recipient=email if type(email) is str else "",
        digest_source=_canonical(item),
    )


def map_event(item: Any, times: dict[int, datetime]) -> EmailEvent:
    """One batch item as a canonical event; an item that cannot be mapped becomes ``unknown``
    with the reason why (pure, never raises). ``times`` holds the unix seconds of the batch
    already converted: its events share a few seconds between them."""
    if type(item) is not dict:
        return _malformed(item, "the batch item is not a JSON object")
    name = item.get("event")
    stamp = item.get("timestamp")
    timestamp = times.get(stamp) if type(stamp) is int else None
    if timestamp is None:
        timestamp = _timestamp(stamp)
        if timestamp is None:
            return _malformed(item, "the SendGrid event has no valid unix 'timestamp'")
        if type(stamp) is int:
            times[stamp] = timestamp
    if type(name) is not str:
        return _malformed(item, "the SendGrid event has no 'event' name")
    email = item.get("email")
    recipient = email if type(email) is str else ""
    term = _EVENTS.get(name, UNMAPPED)
    event_type = term.type
    if event_type is _UNKNOWN or not recipient or name in _GROUP_EVENTS:
        reason = _reason(name, term, recipient, item)
        if not recipient:
            event_type = _UNKNOWN
    else:
        reason = item.get("reason") or item.get("response")
        if reason is not None and type(reason) is not str:
            reason = _text(reason)
    event_id = item.get("sg_event_id")
    if type(event_id) is not str or not event_id:
        event_id = event_digest(PROVIDER, _canonical(item), recipient)
    message_id = item.get("sg_message_id") or None
    tracking_id = item.get(TRACKING_KEY) or None
    status = item.get("status")
    attempt = item.get("attempt")
    url = item.get("url")
    user_agent = item.get("useragent")
    category = item.get("category")
    return make_event(
        PROVIDER,
        event_type,  # type
        name,  # provider_event
        recipient,
        event_id,
        timestamp,
        message_id if message_id is None or type(message_id) is str else None,
        tracking_id if tracking_id is None or type(tracking_id) is str else None,
        reason,
        _bounce_kind(item) if event_type is _BOUNCED else None,  # bounce
        status if status is None or type(status) is str else _text(status),  # smtp_status
        attempt if attempt is None or type(attempt) is int else _whole_number(attempt),
        url if url is None or type(url) is str else _text(url),
        user_agent if user_agent is None or type(user_agent) is str else _text(user_agent),
        _flag(item.get("sg_machine_open")) if event_type is _OPENED else None,  # machine
        [c if type(c) is str else _metadata_value(c) for c in category]  # tags
        if type(category) is list
        else _tags(category),
        {  # metadata
            k: v if type(v) is str else _metadata_value(v)
            for k, v in item.items()
            if k not in NOT_METADATA
        },
        item,  # raw
    )


def parse_events(
    body: bytes | str, *, loads: Callable[[bytes | str], Any] | None = None
) -> list[EmailEvent]:
    """A SendGrid Event Webhook body as canonical events, in body order.

    Raises ``PayloadError`` only when the body is not a JSON array. ``loads`` decodes the body:
    orjson's when ``unimailtrack[fast]`` is installed, else the standard library's.
    """
    items = read_json(body, provider=PROVIDER, decode=loads)
    if type(items) is not list:
        raise PayloadError(
            "a SendGrid webhook body must be a JSON array of events",
            provider=PROVIDER,
            detail=type(items).__name__,
        )
    times: dict[int, datetime] = {}
    return [map_event(item, times) for item in items]
