"""SES's event vocabulary, and how each SES event becomes canonical events.

SES publishes events to an SNS topic (through a configuration set's event destination, or the
older per-identity notifications), and SNS posts them to the webhook. :func:`parse_body` unwraps
the SNS envelope (or takes a raw delivery as it is) and maps the SES event onto one event per
recipient it concerns. Every SES event type is in :data:`EVENTS`; a type this version does not
know is kept as ``unknown`` for each recipient in ``mail.destination``, with the message id and
tracking id of its mail, so that it reaches each message's timeline.

A bounce's kind follows its ``bounceType``, refined by the subtype and the RFC 3463 status
(:func:`bounce_kind`): an address error (5.1.x) is hard whatever SES labelled it, a
``Transient`` bounce included.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from hashlib import blake2b
from typing import Any, Final

from unimailtrack.adapters._vocabulary import Term, Vocabulary, lookup, read_json, vocabulary
from unimailtrack.adapters.base import event_digest, unknown_event
from unimailtrack.adapters.ses import signing as sns
from unimailtrack.adapters.ses.send import CATEGORY_TAG, TAG_PREFIX
from unimailtrack.errors import PayloadError
from unimailtrack.model import TRACKING_KEY, BounceKind, EmailEvent, EventType, make_event

__all__ = [
    "EVENTS",
    "bounce_kind",
    "parse_body",
    "preference_change",
    "ses_events",
]

PROVIDER: Final = "ses"

EVENTS: Final[Vocabulary] = vocabulary(
    {
        "Send": Term(EventType.ACCEPTED),
        "Delivery": Term(EventType.DELIVERED),
        "Bounce": Term(EventType.BOUNCED),
        "Complaint": Term(EventType.COMPLAINED),
        "Reject": Term(EventType.REJECTED),
        "Rendering Failure": Term(EventType.FAILED),
        "DeliveryDelay": Term(EventType.DEFERRED),
        "Open": Term(EventType.OPENED),
        "Click": Term(EventType.CLICKED),
        "Subscription": Term(EventType.UNSUBSCRIBED),
    }
)
"""SES event types (event publishing's ``eventType`` and the legacy ``notificationType`` share
the names) and what each becomes. A ``Bounce`` is refined by its type, subtype and status (a
``Suppressed`` or ``OnAccountSuppressionList`` subtype is ``dropped``); a ``Complaint`` on the
account's list is ``dropped`` and a ``not-spam`` report ``unknown``; a ``Subscription`` is
``unsubscribed`` or ``resubscribed`` by how the preferences changed. Any other type is
``unknown``, once for each recipient in ``mail.destination``."""

_SNS_VALIDATION_MESSAGE: Final = "Successfully validated SNS topic for Amazon SES event publishing."
_CONTROL_NOTIFICATIONS: Final = frozenset({"AmazonSnsSubscriptionSucceeded"})
_SNS_CONTROL_TYPES: Final = frozenset({sns.SUBSCRIPTION_CONFIRMATION, sns.UNSUBSCRIBE_CONFIRMATION})
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def _bounded(text: str | bytes, what: str) -> str | bytes:
    """``text`` when it nests no deeper than an SES event can (checked before decoding: what is
    kept of an event must stay storable and readable); else ``PayloadError``."""
    if not sns.nesting_ok(text):
        raise PayloadError(
            f"{what} nests deeper than {sns.MAX_DEPTH} levels, or holds more arrays, objects "
            "or strings than any SES event",
            provider=PROVIDER,
        )
    return text


def parse_body(body: bytes, headers: Mapping[str, str] | None = None) -> list[EmailEvent]:
    """Unwrap an SNS envelope (or take a raw delivery as it is) and map the SES event.

    Event ids are seeded with a digest of the SES event's own text (the signed ``Message``, or
    the body of a raw delivery, which is that same text): a retried delivery yields the same
    ids, and so does the same event under another SNS ``MessageId``, which is not what the
    event is."""
    # Both decoders stop a body nested too deep for them (a PayloadError); an envelope's values
    # are strings, and what is kept of a message, the SES event, is bounded before decoding.
    document = read_json(body, provider=PROVIDER, what="webhook body")
    if not isinstance(document, dict):
        raise PayloadError("the body is not an SNS message object", provider=PROVIDER)
    kind = document.get("Type")
    if kind == sns.NOTIFICATION:
        message = document.get("Message")
        if not isinstance(message, str):
            raise PayloadError("the SNS notification has no Message", provider=PROVIDER)
        if message == _SNS_VALIDATION_MESSAGE:
            return []
        event = read_json(
            _bounded(message, "the SNS Message"), provider=PROVIDER, what="SNS Message"
        )
        seed = event_digest(message)
        published = document.get("Timestamp")
    elif isinstance(kind, str) and kind in _SNS_CONTROL_TYPES:
        return []
    elif kind is None and sns.looks_like_raw_delivery(document, {}):
        _bounded(body, "the body")  # the body is the event
        event = document
        seed = event_digest(body)
        published = None
    else:
        raise PayloadError(f"not an SNS message (Type={kind!r})", provider=PROVIDER)
    if not isinstance(event, dict):
        raise PayloadError("the SES event is not an object", provider=PROVIDER)
    return ses_events(event, seed, published)


def _timestamp(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


@dataclass(slots=True)
class _Source:
    """What every event from one SES notification shares (not frozen: built once per
    notification on the hot path, and a frozen init costs more than the rest of it)."""

    name: str
    seed: str
    message_id: str
    tracking_id: str | None
    tags: list[str]
    metadata: dict[str, str]
    sent: datetime
    raw: dict[str, Any]

    def event(
        self,
        recipient: str,
        kind: EventType,
        timestamp: datetime | None,
        *,
        reason: str | None = None,
        bounce: BounceKind | None = None,
        smtp_status: str | None = None,
        url: str | None = None,
        user_agent: str | None = None,
    ) -> EmailEvent:
        if not isinstance(recipient, str):
            raise TypeError(f"recipient {recipient!r} is not an address")
        return make_event(
            PROVIDER,
            kind,
            self.name,
            recipient,
            _event_id(self.seed, recipient, self.name),
            timestamp or self.sent,
            self.message_id,
            self.tracking_id,
            reason,
            bounce,
            smtp_status,
            None,
            url,
            user_agent,
            None,
            self.tags,
            self.metadata,
            self.raw,
        )

    def everyone(
        self, kind: EventType, timestamp: datetime | None, **fields: Any
    ) -> list[EmailEvent]:
        """One event per destination of the mail (for events SES reports about the message
        as a whole: send, reject, open, click, rendering failure, subscription)."""
        destination = self.raw["mail"].get("destination")
        if not isinstance(destination, list):
            raise TypeError("mail.destination is not a list")
        return [self.event(r, kind, timestamp, **fields) for r in destination]


def _event_id(seed: str, recipient: str, name: str) -> str:
    """The id of one recipient's event from one SES event: a digest of the event's seed (a
    digest of its text), the recipient and the SES event type, so a retried delivery yields the
    same ids. (One hash over NUL-joined parts: the seed is hexadecimal and the event type is
    the same for every recipient, so no two recipients' parts join alike; half the cost of the
    general ``event_digest`` on a path that runs for every recipient of every notification.)"""
    data = f"{seed}\0{recipient}\0{name}".encode("utf-8", "surrogatepass")
    return blake2b(data, digest_size=16).hexdigest()


def _read_tags(tags: object) -> tuple[str | None, list[str], dict[str, str]]:
    """``(tracking_id, tags, metadata)`` from an SES event's ``mail.tags`` (each value a list
    of strings); SES's own ``ses:*`` tags are left out."""
    tracking_id: str | None = None
    labels: list[str] = []
    metadata: dict[str, str] = {}
    if not isinstance(tags, dict):
        return tracking_id, labels, metadata
    for name, values in tags.items():
        if name.startswith("ses:"):
            continue
        value = values[0] if isinstance(values, list) and values else ""
        if not isinstance(value, str):
            continue
        if name == TRACKING_KEY:
            tracking_id = value or None
        elif name == CATEGORY_TAG:
            labels.insert(0, value)
        elif name.startswith(TAG_PREFIX):
            labels.append(name[len(TAG_PREFIX) :])
        else:
            metadata[name] = value
    return tracking_id, labels, metadata


