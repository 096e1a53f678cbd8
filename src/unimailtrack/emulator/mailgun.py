"""Mailgun, imitated: the messages API in, one signed JSON webhook per event out.

``POST /v3/{domain}/messages`` takes HTTP basic authentication (user ``api``, the API key as
the password) and a form, URL-encoded or multipart. A request Mailgun would refuse is answered
400 with ``{"message": ...}``, a wrong key 401 ``Forbidden``; an accepted one ``200`` with
``{"id": "<...>", "message": "Queued. Thank you."}``. A batch send's ``%recipient.NAME%``
placeholders in ``v:`` variables are filled from ``recipient-variables``, so every event
carries each recipient's own values in ``user-variables``. Each event is posted on its own,
``{"signature": {...}, "event-data": {...}}``, signed with HMAC-SHA256 under a signing key
(``MailgunWebhookSigner``) with a fresh token each time.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from email.utils import getaddresses
from typing import Any, ClassVar, Final
from urllib.parse import parse_qs, parse_qsl, quote, urlencode

from unimailtrack.adapters.mailgun import (
    BATCH_LIMIT,
    Form,
    MailgunAdapter,
    MailgunWebhookSigner,
    decode_body,
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
from unimailtrack.emulator.scenarios import CLICKED_URL, Step, StepKind, scenario_for
from unimailtrack.errors import InvalidAddress, PayloadError
from unimailtrack.model import Address, BounceKind

__all__ = ["MailgunEmulator"]

_SEND_PATH: Final = re.compile(r"/v3/(?P<domain>[^/]+)/messages")
_EVENTS_PATH: Final = re.compile(r"/v3/(?P<domain>[^/]+)/events(?:/(?P<page>[A-Za-z0-9_=-]+))?")
_PLACEHOLDER: Final = re.compile(r"%recipient\.([^%]+)%")
_ON: Final = frozenset({"yes", "true", "htmlonly"})
_READER_IP: Final = "198.51.100.7"
_MX_HOST: Final = "mx.example.net"

_PERMANENT_REASONS: Final[Mapping[BounceKind | None, str]] = {BounceKind.HARD: "bounce"}
"""A final failure is ``bounce`` when the address is bad; Mailgun says ``generic`` otherwise
and the status code tells the rest."""


def _status(step: Step) -> dict[str, Any]:
    """The ``delivery-status`` of a step that has a reply from the recipient's server."""
    smtp = step.smtp
    if smtp is None:
        return {}
    return {
        "tls": True,
        "mx-host": _MX_HOST,
        "code": smtp.code,
        "enhanced-code": smtp.status,
        "message": f"{smtp.status} {smtp.text}",
        "description": "",
        "attempt-no": step.attempt or 1,
        "session-seconds": 0.4,
        "utf8": True,
        "certificate-verified": True,
    }


def _client_info(step: Step) -> dict[str, Any]:
    return {
        "ip": _READER_IP,
        "geolocation": {"country": "US", "region": "CA", "city": "San Francisco"},
        "client-info": {
            "client-type": "email client",
            "client-os": "macOS",
            "device-type": "desktop",
            "client-name": "Apple Mail",
            "user-agent": step.user_agent,
            "bot": "apple" if step.machine else "",
        },
    }


def _accepted(step: Step) -> dict[str, Any]:
    return {"event": "accepted", "log-level": "info", "method": "HTTP"}


def _temporary(step: Step) -> dict[str, Any]:
    return {
        "event": "failed",
        "log-level": "warn",
        "severity": "temporary",
        "reason": "generic",
        "delivery-status": {**_status(step), "retry-seconds": 600},
    }


def _delivered(step: Step) -> dict[str, Any]:
    return {"event": "delivered", "log-level": "info", "delivery-status": _status(step)}


def _permanent(step: Step) -> dict[str, Any]:
    return {
        "event": "failed",
        "log-level": "error",
        "severity": "permanent",
        "reason": _PERMANENT_REASONS.get(step.bounce, "generic"),
        "delivery-status": _status(step),
    }


