"""Every tracker operation as a program (see ``_store``): its SQL, its rows, its result.

Written once for both backends and for sync and async. The two rules that keep concurrent
ingestion correct live here:

- The badge only moves up the precedence, and the database decides it: the state upsert
  compares (rank, timestamp, event id) of the stored decider with the candidate's inside
  ``ON CONFLICT ... DO UPDATE``, where the row is locked and its latest committed version is
  read. Counters and the ``seen`` bits are commutative (sums, minimums, bitwise or) and only
  ever count events this transaction inserted, which the events table's unique key makes
  exactly once across processes.
- Tables are written in one order (links, events, messages, suppressions) and rows within
  each in a stable order (by key), so two transactions that touch the same rows queue behind
  each other instead of deadlocking.

An event that carries no tracking id meets its send in ``links``: the event side locks (or
creates) the link row and reads the tracking id committed there; the send side writes it and,
when events were waiting, attaches them. Whichever commits second sees the first.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from operator import attrgetter
from typing import Any

from unimailtrack.errors import InvalidQuery
from unimailtrack.lifecycle import EXPIRED_REASON, RANK, MessageState, fold
from unimailtrack.model import (
    NAME_MAX,
    REASON_MAX,
    BounceKind,
    DeliveryStatus,
    Email,
    EmailEvent,
    EventType,
    SendResult,
    Suppression,
    dedupe_key,
    storable_text,
    suppression_key,
)
from unimailtrack.tracking import _suppression as S
from unimailtrack.tracking._providers import PLAIN, ListChange, MessageKey, ProviderRules
from unimailtrack.tracking._records import (
    Badge,
    BulkStats,
    DeadLetter,
    DomainAlert,
    IngestResult,
    Page,
    SendRecord,
    StateChange,
    decode_cursor,
    encode_cursor,
    from_micros,
    to_micros,
)
from unimailtrack.tracking._schema import SEEN_BITS
from unimailtrack.tracking._store import Emit, InsertNew, Program, Query, Upsert, Write

__all__ = [
    "BADGE_SQL",
    "SORT_KEYS",
    "Batch",
    "Clock",
    "ReportFilter",
    "add_nonce",
    "badge",
    "bulk_rows",
    "bulk_stats",
    "count_events",
    "dead_letters",
    "discard_dead_letter",
    "discard_nonce",
    "domain_alerts",
    "history",
    "ingest",
    "ingest_once",
    "list_suppressions",
    "prepare",
    "record_dead_letter",
    "record_send",
    "report",
    "send",
    "send_rows",
    "state",
    "suppress",
    "suppression",
    "suppressions_for",
    "sweep",
    "timeline",
    "unsuppress",
]

LinkKey = tuple[str, str, str]
"""(provider, provider message key, recipient key): how an event without a tracking id
finds its send."""

_ARRIVED = (
    EventType.DELIVERED,
    EventType.OPENED,
    EventType.CLICKED,
    EventType.COMPLAINED,
    EventType.UNSUBSCRIBED,
    EventType.RESUBSCRIBED,
)
"""Event types that prove the mail reached the mailbox (``MessageState.delivered``)."""


def _bits(*types: EventType) -> int:
    result = 0
    for kind in types:
        result |= SEEN_BITS[kind]
    return result


_ARRIVED_BITS = _bits(*_ARRIVED)
_DEFAULT_POLICY = S.SoftBouncePolicy()
_IN_LIST_CHUNK = 500


_STDLIB_DUMPS = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), default=str).encode
"""ASCII output: a lone surrogate (which a ``raw`` decoded by the standard library may hold)
is written as its ``\\u`` escape, which both backends store, instead of a character that
cannot be encoded."""


def _json_encoder() -> Callable[[Any], str]:
    """orjson's encoder when installed (``unimailtrack[fast]``): a raw event serialises in a
    tenth of the time, which is most of the Python work of storing one."""
    try:
        import orjson
    except ImportError:
        return _STDLIB_DUMPS
    options = orjson.OPT_NON_STR_KEYS

    def dumps(value: Any) -> str:
        try:  # keys are text in every parser's raw: the option to allow others costs a third
            return orjson.dumps(value, default=str).decode()
        except TypeError:
            pass
        try:  # a key that is not text (a caller's raw)
            return orjson.dumps(value, default=str, option=options).decode()
        except TypeError:  # an integer beyond 64 bits, say
            return _STDLIB_DUMPS(value)

    return dumps


dumps = _json_encoder()
"""Compact JSON; anything JSON cannot carry (a datetime a caller put in ``raw``) as text."""


def _loads(text: str | None, empty: Any) -> Any:
    return empty if text is None else json.loads(text)


# --------------------------------------------------------------------------- events

_EVENT_COLUMNS = (
    "event_id, provider, type, provider_event, recipient, recipient_key, domain, message_id, "
    "message_key, tracking_id, timestamp_us, rank, reason, bounce, smtp_status, attempt, url, "
    "user_agent, machine, tags, metadata, raw, received_at_us"
)
_EVENT_INSERT = f"INSERT INTO events ({_EVENT_COLUMNS})"
_EVENT_SELECT = (
    "event_id, provider, type, provider_event, recipient, message_id, tracking_id, "
    "timestamp_us, rank, reason, bounce, smtp_status, attempt, url, user_agent, machine, "
    "tags, metadata, raw"
)
_TIMELINE_ORDER = "ORDER BY timestamp_us, rank, event_id"
"""The order ``fold`` lists a timeline in: time, then precedence, then id."""

EventRow = tuple[Any, ...]
"""An event as its row in ``events`` (``_EVENT_COLUMNS``): what ingestion works with from
parsing to the database, so that no other object is built per event."""

_EVENT_ID, _PROVIDER, _TYPE, _RECIPIENT, _RECIPIENT_KEY = 0, 1, 2, 4, 5
_MESSAGE_KEY, _TRACKING_ID, _TIMESTAMP, _RANK, _REASON, _BOUNCE, _SMTP_STATUS = (
    8,
    9,
    10,
    11,
    12,
    13,
    14,
)


_KINDS: Mapping[EventType, tuple[str, int]] = {kind: (kind.value, RANK[kind]) for kind in EventType}
"""Each event type's stored name and precedence rank, looked up once."""
_BITS: Mapping[str, int] = {kind.value: bit for kind, bit in SEEN_BITS.items()}
"""The ``seen`` bit of each stored event type."""
_BOUNCES: Mapping[BounceKind | None, str | None] = {None: None} | {b: b.value for b in BounceKind}
_EPOCH = from_micros(0)
_MICROSECOND = timedelta(microseconds=1)


