"""SendGrid, imitated: v3 Mail Send in, Signed Event Webhook batches out.

``POST /v3/mail/send`` takes a bearer API key and a JSON body of personalizations. A request
SendGrid would refuse is answered 400 with SendGrid's ``{"errors": [{"message", "field",
"help"}]}``; an accepted one is answered ``202`` with an empty body and an ``X-Message-Id``.
Each recipient's events carry ``sg_message_id`` (that id, a dot, and a filter suffix), the
message's categories, and its custom args as top-level keys. Events are posted as JSON
arrays, several events to a request, signed with an ECDSA P-256 key made for the run
(``SendGridWebhookSigner``): the adapter verifies them with the public key, as it would
SendGrid's.
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Final
from urllib.parse import parse_qs, parse_qsl, quote

from unimailtrack.adapters.sendgrid import (
    MAX_PERSONALIZATIONS,
    SendGridAdapter,
    SendGridWebhookSigner,
)
from unimailtrack.emulator._model import (
    Answer,
    Incoming,
    Posting,
    SentCopy,
    SuppressionLists,
    query_int,
    stable_token,
)
from unimailtrack.emulator.scenarios import (
    CLICKED_URL,
    Step,
    StepKind,
    scenario_for,
)
from unimailtrack.errors import InvalidAddress
from unimailtrack.model import Address, BounceKind

__all__ = ["SendGridEmulator"]

SEND_PATH: Final = "/v3/mail/send"
DEFAULT_BATCH_SIZE: Final = 100
_SENDING_IP: Final = "192.0.2.10"
ACTIVITY_PATH: Final = "/v3/messages"
_BETWEEN: Final = re.compile(
    r'last_event_time\s+BETWEEN\s+TIMESTAMP\s+"([^"]+)"\s+AND\s+TIMESTAMP\s+"([^"]+)"',
    re.IGNORECASE,
)


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_READER_IP: Final = "198.51.100.7"

Problem = tuple[str, str | None]
"""A refusal: SendGrid's message and the field it concerns."""

_UNAUTHORIZED: Final = "The provided authorization grant is invalid, expired, or revoked"

_BOUNCE_TYPES: Final[Mapping[BounceKind | None, str]] = {BounceKind.BLOCK: "blocked"}
_BOUNCE_CLASSES: Final[Mapping[BounceKind | None, str]] = {
    BounceKind.HARD: "Invalid Address",
    BounceKind.SOFT: "Mailbox Unavailable",
    BounceKind.BLOCK: "Reputation",
}


def _processed(step: Step) -> dict[str, Any]:
    return {"event": "processed"}


def _deferred(step: Step) -> dict[str, Any]:
    return {"event": "deferred", "response": str(step.smtp), "attempt": str(step.attempt or 1)}


def _delivered(step: Step) -> dict[str, Any]:
    return {"event": "delivered", "response": str(step.smtp), "ip": _SENDING_IP, "tls": 1}


def _bounce(step: Step) -> dict[str, Any]:
    smtp = step.smtp
    return {
        "event": "bounce",
        "type": _BOUNCE_TYPES.get(step.bounce, "bounce"),
        "bounce_classification": _BOUNCE_CLASSES.get(step.bounce, "Unclassified"),
        "reason": str(smtp),
        "status": smtp.status if smtp else "5.0.0",
        "ip": _SENDING_IP,
        "tls": 1,
    }


def _dropped(step: Step) -> dict[str, Any]:
    return {"event": "dropped", "reason": "Bounced Address", "status": "5.0.0"}


def _spamreport(step: Step) -> dict[str, Any]:
    return {"event": "spamreport"}


def _open(step: Step) -> dict[str, Any]:
    return {
        "event": "open",
        "useragent": step.user_agent,
        "ip": _READER_IP,
        "sg_machine_open": step.machine,
    }


def _click(step: Step) -> dict[str, Any]:
    return {
        "event": "click",
        "url": CLICKED_URL,
        "url_offset": {"index": 0, "type": "html"},
        "useragent": step.user_agent,
        "ip": _READER_IP,
    }


def _unsubscribe(step: Step) -> dict[str, Any]:
    return {"event": "unsubscribe"}


