"""Resend, imitated: ``/emails`` and ``/emails/batch`` in, Standard Webhooks (svix) posts out.

Requests take a bearer API key. A request Resend would refuse is answered with Resend's error
shape, ``{"statusCode", "name", "message"}``: 401 ``missing_api_key``, 403 ``invalid_api_key``,
422 ``validation_error`` or ``missing_required_field`` naming the field in backticks; the batch
endpoint refuses more than 100 e-mails and, as Resend documents, attachments and
``scheduled_at``. An ``Idempotency-Key`` seen before answers what it answered then (no new
copies), or 409 ``invalid_idempotent_request`` when the body differs. Accepted: ``{"id"}`` or
``{"data": [{"id"}, ...]}``.

Each step of a copy's scenario becomes Resend's ``email.*`` event, its ``data.tags`` the tags
the send carried; Resend has no unsubscribe event for a send (an unsubscribe changes the
contact), so that step is posted as ``contact.updated``. Each event is one request signed with
a ``whsec_`` secret under ``svix-*`` headers; a duplicate keeps its ``svix-id``.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar, Final
from urllib.parse import quote

from unimailtrack.adapters.resend import ResendAdapter, ResendWebhookSigner
from unimailtrack.adapters.resend.send import MAX_BATCH
from unimailtrack.emulator._model import Answer, Incoming, Posting, SentCopy, iso_time, stable_token
from unimailtrack.emulator.scenarios import CLICKED_URL, Step, StepKind, scenario_for
from unimailtrack.errors import InvalidAddress
from unimailtrack.model import Address, BounceKind

__all__ = ["ResendEmulator"]

_SINGLE: Final = "/emails"
_BATCH: Final = "/emails/batch"
_READER_IP: Final = "198.51.100.7"
_MAX_TO: Final = 50

_BOUNCES: Final[Mapping[BounceKind | None, tuple[str, str]]] = {
    BounceKind.HARD: ("Permanent", "General"),
    BounceKind.SOFT: ("Transient", "MailboxFull"),
    BounceKind.BLOCK: ("Permanent", "ContentRejected"),
}


def _error(status: int, name: str, message: str, **headers: str) -> Answer:
    return Answer.json(status, {"statusCode": status, "name": name, "message": message}, headers)


def _sent(step: Step, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "email.sent", data


def _delayed(step: Step, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "email.delivery_delayed", data


def _delivered(step: Step, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "email.delivered", data


def _bounced(step: Step, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    kind, subtype = _BOUNCES.get(step.bounce, ("Undetermined", "Undetermined"))
    bounce = {"type": kind, "subType": subtype, "message": str(step.smtp)}
    return "email.bounced", {**data, "bounce": bounce}


def _suppressed(step: Step, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    suppressed = {
        "type": "OnAccountSuppressionList",
        "message": "Resend has suppressed sending to this address because it has previously "
        "bounced",
    }
    return "email.suppressed", {**data, "suppressed": suppressed}


def _complained(step: Step, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "email.complained", data


def _opened(step: Step, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "email.opened", data


def _clicked(step: Step, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    click = {
        "ipAddress": _READER_IP,
        "link": CLICKED_URL,
        "timestamp": data["created_at"],
        "userAgent": step.user_agent,
    }
    return "email.clicked", {**data, "click": click}


def _unsubscribed(step: Step, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    contact = {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, data["to"][0])),
        "audience_id": "00000000-0000-4000-8000-000000000000",
        "segment_ids": [],
        "created_at": data["created_at"],
        "updated_at": data["created_at"],
        "email": data["to"][0],
        "first_name": None,
        "last_name": None,
        "unsubscribed": True,
    }
    return "contact.updated", contact


_EVENTS: Final[Mapping[StepKind, Callable[[Step, dict[str, Any]], tuple[str, dict[str, Any]]]]] = {
    StepKind.QUEUED: _sent,
    StepKind.DEFERRED: _delayed,
    StepKind.DELIVERED: _delivered,
    StepKind.BOUNCED: _bounced,
    StepKind.DROPPED: _suppressed,
    StepKind.COMPLAINED: _complained,
    StepKind.OPENED: _opened,
    StepKind.CLICKED: _clicked,
    StepKind.UNSUBSCRIBED: _unsubscribed,
}
"""What each step of a scenario is called in Resend's webhooks."""


def _addresses(value: Any) -> list[str] | None:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        return None
    found = []
    for item in items:
        if not isinstance(item, str):
            return None
        try:
            found.append(Address.parse(item).email)
        except InvalidAddress:
            return None
    return found


def email_problem(item: Any, *, batch: bool) -> tuple[str, str] | None:
    """``(name, message)`` of Resend's refusal of one e-mail, or None when it would take it."""
    if not isinstance(item, dict):
        return "validation_error", "The email must be an object."
    for field in ("from", "to", "subject"):
        if not item.get(field):
            return "missing_required_field", f"Missing `{field}` field."
    if _addresses(item["from"]) is None:
        return "invalid_from_address", "Invalid `from` field."
    recipients = _addresses(item["to"])
    if not recipients or len(recipients) > _MAX_TO:
        return "validation_error", f"Invalid `to` field. Give 1 to {_MAX_TO} valid addresses."
    if not (item.get("html") or item.get("text")):
        return "validation_error", "Missing `html` or `text` field."
    if batch and ("attachments" in item or "scheduled_at" in item):
        return "validation_error", "The `attachments` and `scheduled_at` fields are not supported."
    tags = item.get("tags", [])
    if not isinstance(tags, list) or not all(
        isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("value"), str)
        for t in tags
    ):
        return "validation_error", "Invalid `tags` field."
    return None