def event_rows(
    events: Iterable[EmailEvent], received_at_us: int, message_keys: Callable[[str], MessageKey]
) -> list[EventRow]:
    """The rows of ``events``: keys, rank, time and JSON computed once per event. The hot
    path of ingestion: one tuple per event, keys looked up once per recipient.
    ``message_keys(provider)`` is how that provider's message ids join their send's."""
    key_functions: dict[str, Callable[[str], str]] = {}
    recipient_keys: dict[str, tuple[str, str]] = {}
    rows: list[EventRow] = []
    append = rows.append
    raw: Any = None
    raw_json = ""
    for event in events:
        if event.raw is not raw:  # the events one notification fans out to share their raw
            raw = event.raw
            raw_json = dumps(raw)
        recipient = event.recipient
        keys = recipient_keys.get(recipient)
        if keys is None:
            key = dedupe_key(recipient) if recipient else ""
            keys = recipient_keys[recipient] = (key, key.rpartition("@")[2])
        message_id = event.message_id
        message_key = None
        if message_id is not None:
            key_of = key_functions.get(event.provider)
            if key_of is None:
                key_of = key_functions[event.provider] = message_keys(event.provider)
            message_key = key_of(message_id)
        kind, rank = _KINDS[event.type]
        tags, metadata = event.tags, event.metadata
        append(
            (
                event.event_id,
                event.provider,
                kind,
                event.provider_event,
                recipient,
                keys[0],
                keys[1],
                message_id,
                message_key,
                event.tracking_id,
                (event.timestamp - _EPOCH) // _MICROSECOND,
                rank,
                event.reason,
                _BOUNCES[event.bounce],
                event.smtp_status,
                event.attempt,
                event.url,
                event.user_agent,
                event.machine,
                dumps(tags) if tags else None,
                dumps(metadata) if metadata else None,
                raw_json,
                received_at_us,
            )
        )
    return rows


def _link(row: EventRow) -> LinkKey | None:
    """How an event row that names no send finds it: provider, message key, recipient."""
    if row[_TRACKING_ID] is None and row[_MESSAGE_KEY] is not None and row[_RECIPIENT_KEY]:
        return (row[_PROVIDER], row[_MESSAGE_KEY], row[_RECIPIENT_KEY])
    return None


def _placed(row: EventRow, found: Mapping[LinkKey, str]) -> EventRow:
    """``row`` with the tracking id its link found, if any."""
    link = _link(row)
    tracking_id = found.get(link) if link is not None else None
    if tracking_id is None:
        return row
    return (*row[:_TRACKING_ID], tracking_id, *row[_TRACKING_ID + 1 :])


@dataclass(frozen=True, slots=True)
class Batch:
    """A batch of events ready to store: their rows, unique by event id and in event id
    order, with the state contributions they make if all of them are new (the common
    case)."""

    rows: tuple[EventRow, ...]
    received: int
    links: tuple[LinkKey, ...]
    partials: Mapping[str, _Partial]
    received_at_us: int
    list_change: Callable[[str], ListChange | None] = PLAIN.list_change
    """How to tell, by provider, which events change the provider's own list."""


def prepare(events: Iterable[EmailEvent], received_at_us: int, providers: ProviderRules) -> Batch:
    """Everything about a batch that needs no database (keys, ranks, times, rows, JSON),
    done before the transaction so that it holds its locks the shortest time. Plain
    tuples, no validation: this is the hot path. ``providers`` are the rules of the
    providers whose events these are."""
    unique: dict[str, EmailEvent] = {}
    received = 0
    for event in events:
        received += 1
        unique.setdefault(event.event_id, event)
    rows = event_rows(
        [unique[event_id] for event_id in sorted(unique)], received_at_us, providers.message_key
    )
    waiting = (_link(row) for row in rows if row[_TRACKING_ID] is None)
    links = tuple(sorted({link for link in waiting if link is not None}))
    return Batch(
        tuple(rows), received, links, _partials(rows), received_at_us, providers.list_change
    )


def event_from_row(row: Sequence[Any]) -> EmailEvent:
    return EmailEvent(
        event_id=row[0],
        provider=row[1],
        type=EventType(row[2]),
        provider_event=row[3],
        recipient=row[4],
        message_id=row[5],
        tracking_id=row[6],
        timestamp=from_micros(row[7]),
        reason=row[9],
        bounce=None if row[10] is None else BounceKind(row[10]),
        smtp_status=row[11],
        attempt=row[12],
        url=row[13],
        user_agent=row[14],
        machine=None if row[15] is None else bool(row[15]),
        tags=_loads(row[16], []),
        metadata=_loads(row[17], {}),
        raw=json.loads(row[18]),
    )


_LINK_WAIT = "INSERT INTO links (provider, message_key, recipient_key, tracking_id, orphans)"
_LINK_WAIT_TAIL = (
    "ON CONFLICT (provider, message_key, recipient_key) DO UPDATE SET orphans = links.orphans "
    "RETURNING provider, message_key, recipient_key, tracking_id"
)
"""Lock (or create, marked as having orphans) each link row and read its tracking id."""


