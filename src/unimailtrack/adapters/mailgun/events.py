"""Mailgun's event vocabulary, and how each webhook event becomes a canonical event.

Mailgun posts one event per request. A JSON webhook's ``event-data`` maps through
:data:`EVENTS`: a ``failed`` event is refined by its ``severity`` (``temporary``: Mailgun keeps
retrying, a deferral) and, when permanent, its ``reason`` (:data:`PERMANENT_FAILURES`), the
enhanced status deciding a bounce's kind. A legacy (form-encoded) webhook maps through
:data:`LEGACY_EVENTS`, a ``dropped`` one by its reason (:data:`LEGACY_DROP_REASONS`). An event
name this version does not know becomes ``unknown``; a field of the wrong type is a
``PayloadError``, the body being unreadable.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parseaddr
from typing import Any, Final

from unimailtrack.adapters._vocabulary import Term, Vocabulary, lookup, read_json, vocabulary
from unimailtrack.adapters.base import event_digest, unknown_event
from unimailtrack.adapters.mailgun.body import SIGNING_FIELDS, Form
from unimailtrack.adapters.mailgun.send import bare_message_id
from unimailtrack.errors import PayloadError
from unimailtrack.model import TRACKING_KEY, BounceKind, EmailEvent, EventType, make_event

__all__ = [
    "EVENTS",
    "LEGACY_DROP_REASONS",
    "LEGACY_EVENTS",
    "PERMANENT_FAILURES",
    "bounce_kind",
    "enhanced_status",
    "event_from",
    "events_from",
    "legacy_event",
    "machine_flag",
    "smtp_reason",
]

PROVIDER: Final = "mailgun"

EVENTS: Final[Vocabulary] = vocabulary(
    {
        "accepted": Term(EventType.ACCEPTED),
        "delivered": Term(EventType.DELIVERED),
        "failed": Term(EventType.FAILED),
        "rejected": Term(EventType.REJECTED),
        "opened": Term(EventType.OPENED),
        "clicked": Term(EventType.CLICKED),
        "unsubscribed": Term(EventType.UNSUBSCRIBED),
        "complained": Term(EventType.COMPLAINED),
    }
)
"""Mailgun's event names and what each becomes; any other name becomes ``unknown``. A
``failed`` event is what its severity and reason make it: ``temporary`` is ``deferred``
(``block`` when the status says policy, else ``soft``), ``permanent`` is looked up in
:data:`PERMANENT_FAILURES`, and any other severity is ``unknown``."""

PERMANENT_FAILURES: Final[Vocabulary] = vocabulary(
    {
        "bounce": Term(EventType.BOUNCED, bounce=BounceKind.HARD),
        "generic": Term(EventType.BOUNCED, bounce=BounceKind.HARD),
        "delayed-bounce": Term(EventType.BOUNCED, bounce=BounceKind.HARD),
        "espblock": Term(EventType.BOUNCED, bounce=BounceKind.BLOCK),
        "old": Term(EventType.FAILED),
        # Mailgun never tried these: the address is on one of its suppression lists.
        "suppress-bounce": Term(EventType.DROPPED),
        "suppress-unsubscribe": Term(EventType.DROPPED),
        "suppress-complaint": Term(EventType.DROPPED),
    }
)
"""``failed`` with ``severity=permanent``, by ``reason``; a bounce's kind is the enhanced
status's where it says one (:func:`bounce_kind`), else the term's. An unlisted reason is a
bounce of undetermined kind."""

UNLISTED_PERMANENT: Final = Term(EventType.BOUNCED, bounce=BounceKind.UNDETERMINED)

LEGACY_EVENTS: Final[Vocabulary] = vocabulary(
    {
        "delivered": Term(EventType.DELIVERED),
        "bounced": Term(EventType.BOUNCED),
        "dropped": Term(EventType.DROPPED),
        "complained": Term(EventType.COMPLAINED),
        "unsubscribed": Term(EventType.UNSUBSCRIBED),
        "opened": Term(EventType.OPENED),
        "clicked": Term(EventType.CLICKED),
    }
)
"""The legacy (form-encoded) webhooks' event names."""