def _suppressed(step: Step) -> dict[str, Any]:
    return {
        "event": "failed",
        "log-level": "error",
        "severity": "permanent",
        "reason": "suppress-bounce",
        "delivery-status": {
            "code": 605,
            "message": "Not delivering to previously bounced address",
            "description": "",
            "attempt-no": 1,
        },
    }


def _complained(step: Step) -> dict[str, Any]:
    return {"event": "complained", "log-level": "warn"}


def _opened(step: Step) -> dict[str, Any]:
    return {"event": "opened", "log-level": "info", **_client_info(step)}


def _clicked(step: Step) -> dict[str, Any]:
    return {"event": "clicked", "log-level": "info", "url": CLICKED_URL, **_client_info(step)}


def _unsubscribed(step: Step) -> dict[str, Any]:
    return {"event": "unsubscribed", "log-level": "info", **_client_info(step)}


_EVENTS: Final[Mapping[StepKind, Callable[[Step], dict[str, Any]]]] = {
    StepKind.QUEUED: _accepted,
    StepKind.DEFERRED: _temporary,
    StepKind.DELIVERED: _delivered,
    StepKind.BOUNCED: _permanent,
    StepKind.DROPPED: _suppressed,
    StepKind.COMPLAINED: _complained,
    StepKind.OPENED: _opened,
    StepKind.CLICKED: _clicked,
    StepKind.UNSUBSCRIBED: _unsubscribed,
}
"""What each step of a scenario is called in Mailgun's webhooks."""


def _refused(message: str) -> Answer:
    return Answer.json(400, {"message": message})


def _recipients(form: Form) -> list[str] | None:
    """Every address in ``to``, ``cc`` and ``bcc``, or None when one is not an address."""
    found = getaddresses([*form.getlist("to"), *form.getlist("cc"), *form.getlist("bcc")])
    addresses = []
    for _, address in found:
        try:
            addresses.append(Address.parse(address).email)
        except InvalidAddress:
            return None
    return addresses


def form_problem(form: Form) -> str | None:
    """Why Mailgun would refuse the form of a send request (None when it would take it)."""
    if not form.first("from"):
        return "from parameter is missing"
    if not form.getlist("to"):
        return "to parameter is missing"
    if not form.first("subject"):
        return "subject parameter is missing"
    if not (form.first("text") or form.first("html") or form.first("template")):
        return "Need at least one of 'text', 'html' or 'template' parameters specified"
    recipients = _recipients(form)
    if recipients is None:
        return "to parameter is not a valid address. please check documentation"
    if len(recipients) > BATCH_LIMIT:
        return f"Too many recipients: a batch takes at most {BATCH_LIMIT}"
    try:
        variables = json.loads(form.first("recipient-variables") or "{}")
    except ValueError:
        variables = None
    if not isinstance(variables, dict):
        return "recipient-variables parameter is not a valid JSON"
    return None


def _user_variables(form: Form, values: Mapping[str, Any]) -> dict[str, str]:
    """The ``v:`` variables of one recipient's copy, placeholders filled from its values."""

    def fill(found: re.Match[str]) -> str:
        value = values.get(found.group(1), "")
        return value if isinstance(value, str) else json.dumps(value)

    return {
        name[2:]: _PLACEHOLDER.sub(fill, form.last(name) or "")
        for name in form.fields
        if name.startswith("v:")
    }