def ingest(batch: Batch, policy: S.SoftBouncePolicy = _DEFAULT_POLICY) -> Program[IngestResult]:
    """Store a batch of events and fold the new ones into their states and into the
    suppression list (one transaction)."""
    rows: Sequence[EventRow] = batch.rows
    found: dict[LinkKey, str] = {}
    if batch.links:
        linked = yield Write(
            _LINK_WAIT, [(*key, None, True) for key in batch.links], _LINK_WAIT_TAIL
        )
        found = {(p, m, r): t for p, m, r, t in linked if t is not None}
        if found:
            rows = [_placed(row, found) for row in rows]
    inserted = yield InsertNew(_EVENT_INSERT, rows)
    if len(inserted) == len(rows) and not found:
        fresh, partials = rows, batch.partials
    else:
        new_ids = {row[0] for row in inserted}
        fresh = [row for row in rows if row[_EVENT_ID] in new_ids]
        partials = _partials(fresh)
    changes = yield from _fold_in(partials, batch.received_at_us)
    yield from S.from_events(fresh, batch.received_at_us, policy, batch.list_change)
    return IngestResult(
        new=len(inserted), duplicates=batch.received - len(inserted), changes=tuple(changes)
    )


# --------------------------------------------------------------------------- states


_OPENED_BIT = SEEN_BITS[EventType.OPENED]
_DEFERRED = EventType.DEFERRED.value
_CLICKED_BIT = SEEN_BITS[EventType.CLICKED]


class _Partial:
    """What a set of new events adds to one state: the best of them and the aggregates."""

    __slots__ = (
        "best",
        "clicks",
        "first_clicked",
        "first_delivered",
        "first_opened",
        "opens",
        "seen",
    )

    def __init__(self, best: EventRow) -> None:
        self.best = best
        self.seen = 0
        self.opens = 0
        self.clicks = 0
        self.first_delivered: int | None = None
        self.first_opened: int | None = None
        self.first_clicked: int | None = None

    def row(self, tracking_id: str, now_us: int) -> tuple[Any, ...]:
        best = self.best
        return (
            tracking_id,
            best[_RECIPIENT],
            best[_TYPE],
            best[_REASON],
            best[_BOUNCE],
            best[_SMTP_STATUS],
            best[_RANK],
            best[_TIMESTAMP],
            best[_EVENT_ID],
            self.seen,
            self.opens,
            self.clicks,
            self.first_delivered,
            self.first_opened,
            self.first_clicked,
            now_us,
            best[_TIMESTAMP] if best[_TYPE] == _DEFERRED else None,
        )


def _partials(rows: Iterable[EventRow]) -> dict[str, _Partial]:
    """The state contribution of each message among ``rows`` (events about no recipient,
    or about no known message, contribute nothing): the best by (rank, time, event id),
    the ``seen`` bits, the counts and the first times."""
    partials: dict[str, _Partial] = {}
    for row in rows:
        tracking_id = row[_TRACKING_ID]
        if tracking_id is None or not row[_RECIPIENT]:
            continue
        partial = partials.get(tracking_id)
        if partial is None:
            partial = partials[tracking_id] = _Partial(row)
        else:
            best = partial.best
            if (row[_RANK], row[_TIMESTAMP], row[_EVENT_ID]) > (
                best[_RANK],
                best[_TIMESTAMP],
                best[_EVENT_ID],
            ):
                partial.best = row
        bit = _BITS[row[_TYPE]]
        partial.seen |= bit
        if bit & _ARRIVED_BITS:
            at = row[_TIMESTAMP]
            partial.first_delivered = _earliest(partial.first_delivered, at)
            if bit == _OPENED_BIT:
                partial.opens += 1
                partial.first_opened = _earliest(partial.first_opened, at)
            elif bit == _CLICKED_BIT:
                partial.clicks += 1
                partial.first_clicked = _earliest(partial.first_clicked, at)
    return partials


def _earliest(current: int | None, candidate: int) -> int:
    return candidate if current is None or candidate < current else current


_STATE_INSERT = (
    "INSERT INTO messages (tracking_id, recipient, status, reason, bounce, smtp_status, rank, "
    "decided_at_us, event_id, seen, opens, clicks, first_delivered_at_us, first_opened_at_us, "
    "first_clicked_at_us, updated_at_us, deferred_at_us)"
)
_WINS = (
    "(messages.rank IS NULL OR (excluded.rank, excluded.decided_at_us, excluded.event_id) > "
    "(messages.rank, messages.decided_at_us, messages.event_id))"
)
_DECIDED = (
    "status",
    "reason",
    "bounce",
    "smtp_status",
    "rank",
    "decided_at_us",
    "event_id",
    "deferred_at_us",
)
"""The columns the deciding event sets (``deferred_at_us``: its time when it is a deferral)."""


def _earlier_sql(column: str) -> str:
    return (
        f"{column} = CASE WHEN messages.{column} IS NULL OR excluded.{column} < messages.{column} "
        f"THEN excluded.{column} ELSE messages.{column} END"
    )


_STATE_UPSERT = (
    "ON CONFLICT (tracking_id) DO UPDATE SET previous_status = messages.status, "
    + ", ".join(
        f"{c} = CASE WHEN {_WINS} THEN excluded.{c} ELSE messages.{c} END" for c in _DECIDED
    )
    + f", expired = CASE WHEN {_WINS} THEN FALSE ELSE messages.expired END"
    ", seen = messages.seen | excluded.seen"
    ", opens = messages.opens + excluded.opens"
    ", clicks = messages.clicks + excluded.clicks, "
    + ", ".join(
        _earlier_sql(c)
        for c in ("first_delivered_at_us", "first_opened_at_us", "first_clicked_at_us")
    )
    + ", updated_at_us = excluded.updated_at_us"
    ", recipient = COALESCE(messages.recipient, excluded.recipient)"
)
"""The state upsert: the database keeps whichever decider ranks higher (rank, time, id).
It always updates, and sets ``previous_status``, so that the row as written says whether the
new events decide it now and what the badge was before."""
_STATE_WRITTEN = (
    "tracking_id, event_id, previous_status, status, reason, decided_at_us, recipient, "
    "bulk_id, send_status"
)

_STATUSES: Mapping[str, DeliveryStatus] = {status.value: status for status in DeliveryStatus}


def badge(status: str | None, send_status: str | None) -> DeliveryStatus | None:
    """The badge a row shows: its folded status, or the send's own outcome while no event
    above ``unknown`` has arrived. ``BADGE_SQL`` is the same rule in SQL."""
    if (status is None or status == "unknown") and send_status is not None:
        return _STATUSES[send_status]
    return None if status is None else _STATUSES[status]


