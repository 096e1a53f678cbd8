"""Tracker speed: ingesting webhook batches, and the screens' queries over a million events.

Part 1, ingestion. Thirty SendGrid Event Webhook bodies of 1,000 events each are parsed and
stored, one transaction per body: by the tracker on SQLite, by the tracker on PostgreSQL (when
``UNIMAILTRACK_BENCH_POSTGRES_URL``, or the test server, answers), and, as the reference, by
a minimal hand-written loop: the same parse, then the same event rows (every field and the raw
event, encoded by the same JSON encoder) written with ``sqlite3.executemany`` into one table
keyed by event id, with the same pragmas (WAL, synchronous=NORMAL, a 32 MiB page cache), one
transaction per body. The tracker does more per event (an idempotent insert that reports
what was new, three more indexes, the state upsert, suppressions, change reports); the ratio
says what that costs.

The stream is shaped like production: 10,000 messages sent in bulk sends of 100 (recorded by
the tracker beforehand, as the mailer does, and not timed), each with the time-ordered tracking
id the library gives it; every body carries events (in the event mix of ``parse_sendgrid.py``)
for the messages sent in the last while, so a message's events spread over several bodies.
Best of three rounds, each into a fresh store.

Part 2, reading. An SQLite tracker holding 1,000,000 events about 200,000 sends (one of them
a 100,000-recipient bulk send) answers a contact's history page and the bulk send's analytics
row; each median beside a bare ``sqlite3`` query over the same tables (the page's rows by the
recipient index; a count over the bulk send) as the reference.

Run with ``.venv/bin/python bench/ingest.py`` (``--quick`` shrinks part 2 tenfold;
``--ingestion`` or ``--reading`` runs one part).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _harness import Row, print_table
from parse_sendgrid import MIX, START
from unimailtrack import (
    BounceKind,
    DeliveryStatus,
    Email,
    EmailEvent,
    EventType,
    RecipientResult,
    SendResult,
)
from unimailtrack.adapters.sendgrid import parse_events
from unimailtrack.tracking import Tracker
from unimailtrack.tracking._programs import dumps

BODIES = 30
EVENTS_PER_BODY = 1000
MESSAGES = 10_000
BULK = 100
ROUNDS = 3
REFERENCE = "bare sqlite3 executemany"
POSTGRES_URL = os.environ.get(
    "UNIMAILTRACK_BENCH_POSTGRES_URL",
    os.environ.get("UNIMAILTRACK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"),
)

# --------------------------------------------------------------------------- part 1


@dataclass(frozen=True)
class Stream:
    """The sends, and the webhook bodies that report on them."""

    tracking_ids: list[str]
    bodies: list[bytes]

    def address(self, index: int) -> str:
        return f"user{index}@example.com"


def stream(seed: int = 7) -> Stream:
    rng = random.Random(seed)
    sent_at_ms = START * 1000
    tracking_ids = [
        f"{((sent_at_ms + i // BULK) << 80) | rng.getrandbits(80):032x}" for i in range(MESSAGES)
    ]
    names = list(MIX)
    weights = [MIX[name][0] for name in names]
    window = 2_000
    step = (MESSAGES - window) // BODIES
    bodies = []
    for number in range(BODIES):
        items = []
        for _ in range(EVENTS_PER_BODY):
            index = number * step + rng.randrange(window)
            name = rng.choices(names, weights)[0]
            message = f"{index:022x}"
            items.append(
                {
                    "email": f"user{index}@example.com",
                    "timestamp": START + 60 * number + rng.randrange(60),
                    "smtp-id": f"<{message}@geopod-ismtpd-4>",
                    "event": name,
                    "category": ["transactional"],
                    "sg_event_id": f"{rng.getrandbits(192):048x}",
                    "sg_message_id": f"{message}.filterdrecv-5bd4d5c8b8-x2h7k-1-65A4F3D0-2F.0",
                    "unimailtrack_id": tracking_ids[index],
                    "order_ref": f"ORD-{index}",
                    **MIX[name][1](rng),
                }
            )
        bodies.append((json.dumps(items, separators=(",", ":")) + "\r\n").encode())
    return Stream(tracking_ids, bodies)


def _record_sends(tracker: Tracker, data: Stream) -> None:
    for start in range(0, MESSAGES, BULK):
        indexes = range(start, start + BULK)
        email = Email(
            sender="Shop <orders@example.com>",
            to=[data.address(i) for i in indexes],
            subject="Your order",
            text=".",
            category="transactional",
        )
        tracker.record_send(
            email,
            SendResult(
                bulk_id=f"bulk-{start // BULK}",
                recipients=[
                    RecipientResult(
                        recipient=data.address(i),
                        tracking_id=data.tracking_ids[i],
                        status=DeliveryStatus.ACCEPTED,
                        message_id=f"{i:022x}",
                        provider="sendgrid",
                    )
                    for i in indexes
                ],
            ),
        )


_closing: list[sqlite3.Connection | Tracker] = []


def _reference_store(path: Path) -> Callable[[bytes], None]:
    """Parse, then insert the same event rows with a plain executemany."""
    conn = sqlite3.connect(path, isolation_level=None)
    _closing.append(conn)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA cache_size = -32768")
    conn.execute(
        "CREATE TABLE events (event_id TEXT PRIMARY KEY, provider TEXT, type TEXT, "
        "provider_event TEXT, recipient TEXT, message_id TEXT, tracking_id TEXT, "
        "timestamp_us INTEGER, reason TEXT, bounce TEXT, smtp_status TEXT, attempt INTEGER, "
        "url TEXT, user_agent TEXT, machine INTEGER, tags TEXT, metadata TEXT, raw TEXT)"
    )
    insert = f"INSERT INTO events VALUES ({', '.join('?' * 18)})"
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    micro = timedelta(microseconds=1)

    def store(body: bytes) -> None:
        rows = [
            (
                e.event_id,
                e.provider,
                e.type.value,
                e.provider_event,
                e.recipient,
                e.message_id,
                e.tracking_id,
                (e.timestamp - epoch) // micro,
                e.reason,
                e.bounce.value if e.bounce else None,
                e.smtp_status,
                e.attempt,
                e.url,
                e.user_agent,
                e.machine,
                dumps(e.tags) if e.tags else None,
                dumps(e.metadata) if e.metadata else None,
                dumps(e.raw),
            )
            for e in parse_events(body)
        ]
        conn.execute("BEGIN")
        conn.executemany(insert, rows)
        conn.execute("COMMIT")

    return store


def _tracker_store(url: str, data: Stream) -> Callable[[bytes], None]:
    tracker = Tracker.open(url)
    _closing.append(tracker)
    _record_sends(tracker, data)

    def store(body: bytes) -> None:
        tracker.ingest(parse_events(body))

    return store


def _events_per_second(
    data: Stream, contenders: dict[str, Callable[[], Callable[[bytes], None]]]
) -> dict[str, float]:
    """Each contender's best rate over the rounds; rounds interleave the contenders, so that
    a machine busy for a while slows them all alike."""
    best = dict.fromkeys(contenders, float("inf"))
    for _ in range(ROUNDS):
        for label, make_store in contenders.items():
            store = make_store()
            started = time.perf_counter()
            for body in data.bodies:
                store(body)
            best[label] = min(best[label], time.perf_counter() - started)
            while _closing:
                _closing.pop().close()
    return {label: BODIES * EVENTS_PER_BODY / seconds for label, seconds in best.items()}


def _postgres_reachable() -> bool:
    try:
        import psycopg

        with psycopg.connect(POSTGRES_URL, connect_timeout=3):
            return True
    except Exception:
        return False


@contextlib.contextmanager
def _postgres_schemas() -> Iterator[Callable[[], str]]:
    """Fresh schemas for each round, dropped afterwards."""
    import psycopg
    from psycopg import sql

    made: list[str] = []

    def fresh() -> str:
        made.append(f"bench_{secrets.token_hex(4)}")
        separator = "&" if "?" in POSTGRES_URL else "?"
        return f"{POSTGRES_URL}{separator}schema={made[-1]}"

    try:
        yield fresh
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            for schema in made:
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def ingestion(workdir: Path) -> None:
    data = stream()
    files = (workdir / f"store-{n}.sqlite3" for n in range(1_000_000))
    contenders: dict[str, Callable[[], Callable[[bytes], None]]] = {
        "tracker, SQLite": lambda: _tracker_store(f"sqlite:///{next(files)}", data),
        REFERENCE: lambda: _reference_store(next(files)),
        "parse alone": lambda: parse_events,
    }
    with contextlib.ExitStack() as stack:
        if _postgres_reachable():
            fresh = stack.enter_context(_postgres_schemas())
            contenders["tracker, PostgreSQL"] = lambda: _tracker_store(fresh(), data)
        else:
            print(f"(no PostgreSQL at {POSTGRES_URL}: its row is left out)")
        rates = _events_per_second(data, contenders)
    print_table(
        f"Ingestion: parse + store {BODIES} SendGrid bodies of {EVENTS_PER_BODY:,} events "
        f"(best of {ROUNDS})",
        [Row(label, rate) for label, rate in rates.items()],
        reference=REFERENCE,
    )


# --------------------------------------------------------------------------- part 2

SENT = datetime(2024, 1, 1, tzinfo=UTC)
STAGES = (
    (
        EventType.PROCESSED,
        EventType.DELIVERED,
        EventType.OPENED,
        EventType.OPENED,
        EventType.CLICKED,
    ),
    (
        EventType.PROCESSED,
        EventType.DELIVERED,
        EventType.OPENED,
        EventType.UNSUBSCRIBED,
        EventType.OPENED,
    ),
    (
        EventType.PROCESSED,
        EventType.DEFERRED,
        EventType.DEFERRED,
        EventType.DELIVERED,
        EventType.OPENED,
    ),
    (
        EventType.PROCESSED,
        EventType.DEFERRED,
        EventType.DEFERRED,
        EventType.DEFERRED,
        EventType.BOUNCED,
    ),
    (
        EventType.PROCESSED,
        EventType.DELIVERED,
        EventType.OPENED,
        EventType.COMPLAINED,
        EventType.OPENED,
    ),
)
"""Five events per send, in a handful of journeys."""


def _send(tracker: Tracker, bulk_id: str, addresses: list[str]) -> list[str]:
    """Record one send the way the mailer does; its tracking ids."""
    email = Email.model_construct(
        sender="Events <events@example.com>",
        to=[],
        cc=[],
        bcc=[],
        subject=f"Update {bulk_id}",
        text=".",
        category="share_link",
        metadata={"event_id": bulk_id},
        tags=[],
        track_opens=True,
        track_clicks=True,
        tracked=True,
    )
    ids = [f"{bulk_id}-{i:06d}" for i in range(len(addresses))]
    result = SendResult.model_construct(
        bulk_id=bulk_id,
        recipients=[
            RecipientResult.model_construct(
                recipient=address,
                tracking_id=tid,
                status=DeliveryStatus.ACCEPTED,
                message_id=f"m-{tid}",
                provider="sendgrid",
                error=None,
            )
            for tid, address in zip(ids, addresses, strict=True)
        ],
    )
    tracker.record_send(email, result)
    return ids


def _events(
    tracking_ids: list[str], addresses: list[str], at: datetime, rng: random.Random
) -> Iterator[EmailEvent]:
    for tid, address in zip(tracking_ids, addresses, strict=True):
        for step, kind in enumerate(rng.choice(STAGES)):
            yield EmailEvent(
                provider="sendgrid",
                type=kind,
                provider_event=kind.value,
                recipient=address,
                event_id=f"{tid}-{step}",
                timestamp=at + timedelta(seconds=60 * step + rng.randrange(60)),
                message_id=f"m-{tid}",
                tracking_id=tid,
                bounce=rng.choice(list(BounceKind)) if kind is EventType.BOUNCED else None,
                reason="250 2.0.0 OK" if kind is EventType.DELIVERED else None,
                raw={"event": kind.value, "email": address, "sg_event_id": f"{tid}-{step}"},
            )


def _ingest_all(tracker: Tracker, events: Iterator[EmailEvent], size: int = 10_000) -> int:
    total = 0
    chunk: list[EmailEvent] = []
    for item in events:
        chunk.append(item)
        if len(chunk) == size:
            total += tracker.ingest(chunk).new
            chunk = []
    if chunk:
        total += tracker.ingest(chunk).new
    return total


def build(path: Path, scale: int) -> tuple[Tracker, int]:
    """The store of part 2: a ``100_000 // scale``-recipient bulk send, as many sends again
    in small bulks to ``20_000 // scale`` contacts, and one contact with 300 sends; five
    events each. Returns the tracker and how many events it holds."""
    rng = random.Random(1)
    tracker = Tracker.open(f"sqlite:///{path}", clock=lambda: SENT + timedelta(days=30))
    big = [f"reader{i}@example.com" for i in range(100_000 // scale)]
    stored = _ingest_all(tracker, _events(_send(tracker, "big", big), big, SENT, rng))
    contacts = [f"contact{i}@example.com" for i in range(20_000 // scale)]
    for n in range(1_000 // scale):
        at = SENT + timedelta(minutes=10 * n)
        ada = ["ada@example.com"] if n < 300 else []
        addresses = rng.sample(contacts, 100 - len(ada)) + ada
        ids = _send(tracker, f"small{n:04d}", addresses)
        stored += _ingest_all(tracker, _events(ids, addresses, at, rng))
    return tracker, stored


def _median_ms(fn: Callable[[], object], runs: int) -> float:
    fn()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


def reading(workdir: Path, scale: int) -> None:
    path = workdir / "million.sqlite3"
    started = time.perf_counter()
    tracker, stored = build(path, scale)
    print(f"\nPart 2 store built: {stored:,} events in {time.perf_counter() - started:.0f}s")
    bare = sqlite3.connect(path)
    try:
        ada = tracker.history("ada@example.com")
        assert len(ada) == 25
        second = ada.next_cursor
        contact = "contact7@example.com"
        history_ms = _median_ms(lambda: tracker.history("ada@example.com"), 300)
        next_page_ms = _median_ms(lambda: tracker.history("ada@example.com", cursor=second), 300)
        contact_ms = _median_ms(lambda: tracker.history(contact), 300)
        bare_page_ms = _median_ms(
            lambda: bare.execute(
                "SELECT * FROM messages WHERE recipient_key = ? "
                "ORDER BY sent_at_us DESC, tracking_id DESC LIMIT 25",
                ("ada@example.com",),
            ).fetchall(),
            300,
        )
        stats = tracker.bulk_stats("big")
        assert stats.recipients == 100_000 // scale
        stats_ms = _median_ms(lambda: tracker.bulk_stats("big"), 21)
        bare_stats_ms = _median_ms(
            lambda: bare.execute(
                "SELECT COUNT(*), SUM(opens) FROM messages WHERE bulk_id = ?", ("big",)
            ).fetchall(),
            21,
        )
    finally:
        bare.close()
        tracker.close()
    width = 52
    print(f"Reading, with {stored:,} events stored (median; ratio to the bare query)")
    for label, ms, reference in (
        (f"history page 1 of {ada.total} (ada)", history_ms, bare_page_ms),
        ("history page 2, by cursor", next_page_ms, bare_page_ms),
        ("history page of a contact with ~5 sends", contact_ms, bare_page_ms),
        ("bare sqlite3: 25 rows by the recipient index", bare_page_ms, bare_page_ms),
        (f"analytics row of a {stats.recipients:,}-recipient send", stats_ms, bare_stats_ms),
        ("bare sqlite3: COUNT(*), SUM(opens) of that send", bare_stats_ms, bare_stats_ms),
    ):
        print(f"  {label:{width}} {ms:8.3f} ms  {ms / reference:6.2f}x")


def main() -> None:
    scale = 10 if "--quick" in sys.argv else 1
    with tempfile.TemporaryDirectory(prefix="unimailtrack-bench-") as workdir:
        if "--reading" not in sys.argv:
            ingestion(Path(workdir))
        if "--ingestion" not in sys.argv:
            reading(Path(workdir), scale)


if __name__ == "__main__":
    main()
