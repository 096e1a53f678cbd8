"""The in-memory adapter: a provider that lives in the process, for tests and demos.

It sends through the same HTTP seam as the real adapters (an in-process ``httpx.MockTransport``
plays the provider), keeps every accepted copy in an outbox, and can be told what happened to
each one. It then writes those outcomes as webhook bodies in a format of its own, signed with
HMAC-SHA256, which its ``verify_webhook`` and ``parse_webhook`` read back: a real round trip.

Its event vocabulary is the canonical one, so a memory event ``{"event": "bounced", ...}``
means exactly ``EventType.BOUNCED``.

    memory = MemoryAdapter()
    result = Mailer(memory).send(email)
    tid = result.recipients[0].tracking_id
    body, headers = memory.webhook(memory.scenario(tid, "deferred-then-delivered"))
    events = memory.unwrap(body, headers)
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import secrets
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Self

import httpx

from unimailtrack import _constants as C
from unimailtrack._http import HttpxAsyncTransport, HttpxTransport
from unimailtrack._json import load_untrusted
from unimailtrack.adapters.base import (
    Adapter,
    Call,
    Recipient,
    error_for_status,
    event_digest,
    is_fresh,
    lower_headers,
    signature_failure,
    unknown_event,
)
from unimailtrack.config import Dsn
from unimailtrack.errors import ConfigurationError, PayloadError, SignatureCause
from unimailtrack.model import (
    BounceKind,
    DeliveryStatus,
    Email,
    EmailEvent,
    EventType,
    RecipientResult,
)

__all__ = ["SCENARIOS", "MemoryAdapter", "OutboxMessage"]

SIGNATURE_HEADER = "x-unimailtrack-signature"
_BASE_URL = "https://memory.invalid/v1/messages"


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """One copy the memory provider accepted."""

    email: Email
    recipient: str
    tracking_id: str
    message_id: str
    accepted_at: datetime


def _step(
    event: EventType, offset_seconds: float, **fields: Any
) -> tuple[EventType, float, dict[str, Any]]:
    return (event, offset_seconds, fields)


SCENARIOS: Mapping[str, tuple[tuple[EventType, float, dict[str, Any]], ...]] = {
    "delivered": (
        _step(EventType.PROCESSED, 1),
        _step(EventType.DELIVERED, 2, reason="250 2.0.0 OK", smtp_status="2.0.0"),
    ),
    "bounce": (
        _step(EventType.PROCESSED, 1),
        _step(
            EventType.BOUNCED,
            3,
            reason="550 5.1.1 The email account does not exist",
            bounce="hard",
            smtp_status="5.1.1",
        ),
    ),
    "soft-bounce": (
        _step(EventType.PROCESSED, 1),
        _step(
            EventType.BOUNCED,
            3,
            reason="552 5.2.2 Mailbox full",
            bounce="soft",
            smtp_status="5.2.2",
        ),
    ),
    "blocked": (
        _step(EventType.PROCESSED, 1),
        _step(
            EventType.BOUNCED,
            3,
            reason="554 5.7.1 Service unavailable; client host blocked",
            bounce="block",
            smtp_status="5.7.1",
        ),
    ),
    "deferred": (
        _step(EventType.PROCESSED, 1),
        _step(
            EventType.DEFERRED,
            60,
            reason="451 4.7.1 Try again later",
            smtp_status="4.7.1",
            attempt=1,
        ),
    ),
    "deferred-then-delivered": (
        _step(EventType.PROCESSED, 1),
        _step(
            EventType.DEFERRED,
            60,
            reason="451 4.7.1 Try again later",
            smtp_status="4.7.1",
            attempt=1,
        ),
        _step(EventType.DELIVERED, 600, reason="250 2.0.0 OK", smtp_status="2.0.0", attempt=2),
    ),
    "dropped": (_step(EventType.DROPPED, 1, reason="Bounced Address"),),
    "complaint": (
        _step(EventType.PROCESSED, 1),
        _step(EventType.DELIVERED, 2, reason="250 2.0.0 OK", smtp_status="2.0.0"),
        _step(EventType.COMPLAINED, 3600, reason="abuse"),
    ),
    "opens-and-clicks": (
        _step(EventType.PROCESSED, 1),
        _step(EventType.DELIVERED, 2, reason="250 2.0.0 OK", smtp_status="2.0.0"),
        _step(EventType.OPENED, 300, user_agent="Mozilla/5.0", machine=False),
        _step(EventType.CLICKED, 320, url="https://example.com/rsvp", user_agent="Mozilla/5.0"),
    ),
    "machine-open": (
        _step(EventType.PROCESSED, 1),
        _step(EventType.DELIVERED, 2, reason="250 2.0.0 OK", smtp_status="2.0.0"),
        _step(EventType.OPENED, 5, user_agent="Mozilla/5.0", machine=True),
    ),
    "unsubscribe": (
        _step(EventType.PROCESSED, 1),
        _step(EventType.DELIVERED, 2, reason="250 2.0.0 OK", smtp_status="2.0.0"),
        _step(EventType.UNSUBSCRIBED, 900),
    ),
}
"""Named outcomes ``MemoryAdapter.scenario`` plays out, each a list of (event, seconds after
the send, fields)."""


class MemoryAdapter(Adapter):
    """An in-process provider (contract name ``"memory"``).

    ``webhook_secret`` signs and verifies its webhook bodies (a random one when omitted, so
    the adapter always verifies its own). ``fail_next(status)`` makes the next requests fail
    with an HTTP status, to exercise retries and failover.
    """

    name: ClassVar[str] = "memory"
    dsn_options: ClassVar[frozenset[str]] = frozenset({"webhook_secret", "tolerance"})

    def __init__(
        self,
        *,
        webhook_secret: str | None = None,
        tolerance: timedelta = C.DEFAULT_WEBHOOK_TOLERANCE,
        **kwargs: Any,
    ) -> None:
        client = httpx.Client(transport=httpx.MockTransport(self._provider))
        aclient = httpx.AsyncClient(transport=httpx.MockTransport(self._provider))
        kwargs.setdefault("transport", HttpxTransport(client))
        kwargs.setdefault("async_transport", HttpxAsyncTransport(aclient))
        super().__init__(**kwargs)
        self.webhook_secret = webhook_secret or secrets.token_hex(32)
        self.tolerance = tolerance
        self.outbox: list[OutboxMessage] = []
        self._failures: list[int] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    @classmethod
    def from_dsn(cls, dsn: Dsn, *, env: Mapping[str, str] | None = None) -> Self:
        opts = cls.common_options(dsn)
        secret = dsn.option("webhook_secret") or (env or {}).get(
            "UNIMAILTRACK_MEMORY_WEBHOOK_SECRET"
        )
        if "tolerance" in dsn.options:
            opts["tolerance"] = timedelta(seconds=dsn.float_option("tolerance"))
        return cls(webhook_secret=secret, **opts)

    # ------------------------------------------------------------------ the fake provider

    def fail_next(self, status: int = 503, *, times: int = 1) -> None:
        """Make the next ``times`` requests fail with HTTP ``status``."""
        with self._lock:
            self._failures.extend([status] * times)

    def _provider(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            failure = self._failures.pop(0) if self._failures else None
        if failure is not None:
            return httpx.Response(failure, json={"message": "simulated failure"})
        payload = json.loads(request.content)
        email = Email.model_validate(payload["email"])
        now = datetime.now(UTC)
        accepted = []
        with self._lock:
            for item in payload["recipients"]:
                message_id = f"mem-{next(self._ids):08d}"
                self.outbox.append(
                    OutboxMessage(email, item["address"], item["tracking_id"], message_id, now)
                )
                accepted.append({"tracking_id": item["tracking_id"], "message_id": message_id})
        return httpx.Response(202, json={"accepted": accepted})

    # ------------------------------------------------------------------ sending

    def build_calls(self, email: Email, recipients: Sequence[Recipient]) -> list[Call]:
        body = {
            "email": email.model_dump(mode="json"),
            "recipients": [
                {"address": r.address.email, "tracking_id": r.tracking_id} for r in recipients
            ],
        }
        request = httpx.Request("POST", _BASE_URL, json=body)
        by_id = {r.tracking_id: r for r in recipients}

        def interpret(response: httpx.Response) -> list[RecipientResult]:
            if response.status_code != 202:
                raise error_for_status(self.name, response, response.json().get("message", ""))
            return [
                RecipientResult(
                    recipient=by_id[item["tracking_id"]].address.email,
                    tracking_id=item["tracking_id"],
                    message_id=item["message_id"],
                    status=DeliveryStatus.ACCEPTED,
                    provider=self.name,
                )
                for item in response.json()["accepted"]
            ]

        return [Call(request, tuple(recipients), interpret)]

    # ------------------------------------------------------------------ producing events

    def find(self, tracking_id: str) -> OutboxMessage:
        """The outbox entry of a tracking id (``KeyError`` when it was never sent)."""
        for message in self.outbox:
            if message.tracking_id == tracking_id:
                return message
        raise KeyError(tracking_id)

    def event(
        self,
        tracking_id: str,
        event: EventType | str,
        *,
        at: datetime | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """One raw memory event about a sent copy (fields: reason, bounce, smtp_status,
        attempt, url, user_agent, machine)."""
        message = self.find(tracking_id)
        when = at or datetime.now(UTC)
        raw: dict[str, Any] = {
            "event": EventType(event).value,
            "id": secrets.token_hex(8),
            "recipient": message.recipient,
            "tracking_id": tracking_id,
            "message_id": message.message_id,
            "timestamp": when.timestamp(),
            "tags": list(message.email.tags),
            "metadata": dict(message.email.metadata),
        }
        raw.update({k: v for k, v in fields.items() if v is not None})
        return raw

    def scenario(self, tracking_id: str, name: str) -> list[dict[str, Any]]:
        """The raw events of a named scenario (see ``SCENARIOS``) for a sent copy, timed from
        the moment it was accepted."""
        try:
            steps = SCENARIOS[name]
        except KeyError:
            raise ConfigurationError(
                f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}"
            ) from None
        start = self.find(tracking_id).accepted_at
        return [
            self.event(tracking_id, kind, at=start + timedelta(seconds=offset), **fields)
            for kind, offset, fields in steps
        ]

    def webhook(
        self, events: Sequence[Mapping[str, Any]], *, timestamp: datetime | None = None
    ) -> tuple[bytes, dict[str, str]]:
        """A signed webhook request (body, headers) carrying ``events``."""
        body = json.dumps({"events": list(events)}, separators=(",", ":")).encode()
        ts = str(int((timestamp or datetime.now(UTC)).timestamp()))
        return body, {
            "Content-Type": "application/json",
            "X-Unimailtrack-Signature": f"t={ts},v1={self._sign(ts, body)}",
        }

    def _sign(self, timestamp: str, body: bytes) -> str:
        mac = hmac.new(
            self.webhook_secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256
        )
        return mac.hexdigest()

    # ------------------------------------------------------------------ webhooks

    def verify_webhook(
        self, body: bytes, headers: Mapping[str, str], *, now: datetime | None = None
    ) -> None:
        if self._verification_disabled():
            return
        header = lower_headers(headers).get(SIGNATURE_HEADER)
        if not header:
            raise signature_failure(
                self.name, "no X-Unimailtrack-Signature header", SignatureCause.MISSING_HEADER
            )
        parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
        timestamp, signature = parts.get("t", ""), parts.get("v1", "")
        try:
            sent_at = float(timestamp)
        except ValueError:
            raise signature_failure(
                self.name, "timestamp is not a number", SignatureCause.MALFORMED
            ) from None
        if not is_fresh(sent_at, now, self.tolerance):
            raise signature_failure(
                self.name, "timestamp outside the tolerance", SignatureCause.STALE
            )
        if not hmac.compare_digest(self._sign(timestamp, body), signature):
            raise signature_failure(
                self.name, "signature does not match", SignatureCause.BAD_SIGNATURE
            )

    @classmethod
    def parse_webhook_body(
        cls, body: bytes, headers: Mapping[str, str] | None = None
    ) -> list[EmailEvent]:
        try:
            payload = load_untrusted(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise PayloadError(
                f"memory webhook body is not JSON: {exc}", provider=cls.name
            ) from None
        if not isinstance(payload, dict) or not isinstance(payload.get("events"), list):
            raise PayloadError('memory webhook body must be {"events": [...]}', provider=cls.name)
        return [_parse_event(item) for item in payload["events"]]


def _parse_event(item: Any) -> EmailEvent:
    if not isinstance(item, dict):
        return unknown_event("memory", item, "event is not an object")
    try:
        kind = EventType(item["event"])
        bounce = item.get("bounce")
        return EmailEvent(
            provider="memory",
            type=kind,
            provider_event=item["event"],
            recipient=str(item["recipient"]),
            event_id=str(item.get("id") or event_digest(json.dumps(item, sort_keys=True))),
            timestamp=datetime.fromtimestamp(float(item["timestamp"]), UTC),
            message_id=item.get("message_id"),
            tracking_id=item.get("tracking_id"),
            reason=item.get("reason"),
            bounce=BounceKind(bounce) if bounce else None,
            smtp_status=item.get("smtp_status"),
            attempt=int(item["attempt"]) if item.get("attempt") is not None else None,
            url=item.get("url"),
            user_agent=item.get("user_agent"),
            machine=item.get("machine"),
            tags=[str(t) for t in item.get("tags", [])],
            metadata={str(k): str(v) for k, v in item.get("metadata", {}).items()},
            raw=item,
        )
    except (KeyError, ValueError, TypeError, AttributeError, OverflowError, OSError) as exc:
        return unknown_event(
            "memory",
            item,
            f"cannot map memory event: {exc!r}",
            provider_event=str(item.get("event", "")),
            recipient=str(item.get("recipient", "")),
        )