def _fold_in(partials: Mapping[str, _Partial], now_us: int) -> Program[list[StateChange]]:
    """Fold newly stored events into their states; the changes they caused."""
    if not partials:
        return []
    written = yield Upsert(
        _STATE_INSERT,
        [partials[tid].row(tid, now_us) for tid in sorted(partials)],
        _STATE_UPSERT,
        _STATE_WRITTEN,
    )
    changes: list[StateChange] = []
    for tid, event_id, previous, status, reason, decided, recipient, bulk_id, sent in written:
        if event_id != partials[tid].best[_EVENT_ID]:
            continue  # a stored event still decides: nothing changed
        now = badge(status, sent)
        assert now is not None  # the row has a decider
        changes.append(
            StateChange(
                tracking_id=tid,
                recipient=recipient,
                bulk_id=bulk_id,
                previous=badge(previous, sent),
                status=now,
                reason=reason,
                event_id=event_id,
                timestamp=from_micros(decided),
            )
        )
    if changes:
        changes.sort(key=_BY_TRACKING_ID)
        yield Emit(changes)
    return changes


_BY_TRACKING_ID = attrgetter("tracking_id")


# --------------------------------------------------------------------------- suppression
# The list itself lives in ``_suppression``; these are the programs the tracker runs.


def suppressions_for(
    addresses: Sequence[str], stream: str | None, now_us: int
) -> Program[dict[str, Suppression]]:
    return (yield from S.lookup(addresses, stream, now_us))


def suppression(address: str, stream: str | None, now_us: int) -> Program[Suppression | None]:
    found = yield from S.lookup([address], stream, now_us)
    return found.get(suppression_key(address))


def unsuppress(
    address: str, reason: str | None, cause: str, now_us: int, policy: S.SoftBouncePolicy
) -> Program[list[Suppression]]:
    """Lift every scope of ``address``; returns what stood before."""
    key = suppression_key(address)
    lift = S.Claim(
        key,
        S.EVERY_SCOPE,
        S.LIFTED,
        address.strip(),
        cause,
        reason,
        "manual",
        None,
        None,
        None,
        now_us,
        None,
        now_us,
    )
    applied = yield from S.apply([lift], now_us, policy=policy, soft_keys=[key])
    lifted = [
        was.suppression()
        for (_, scope), was in sorted(applied.before.items())
        if was is not None and (was.expires_at_us is None or was.expires_at_us > now_us)
    ]
    return lifted


def suppress(claim: S.Claim, now_us: int, policy: S.SoftBouncePolicy) -> Program[Suppression]:
    yield from S.apply([claim], now_us, policy=policy)
    return claim.suppression()


def list_suppressions(cursor: str | None, limit: int, now_us: int) -> Program[Page[Suppression]]:
    position = None
    if cursor is not None:
        at, key, scope = decode_cursor("suppressions", cursor, int, str, str)
        position = (int(at), str(key), str(scope))
    items, next_cursor, total = yield from S.listing(position, limit, now_us)
    return Page(tuple(items), next_cursor, total)


# --------------------------------------------------------------------------- sends

_SEND_COLUMNS = (
    "tracking_id, bulk_id, provider, message_id, sender, recipient, recipient_key, name, "
    "subject, category, metadata, tags, track_opens, track_clicks, send_status, send_error, "
    "sent_at_us, updated_at_us, stream"
)
_SEND_INSERT = f"INSERT INTO messages ({_SEND_COLUMNS})"
_SEND_UPSERT = (
    "ON CONFLICT (tracking_id) DO UPDATE SET "
    + ", ".join(
        f"{c} = excluded.{c}"
        for c in _SEND_COLUMNS.split(", ")
        if c not in ("tracking_id", "updated_at_us")
    )
    + " WHERE messages.sent_at_us IS NULL"
)
"""A send fills the send columns of its row, which its events may have created already; the
first record of a send is kept."""
_LINK_SEND = "INSERT INTO links (provider, message_key, recipient_key, tracking_id)"
_LINK_SEND_TAIL = (
    "ON CONFLICT (provider, message_key, recipient_key) DO UPDATE "
    "SET tracking_id = excluded.tracking_id RETURNING tracking_id, orphans"
)
_ATTACH_WAITING = (
    "UPDATE events SET tracking_id = :tracking_id WHERE tracking_id IS NULL "
    "AND provider = :provider AND message_key = :message_key AND recipient_key = :recipient_key "
    f"RETURNING {_EVENT_COLUMNS}"
)
"""Attach the events that waited for a send; they come back as event rows, to fold in."""


@dataclass(frozen=True, slots=True)
class SendRows:
    messages: list[tuple[Any, ...]]
    links: list[tuple[str, str, str, str]]


def send_rows(email: Email, result: SendResult, now_us: int) -> SendRows:
    """One row per recipient result (suppressed, duplicate and failed ones too), in tracking
    id order, and the links by which events without a tracking id will find them."""
    names: dict[str, str | None] = {}
    for address in email.recipients():
        names.setdefault(dedupe_key(address.email), address.name)
    sender = str(email.sender)
    metadata = dumps(email.metadata) if email.metadata else None
    tags = dumps(email.tags) if email.tags else None
    messages: list[tuple[Any, ...]] = []
    links: list[tuple[str, str, str, str]] = []
    for recipient in result.recipients:
        key = dedupe_key(recipient.recipient)
        messages.append(
            (
                recipient.tracking_id,
                result.bulk_id,
                recipient.provider,
                recipient.message_id,
                sender,
                recipient.recipient,
                key,
                names.get(key),
                email.subject,
                email.category,
                metadata,
                tags,
                email.track_opens,
                email.track_clicks,
                recipient.status.value,
                recipient.error,
                now_us,
                now_us,
                email.stream,
            )
        )
        if recipient.provider and recipient.message_id:
            links.append((recipient.provider, recipient.message_id, key, recipient.tracking_id))
    messages.sort(key=lambda row: row[0])
    links.sort()
    return SendRows(messages, links)


