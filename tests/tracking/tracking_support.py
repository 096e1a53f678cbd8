"""What the tracker tests share: where the stores live, a hand-moved clock, an event builder.

Kept out of conftest.py so that test modules (and the worker processes of the concurrency
tests) can import it by name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from itertools import count
from typing import Any

import pytest

from unimailtrack import (
    BounceKind,
    DeliveryStatus,
    Email,
    EmailEvent,
    EventType,
    RecipientResult,
    SendResult,
)
from unimailtrack.tracking import Tracker

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
POSTGRES_URL = os.environ.get(
    "UNIMAILTRACK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


@cache
def _postgres_unreachable() -> str | None:
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'unimailtrack[postgres]')"
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"{exc}".strip()


def require_postgres() -> None:
    """Skip, saying why loudly, when no PostgreSQL server answers."""
    problem = _postgres_unreachable()
    if problem is not None and os.environ.get("UNIMAILTRACK_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL is required here but {POSTGRES_URL} does not answer: {problem}")
    if problem is not None:
        pytest.skip(
            f"SKIPPED POSTGRESQL TESTS: no server at {POSTGRES_URL} ({problem}); "
            "start one or set UNIMAILTRACK_TEST_POSTGRES_URL"
        )


def with_schema(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}schema={schema}"


def schema_of(url: str) -> str:
    """The schema a ``with_schema`` URL names."""
    return url.rsplit("schema=", 1)[1]


def drop_schema(schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@dataclass
class Clock:
    """A clock the test moves by hand."""

    now: datetime = T0 + timedelta(days=1)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@dataclass
class Store:
    """Where a test's trackers live: open as many as the test needs (they share the data, as
    processes would); all are closed at the end."""

    backend: str
    url: str
    clock: Clock = field(default_factory=Clock)
    opened: list[Tracker] = field(default_factory=list)

    def open(self, **kwargs: Any) -> Tracker:
        kwargs.setdefault("clock", self.clock)
        tracker = Tracker.open(self.url, **kwargs)
        self.opened.append(tracker)
        return tracker


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


# --------------------------------------------------------------------------- concurrency


def send_one(
    tracker: Tracker, tracking_id: str, address: str, message_id: str | None = None
) -> None:
    """Record an accepted send of one e-mail to ``address`` (bulk ``bulk-<tracking id>``)."""
    tracker.record_send(
        Email(sender="s@example.com", to=[address], subject="Hi", text="x"),
        SendResult(
            bulk_id=f"bulk-{tracking_id}",
            recipients=[
                RecipientResult(
                    recipient=address,
                    tracking_id=tracking_id,
                    status=DeliveryStatus.ACCEPTED,
                    message_id=message_id,
                    provider="memory",
                )
            ],
        ),
    )


def scenario_events(messages: int, seed: int) -> list[EmailEvent]:
    """Events about ``messages`` sends to one domain: each a few random stages at a few
    random seconds (ties included), a third of them carrying no tracking id."""
    import random

    rng = random.Random(seed)
    kinds = [k for k in EventType if k is not EventType.UNKNOWN]
    events = []
    for index in range(messages):
        for n in range(rng.randint(2, 8)):
            kind = rng.choice(kinds)
            events.append(
                event(
                    kind,
                    f"c{index}" if rng.random() > 0.33 else None,
                    at=rng.choice([0, 1, 2, 30, 60]),
                    recipient=f"user{index}@example.com",
                    event_id=f"c{index}-{n}-{rng.randrange(10**6)}",
                    message_id=f"cm{index}",
                    bounce=rng.choice(list(BounceKind)) if kind is EventType.BOUNCED else None,
                    reason=rng.choice([None, "a", "b"]),
                )
            )
    return events


def batches_in_random_order(
    events: list[EmailEvent], seed: int, size: int
) -> list[list[EmailEvent]]:
    """The same events shuffled, some repeated, cut into batches."""
    import random

    rng = random.Random(seed)
    mixed = events + rng.sample(events, len(events) // 4)
    rng.shuffle(mixed)
    return [mixed[i : i + size] for i in range(0, len(mixed), size)]


def ingest_in_another_process(url: str, events: list[EmailEvent], seed: int) -> int:
    """A worker process: open the shared store, ingest the events in an order of its own."""
    with Tracker.open(url) as tracker:
        for batch in batches_in_random_order(events, seed, size=7):
            tracker.ingest(batch)
        return tracker.count_events()


def expected_suppressed(events: list[EmailEvent], now: datetime) -> bool:
    """Whether one address's events leave it suppressed on the default stream, worked out
    here from the rules rather than from the tracker: a complaint or a hard bounce always; an
    unsubscribe unless a resubscribe is not older than it; five soft bounces in a row (no
    delivery between them, none after) within 30 days, for 30 days after the fifth."""
    if any(
        e.type is EventType.COMPLAINED or (e.type is EventType.BOUNCED and e.bounce == "hard")
        for e in events
    ):
        return True
    resubscribed = [e.timestamp for e in events if e.type is EventType.RESUBSCRIBED]
    for e in events:
        if e.type is EventType.UNSUBSCRIBED and not any(r >= e.timestamp for r in resubscribed):
            return True
    timeline = sorted(
        (e.timestamp, 0 if e.type is EventType.DELIVERED else 1, e.event_id)
        for e in {e.event_id: e for e in events}.values()
        if e.type is EventType.DELIVERED or (e.type is EventType.BOUNCED and e.bounce == "soft")
    )
    run: list[datetime] = []
    earned: datetime | None = None
    for at, kind, _ in timeline:
        if kind == 0:
            run = []
            if earned is not None and at >= earned:
                earned = None
            continue
        run = [t for t in run if t > at - timedelta(days=30)] + [at]
        if len(run) >= 5:
            earned, run = at, []
    return earned is not None and earned + timedelta(days=30) > now