LEGACY_DROP_REASONS: Final[Vocabulary] = vocabulary(
    {
        "hardfail": Term(EventType.DROPPED),  # previously bounced, unsubscribed or complained
        "maxfails": Term(EventType.FAILED),  # too many soft failures
        "old": Term(EventType.FAILED),  # retried for too long
    }
)
"""A legacy ``dropped`` event's ``reason``; any other reason stays ``dropped``."""

_EVENTS: Final = lookup(EVENTS)
_PERMANENT: Final = lookup(PERMANENT_FAILURES)
_LEGACY: Final = lookup(LEGACY_EVENTS)
_LEGACY_DROPS: Final = lookup(LEGACY_DROP_REASONS)
_FAILED: Final = EVENTS["failed"]

_LEGACY_KNOWN_FIELDS: Final = frozenset(
    {
        "event",
        "recipient",
        "domain",
        "message-headers",
        "Message-Id",
        "message-id",
        "X-Mailgun-Sid",
        "X-Mailgun-Tag",
        "X-Mailgun-Variables",
        "timestamp",
        "token",
        "signature",
        "code",
        "error",
        "notification",
        "description",
        "reason",
        "ip",
        "country",
        "region",
        "city",
        "user-agent",
        "device-type",
        "client-type",
        "client-name",
        "client-os",
        "campaign-id",
        "campaign-name",
        "tag",
        "mailing-list",
        "url",
        "attachment-count",
        "body-plain",
        "h",
    }
)
"""Fields of a legacy webhook that are Mailgun's; any other field is a custom variable."""

_KIND_BY_DETAIL: Final[Mapping[str, BounceKind | None]] = {
    "1.7": BounceKind.BLOCK,  # the sender's address, not the recipient's
    "1.8": BounceKind.BLOCK,
    "2.0": None,
    "2.1": BounceKind.HARD,  # mailbox disabled
    "2.2": BounceKind.SOFT,  # mailbox full
    "4.4": BounceKind.HARD,  # unable to route: the domain does not take mail
}
"""RFC 3463 ``subject.detail`` codes whose meaning differs from their subject's."""

_KIND_BY_SUBJECT: Final[Mapping[str, BounceKind]] = {
    "1": BounceKind.HARD,  # addressing
    "2": BounceKind.SOFT,  # mailbox status
    "3": BounceKind.SOFT,  # mail system
    "4": BounceKind.SOFT,  # network and routing
    "6": BounceKind.BLOCK,  # message content
    "7": BounceKind.BLOCK,  # security or policy
}
"""RFC 3463 subjects; ``0`` (other) and ``5`` (protocol) say nothing about the bounce."""

_ENGAGEMENT: Final = frozenset({EventType.OPENED, EventType.CLICKED})
_REJECTED: Final = EventType.REJECTED

_STATUS_PATHS: Final[Mapping[str, str]] = {
    key: f"event-data.delivery-status.{key}"
    for key in ("code", "message", "description", "enhanced-code", "bounce-code", "attempt-no")
}
_HEADERS_PATH: Final = "event-data.message.headers"
_MESSAGE_ID_PATH: Final = "event-data.message.headers.message-id"
_USER_AGENT_PATH: Final = "event-data.client-info.user-agent"

_ENHANCED_STATUS: Final = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")

_PROXY_USER_AGENTS: Final = ("GoogleImageProxy", "YahooMailProxy", "ggpht.com")
_APPLE_PROXY_USER_AGENT: Final = "Mozilla/5.0"
"""Apple Mail Privacy Protection fetches images with exactly this user agent."""


def _field_error(path: str, expected: str) -> PayloadError:
    return PayloadError(
        f"unreadable Mailgun webhook: {path} is missing or is not {expected}", provider=PROVIDER
    )


def _text(value: Any, path: str) -> str:
    if type(value) is str:
        return value
    raise _field_error(path, "a string")


def _optional_text(value: Any, path: str) -> str | None:
    if value is None or type(value) is str:
        return value
    raise _field_error(path, "a string")


def _object(value: Any, path: str) -> dict[str, Any]:
    if type(value) is dict:
        return value
    if value is None or value == []:  # Mailgun sends an empty list for no user-variables
        return {}
    raise _field_error(path, "an object")