def record_send(rows: SendRows, now_us: int) -> Program[list[StateChange]]:
    """Record a send; attach (and fold in) any of its events that arrived before it.

    Links come first, as in ``ingest``: both lock links, then events, then messages."""
    waiting: set[str] = set()
    if rows.links:
        linked = yield Write(_LINK_SEND, rows.links, _LINK_SEND_TAIL)
        waiting = {tid for tid, orphans in linked if orphans}
    fresh: list[EventRow] = []
    for provider, message_key, recipient_key, tracking_id in rows.links:
        if tracking_id not in waiting:
            continue
        attached = yield Query(
            _ATTACH_WAITING,
            {
                "tracking_id": tracking_id,
                "provider": provider,
                "message_key": message_key,
                "recipient_key": recipient_key,
            },
        )
        fresh.extend(attached)
    yield Write(_SEND_INSERT, rows.messages, _SEND_UPSERT)
    return (yield from _fold_in(_partials(fresh), now_us))


# --------------------------------------------------------------------------- reading

_SEND_DECIDES = "(m.rank IS NULL OR m.rank = 0) AND m.send_status IS NOT NULL"
_EXPIRED = "m.deferred_at_us < :cutoff"
"""A deferral older than the window (``deferred_at_us`` is set only while deferred)."""
BADGE_SQL = (
    f"CASE WHEN {_SEND_DECIDES} THEN m.send_status WHEN {_EXPIRED} THEN 'failed' "
    "ELSE COALESCE(m.status, 'unknown') END"
)
"""The badge in SQL: ``badge()``, plus a deferral older than the window read as failed."""
_REASON_SQL = (
    f"CASE WHEN {_SEND_DECIDES} THEN m.send_error WHEN {_EXPIRED} THEN '{EXPIRED_REASON}' "
    "ELSE m.reason END"
)
_UPDATED_SQL = (
    "CASE WHEN m.rank IS NULL THEN m.sent_at_us "
    f"WHEN m.expired OR ({_EXPIRED}) "
    "THEN m.decided_at_us + :expiry ELSE m.decided_at_us END"
)
_RECORD_SELECT = (
    "m.tracking_id, m.bulk_id, m.recipient, m.name, m.sender, m.subject, m.category, "
    "m.metadata, m.tags, m.provider, m.message_id, "
    f"{BADGE_SQL}, {_REASON_SQL}, m.sent_at_us, {_UPDATED_SQL}, m.opens, m.clicks, "
    "m.track_opens, m.track_clicks"
)
_NEWEST_FIRST = "ORDER BY m.sent_at_us DESC, m.tracking_id DESC"


@dataclass(frozen=True, slots=True)
class Clock:
    """The reading time and the deferral window, as the SQL parameters that need them."""

    now: datetime
    expiry: timedelta

    @property
    def params(self) -> dict[str, int]:
        return {
            "cutoff": to_micros(self.now - self.expiry),
            "expiry": self.expiry // timedelta(microseconds=1),
        }


def _record_from_row(row: Sequence[Any]) -> SendRecord:
    return SendRecord(
        tracking_id=row[0],
        bulk_id=row[1],
        recipient=row[2],
        name=row[3],
        sender=row[4],
        subject=row[5],
        category=row[6],
        metadata=_loads(row[7], {}),
        tags=_loads(row[8], []),
        provider=row[9],
        message_id=row[10],
        status=DeliveryStatus(row[11]),
        reason=row[12],
        sent_at=from_micros(row[13]),
        updated_at=from_micros(row[14]),
        opens=int(row[15]),
        clicks=int(row[16]),
        track_opens=bool(row[17]),
        track_clicks=bool(row[18]),
    )


def _newest_first_page(
    kind: str,
    where: list[str],
    params: dict[str, Any],
    cursor: str | None,
    limit: int,
) -> Program[Page[SendRecord]]:
    """A page of send records, newest first, by keyset on (sent at, tracking id)."""
    total = yield Query(f"SELECT COUNT(*) FROM messages m WHERE {' AND '.join(where)}", params)
    if cursor is not None:
        sent, tracking_id = decode_cursor(kind, cursor, int, str)
        where = [*where, "(m.sent_at_us, m.tracking_id) < (:after_sent, :after_id)"]
        params = {**params, "after_sent": sent, "after_id": tracking_id}
    rows = yield Query(
        f"SELECT {_RECORD_SELECT} FROM messages m WHERE {' AND '.join(where)} "
        f"{_NEWEST_FIRST} LIMIT :limit",
        {**params, "limit": limit + 1},
    )
    more = len(rows) > limit
    records = tuple(_record_from_row(row) for row in rows[:limit])
    next_cursor = None
    if more:
        last = records[-1]
        next_cursor = encode_cursor(kind, [to_micros(last.sent_at), last.tracking_id])
    return Page(records, next_cursor, int(total[0][0]))


def send(tracking_id: str, clock: Clock) -> Program[SendRecord | None]:
    """The record of one send (one recipient of it), or None while no send is recorded
    under ``tracking_id`` (its events may have arrived first: they are not a send)."""
    rows = yield Query(
        f"SELECT {_RECORD_SELECT} FROM messages m "
        "WHERE m.tracking_id = :tracking_id AND m.sent_at_us IS NOT NULL",
        {"tracking_id": tracking_id, **clock.params},
    )
    return _record_from_row(rows[0]) if rows else None


def history(
    recipient: str, cursor: str | None, limit: int, clock: Clock
) -> Program[Page[SendRecord]]:
    return (
        yield from _newest_first_page(
            "history",
            ["m.recipient_key = :recipient_key"],
            {"recipient_key": dedupe_key(recipient), **clock.params},
            cursor,
            limit,
        )
    )


def _in_list(column: str, name: str, values: Sequence[str], params: dict[str, Any]) -> str:
    names = [f"{name}_{i}" for i in range(len(values))]
    params.update(zip(names, values, strict=True))
    return f"{column} IN ({', '.join(':' + n for n in names)})"