_EVENTS: Final[Mapping[StepKind, Callable[[Step], dict[str, Any]]]] = {
    StepKind.QUEUED: _processed,
    StepKind.DEFERRED: _deferred,
    StepKind.DELIVERED: _delivered,
    StepKind.BOUNCED: _bounce,
    StepKind.DROPPED: _dropped,
    StepKind.COMPLAINED: _spamreport,
    StepKind.OPENED: _open,
    StepKind.CLICKED: _click,
    StepKind.UNSUBSCRIBED: _unsubscribe,
}
"""What each step of a scenario is called in SendGrid's Event Webhook."""


def _errors(status: int, problems: Sequence[Problem]) -> Answer:
    return Answer.json(
        status,
        {"errors": [{"message": m, "field": f, "help": None} for m, f in problems]},
    )


def _bad_address(value: Any) -> bool:
    if not isinstance(value, dict) or not isinstance(value.get("email"), str):
        return True
    try:
        Address.parse(value["email"])
    except InvalidAddress:
        return True
    return False


def _personalization_problems(index: int, item: Any, subject: Any) -> list[Problem]:
    where = f"personalizations.{index}"
    if not isinstance(item, dict):
        return [("The personalization must be an object.", where)]
    to = item.get("to")
    if not isinstance(to, list) or not to:
        return [
            (
                "The to array is required for all personalization objects, and must have at "
                "least one email object with a valid email address.",
                f"{where}.to",
            )
        ]
    problems: list[Problem] = []
    for kind in ("to", "cc", "bcc"):
        for number, address in enumerate(item.get(kind) or ()):
            if _bad_address(address):
                problems.append(("Does not contain a valid address.", f"{where}.{kind}.{number}"))
    if not subject and not item.get("subject"):
        problems.append(
            (
                "The subject is required. You can get around this requirement if you use a "
                "template with a subject defined or if every personalization has a subject "
                "defined.",
                "subject",
            )
        )
    return problems


def _content_problems(payload: Mapping[str, Any]) -> list[Problem]:
    if payload.get("template_id"):
        return []
    content = payload.get("content")
    blocks = content if isinstance(content, list) else []
    if not blocks or not all(isinstance(b, dict) and b.get("value") for b in blocks):
        return [
            (
                "Unless a valid template_id is provided, the content parameter is required. "
                "There must be at least one defined content block.",
                "content",
            )
        ]
    return []


def request_problems(payload: Any) -> list[Problem]:
    """Why SendGrid would refuse a Mail Send body (empty when it would take it)."""
    if not isinstance(payload, dict):
        return [("The request body must be a JSON object.", None)]
    problems: list[Problem] = []
    if _bad_address(payload.get("from")):
        problems.append(
            (
                "The from object must be provided for every email send. It is an object that "
                "requires an email parameter, but may also contain a name parameter.",
                "from.email",
            )
        )
    personalizations = payload.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        problems.append(
            (
                "The personalizations field is required and must have at least one "
                "personalization.",
                "personalizations",
            )
        )
    elif len(personalizations) > MAX_PERSONALIZATIONS:
        problems.append(
            (
                f"The personalizations field can have no more than {MAX_PERSONALIZATIONS} "
                "personalizations.",
                "personalizations",
            )
        )
    else:
        subject = payload.get("subject") or payload.get("template_id")
        for index, item in enumerate(personalizations):
            problems.extend(_personalization_problems(index, item, subject))
    return problems + _content_problems(payload)


def _enabled(settings: Any, name: str) -> bool:
    """Whether ``tracking_settings.<name>.enable`` is on; a request that does not say leaves
    it off."""
    block = settings.get(name) if isinstance(settings, dict) else None
    return isinstance(block, dict) and block.get("enable") is True


def _custom_args(*sources: Any) -> dict[str, str]:
    """Message-level then personalization custom args, as SendGrid merges them (the later
    wins), every value as text."""
    merged: dict[str, str] = {}
    for source in sources:
        if isinstance(source, dict):
            merged.update(
                {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in source.items()}
            )
    return merged