def ses_events(event: dict[str, Any], seed: str, published: object = None) -> list[EmailEvent]:
    """Map one SES event (event publishing's ``eventType`` or a legacy ``notificationType``)
    onto canonical events, one per recipient it concerns. ``seed`` seeds the event ids (the
    parser gives a digest of the event's text); ``published`` (the SNS ``Timestamp``) dates an
    event whose mail carries no time."""
    name = str(event.get("eventType") or event.get("notificationType") or "")
    if name in _CONTROL_NOTIFICATIONS:
        return []
    mail = event.get("mail")
    message_id = mail.get("messageId") if isinstance(mail, dict) else None
    if not isinstance(mail, dict) or not isinstance(message_id, str) or not message_id:
        raise PayloadError("the SES event has no mail.messageId", provider=PROVIDER)
    tracking_id, tags, metadata = _read_tags(mail.get("tags"))
    source = _Source(
        name=name,
        seed=seed,
        message_id=message_id,
        tracking_id=tracking_id,
        tags=tags,
        metadata=metadata,
        sent=_timestamp(mail.get("timestamp")) or _timestamp(published) or _EPOCH,
        raw=event,
    )
    mapper = _MAPPERS.get(name)
    if mapper is None:
        if not name:
            return [_unknown(source, "no eventType")]
        return _unmapped(source, f"SES event type {name!r} is not mapped")
    try:
        return mapper(event, source, _EVENTS[name])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return [_unknown(source, f"the {name} event could not be read: {exc!r}")]