class MailgunEmulator:
    """Mailgun's messages API and webhooks.

    ``api_key``: the only key accepted (any non-empty key when None). ``signing_key`` signs
    the webhooks (a random one when None).
    """

    name: ClassVar[str] = "mailgun"

    def __init__(self, *, api_key: str | None = None, signing_key: str | None = None) -> None:
        self.api_key = api_key
        self.suppressions = SuppressionLists()
        self.signing_key = signing_key or secrets.token_hex(16)
        self.signer = MailgunWebhookSigner(self.signing_key)

    def handles(self, path: str) -> bool:
        return _SEND_PATH.fullmatch(path) is not None

    def _authorized(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, key = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        if user != "api" or not key:
            return False
        return self.api_key is None or secrets.compare_digest(key, self.api_key)

    def accept(self, request: Incoming, now: datetime) -> tuple[Answer, list[SentCopy]]:
        if not self._authorized(request.headers.get("authorization", "")):
            return Answer(401, b"Forbidden", {"Content-Type": "text/plain"}), []
        try:
            form = decode_body(request.body, request.headers)
        except PayloadError:
            return _refused("the request body is not a form"), []
        if not isinstance(form, Form):
            return _refused("the request body is not a form"), []
        problem = form_problem(form)
        if problem is not None:
            return _refused(problem), []
        match = _SEND_PATH.fullmatch(request.path)
        domain = match.group("domain") if match else ""
        message_id = f"{now:%Y%m%d%H%M%S}.{secrets.token_hex(8)}@{domain}"
        copies = list(self._copies(form, message_id, now))
        body = {"id": f"<{message_id}>", "message": "Queued. Thank you."}
        return Answer.json(200, body), copies

    def _copies(self, form: Form, message_id: str, now: datetime) -> Iterator[SentCopy]:
        per_recipient = json.loads(form.first("recipient-variables") or "{}")
        recipients = _recipients(form) or []
        for recipient in recipients:
            values = per_recipient.get(recipient)
            yield SentCopy(
                provider=self.name,
                recipient=recipient,
                message_id=message_id,
                scenario=scenario_for(recipient),
                sender=form.first("from") or "",
                subject=form.first("subject") or "",
                accepted_at=now,
                tags=tuple(form.getlist("o:tag")),
                variables=_user_variables(form, values if isinstance(values, dict) else {}),
                destination=(recipient,) if per_recipient else tuple(recipients),
                opens=(form.last("o:tracking-opens") or "").lower() in _ON,
                clicks=(form.last("o:tracking-clicks") or "").lower() in _ON,
            )

    def events_api(
        self,
        path: str,
        query: str,
        headers: Mapping[str, str],
        events: Sequence[dict[str, Any]],
        base_url: str,
    ) -> Answer | None:
        """``GET /v3/{domain}/events`` as Mailgun's Events API answers it: ``begin``/``end`` as
        unix seconds, ``ascending=yes``, ``limit`` up to 300, and ``paging.next`` a URL that
        carries where the page ended; the items are the events' ``event-data``."""
        found = _EVENTS_PATH.fullmatch(path)
        if found is None:
            return None
        if not self._authorized(headers.get("authorization", "")):
            return Answer(401, b"Forbidden", {"Content-Type": "text/plain"})
        if found.group("page"):
            try:
                state = json.loads(base64.urlsafe_b64decode(found.group("page")))
            except (ValueError, binascii.Error):
                return _refused("the page token is not one this API gave out")
        else:
            options = dict(parse_qsl(query))
            try:
                state = {
                    "begin": float(options.get("begin", 0)),
                    "end": float(options["end"]) if "end" in options else None,
                    "ascending": options.get("ascending", "no") == "yes",
                    "limit": min(int(options.get("limit", 100)), 300),
                    "offset": 0,
                }
            except ValueError:
                return _refused("begin and end are unix seconds; limit a whole number")
        chosen = [
            e
            for e in events
            if e["timestamp"] >= state["begin"]
            and (state["end"] is None or e["timestamp"] <= state["end"])
        ]
        chosen.sort(key=lambda e: e["timestamp"], reverse=not state["ascending"])
        page = chosen[state["offset"] : state["offset"] + state["limit"]]
        following = {**state, "offset": state["offset"] + len(page)}
        token = base64.urlsafe_b64encode(json.dumps(following).encode()).decode()
        domain = found.group("domain")
        return Answer.json(
            200,
            {
                "items": page,
                "paging": {
                    "next": f"{base_url}/v3/{domain}/events/{token}",
                    "first": f"{base_url}/v3/{domain}/events",
                },
            },
        )

    def throttled(self, retry_after: int) -> Answer:
        return Answer.json(429, {"message": "Too many requests; slow down"})

    def event(self, copy: SentCopy, index: int, at: datetime) -> dict[str, Any]:
        step = copy.steps[index]
        domain = copy.recipient.rpartition("@")[2]
        return {
            "id": stable_token(copy.message_id, copy.recipient, index),
            "timestamp": at.timestamp(),
            **_EVENTS[step.kind](step),
            "recipient": copy.recipient,
            "recipient-domain": domain,
            "tags": list(copy.tags),
            "campaigns": [],
            "user-variables": dict(copy.variables),
            "envelope": {"transport": "smtp", "sender": copy.sender, "targets": copy.recipient},
            "message": {
                "headers": {
                    "to": ", ".join(copy.destination),
                    "message-id": copy.message_id,
                    "from": copy.sender,
                    "subject": copy.subject,
                },
                "attachments": [],
            },
        }

    def postings(self, events: Sequence[dict[str, Any]]) -> list[Posting]:
        return [
            Posting(self.signer.json_body(event), {"Content-Type": "application/json"})
            for event in events
        ]

    def dsn(self, base_url: str, *, domain: str = "example.com") -> str:
        key = quote(self.api_key or "emulator", safe="")
        return (
            f"mailgun://{key}:{quote(domain, safe='')}@default"
            f"?base_url={quote(base_url, safe=':/')}"
            f"&webhook_key={quote(self.signing_key, safe='')}"
        )

    def adapter(self, base_url: str, **options: Any) -> MailgunAdapter:
        options.setdefault("domain", "example.com")
        return MailgunAdapter(
            self.api_key or "emulator",
            webhook_keys=[self.signing_key],
            base_url=base_url,
            **options,
        )


# --------------------------------------------------------------------------- suppression lists

_LIST_PATH: Final = re.compile(r"/v3/(?P<domain>[^/]+)/(?P<list>bounces|complaints|unsubscribes)")


def handles_api(path: str) -> bool:
    return _LIST_PATH.fullmatch(path) is not None


def answer_api(
    emulator: MailgunEmulator, request: Incoming, now: datetime, base_url: str
) -> Answer:
    """Mailgun's suppression lists: ``GET`` pages of at most 1000 with ``paging`` URLs (the
    emulator's ``next`` carries an offset; an empty page ends the list), ``POST`` a JSON
    array of up to 1000 records."""
    if not emulator._authorized(request.headers.get("authorization", "")):
        return Answer.json(401, {"message": "Invalid private key"})
    found = _LIST_PATH.fullmatch(request.path)
    assert found is not None
    name, lists = found["list"], emulator.suppressions
    if request.method == "GET":
        query = parse_qs(request.query)
        limit = query_int(query, "limit", 100, 1000) or 100
        offset = query_int(query, "offset", 0, 10**9)
        page = lists.page(name, offset, limit)
        if page is None:
            return Answer.json(500, {"message": "Internal error"})
        url = f"{base_url}{request.path}"
        following = f"{url}?{urlencode({'page': 'next', 'limit': limit, 'offset': offset + limit})}"
        paging = {"first": f"{url}?limit={limit}", "last": f"{url}?page=last", "next": following}
        return Answer.json(200, {"items": page, "paging": paging})
    if request.method == "POST":
        try:
            records = json.loads(request.body)
            if not isinstance(records, list) or len(records) > 1000:
                raise ValueError("not a list of at most 1000")
            if not all(isinstance(r, dict) and isinstance(r.get("address"), str) for r in records):
                raise ValueError("a record without an address")
        except ValueError:
            return Answer.json(400, {"message": "a JSON array of up to 1000 records is expected"})
        stamp = now.strftime("%a, %d %b %Y %H:%M:%S UTC")
        lists.add(name, *({"created_at": stamp, **record} for record in records))
        return Answer.json(200, {"message": f"{len(records)} addresses have been added"})
    return Answer.json(405, {"message": "Method not allowed"})