@dataclass(frozen=True, slots=True)
class ReportFilter:
    since: datetime | None = None
    until: datetime | None = None
    statuses: Sequence[str] = ()
    categories: Sequence[str] = ()
    providers: Sequence[str] = ()
    bulk_id: str | None = None
    recipient: str | None = None
    search: str | None = None


def _like(text: str) -> str:
    """A LIKE pattern matching ``text`` anywhere, its own ``%``, ``_`` and ``\\`` literal."""
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def report(
    filters: ReportFilter, cursor: str | None, limit: int, clock: Clock
) -> Program[Page[SendRecord]]:
    params: dict[str, Any] = dict(clock.params)
    where = ["m.sent_at_us IS NOT NULL"]
    if filters.since is not None:
        where.append("m.sent_at_us >= :since")
        params["since"] = to_micros(filters.since)
    if filters.until is not None:
        where.append("m.sent_at_us < :until")
        params["until"] = to_micros(filters.until)
    if filters.bulk_id is not None:
        where.append("m.bulk_id = :bulk_id")
        params["bulk_id"] = filters.bulk_id
    if filters.recipient is not None:
        where.append("m.recipient_key = :recipient_key")
        params["recipient_key"] = dedupe_key(filters.recipient)
    if filters.search:
        where.append(
            "(LOWER(m.recipient) LIKE :search ESCAPE '\\' "
            "OR LOWER(COALESCE(m.subject, '')) LIKE :search ESCAPE '\\')"
        )
        params["search"] = _like(filters.search)
    if filters.statuses:
        where.append(_in_list(f"({BADGE_SQL})", "status", filters.statuses, params))
    if filters.categories:
        where.append(_in_list("m.category", "category", filters.categories, params))
    if filters.providers:
        where.append(_in_list("m.provider", "provider", filters.providers, params))
    return (yield from _newest_first_page("report", where, params, cursor, limit))


_STATUS_ORDER = (
    DeliveryStatus.UNKNOWN,
    DeliveryStatus.DUPLICATE,
    DeliveryStatus.SUPPRESSED,
    DeliveryStatus.ACCEPTED,
    DeliveryStatus.PROCESSED,
    DeliveryStatus.DEFERRED,
    DeliveryStatus.DELIVERED,
    DeliveryStatus.BOUNCED,
    DeliveryStatus.DROPPED,
    DeliveryStatus.REJECTED,
    DeliveryStatus.FAILED,
    DeliveryStatus.OPENED,
    DeliveryStatus.CLICKED,
    DeliveryStatus.UNSUBSCRIBED,
    DeliveryStatus.RESUBSCRIBED,
    DeliveryStatus.COMPLAINED,
)
"""Sorting by status sorts by how far a message got, library-side outcomes first."""
assert set(_STATUS_ORDER) == set(DeliveryStatus)

SORT_KEYS: Mapping[str, str] = {
    "date": _UPDATED_SQL,
    "sent_at": "m.sent_at_us",
    "name": "LOWER(COALESCE(m.name, ''))",
    "email": "m.recipient_key",
    "status": f"CASE {BADGE_SQL} "
    + " ".join(f"WHEN '{s.value}' THEN {i}" for i, s in enumerate(_STATUS_ORDER))
    + " END",
}
"""What ``bulk_rows`` sorts by: ``date`` is when the badge last moved."""

_NUMBER = (int, type(None))
SORT_TYPES: Mapping[str, tuple[type, ...]] = {
    "date": _NUMBER,
    "sent_at": _NUMBER,
    "name": (str,),
    "email": (str,),
    "status": _NUMBER,
}
"""What a bulk-rows cursor may hold for each sort key."""
assert set(SORT_TYPES) == set(SORT_KEYS)


