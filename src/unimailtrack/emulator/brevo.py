"""Brevo, imitated: ``/v3/smtp/email`` (with message versions) in, one webhook per event out.

Requests take the ``api-key`` header; a missing or wrong key is answered 401 ``{"code":
"unauthorized", ...}``, a request Brevo would refuse 400 ``{"code": "invalid_parameter" or
"missing_parameter", "message"}``. A body with ``messageVersions`` (at most 1,000) sends one
copy per version, each with its own headers over the request's; accepted answers ``201`` with
``{"messageId"}`` or ``{"messageIds": [...]}`` in version order. An ``idempotencyKey`` seen
before answers what it answered then, without sending again.

Each step of a copy's scenario becomes Brevo's transactional event (``request``, ``deferred``,
``delivered``, ``hard_bounce``, ``soft_bounce``, ``blocked``, ``spam``, ``unique_opened`` or
``unique_proxy_open`` for a privacy proxy, ``click``, ``unsubscribed``) carrying the copy's
``X-Mailin-custom`` header back. Each is one request with the webhook's bearer token.

The blocked transactional contacts are served as ``GET /v3/smtp/blockedContacts`` is (see
:func:`answer_api`); a send to a blocked contact is accepted and reported ``blocked``, as
Brevo does.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar, Final
from urllib.parse import parse_qs, quote

from unimailtrack.adapters.brevo import BrevoAdapter, BrevoWebhookSigner
from unimailtrack.adapters.brevo.send import CUSTOM_HEADER, MAX_VERSIONS, SEND_PATH
from unimailtrack.adapters.brevo.suppressions import LIST_PATH, PAGE_SIZE
from unimailtrack.emulator._model import (
    Answer,
    Incoming,
    Posting,
    SentCopy,
    SuppressionLists,
    query_int,
    stable_token,
)
from unimailtrack.emulator.scenarios import CLICKED_URL, SCENARIOS, Step, StepKind, scenario_for
from unimailtrack.errors import InvalidAddress
from unimailtrack.model import Address, BounceKind

__all__ = ["BrevoEmulator"]

_SENDING_IP: Final = "185.41.28.109"


def _error(status: int, code: str, message: str) -> Answer:
    return Answer.json(status, {"code": code, "message": message})


def _simple(name: str) -> Callable[[Step], dict[str, Any]]:
    def render(step: Step) -> dict[str, Any]:
        return {"event": name}

    return render


def _with_reason(name: str) -> Callable[[Step], dict[str, Any]]:
    def render(step: Step) -> dict[str, Any]:
        return {"event": name, "reason": str(step.smtp) if step.smtp else name}

    return render


def _bounce(step: Step) -> dict[str, Any]:
    name = "soft_bounce" if step.bounce is BounceKind.SOFT else "hard_bounce"
    return {"event": name, "reason": str(step.smtp)}


def _opened(step: Step) -> dict[str, Any]:
    name = "unique_proxy_open" if step.machine else "unique_opened"
    return {"event": name, "user_agent": step.user_agent, "device_used": "DESKTOP"}


def _click(step: Step) -> dict[str, Any]:
    return {"event": "click", "link": CLICKED_URL, "user_agent": step.user_agent}


_EVENTS: Final[Mapping[StepKind, Callable[[Step], dict[str, Any]]]] = {
    StepKind.QUEUED: _simple("request"),
    StepKind.DEFERRED: _with_reason("deferred"),
    StepKind.DELIVERED: _simple("delivered"),
    StepKind.BOUNCED: _bounce,
    StepKind.DROPPED: _with_reason("blocked"),
    StepKind.COMPLAINED: _simple("spam"),
    StepKind.OPENED: _opened,
    StepKind.CLICKED: _click,
    StepKind.UNSUBSCRIBED: _simple("unsubscribed"),
}
"""What each step of a scenario is called in Brevo's transactional webhooks."""


def _contacts(value: Any) -> list[str] | None:
    if not isinstance(value, list) or not value:
        return None
    found = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("email"), str):
            return None
        try:
            found.append(Address.parse(item["email"]).email)
        except InvalidAddress:
            return None
    return found