class SendGridEmulator:
    """SendGrid's Mail Send API and Event Webhook.

    ``api_key``: the only key accepted (any non-empty key when None). ``signer`` signs the
    webhooks (a fresh key when None). ``batch_size``: at most this many events per webhook
    request.
    """

    name: ClassVar[str] = "sendgrid"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        signer: SendGridWebhookSigner | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        self.api_key = api_key
        self.suppressions = SuppressionLists()
        self.signer = signer or SendGridWebhookSigner()
        self.batch_size = max(1, batch_size)
        self._filters = itertools.count(1)

    @property
    def public_key(self) -> str:
        """The webhook verification key, base64 DER as SendGrid shows it."""
        return self.signer.public_key

    def handles(self, path: str) -> bool:
        return path == SEND_PATH

    def _authorized(self, header: str) -> bool:
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return False
        return self.api_key is None or secrets.compare_digest(key.strip(), self.api_key)

    def accept(self, request: Incoming, now: datetime) -> tuple[Answer, list[SentCopy]]:
        if not self._authorized(request.headers.get("authorization", "")):
            return _errors(401, [(_UNAUTHORIZED, None)]), []
        try:
            payload = json.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            return _errors(400, [("Bad Request", None)]), []
        problems = request_problems(payload)
        if problems:
            return _errors(400, problems), []
        message_id = secrets.token_urlsafe(16)  # SendGrid's ids never hold a dot
        copies = list(self._copies(payload, message_id, now))
        return Answer(202, b"", {"X-Message-Id": message_id}), copies

    def _copies(
        self, payload: dict[str, Any], message_id: str, now: datetime
    ) -> Iterator[SentCopy]:
        categories = payload.get("categories")
        tags = (
            tuple(c for c in categories if isinstance(c, str))
            if isinstance(categories, list)
            else ()
        )
        tracking = payload.get("tracking_settings")
        sender = payload["from"]
        for item in payload["personalizations"]:
            variables = _custom_args(payload.get("custom_args"), item.get("custom_args"))
            for kind in ("to", "cc", "bcc"):
                for address in item.get(kind) or ():
                    recipient = address["email"]
                    yield SentCopy(
                        provider=self.name,
                        recipient=recipient,
                        message_id=f"{message_id}.filterdrecv-emulator-{next(self._filters)}.0",
                        scenario=scenario_for(recipient),
                        sender=sender["email"],
                        subject=str(item.get("subject") or payload.get("subject") or ""),
                        accepted_at=now,
                        tags=tags,
                        variables=variables,
                        destination=(recipient,),
                        opens=_enabled(tracking, "open_tracking"),
                        clicks=_enabled(tracking, "click_tracking"),
                    )

    def events_api(
        self,
        path: str,
        query: str,
        headers: Mapping[str, str],
        events: Sequence[dict[str, Any]],
        base_url: str,
    ) -> Answer | None:
        """``GET /v3/messages`` as the Email Activity API answers it: one entry per message
        and recipient with its status (``processed``, ``delivered``, ``not_delivered``), its
        open and click counts and its last event's time; ``query`` may bound
        ``last_event_time BETWEEN TIMESTAMP "..." AND TIMESTAMP "..."``, ``limit`` is 1 to
        1000 (10 by default), and there is no paging."""
        if path != ACTIVITY_PATH:
            return None
        if not self._authorized(headers.get("authorization", "")):
            return _errors(401, [(_UNAUTHORIZED, None)])
        options = dict(parse_qsl(query))
        limit = options.get("limit", "10")
        if not limit.isdigit() or not 1 <= int(limit) <= 1000:
            return _errors(400, [("limit must be greater than 0 and at most 1000", "limit")])
        window = _BETWEEN.search(options.get("query", ""))
        since = until = None
        if window:
            since, until = (datetime.fromisoformat(t).timestamp() for t in window.groups())
        messages: dict[tuple[str, str], dict[str, Any]] = {}
        for event in events:
            key = (event["sg_message_id"], event["email"])
            entry = messages.setdefault(
                key,
                {
                    "from_email": "",
                    "msg_id": event["sg_message_id"],
                    "subject": "",
                    "to_email": event["email"],
                    "status": "processed",
                    "opens_count": 0,
                    "clicks_count": 0,
                    "last_timestamp": 0,
                },
            )
            kind = event["event"]
            if kind == "delivered" and entry["status"] == "processed":
                entry["status"] = "delivered"
            elif kind in ("bounce", "dropped", "blocked"):
                entry["status"] = "not_delivered"
            entry["opens_count"] += kind == "open"
            entry["clicks_count"] += kind == "click"
            entry["last_timestamp"] = max(entry["last_timestamp"], int(event["timestamp"]))
        chosen = [
            {**m, "last_event_time": _iso(m["last_timestamp"])}
            for m in messages.values()
            if since is None or since <= m["last_timestamp"] <= (until or float("inf"))
        ]
        chosen.sort(key=lambda m: m["last_timestamp"], reverse=True)
        return Answer.json(200, {"messages": chosen[: int(limit)]})

    def throttled(self, retry_after: int) -> Answer:
        reset = int(time.time()) + retry_after
        answer = _errors(429, [("too many requests", None)])
        return Answer(
            answer.status,
            answer.body,
            {**answer.headers, "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)},
        )

    def event(self, copy: SentCopy, index: int, at: datetime) -> dict[str, Any]:
        step = copy.steps[index]
        event: dict[str, Any] = {
            "email": copy.recipient,
            "timestamp": int(at.timestamp()),
            "smtp-id": f"<{copy.message_id.partition('.')[0]}@emulator.ismtpd>",
            **_EVENTS[step.kind](step),
            "sg_event_id": stable_token(copy.message_id, copy.recipient, index),
            "sg_message_id": copy.message_id,
        }
        if copy.tags:
            event["category"] = copy.tags[0] if len(copy.tags) == 1 else list(copy.tags)
        return {**copy.variables, **event}

    def postings(self, events: Sequence[dict[str, Any]]) -> list[Posting]:
        postings = []
        for start in range(0, len(events), self.batch_size):
            batch = list(events[start : start + self.batch_size])
            body = json.dumps(batch, separators=(",", ":")).encode()
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "SendGrid Event API",
                **self.signer.sign(body),
            }
            postings.append(Posting(body, headers))
        return postings

    def dsn(self, base_url: str) -> str:
        key = quote(self.api_key or "emulator", safe="")
        return (
            f"sendgrid://{key}@default?base_url={quote(base_url, safe=':/')}"
            f"&webhook_key={quote(self.public_key, safe='/=')}"
        )

    def adapter(self, base_url: str, **options: Any) -> SendGridAdapter:
        return SendGridAdapter(
            self.api_key or "emulator",
            webhook_keys=[self.public_key],
            base_url=base_url,
            **options,
        )


