"""Helpers the tracker tests share: a hand-moved clock and an event builder."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

from unimailtrack import BounceKind, EmailEvent, EventType

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


@dataclass
class Clock:
    """A clock the test moves by hand."""

    now: datetime = T0 + timedelta(days=1)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


_ids = count(1)


def event(
    kind: EventType | str,
    tracking_id: str | None = "t1",
    *,
    at: datetime | int = 0,
    recipient: str = "ada@example.com",
    event_id: str | None = None,
    provider: str = "memory",
    message_id: str | None = None,
    bounce: BounceKind | str | None = None,
    reason: str | None = None,
    **fields: Any,
) -> EmailEvent:
    """An event; ``at`` is a datetime or seconds after T0."""
    kind = EventType(kind)
    when = at if isinstance(at, datetime) else T0 + timedelta(seconds=at)
    return EmailEvent(
        provider=provider,
        type=kind,
        provider_event=kind.value,
        recipient=recipient,
        event_id=event_id or f"ev-{next(_ids):06d}",
        timestamp=when,
        message_id=message_id,
        tracking_id=tracking_id,
        bounce=None if bounce is None else BounceKind(bounce),
        reason=reason,
        raw={"event": kind.value, "recipient": recipient},
        **fields,
    )