def bulk_rows(
    bulk_id: str,
    sort: str,
    descending: bool,
    statuses: Sequence[str],
    cursor: str | None,
    limit: int,
    clock: Clock,
    *,
    count: bool = True,
) -> Program[Page[SendRecord]]:
    """A page of a bulk send's per-recipient rows, sorted and filtered, by keyset on (sort
    key, tracking id) so that "load more" is as cheap as the first page, and at most
    ``limit`` rows are ever fetched. ``count=False`` leaves ``total`` at -1 and spares the
    count (an export that iterates pages needs it once at most)."""
    key = SORT_KEYS[sort]
    kind = f"bulk:{sort}:{'desc' if descending else 'asc'}"
    params: dict[str, Any] = {"bulk_id": bulk_id, **clock.params}
    where = ["m.bulk_id = :bulk_id"]
    if statuses:
        where.append(_in_list(f"({BADGE_SQL})", "status", statuses, params))
    total = -1
    if count:
        counted = yield Query(
            f"SELECT COUNT(*) FROM messages m WHERE {' AND '.join(where)}", params
        )
        total = int(counted[0][0])
    direction, after = ("DESC", "<") if descending else ("ASC", ">")
    if cursor is not None:
        value, tracking_id = decode_cursor(kind, cursor, SORT_TYPES[sort], str)
        where.append(f"({key}, m.tracking_id) {after} (:after_value, :after_id)")
        params.update(after_value=value, after_id=tracking_id)
    params["limit"] = limit + 1
    rows = yield Query(
        f"SELECT {_RECORD_SELECT}, {key} FROM messages m WHERE {' AND '.join(where)} "
        f"ORDER BY {key} {direction}, m.tracking_id {direction} LIMIT :limit",
        params,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(kind, [rows[-1][-1], rows[-1][0]]) if more else None
    return Page(tuple(_record_from_row(r) for r in rows), next_cursor, total)


def _has(*types: EventType) -> str:
    return f"(m.seen & {_bits(*types)}) <> 0"


_STATS_SQL = f"""
SELECT
    COUNT(*),
    COUNT(*) FILTER (WHERE m.send_status = 'accepted'),
    COUNT(*) FILTER (WHERE m.send_status = 'suppressed'),
    COUNT(*) FILTER (WHERE m.send_status = 'duplicate'),
    COUNT(*) FILTER (WHERE m.send_status = 'failed'),
    COUNT(*) FILTER (WHERE {_has(*_ARRIVED)}),
    COUNT(*) FILTER (WHERE {_has(EventType.OPENED, EventType.CLICKED)}),
    COUNT(*) FILTER (WHERE {_has(EventType.CLICKED)}),
    COUNT(*) FILTER (WHERE {_has(EventType.BOUNCED)}),
    COUNT(*) FILTER (WHERE {_has(EventType.DROPPED)}),
    COUNT(*) FILTER (WHERE {_has(EventType.DEFERRED)}),
    COUNT(*) FILTER (WHERE {_has(EventType.REJECTED)}),
    COUNT(*) FILTER (WHERE {_has(EventType.FAILED)} OR m.expired OR ({_EXPIRED})),
    COUNT(*) FILTER (WHERE {_has(EventType.COMPLAINED)}),
    COUNT(*) FILTER (WHERE {_has(EventType.UNSUBSCRIBED)}),
    COALESCE(SUM(m.opens), 0),
    COALESCE(SUM(m.clicks), 0),
    COUNT(*) FILTER (WHERE m.opens > 0),
    COUNT(*) FILTER (WHERE m.clicks > 0),
    COUNT(*) FILTER (WHERE m.track_opens),
    COUNT(*) FILTER (WHERE m.track_clicks)
FROM messages m WHERE m.bulk_id = :bulk_id
"""


def bulk_stats(bulk_id: str, clock: Clock) -> Program[BulkStats]:
    rows = yield Query(_STATS_SQL, {"bulk_id": bulk_id, **clock.params})
    values = [int(value) for value in rows[0]]
    # The split of opens and clicks by who made them is added by ``_engagement``.
    return dataclasses.replace(
        BulkStats(bulk_id, *values[:-2]), open_tracked=values[-2], click_tracked=values[-1]
    )


def timeline(tracking_id: str) -> Program[list[EmailEvent]]:
    rows = yield Query(
        f"SELECT {_EVENT_SELECT} FROM events WHERE tracking_id = ? {_TIMELINE_ORDER}",
        (tracking_id,),
    )
    return [event_from_row(row) for row in rows]


def timeline_page(
    tracking_id: str, cursor: str | None, limit: int, *, count: bool = True
) -> Program[Page[EmailEvent]]:
    """A page of one send's events in timeline order (oldest first), by keyset on (time,
    rank, event id): the same order as ``timeline``, so the pages end to end are the
    timeline. ``count=False`` leaves ``total`` at 0 (an iteration needs no count per page)."""
    params: dict[str, Any] = {"tracking_id": tracking_id, "limit": limit + 1}
    where = "tracking_id = :tracking_id"
    total = 0
    if count:
        counted = yield Query(f"SELECT COUNT(*) FROM events WHERE {where}", params)
        total = int(counted[0][0])
    if cursor is not None:
        at, rank, token = decode_cursor("timeline", cursor, int, int, str)
        where += " AND (timestamp_us, rank, event_id) > (:after_at, :after_rank, :after_id)"
        params.update(after_at=at, after_rank=rank, after_id=_id_from_token(token))
    rows = yield Query(
        f"SELECT {_EVENT_SELECT} FROM events WHERE {where} {_TIMELINE_ORDER} LIMIT :limit",
        params,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if more:
        last = rows[-1]
        next_cursor = encode_cursor("timeline", [int(last[7]), int(last[8]), _id_token(last[0])])
    return Page(tuple(event_from_row(row) for row in rows), next_cursor, total)


def _id_token(event_id: str) -> str:
    """An event id as it goes into a cursor: its UTF-8 in base64, so that an id of 255 bytes
    of any characters (JSON would spell a control character in six) keeps the cursor short
    enough to come back (``MAX_CURSOR_LENGTH``, and the web's bound on a parameter)."""
    return base64.urlsafe_b64encode(event_id.encode()).decode("ascii")


def _id_from_token(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode("ascii")).decode()
    except ValueError:  # not ASCII, not base64, not UTF-8: each a ValueError
        raise InvalidQuery("cursor", "holds a position this listing cannot have") from None


def badge_of(tracking_id: str, clock: Clock) -> Program[Badge | None]:
    """The badge of one (message, recipient) and its reason, from its state row (one row,
    whatever the number of its events), or None when nothing is stored under the id."""
    rows = yield Query(
        f"SELECT {BADGE_SQL}, {_REASON_SQL} FROM messages m WHERE m.tracking_id = :tracking_id",
        {"tracking_id": tracking_id, **clock.params},
    )
    if not rows:
        return None
    return Badge(DeliveryStatus(rows[0][0]), rows[0][1])


def state(tracking_id: str, clock: Clock) -> Program[MessageState]:
    """The fold of every stored event of the message: exactly ``lifecycle.fold``."""
    events = yield from timeline(tracking_id)
    return fold(events, now=clock.now, deferred_expiry=clock.expiry)


def ping() -> Program[bool]:
    rows = yield Query("SELECT 1")
    return bool(rows) and int(rows[0][0]) == 1


def count_events() -> Program[int]:
    rows = yield Query("SELECT COUNT(*) FROM events")
    return int(rows[0][0])


_SWEEP = (
    "UPDATE messages SET previous_status = status, status = 'failed', "
    f"reason = '{EXPIRED_REASON}', bounce = NULL, expired = TRUE, updated_at_us = :now, "
    "deferred_at_us = NULL WHERE deferred_at_us < :cutoff "
    "RETURNING tracking_id, recipient, bulk_id, decided_at_us"
)


def sweep(clock: Clock) -> Program[int]:
    """Persist the expiry of deferrals older than the window, and forget expired nonces."""
    now_us = to_micros(clock.now)
    rows = yield Query(_SWEEP, {"now": now_us, **clock.params})
    yield Query("DELETE FROM nonces WHERE expires_at_us <= ?", (now_us,))
    changes = sorted(
        (
            StateChange(
                tracking_id=tid,
                recipient=recipient,
                bulk_id=bulk_id,
                previous=DeliveryStatus.DEFERRED,
                status=DeliveryStatus.FAILED,
                reason=EXPIRED_REASON,
                event_id=None,
                timestamp=from_micros(decided) + clock.expiry,
            )
            for tid, recipient, bulk_id, decided in rows
        ),
        key=lambda c: c.tracking_id,
    )
    if changes:
        yield Emit(changes)
    return len(changes)


_BOUNCES_WHERE = (
    "e.type = 'bounced' AND e.timestamp_us >= :since AND e.timestamp_us <= :until "
    "AND e.domain <> ''"
)


def domain_alerts(
    threshold: int, since: datetime, until: datetime, kinds: Sequence[str]
) -> Program[list[DomainAlert]]:
    """Domains where at least ``threshold`` different recipients bounced (of ``kinds``)
    between ``since`` and ``until``, most affected first, with the reasons given."""
    params: dict[str, Any] = {
        "since": to_micros(since),
        "until": to_micros(until),
        "threshold": threshold,
    }
    where = f"{_BOUNCES_WHERE} AND {_in_list('e.bounce', 'kind', kinds, params)}"
    rows = yield Query(
        "SELECT e.domain, COUNT(DISTINCT e.recipient_key), COUNT(*), MIN(e.timestamp_us), "
        f"MAX(e.timestamp_us) FROM events e WHERE {where} GROUP BY e.domain "
        "HAVING COUNT(DISTINCT e.recipient_key) >= :threshold "
        "ORDER BY COUNT(DISTINCT e.recipient_key) DESC, e.domain",
        params,
    )
    if not rows:
        return []
    domains = [row[0] for row in rows]
    reason_rows = yield Query(
        f"SELECT DISTINCT e.domain, e.reason FROM events e WHERE {where} "
        f"AND e.reason IS NOT NULL AND {_in_list('e.domain', 'domain', domains, params)} "
        "ORDER BY e.domain, e.reason",
        params,
    )
    reasons: dict[str, list[str]] = {}
    for domain, reason in reason_rows:
        reasons.setdefault(domain, []).append(reason)
    return [
        DomainAlert(
            domain=domain,
            recipients=int(recipients),
            bounces=int(bounces),
            first_at=from_micros(first),
            last_at=from_micros(last),
            reasons=tuple(reasons.get(domain, ())),
        )
        for domain, recipients, bounces, first, last in rows
    ]


# --------------------------------------------------------------------------- the rest

_PRIVATE_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
"""Credentials a webhook request may carry; a dead letter keeps everything else."""


def record_dead_letter(
    provider: str, body: bytes, headers: Mapping[str, str], reason: str, now_us: int
) -> Program[int]:
    # The reason and the headers may quote what was sent: keep them storable too.
    kept = {
        storable_text(k, NAME_MAX) or "": storable_text(v, REASON_MAX) or ""
        for k, v in headers.items()
        if k.lower() not in _PRIVATE_HEADERS
    }
    why = storable_text(reason, REASON_MAX) or ""
    rows = yield Write(
        "INSERT INTO dead_letters (provider, received_at_us, reason, headers, body)",
        [(storable_text(provider, NAME_MAX) or "", now_us, why, dumps(kept), bytes(body))],
        "RETURNING id",
    )
    return int(rows[0][0])


def dead_letters(provider: str | None, limit: int) -> Program[list[DeadLetter]]:
    where, params = "", {"limit": limit}
    if provider is not None:
        where = "WHERE provider = :provider"
        params["provider"] = provider  # type: ignore[assignment]
    rows = yield Query(
        "SELECT id, provider, received_at_us, reason, headers, body FROM dead_letters "
        f"{where} ORDER BY received_at_us DESC, id DESC LIMIT :limit",
        params,
    )
    return [
        DeadLetter(
            id=int(row[0]),
            provider=row[1],
            received_at=from_micros(row[2]),
            reason=row[3],
            headers=json.loads(row[4]),
            body=bytes(row[5]),
        )
        for row in rows
    ]


def discard_dead_letter(letter_id: int) -> Program[bool]:
    rows = yield Query("DELETE FROM dead_letters WHERE id = ? RETURNING id", (letter_id,))
    return bool(rows)


def add_nonce(key: str, expires_at_us: int, now_us: int) -> Program[bool]:
    """Remember ``key`` unless it is remembered and unexpired: one atomic upsert."""
    rows = yield Query(
        "INSERT INTO nonces (nonce, expires_at_us) VALUES (:key, :expires) "
        "ON CONFLICT (nonce) DO UPDATE SET expires_at_us = excluded.expires_at_us "
        "WHERE nonces.expires_at_us <= :now RETURNING nonce",
        {"key": key, "expires": expires_at_us, "now": now_us},
    )
    return bool(rows)


TokenRow = tuple[str, str, int]
"""A webhook token to spend: (key, digest of the request, expiry in microseconds)."""


def ingest_once(
    batch: Batch, tokens: Sequence[TokenRow], now_us: int
) -> Program[IngestResult | None]:
    """Spend webhook tokens and store a batch in one transaction: either both are written or
    neither. A token already spent by a request with the same digest (the provider's retry
    of a stored request) lets the batch through, to be counted as duplicates; one spent by a
    different request makes the program write nothing and return None (a replay)."""
    for key, digest, expires_us in tokens:
        spent = yield Query(
            "INSERT INTO nonces (nonce, expires_at_us, digest) VALUES (:key, :expires, :digest) "
            "ON CONFLICT (nonce) DO UPDATE SET expires_at_us = excluded.expires_at_us, "
            "digest = excluded.digest WHERE nonces.expires_at_us <= :now RETURNING nonce",
            {"key": key, "expires": expires_us, "digest": digest, "now": now_us},
        )
        if not spent:
            found = yield Query("SELECT digest FROM nonces WHERE nonce = ?", (key,))
            if not found or found[0][0] != digest:
                return None
    return (yield from ingest(batch))


def discard_nonce(key: str) -> Program[None]:
    """Forget ``key`` (a request that could not be stored may then be retried)."""
    yield Query("DELETE FROM nonces WHERE nonce = ?", (key,))