def request_problem(payload: Any) -> tuple[str, str] | None:
    """``(code, message)`` of Brevo's refusal of a send body, or None."""
    if not isinstance(payload, dict):
        return "bad_request", "The body is not a JSON object"
    sender = payload.get("sender")
    if not isinstance(sender, dict) or _contacts([sender]) is None:
        return "missing_parameter", "sender is missing or invalid"
    if not payload.get("subject"):
        return "missing_parameter", "subject is missing"
    if not (payload.get("htmlContent") or payload.get("textContent")):
        return "missing_parameter", "htmlContent or textContent is missing"
    versions = payload.get("messageVersions")
    if versions is None:
        if _contacts(payload.get("to")) is None:
            return "missing_parameter", "to is missing or invalid"
        return None
    if not isinstance(versions, list) or not 1 <= len(versions) <= MAX_VERSIONS:
        return "invalid_parameter", f"messageVersions holds 1 to {MAX_VERSIONS} versions"
    for version in versions:
        if not isinstance(version, dict) or _contacts(version.get("to")) is None:
            return "invalid_parameter", "messageVersions.to is missing or invalid"
    return None


class BrevoEmulator:
    """Brevo's transactional e-mail API and webhooks. ``api_key``: the only key accepted (any
    non-empty key when None); ``webhook_secret``: the bearer token its webhooks carry."""

    name: ClassVar[str] = "brevo"

    def __init__(self, *, api_key: str | None = None, webhook_secret: str | None = None) -> None:
        self.api_key = api_key
        self.signer = BrevoWebhookSigner(webhook_secret)
        self._seen: dict[str, Answer] = {}
        self._lock = threading.Lock()
        self.suppressions = SuppressionLists()
        """``contacts``: the blocked transactional contacts in Brevo's shape (``email``,
        ``senderEmail``, ``reason`` with ``code`` and ``message``, ``blockedAt``), oldest
        first."""

    @property
    def webhook_secret(self) -> str:
        return self.signer.secret

    def handles(self, path: str) -> bool:
        return path == SEND_PATH

    def refusal(self, request: Incoming) -> Answer | None:
        """Brevo's 401 for a missing or wrong API key, else None."""
        key = request.headers.get("api-key", "")
        if not key or (self.api_key is not None and not secrets.compare_digest(key, self.api_key)):
            return _error(401, "unauthorized", "Key not found")
        return None

    def accept(self, request: Incoming, now: datetime) -> tuple[Answer, list[SentCopy]]:
        refused = self.refusal(request)
        if refused is not None:
            return refused, []
        try:
            payload = json.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            return _error(400, "bad_request", "The body is not JSON"), []
        problem = request_problem(payload)
        if problem is not None:
            return _error(400, *problem), []
        headers = payload.get("headers") if isinstance(payload.get("headers"), dict) else {}
        idempotency = headers.get("idempotencyKey")
        if isinstance(idempotency, str):
            with self._lock:
                seen = self._seen.get(idempotency)
            if seen is not None:
                return seen, []
        versions = payload.get("messageVersions") or [{"to": payload["to"]}]
        blocked = {str(c.get("email", "")).lower() for c in self.suppressions.records("contacts")}
        copies, ids = [], []
        for index, version in enumerate(versions):
            digest = hashlib.sha256(f"{now.isoformat()}{index}{secrets.token_hex(4)}".encode())
            message_id = (
                f"<{now:%Y%m%d%H%M}.{int(digest.hexdigest()[:11], 16)}@smtp-relay.mailin.fr>"
            )
            ids.append(message_id)
            merged = {**headers, **(version.get("headers") or {})}
            custom = merged.get(CUSTOM_HEADER)
            for recipient in _contacts(version["to"]) or []:
                copies.append(
                    SentCopy(
                        provider=self.name,
                        recipient=recipient,
                        message_id=message_id,
                        scenario=SCENARIOS["dropped"]
                        if recipient in blocked
                        else scenario_for(recipient),
                        sender=payload["sender"]["email"],
                        subject=str(version.get("subject") or payload["subject"]),
                        accepted_at=now,
                        tags=tuple(t for t in payload.get("tags") or () if isinstance(t, str)),
                        variables={CUSTOM_HEADER: custom} if isinstance(custom, str) else {},
                        destination=(recipient,),
                        # Tracking is an account setting at Brevo: on for the emulator's.
                        opens=True,
                        clicks=True,
                    )
                )
        body = {"messageIds": ids} if "messageVersions" in payload else {"messageId": ids[0]}
        answer = Answer.json(201, body)
        if isinstance(idempotency, str):
            with self._lock:
                self._seen[idempotency] = answer
        return answer, copies

    def throttled(self, retry_after: int) -> Answer:
        answer = _error(429, "too_many_requests", "The expected rate limit is exceeded.")
        headers = {
            **answer.headers,
            "x-sib-ratelimit-remaining": "0",
            "x-sib-ratelimit-reset": str(retry_after),
        }
        return Answer(answer.status, answer.body, headers)

    def event(self, copy: SentCopy, index: int, at: datetime) -> dict[str, Any]:
        step = copy.steps[index]
        # Two steps are never reported at the same instant, even with no delay between them.
        at += timedelta(milliseconds=index)
        seconds = int(at.timestamp())
        event: dict[str, Any] = {
            **_EVENTS[step.kind](step),
            "email": copy.recipient,
            "id": 26224,
            "date": at.strftime("%Y-%m-%d %H:%M:%S"),
            "ts": seconds,
            "message-id": copy.message_id,
            "ts_event": seconds,
            "ts_epoch": int(at.timestamp() * 1000),
            "subject": copy.subject,
            "sending_ip": _SENDING_IP,
            "tags": list(copy.tags),
            "mirror_link": f"https://app-smtp.brevo.com/log/preview/{stable_token(copy.message_id)}",
        }
        event.update(copy.variables)
        return event

    def postings(self, events: Sequence[dict[str, Any]]) -> list[Posting]:
        postings = []
        for event in events:
            body = json.dumps(event, separators=(",", ":")).encode()
            headers = {"Content-Type": "application/json", **self.signer.sign(body)}
            postings.append(Posting(body, headers))
        return postings

    def dsn(self, base_url: str) -> str:
        key = quote(self.api_key or "xkeysib-emulator", safe="")
        return (
            f"brevo://{key}@default?base_url={quote(base_url, safe=':/')}"
            f"&webhook_secret={quote(self.webhook_secret, safe='')}"
        )

    def adapter(self, base_url: str, **options: Any) -> BrevoAdapter:
        return BrevoAdapter(
            self.api_key or "xkeysib-emulator",
            webhook_secrets=[self.webhook_secret],
            base_url=base_url,
            **options,
        )