def _number(value: Any, path: str) -> float:
    if type(value) is float or type(value) is int:
        number = float(value)
    elif type(value) is str:
        try:
            number = float(value)
        except ValueError:
            raise _field_error(path, "a number") from None
    else:
        raise _field_error(path, "a number")
    if not math.isfinite(number):
        raise _field_error(path, "a finite number")
    return number


def _timestamp(value: Any, path: str) -> datetime:
    try:
        return datetime.fromtimestamp(_number(value, path), UTC)
    except (OverflowError, OSError, ValueError):
        raise _field_error(path, "a unix time") from None


def _optional_int(value: Any, path: str) -> int | None:
    if type(value) is int or value is None:
        return value
    if value == "":
        return None
    number = _number(value, path)
    if not number.is_integer():
        raise _field_error(path, "a whole number")
    return int(number)


def _string_list(value: Any, path: str) -> list[str]:
    if value is None:
        return []
    if type(value) is not list:
        raise _field_error(path, "a list of strings")
    for item in value:
        if type(item) is not str:
            raise _field_error(path, "a list of strings")
    return list(value)


def _as_text(value: Any) -> str:
    return value if type(value) is str else json.dumps(value, separators=(",", ":"))


# --------------------------------------------------------------------------- mapping


def events_from(decoded: dict[str, Any] | Form) -> list[EmailEvent]:
    """The canonical event of a decoded webhook body (Mailgun posts one event per request)."""
    if isinstance(decoded, Form):
        return [legacy_event(decoded)]
    event_data = decoded.get("event-data")
    if type(event_data) is not dict:
        raise _field_error("event-data", "an object")
    return [event_from(event_data)]


def enhanced_status(*texts: str | None) -> str | None:
    """The first RFC 3463 enhanced status code (``5.1.1``) found in ``texts``."""
    for text in texts:
        if text:
            found = _ENHANCED_STATUS.search(text)
            if found:
                return found.group(0)
    return None


def bounce_kind(status: str | None) -> BounceKind | None:
    """What an enhanced status code says about a bounce, or None when it says nothing."""
    if status is None:
        return None
    klass, subject, detail = status.split(".")
    key = f"{subject}.{detail}"
    kind = _KIND_BY_DETAIL[key] if key in _KIND_BY_DETAIL else _KIND_BY_SUBJECT.get(subject)
    if klass == "4" and kind is BounceKind.HARD:
        return BounceKind.SOFT  # a transient status cannot make an address bad
    return kind if klass in ("4", "5") else None


def smtp_reason(code: int | None, message: str | None) -> str | None:
    """The remote server's reply as one line: ``"550 5.1.1 user unknown"``."""
    text = (message or "").strip()
    if code and text and not text.startswith(str(code)):
        return f"{code} {text}"
    return text or (str(code) if code else None)


def machine_flag(client_info: Mapping[str, Any], user_agent: str | None) -> bool | None:
    """True for an automated open or click: Mailgun's own ``client-info.bot`` verdict where it
    gives one, else a privacy proxy recognised by its user agent; None when unknown."""
    bot = client_info.get("bot")
    if type(bot) is str:
        return bool(bot)
    if user_agent is None:
        return None
    if user_agent == _APPLE_PROXY_USER_AGENT or any(p in user_agent for p in _PROXY_USER_AGENTS):
        return True
    return None


def _headers(message: Any) -> dict[str, Any]:
    """``message.headers`` of an event (empty when absent)."""
    return _object(_object(message, "event-data.message").get("headers"), _HEADERS_PATH)


def _recipient(value: Any, headers: Mapping[str, Any], required: bool) -> str:
    if type(value) is str and value:
        return value
    if required or not (value is None or type(value) is str):
        raise _field_error("event-data.recipient", "a string")
    to = headers.get("to")  # a rejected request names its recipient only in the headers
    return parseaddr(to)[1] if type(to) is str else ""


def _failure(
    severity: Any, reason: str | None, enhanced: str | None
) -> tuple[EventType, BounceKind | None] | None:
    """What a ``failed`` event is, from its severity, its reason and the enhanced status."""
    severity = _text(severity, "event-data.severity")
    refined = bounce_kind(enhanced)
    if severity == "temporary":  # Mailgun keeps retrying, whatever the code says
        return EventType.DEFERRED, (
            BounceKind.BLOCK if refined is BounceKind.BLOCK else BounceKind.SOFT
        )
    if severity != "permanent":
        return None
    term = _PERMANENT.get(reason or "", UNLISTED_PERMANENT)
    kind, default = term.type, term.bounce
    return kind, (refined or default) if kind is EventType.BOUNCED else default


