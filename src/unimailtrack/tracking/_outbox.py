"""The outbox of outbound webhooks, in the store: written in the transaction that makes the
change, so that a committed change is always told and a rolled-back one never is.

A row is one message for one endpoint, unique by (endpoint, message id): the message id is a
digest of what the change is, so a program retried whole, or a change folded again, queues
nothing twice. Deliveries claim due rows under a lease (so that two dispatchers, or one that
died mid-delivery, never hold a row forever), and settle each one as delivered, to retry at a
later time, or failed (given up after the endpoint's ``max_age``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from unimailtrack.tracking._alerts import Alert
from unimailtrack.tracking._records import StateChange, from_micros, optional_time
from unimailtrack.tracking._store import Emit, Program, Query, Step, Write

__all__ = [
    "OutboxEntry",
    "WebhookEndpoint",
    "change_message",
    "claim",
    "enqueue",
    "entries",
    "replay",
    "settle",
    "with_outbox",
]

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    """An application endpoint told of changes: ``url``, its ``whsec_`` ``secrets`` (every
    one signs each message, so that the receiver may rotate), and the ``events`` it wants
    (exact types such as ``message.delivered`` or ``alert.opened``, or prefixes ending in
    ``*`` such as ``message.*``; empty means every type). ``name`` keys its outbox rows.
    Deliveries are retried with exponential backoff from ``first_delay`` up to
    ``max_delay`` apart, for at most ``max_age`` after the change; ``timeout`` bounds one
    attempt."""

    name: str
    url: str
    secrets: tuple[str, ...]
    events: tuple[str, ...] = ()
    first_delay: timedelta = timedelta(seconds=5)
    max_delay: timedelta = timedelta(hours=1)
    max_age: timedelta = timedelta(days=3)
    timeout: float = 10.0

    def wants(self, event_type: str) -> bool:
        if not self.events:
            return True
        return any(
            event_type.startswith(pattern[:-1]) if pattern.endswith("*") else event_type == pattern
            for pattern in self.events
        )

    def delay(self, attempts: int) -> timedelta:
        """How long to wait after the ``attempts``-th failed attempt."""
        return min(self.max_delay, self.first_delay * (1 << max(0, min(attempts - 1, 40))))


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One outbox row, as ``unimailtrack outbox`` lists it."""

    id: int
    endpoint: str
    msg_id: str
    event_type: str
    payload: dict[str, Any] = field(repr=False)
    created_at: datetime
    next_attempt_at: datetime
    attempts: int
    status: str
    last_error: str | None
    delivered_at: datetime | None


# --------------------------------------------------------------------------- messages