def _unknown(source: _Source, reason: str) -> EmailEvent:
    return unknown_event(
        PROVIDER,
        source.raw,
        reason,
        provider_event=source.name,
        timestamp=source.sent,
        digest_source=f"{source.seed}\n{source.name}",
    )


def _unmapped(source: _Source, reason: str) -> list[EmailEvent]:
    """An event type this version does not know: ``unknown`` for each recipient in
    ``mail.destination``, carrying its mail's ids (one ``unknown`` with no recipient when the
    mail names none)."""
    destination = source.raw["mail"].get("destination")
    recipients = (
        [r for r in destination if isinstance(r, str) and r]
        if isinstance(destination, list)
        else []
    )
    if not recipients:
        return [_unknown(source, reason)]
    return [source.event(r, _UNKNOWN, source.sent, reason=reason) for r in recipients]


# RFC 3463 enhanced status codes, as SES reports them or as they appear in the diagnostic text.
_STATUS = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")
_DIAGNOSTIC_TYPE = re.compile(r"^\s*[A-Za-z][A-Za-z0-9-]*;\s*")

_BOUNCE_KINDS: Final[Mapping[str, BounceKind]] = {
    "Permanent": BounceKind.HARD,
    "Transient": BounceKind.SOFT,
    "Undetermined": BounceKind.UNDETERMINED,
}
_BLOCK_SUBTYPES: Final = frozenset({"ContentRejected", "AttachmentRejected"})
_DROPPED_SUBTYPES: Final[Mapping[str, BounceKind | None]] = {
    # SES's global list holds addresses with a recent history of hard bounces; the
    # account-level list may hold an address for a bounce or a complaint.
    "Suppressed": BounceKind.HARD,
    "OnAccountSuppressionList": None,
}
_DELAY_KINDS: Final[Mapping[str, BounceKind | None]] = {
    "MailboxFull": BounceKind.SOFT,
    "General": BounceKind.SOFT,
    "RecipientServerError": BounceKind.SOFT,
    "TransientCommunicationFailure": BounceKind.SOFT,
    "SpamDetected": BounceKind.BLOCK,
    "IPFailure": BounceKind.BLOCK,
    "Undetermined": BounceKind.UNDETERMINED,
    # InternalFailure, SendingDeferral, BYOIPHostNameLookupUnavailable: SES's side, no kind.
}


def _status_of(status: object, diagnostic: str | None) -> str | None:
    if isinstance(status, str) and _STATUS.fullmatch(status.strip()):
        return status.strip()
    found = _STATUS.search(diagnostic) if diagnostic else None
    return found.group(1) if found else None