def _delivery_status(
    status: Mapping[str, Any],
) -> tuple[str | None, str | None, str | None, int | None]:
    """``(reason, enhanced status, smtp status, attempt)`` from ``delivery-status``."""
    get = status.get
    code = _optional_int(get("code"), _STATUS_PATHS["code"])
    message = _optional_text(get("message"), _STATUS_PATHS["message"])
    description = _optional_text(get("description"), _STATUS_PATHS["description"])
    enhanced = enhanced_status(
        _optional_text(get("enhanced-code"), _STATUS_PATHS["enhanced-code"])
        or _optional_text(get("bounce-code"), _STATUS_PATHS["bounce-code"]),
        message,
        description,
    )
    attempt = _optional_int(get("attempt-no"), _STATUS_PATHS["attempt-no"])
    reason = smtp_reason(code, message or description)
    return reason, enhanced, enhanced or (str(code) if code else None), attempt


def _variables(value: Any) -> tuple[dict[str, str], str | None]:
    """``user-variables`` as metadata, and the tracking id taken out of it."""
    variables = _object(value, "event-data.user-variables")
    if not variables:
        return {}, None
    metadata = {k: v if type(v) is str else _as_text(v) for k, v in variables.items()}
    return metadata, metadata.pop(TRACKING_KEY, None)


def event_from(data: dict[str, Any]) -> EmailEvent:
    """Map one ``event-data`` object onto a canonical event."""
    get = data.get
    name = _text(get("event"), "event-data.event")
    stamp = _number(get("timestamp"), "event-data.timestamp")
    timestamp = _timestamp(stamp, "event-data.timestamp")
    headers = _headers(get("message"))
    term = _EVENTS.get(name)
    known = term is not None
    event_type = None if term is None or term is _FAILED else term.type
    recipient = _recipient(get("recipient"), headers, known and event_type is not _REJECTED)
    provider_id = _optional_text(get("id"), "event-data.id") or ""
    # Mailgun's ids are unique only within a day: the recipient and the time pin them down.
    event_id = event_digest(f"{PROVIDER}\x1f{provider_id}\x1f{recipient}\x1f{round(stamp * 1e6)}")
    if not known:
        return _unmapped(data, f"Mailgun event {name!r}", name, recipient, timestamp, event_id)

    status = _object(get("delivery-status"), "event-data.delivery-status")
    reason, enhanced, smtp_status, attempt = (
        _delivery_status(status) if status else (None, None, None, None)
    )
    bounce: BounceKind | None = None
    user_agent = url = None
    machine: bool | None = None
    if event_type is None:  # failed: severity and reason decide
        mailgun_reason = _optional_text(get("reason"), "event-data.reason")
        failure = _failure(get("severity"), mailgun_reason, enhanced)
        if failure is None:
            what = f"Mailgun failure severity {get('severity')!r}"
            return _unmapped(data, what, name, recipient, timestamp, event_id)
        event_type, bounce = failure
        # A drop is Mailgun's own decision: its reason (suppress-bounce ...) is the why.
        reason = mailgun_reason if event_type is EventType.DROPPED else reason or mailgun_reason
    elif event_type is _REJECTED:
        reject = _object(get("reject"), "event-data.reject")
        reason = (
            _optional_text(reject.get("reason"), "event-data.reject.reason")
            or _optional_text(reject.get("description"), "event-data.reject.description")
            or reason
        )
    elif event_type in _ENGAGEMENT:
        client_info = _object(get("client-info"), "event-data.client-info")
        user_agent = _optional_text(client_info.get("user-agent"), _USER_AGENT_PATH)
        machine = machine_flag(client_info, user_agent)
        if event_type is EventType.CLICKED:
            url = _optional_text(get("url"), "event-data.url")

    metadata, tracking_id = _variables(get("user-variables"))
    message_id = _optional_text(headers.get("message-id"), _MESSAGE_ID_PATH)
    return make_event(
        PROVIDER,
        event_type,  # type
        name,  # provider_event
        recipient,
        event_id,
        timestamp,
        bare_message_id(message_id) if message_id else None,  # message_id
        tracking_id,
        reason,
        bounce,
        smtp_status,
        attempt,
        url,
        user_agent,
        machine,
        _string_list(get("tags"), "event-data.tags"),  # tags
        metadata,
        data,  # raw
    )