def _digest(*parts: object) -> str:
    text = json.dumps(parts, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def change_message(change: StateChange | Alert) -> tuple[str, str, dict[str, Any]]:
    """The message id, event type and JSON payload that tell ``change``."""
    if isinstance(change, Alert):
        event = "alert.closed" if change.closed_at is not None else "alert.opened"
        if event == "alert.opened" and change.sequence > 1:
            event = "alert.updated"
        msg_id = f"alert_{change.id}_{change.sequence}_{event.rpartition('.')[2]}"
        data: dict[str, Any] = {
            "id": change.id,
            "kind": change.kind,
            "level": change.level,
            "scope": change.scope,
            "provider": change.provider,
            "stream": change.stream,
            "rate": change.rate,
            "threshold": change.threshold,
            "window_seconds": change.window.total_seconds(),
            "count": change.count,
            "volume": change.volume,
            "check": change.check,
            "reply": change.reply,
            "opened_at": change.opened_at.isoformat(),
            "closed_at": None if change.closed_at is None else change.closed_at.isoformat(),
            "sequence": change.sequence,
        }
        at = change.updated_at or change.opened_at
    else:
        event = f"message.{change.status.value}"
        msg_id = "msg_" + _digest(change.tracking_id, change.event_id, change.status.value)
        data = {
            "tracking_id": change.tracking_id,
            "recipient": change.recipient,
            "bulk_id": change.bulk_id,
            "previous": None if change.previous is None else change.previous.value,
            "status": change.status.value,
            "reason": change.reason,
            "event_id": change.event_id,
        }
        at = change.timestamp
    return msg_id, event, {"type": event, "timestamp": at.isoformat(), "data": data}


_INSERT = (
    "INSERT INTO outbox (endpoint, msg_id, event_type, payload, created_at_us, "
    "next_attempt_us, attempts, status)"
)
_NEW_ONLY = "ON CONFLICT (endpoint, msg_id) DO NOTHING"


def enqueue(
    changes: Iterable[StateChange | Alert], endpoints: Sequence[WebhookEndpoint], now_us: int
) -> Program[None]:
    """Queue ``changes`` for every endpoint that wants them (nothing twice)."""
    rows: dict[tuple[str, str], tuple[Any, ...]] = {}
    for change in changes:
        msg_id, event, payload = change_message(change)
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        for endpoint in endpoints:
            if endpoint.wants(event):
                key = (endpoint.name, msg_id)
                rows[key] = (endpoint.name, msg_id, event, body, now_us, now_us, 0, PENDING)
    if rows:
        yield Write(_INSERT, [rows[key] for key in sorted(rows)], _NEW_ONLY)


def with_outbox(
    program: Program[Any], endpoints: Sequence[WebhookEndpoint], now_us: int
) -> Program[Any]:
    """``program``, with the changes it emits queued in the same transaction."""
    try:
        step: Step = next(program)
        while True:
            reply = yield step
            if isinstance(step, Emit) and step.changes:
                yield from enqueue(step.changes, endpoints, now_us)
            step = program.send(reply)
    except StopIteration as done:
        return done.value


# --------------------------------------------------------------------------- delivering

_COLUMNS = (
    "id, endpoint, msg_id, event_type, payload, created_at_us, next_attempt_us, attempts, "
    "status, last_error, delivered_at_us"
)


def _entry(row: Sequence[Any]) -> OutboxEntry:
    return OutboxEntry(
        id=int(row[0]),
        endpoint=row[1],
        msg_id=row[2],
        event_type=row[3],
        payload=json.loads(row[4]),
        created_at=from_micros(row[5]),
        next_attempt_at=from_micros(row[6]),
        attempts=int(row[7]),
        status=row[8],
        last_error=row[9],
        delivered_at=optional_time(row[10]),
    )


def claim(now_us: int, lease_until_us: int, limit: int) -> Program[list[OutboxEntry]]:
    """Lease up to ``limit`` due rows, oldest first; a row leased by another dispatcher is
    skipped (the lease is checked again on the locked row)."""
    free = "status = 'pending' AND next_attempt_us <= :now AND " + (
        "(lease_until_us IS NULL OR lease_until_us <= :now)"
    )
    rows = yield Query(
        f"UPDATE outbox SET lease_until_us = :lease WHERE id IN (SELECT id FROM outbox "
        f"WHERE {free} ORDER BY id LIMIT :limit) AND {free} RETURNING {_COLUMNS}",
        {"now": now_us, "lease": lease_until_us, "limit": limit},
    )
    return sorted((_entry(row) for row in rows), key=lambda e: e.id)


def settle(
    entry_id: int, status: str, attempts: int, next_us: int, error: str | None, now_us: int
) -> Program[None]:
    """Record an attempt's outcome and release the lease."""
    yield Query(
        "UPDATE outbox SET status = :status, attempts = :attempts, next_attempt_us = :next, "
        "last_error = :error, lease_until_us = NULL, delivered_at_us = CASE WHEN "
        ":status = 'delivered' THEN :now ELSE delivered_at_us END WHERE id = :id",
        {
            "status": status,
            "attempts": attempts,
            "next": next_us,
            "error": None if error is None else error[:500],
            "now": now_us,
            "id": entry_id,
        },
    )


def entries(statuses: Sequence[str], limit: int) -> Program[list[OutboxEntry]]:
    names = [f"s{i}" for i in range(len(statuses))]
    params: dict[str, Any] = dict(zip(names, statuses, strict=True))
    params["limit"] = limit
    rows = yield Query(
        f"SELECT {_COLUMNS} FROM outbox WHERE status IN ({', '.join(':' + n for n in names)}) "
        "ORDER BY id LIMIT :limit",
        params,
    )
    return [_entry(row) for row in rows]


def replay(ids: Sequence[int] | None, now_us: int) -> Program[int]:
    """Queue failed rows (``ids``, or all of them) again, as if new; how many."""
    where, params = "status = 'failed'", {"now": now_us}
    if ids is not None:
        if not ids:
            return 0
        names = [f"i{n}" for n in range(len(ids))]
        params.update(zip(names, ids, strict=True))
        where += f" AND id IN ({', '.join(':' + n for n in names)})"
    rows = yield Query(
        "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_us = :now, "
        f"created_at_us = :now, lease_until_us = NULL WHERE {where} RETURNING id",
        params,
    )
    return len(rows)