def bounce_kind(bounce_type: str, subtype: str, status: str | None) -> BounceKind:
    """The canonical kind of an SES bounce: its ``bounceType``, refined by the subtype and the
    RFC 3463 status. An address error (5.1.x) is hard whatever SES labelled it; a full mailbox
    (x.2.2) is soft; a content or policy rejection (x.7.x on a bounce SES did not call
    permanent) is a block."""
    kind = _BOUNCE_KINDS.get(bounce_type, BounceKind.UNDETERMINED)
    if subtype in _BLOCK_SUBTYPES:
        return BounceKind.BLOCK
    if status is None:
        return kind
    if status.startswith("5.1."):
        return BounceKind.HARD
    if status[1:].startswith(".2.2"):
        return BounceKind.SOFT
    if status[1:].startswith(".7.") and kind is not BounceKind.HARD:
        return BounceKind.BLOCK
    return kind


def _diagnostic(text: object) -> str | None:
    """A DSN ``Diagnostic-Code`` without its type prefix (``smtp; 550 ...`` -> ``550 ...``)."""
    return _DIAGNOSTIC_TYPE.sub("", text, count=1) if isinstance(text, str) and text else None


def _bounce(event: dict[str, Any], source: _Source, term: Term) -> list[EmailEvent]:
    bounce = event["bounce"]
    bounce_type = str(bounce.get("bounceType") or "Undetermined")
    subtype = str(bounce.get("bounceSubType") or "")
    when = _timestamp(bounce.get("timestamp"))
    dropped = subtype in _DROPPED_SUBTYPES
    events = []
    for item in bounce["bouncedRecipients"]:
        diagnostic = _diagnostic(item.get("diagnosticCode"))
        status = _status_of(item.get("status"), diagnostic)
        reason = diagnostic or f"{bounce_type} bounce ({subtype or 'no subtype'})"
        if dropped:
            kind, bounce_as = EventType.DROPPED, _DROPPED_SUBTYPES[subtype]
        else:
            kind, bounce_as = term.type, bounce_kind(bounce_type, subtype, status)
        events.append(
            source.event(
                item["emailAddress"],
                kind,
                when,
                reason=reason,
                bounce=bounce_as,
                smtp_status=status,
            )
        )
    return events


def _complaint(event: dict[str, Any], source: _Source, term: Term) -> list[EmailEvent]:
    complaint = event["complaint"]
    feedback = complaint.get("complaintFeedbackType")
    when = _timestamp(complaint.get("timestamp"))
    if complaint.get("complaintSubType") == "OnAccountSuppressionList":
        # SES accepted the message but did not send it: the address is on the account's list.
        kind, reason = EventType.DROPPED, "on the account-level suppression list"
    elif feedback == "not-spam":
        # A feedback report that withdraws a spam verdict is not a complaint.
        return [_unknown(source, "a not-spam feedback report")]
    else:
        kind, reason = term.type, feedback or "complaint"
    user_agent = complaint.get("userAgent")
    return [
        source.event(item["emailAddress"], kind, when, reason=reason, user_agent=user_agent)
        for item in complaint["complainedRecipients"]
    ]


def _delivery(event: dict[str, Any], source: _Source, term: Term) -> list[EmailEvent]:
    delivery = event["delivery"]
    response = delivery.get("smtpResponse")
    status = _status_of(None, response if isinstance(response, str) else None)
    when = _timestamp(delivery.get("timestamp"))
    return [
        source.event(r, term.type, when, reason=response, smtp_status=status)
        for r in delivery["recipients"]
    ]


def _delay(event: dict[str, Any], source: _Source, term: Term) -> list[EmailEvent]:
    delay = event["deliveryDelay"]
    delay_type = str(delay.get("delayType") or "Undetermined")
    reporter = delay.get("reportingMTA")
    when = _timestamp(delay.get("timestamp"))
    events = []
    for item in delay["delayedRecipients"]:
        diagnostic = _diagnostic(item.get("diagnosticCode"))
        reason = f"{delay_type}: {diagnostic}" if diagnostic else delay_type
        if reporter:
            reason += f" (reported by {reporter})"
        events.append(
            source.event(
                item["emailAddress"],
                term.type,
                when,
                reason=reason,
                bounce=_DELAY_KINDS.get(delay_type),
                smtp_status=_status_of(item.get("status"), diagnostic),
            )
        )
    return events


def _send(event: dict[str, Any], source: _Source, term: Term) -> list[EmailEvent]:
    return source.everyone(term.type, source.sent)


