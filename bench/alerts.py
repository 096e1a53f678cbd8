"""Deliverability costs: evaluating every alert rule, against ingesting the events it reads;
and what one-click unsubscribe adds to a bulk send.

Part 1, alerts. A round builds a fresh SQLite tracker: about 345,000 sends recorded over 24 hours
(bulk sends of 100 from 1,000 sending domains to recipients at 1,000 recipient domains, the
big mailbox providers among them; not timed), then ingests 1,000,000 events about them in
batches of 1,000 as webhooks would bring them (timed: the reference), then evaluates every
rule over everything stored (complaint and bounce rates per sending domain and per
(domain, provider), mailbox-provider blocks, sender authentication): the first evaluation,
which opens the alerts, and then the one a scheduler makes every minute (timed, median of
five). The figure is each evaluation's time as a share of that round's ingest time; rounds
interleave the two, and print min/median/max over the rounds.

Part 2, one-click unsubscribe. A bulk send of 1,000 recipients in the ``marketing`` stream
through the memory adapter: the share of copies that carried both List-Unsubscribe headers,
and the time from a one-click POST (through the ASGI app, in process) until the address reads
suppressed, median of 200.

Run with ``.venv/bin/python bench/alerts.py`` (``--quick``: a tenth of the events;
``--rounds N``).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from unimailtrack import BounceKind, DeliveryStatus, Email, EmailEvent, EventType, Mailer
from unimailtrack.adapters import MemoryAdapter
from unimailtrack.model import RecipientResult, SendResult, make_event
from unimailtrack.tracking import Tracker

START = datetime(2026, 1, 5, tzinfo=UTC)
SENDERS = 1_000
RECIPIENT_DOMAINS = 1_000
BULK = 100
BIG = ["gmail.com", "googlemail.com", "outlook.com", "hotmail.com", "yahoo.com", "aol.com"]
AUTH = "550 5.7.26 Unauthenticated email from {d} is not accepted due to domain's DMARC policy"


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


def _domains() -> list[str]:
    return BIG + [f"corp{i}.example" for i in range(RECIPIENT_DOMAINS - len(BIG))]


def build(
    path: Path, events_wanted: int, seed: int
) -> tuple[Tracker, Clock, list[list[EmailEvent]]]:
    """A tracker with the sends recorded, and the event batches still to ingest."""
    rng = random.Random(seed)
    clock = Clock()
    tracker = Tracker.open(f"sqlite:///{path}", clock=clock)
    domains = _domains()
    messages = events_wanted * 10 // 29  # about 2.9 events a send: a little over the count
    bulks = messages // BULK
    spacing = timedelta(hours=24) / bulks
    # Some senders have a complaint or a bounce problem, so that alerts open.
    trouble = {
        f"sender{i}.example": rng.choice(["complaints", "bounces", "auth"])
        for i in range(0, SENDERS, 25)
    }
    events: list[tuple[datetime, EmailEvent]] = []
    serial = 0
    for number in range(bulks):
        sender_domain = f"sender{number % SENDERS}.example"
        sent_at = START + spacing * number
        clock.now = sent_at
        recipients = [f"u{number}-{i}@{domains[rng.randrange(len(domains))]}" for i in range(BULK)]
        ids = [f"{number:08x}{i:08x}{rng.getrandbits(64):016x}" for i in range(BULK)]
        email = Email(sender=f"News <news@{sender_domain}>", to=recipients, subject="s", text=".")
        tracker.record_send(
            email,
            SendResult(
                bulk_id=f"bulk-{number}",
                recipients=[
                    RecipientResult(
                        recipient=r,
                        tracking_id=t,
                        status=DeliveryStatus.ACCEPTED,
                        provider="memory",
                        message_id=f"mem-{t}",
                    )
                    for r, t in zip(recipients, ids, strict=True)
                ],
            ),
        )
        problem = trouble.get(sender_domain)
        for recipient, tid in zip(recipients, ids, strict=True):
            kinds: list[tuple[EventType, BounceKind | None, str | None, int]] = [
                (EventType.PROCESSED, None, None, 1)
            ]
            roll = rng.random()
            bounce_share = 0.06 if problem == "bounces" else 0.004
            if problem == "auth" and roll < 0.02:
                kinds.append(
                    (EventType.BOUNCED, BounceKind.BLOCK, AUTH.format(d=sender_domain), 30)
                )
            elif roll < bounce_share:
                kinds.append((EventType.BOUNCED, BounceKind.HARD, "550 5.1.1 user unknown", 30))
            elif roll < bounce_share + 0.004:
                kinds.append((EventType.BOUNCED, BounceKind.BLOCK, "554 5.7.1 blocked", 30))
            else:
                kinds.append((EventType.DELIVERED, None, None, 20))
                if rng.random() < 0.8:
                    kinds.append((EventType.OPENED, None, None, 600))
                if rng.random() < 0.2:
                    kinds.append((EventType.CLICKED, None, None, 900))
                if rng.random() < (0.01 if problem == "complaints" else 0.0005):
                    kinds.append((EventType.COMPLAINED, None, None, 3600))
            for kind, bounce, reason, after in kinds:
                serial += 1
                at = sent_at + timedelta(seconds=after + rng.randrange(60))
                events.append(
                    (
                        at,
                        make_event(
                            "memory",
                            kind,
                            kind.value,
                            recipient,
                            f"e{serial:09d}",
                            at,
                            message_id=f"mem-{tid}",
                            tracking_id=tid,
                            reason=reason,
                            bounce=bounce,
                            raw={"event": kind.value},
                        ),
                    )
                )
    events.sort(key=lambda item: item[0])
    flat = [event for _, event in events[:events_wanted]]
    batches = [flat[i : i + 1000] for i in range(0, len(flat), 1000)]
    clock.now = START + timedelta(hours=24, minutes=30)
    return tracker, clock, batches


def alerts_round(events_wanted: int, seed: int) -> tuple[float, float, float, int, int]:
    """(ingest seconds, first evaluation seconds, steady evaluation seconds, events, alerts)"""
    with tempfile.TemporaryDirectory() as place:
        tracker, clock, batches = build(Path(place) / "bench.sqlite3", events_wanted, seed)
        with tracker:
            started = time.perf_counter()
            for batch in batches:
                tracker.ingest(batch)
            ingest = time.perf_counter() - started
            now = clock.now
            started = time.perf_counter()
            tracker.evaluate_alerts(now=now)
            first = time.perf_counter() - started
            steady = []
            for minute in range(1, 6):
                started = time.perf_counter()
                tracker.evaluate_alerts(now=now + timedelta(minutes=minute))
                steady.append(time.perf_counter() - started)
            count = len(tracker.alerts(evaluate=False, limit=1_000_000))
            stored = tracker.count_events()
        return ingest, first, statistics.median(steady), stored, count


def one_click(recipients: int = 1000, posts: int = 200) -> tuple[float, float]:
    """(share of copies carrying both headers, median seconds from POST to suppression)"""
    import httpx
    from pydantic import Field

    from unimailtrack.unsubscribe import ONE_CLICK_BODY
    from unimailtrack.web import create_app
    from unimailtrack.webhooks import WebhookReceiver

    class StreamEmail(Email):
        stream: str | None = Field(default=None, exclude=True)

    secret, public = "bench-one-click-secret", "https://app.example.com"
    adapter = MemoryAdapter()
    mailer = Mailer(adapter, unsubscribe_secret=secret, public_url=public)
    mailer.send(
        StreamEmail(
            sender="News <news@example.com>",
            to=[f"r{i}@example.org" for i in range(recipients)],
            subject="s",
            text=".",
            stream="marketing",
        )
    )
    both = sum(
        1
        for m in adapter.outbox
        if m.email.headers.get("List-Unsubscribe-Post") == ONE_CLICK_BODY
        and m.email.headers.get("List-Unsubscribe", "").startswith(f"<{public}/u/")
    )
    share = both / recipients

    async def timed() -> list[float]:
        with tempfile.TemporaryDirectory() as place:
            tracker = Tracker.open(f"sqlite:///{Path(place) / 'u.sqlite3'}")
            app = create_app(
                WebhookReceiver({"memory": adapter}, tracker),
                unsubscribe_secret=secret,
                public_url=public,
                env={},
            )
            transport = httpx.ASGITransport(app=app)
            found = []
            async with httpx.AsyncClient(transport=transport, base_url=public) as client:
                for message in adapter.outbox[:posts]:
                    link = message.email.headers["List-Unsubscribe"][1:-1]
                    started = time.perf_counter()
                    answer = await client.post(link.removeprefix(public), content=ONE_CLICK_BODY)
                    suppressed = await tracker.asuppression(message.recipient)
                    found.append(time.perf_counter() - started)
                    assert answer.status_code == 200
                    assert suppressed is not None
            await tracker.aclose()
            return found

    return share, statistics.median(asyncio.run(timed()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 events instead of 1,000,000")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    events = 100_000 if args.quick else 1_000_000
    print(
        f"alert evaluation over {events:,} events, {SENDERS:,} sending and "
        f"{RECIPIENT_DOMAINS:,} recipient domains; {args.rounds} round(s)"
    )
    shares_first, shares_steady = [], []
    for round_number in range(args.rounds):
        ingest, first, steady, stored, count = alerts_round(events, seed=round_number)
        shares_first.append(first / ingest)
        shares_steady.append(steady / ingest)
        print(
            f"  round {round_number + 1}: ingest {ingest:6.1f} s "
            f"({stored:,} events, {stored / ingest:,.0f}/s), "
            f"first evaluation {first:5.2f} s, every-minute evaluation {steady:5.2f} s, "
            f"{count} alerts open"
        )
    for label, shares in (
        ("first evaluation", shares_first),
        ("every-minute evaluation", shares_steady),
    ):
        print(
            f"  {label} as a share of ingest time: min {min(shares):.2%}  "
            f"median {statistics.median(shares):.2%}  max {max(shares):.2%}"
        )
    share, seconds = one_click()
    print("\none-click unsubscribe (RFC 8058)")
    print(f"  bulk-send copies carrying both List-Unsubscribe headers: {share:.1%}")
    print(f"  one-click POST to suppression, median of 200: {seconds * 1000:.1f} ms")


if __name__ == "__main__":
    sys.exit(main())