# --------------------------------------------------------------------------- suppression lists

_LIST_PATH: Final = re.compile(
    r"/v3/suppression/(?P<list>bounces|blocks|spam_reports|invalid_emails|unsubscribes)"
)
_GROUP_PATH: Final = re.compile(r"/v3/asm/groups/(?P<id>\d+)/suppressions")


def handles_api(path: str) -> bool:
    return bool(
        _LIST_PATH.fullmatch(path)
        or _GROUP_PATH.fullmatch(path)
        or path in ("/v3/asm/groups", "/v3/asm/suppressions/global")
    )


def answer_api(emulator: SendGridEmulator, request: Incoming, now: datetime) -> Answer:
    """SendGrid's suppression API: the lists paged by ``offset``/``limit`` (500 at most),
    the unsubscribe groups and their suppressions, and adding global unsubscribes."""
    if not emulator._authorized(request.headers.get("authorization", "")):
        return Answer.json(401, {"errors": [{"field": None, "message": _UNAUTHORIZED}]})
    lists = emulator.suppressions
    query = parse_qs(request.query)
    found = _LIST_PATH.fullmatch(request.path)
    if found and request.method == "GET":
        offset = query_int(query, "offset", 0, 10**9)
        page = lists.page(found["list"], offset, query_int(query, "limit", 500, 500))
        if page is None:
            return Answer.json(500, {"errors": [{"message": "internal error"}]})
        return Answer.json(200, page)
    if request.path == "/v3/asm/groups" and request.method == "GET":
        groups = lists.records("groups")
        return Answer.json(200, [{"id": g["id"], "name": g["name"]} for g in groups])
    group = _GROUP_PATH.fullmatch(request.path)
    if group and request.method == "GET":
        for g in lists.records("groups"):
            if g["id"] == int(group["id"]):
                page = lists.page(f"group:{g['id']}", 0, 10**9)
                if page is None:
                    return Answer.json(500, {"errors": [{"message": "internal error"}]})
                return Answer.json(200, page)
        return Answer.json(404, {"errors": [{"message": "group not found"}]})
    if request.path == "/v3/asm/suppressions/global" and request.method == "POST":
        try:
            emails = json.loads(request.body)["recipient_emails"]
            if not isinstance(emails, list) or not all(isinstance(e, str) for e in emails):
                raise ValueError("recipient_emails is not a list of addresses")
        except (ValueError, KeyError, TypeError):
            return Answer.json(400, {"errors": [{"message": "recipient_emails is required"}]})
        lists.add("unsubscribes", *({"created": int(now.timestamp()), "email": e} for e in emails))
        return Answer.json(201, {"recipient_emails": emails})
    return Answer.json(405, {"errors": [{"message": "method not allowed"}]})