# --------------------------------------------------------------------------- blocked contacts


def handles_api(path: str) -> bool:
    return path == LIST_PATH


def answer_api(emulator: BrevoEmulator, request: Incoming, now: datetime) -> Answer:
    """``GET /v3/smtp/blockedContacts``: ``limit`` (at most 100, 50 by default) contacts from
    ``offset``, oldest first with ``sort=asc`` (newest first otherwise), with the ``count`` of
    them all. Brevo offers no request that adds one."""
    refused = emulator.refusal(request)
    if refused is not None:
        return refused
    if request.method != "GET":
        return _error(
            405, "method_not_allowed", f"{request.method} Method is not allowed on this path"
        )
    query = parse_qs(request.query)
    limit = query_int(query, "limit", 50, 10**9)
    if limit > PAGE_SIZE:
        return _error(400, "out_of_range", f"limit must be at most {PAGE_SIZE}")
    offset = query_int(query, "offset", 0, 10**9)
    size = limit or 50
    lists = emulator.suppressions
    total = len(lists.records("contacts"))
    if query.get("sort", ["desc"])[0] == "asc":
        page = lists.page("contacts", offset, size)
    else:
        stop = max(0, total - offset)
        start = max(0, stop - size)
        page = lists.page("contacts", start, stop - start)
        if page is not None:
            page.reverse()
    if page is None:
        return _error(500, "internal_error", "Internal server error")
    return Answer.json(200, {"contacts": page, "count": total})