class ResendEmulator:
    """Resend's sending API and webhooks. ``api_key``: the only key accepted (any non-empty
    key when None); ``secret``: the ``whsec_`` webhook secret (a fresh one when None)."""

    name: ClassVar[str] = "resend"

    def __init__(self, *, api_key: str | None = None, secret: str | None = None) -> None:
        self.api_key = api_key
        self.signer = ResendWebhookSigner(secret)
        self._seen: dict[str, tuple[str, Answer]] = {}
        self._lock = threading.Lock()

    @property
    def secret(self) -> str:
        return self.signer.secret

    def handles(self, path: str) -> bool:
        return path in (_SINGLE, _BATCH)

    def accept(self, request: Incoming, now: datetime) -> tuple[Answer, list[SentCopy]]:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return _error(
                401, "missing_api_key", "Missing API key in the authorization header."
            ), []
        if self.api_key is not None and not secrets.compare_digest(key.strip(), self.api_key):
            return _error(403, "invalid_api_key", "API key is invalid."), []
        idempotency = request.headers.get("idempotency-key")
        digest = hashlib.sha256(request.body).hexdigest()
        if idempotency is not None:
            if not 1 <= len(idempotency) <= 256:
                return _error(400, "invalid_idempotency_key", "The key must be 1-256 chars."), []
            with self._lock:
                seen = self._seen.get(idempotency)
            if seen is not None:
                if seen[0] != digest:
                    return _error(
                        409, "invalid_idempotent_request", "Same idempotency key, other payload."
                    ), []
                return seen[1], []
        answer, copies = self._answer(request, now)
        if idempotency is not None and answer.status == 200:
            with self._lock:
                self._seen[idempotency] = (digest, answer)
        return answer, copies

    def _answer(self, request: Incoming, now: datetime) -> tuple[Answer, list[SentCopy]]:
        try:
            payload = json.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            return _error(422, "validation_error", "The body is not JSON."), []
        batch = request.path == _BATCH
        items = payload if batch else [payload]
        if batch and (not isinstance(payload, list) or not 1 <= len(payload) <= MAX_BATCH):
            return _error(422, "validation_error", f"A batch is 1 to {MAX_BATCH} emails."), []
        for item in items:
            problem = email_problem(item, batch=batch)
            if problem is not None:
                return _error(422, *problem), []
        copies: list[SentCopy] = []
        ids: list[str] = []
        for item in items:
            email_id = str(uuid.uuid4())
            ids.append(email_id)
            copies.extend(self._copies(item, email_id, now))
        body = {"data": [{"id": i} for i in ids]} if batch else {"id": ids[0]}
        return Answer.json(200, body), copies

    def _copies(self, item: dict[str, Any], email_id: str, now: datetime) -> list[SentCopy]:
        tags = {t["name"]: t["value"] for t in item.get("tags", [])}
        recipients = _addresses(item["to"]) or []
        return [
            SentCopy(
                provider=self.name,
                recipient=recipient,
                message_id=email_id,
                scenario=scenario_for(recipient),
                sender=item["from"],
                subject=item["subject"],
                accepted_at=now,
                variables=tags,
                destination=tuple(recipients),
                # Tracking is a setting of the sending domain at Resend: on for the emulator's.
                opens=True,
                clicks=True,
            )
            for recipient in recipients
        ]

    def throttled(self, retry_after: int) -> Answer:
        return _error(
            429,
            "rate_limit_exceeded",
            "Too many requests. You can only make 2 requests per second.",
            **{
                "ratelimit-limit": "2",
                "ratelimit-remaining": "0",
                "ratelimit-reset": str(retry_after),
            },
        )

    def event(self, copy: SentCopy, index: int, at: datetime) -> dict[str, Any]:
        step = copy.steps[index]
        # Two steps are never reported at the same instant, even with no delay between them.
        at += timedelta(milliseconds=index)
        data: dict[str, Any] = {
            "created_at": iso_time(copy.accepted_at),
            "email_id": copy.message_id,
            "from": copy.sender,
            "to": list(copy.destination),
            "subject": copy.subject,
            "tags": dict(copy.variables),
        }
        if step.kind is StepKind.UNSUBSCRIBED:
            data["to"] = [copy.recipient]  # the contact is the recipient's
        kind, data = _EVENTS[step.kind](step, data)
        event = {"type": kind, "created_at": iso_time(at), "data": data}
        event["_svix_id"] = "msg_" + stable_token(copy.message_id, copy.recipient, index)
        return event

    def postings(self, events: Sequence[dict[str, Any]]) -> list[Posting]:
        postings = []
        for event in events:
            content = {k: v for k, v in event.items() if k != "_svix_id"}
            body = json.dumps(content, separators=(",", ":")).encode()
            headers = {"Content-Type": "application/json", "User-Agent": "Svix-Webhooks/1.0"}
            headers.update(self.signer.sign(body, msg_id=event["_svix_id"]))
            postings.append(Posting(body, headers))
        return postings

    def dsn(self, base_url: str) -> str:
        key = quote(self.api_key or "re_emulator", safe="")
        return (
            f"resend://{key}@default?base_url={quote(base_url, safe=':/')}"
            f"&webhook_secret={quote(self.secret, safe='')}"
        )

    def adapter(self, base_url: str, **options: Any) -> ResendAdapter:
        return ResendAdapter(
            self.api_key or "re_emulator",
            webhook_secrets=[self.secret],
            base_url=base_url,
            **options,
        )