def _reject(event: dict[str, Any], source: _Source, term: Term) -> list[EmailEvent]:
    reason = (event.get("reject") or {}).get("reason") or "rejected"
    return source.everyone(term.type, source.sent, reason=reason)


def _rendering_failure(event: dict[str, Any], source: _Source, term: Term) -> list[EmailEvent]:
    failure = event.get("failure") or {}
    template = failure.get("templateName")
    message = failure.get("errorMessage") or "rendering failure"
    reason = f"template {template}: {message}" if template else message
    return source.everyone(term.type, source.sent, reason=reason)


def _open(event: dict[str, Any], source: _Source, term: Term) -> list[EmailEvent]:
    opened = event["open"]
    return source.everyone(
        term.type, _timestamp(opened.get("timestamp")), user_agent=opened.get("userAgent")
    )


def _click(event: dict[str, Any], source: _Source, term: Term) -> list[EmailEvent]:
    click = event["click"]
    return source.everyone(
        term.type,
        _timestamp(click.get("timestamp")),
        url=click.get("link"),
        user_agent=click.get("userAgent"),
    )


def _statuses(preferences: Mapping[str, Any]) -> tuple[dict[str, str], str | None]:
    """A contact's explicit status per topic, and the list's default status."""
    explicit = {
        str(t["topicName"]): str(t["subscriptionStatus"])
        for t in preferences.get("topicSubscriptionStatus") or ()
    }
    default = preferences.get("topicDefaultSubscriptionStatus")
    return explicit, str(default) if default is not None else None


def preference_change(
    old: Mapping[str, Any], new: Mapping[str, Any], contact_list: str
) -> tuple[EventType, str] | None:
    """What a change of a contact's topic preferences means: unsubscribed when they left the
    whole list or opted out of a topic, resubscribed when they came back to the list or to a
    topic they had left; None when nothing changed."""
    before, before_default = _statuses(old)
    after, _ = _statuses(new)
    was = {topic: before.get(topic, before_default) for topic in after}
    opted_out = sorted(t for t, s in after.items() if s == "OptOut" and was[t] != "OptOut")
    opted_in = sorted(t for t, s in after.items() if s == "OptIn" and was[t] == "OptOut")
    left_all = bool(new.get("unsubscribeAll")) and not old.get("unsubscribeAll")
    came_back = bool(old.get("unsubscribeAll")) and not new.get("unsubscribeAll")
    if left_all:
        return EventType.UNSUBSCRIBED, f"unsubscribed from every topic of {contact_list}"
    if opted_out:
        return EventType.UNSUBSCRIBED, f"opted out of {', '.join(opted_out)} in {contact_list}"
    if came_back or opted_in:
        topics = f" ({', '.join(opted_in)})" if opted_in else ""
        return EventType.RESUBSCRIBED, f"subscribed again to {contact_list}{topics}"
    return None


def _subscription(event: dict[str, Any], source: _Source, term: Term) -> list[EmailEvent]:
    subscription = event["subscription"]
    change = preference_change(
        subscription.get("oldTopicPreferences") or {},
        subscription.get("newTopicPreferences") or {},
        str(subscription.get("contactList") or "the contact list"),
    )
    if change is None:
        return [_unknown(source, "the subscription preferences did not change")]
    kind, reason = change
    return source.everyone(kind, _timestamp(subscription.get("timestamp")), reason=reason)


_Mapper = Callable[[dict[str, Any], _Source, Term], list[EmailEvent]]

_MAPPERS: Final[dict[str, _Mapper]] = {
    "Send": _send,
    "Delivery": _delivery,
    "Bounce": _bounce,
    "Complaint": _complaint,
    "Reject": _reject,
    "Rendering Failure": _rendering_failure,
    "DeliveryDelay": _delay,
    "Open": _open,
    "Click": _click,
    "Subscription": _subscription,
}
"""How the fields of each type in :data:`EVENTS` are read, starting from its term."""

_EVENTS: Final = lookup(EVENTS)
_UNKNOWN: Final = EventType.UNKNOWN
if _MAPPERS.keys() != _EVENTS.keys():  # pragma: no cover - a table edited without the other
    raise RuntimeError("every SES event type needs a term and a mapper")