def _unmapped(
    raw: dict[str, Any],
    what: str,
    name: str,
    recipient: str,
    timestamp: datetime,
    event_id: str,
) -> EmailEvent:
    return unknown_event(
        PROVIDER,
        raw,
        f"{what} is not one this version maps",
        provider_event=name,
        recipient=recipient,
        timestamp=timestamp,
        digest_source=event_id,
    )


def _legacy_variables(form: Form) -> dict[str, str]:
    """Custom variables of a legacy webhook: the ``X-Mailgun-Variables`` headers of the
    original message where Mailgun includes them, and every field that is not Mailgun's."""
    variables: dict[str, str] = {}
    headers = form.first("message-headers")
    if headers:
        try:
            pairs = read_json(headers, provider=PROVIDER, what="message-headers field")
        except PayloadError:
            raise _field_error("message-headers", "a JSON list of headers") from None
        for pair in pairs if isinstance(pairs, list) else ():
            if isinstance(pair, list) and len(pair) == 2 and pair[0] == "X-Mailgun-Variables":
                if not isinstance(pair[1], str):
                    continue  # not a header's text (and never a size to allocate)
                try:
                    found = read_json(pair[1], provider=PROVIDER, what="X-Mailgun-Variables")
                except PayloadError:
                    continue
                if isinstance(found, dict):
                    variables.update({k: _as_text(v) for k, v in found.items()})
    for name, values in form.fields.items():
        if name not in _LEGACY_KNOWN_FIELDS and not name.startswith("attachment-"):
            variables[name] = values[-1]
    return variables


def legacy_event(form: Form) -> EmailEvent:
    """Map a legacy (form-encoded) webhook onto a canonical event."""
    name = form.first("event")
    if not name:
        raise _field_error("event", "a string")
    timestamp = _timestamp(form.last("timestamp"), "timestamp")
    recipient = form.first("recipient") or ""
    message_id = form.first("Message-Id") or form.first("message-id")
    # No id of its own: a digest of every field but the signature's, so a re-signed
    # delivery of the same event keeps its id.
    identity = sorted(
        f"{k}={v}" for k, values in form.fields.items() if k not in SIGNING_FIELDS for v in values
    )
    event_id = event_digest(PROVIDER, "legacy", "\x1f".join(identity))
    raw = form.raw()
    term = _LEGACY.get(name)
    if term is None:
        return _unmapped(
            raw, f"legacy Mailgun event {name!r}", name, recipient, timestamp, event_id
        )
    if not recipient:
        raise _field_error("recipient", "a string")
    event_type = term.type

    code_text = form.first("code")
    error = form.first("error") or form.first("notification")
    description = form.first("description")
    enhanced = enhanced_status(code_text, error, description)
    code = int(code_text) if code_text and code_text.isdigit() else None
    reason = smtp_reason(code, error or description)
    bounce: BounceKind | None = None
    if event_type is EventType.BOUNCED:
        bounce = bounce_kind(enhanced) or BounceKind.HARD
    elif event_type is EventType.DROPPED:
        drop_reason = form.first("reason") or ""
        event_type = _LEGACY_DROPS.get(drop_reason, term).type
        reason = reason or drop_reason or None

    user_agent = form.first("user-agent")
    variables = _legacy_variables(form)
    tracking_id = variables.pop(TRACKING_KEY, None)
    return make_event(
        PROVIDER,
        event_type,  # type
        name,  # provider_event
        recipient,
        event_id,
        timestamp,
        bare_message_id(message_id) if message_id else None,  # message_id
        tracking_id,
        reason,
        bounce,
        enhanced or (str(code) if code else None),  # smtp_status
        None,  # attempt
        form.first("url") if event_type is EventType.CLICKED else None,  # url
        user_agent,
        machine_flag({}, user_agent) if event_type in _ENGAGEMENT else None,  # machine
        form.getlist("tag") or form.getlist("X-Mailgun-Tag"),  # tags
        variables,  # metadata
        raw,
    )
