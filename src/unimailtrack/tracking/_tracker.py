"""``Tracker``: the one API over every store (contract).

Each operation is built once, as a program (``_programs``) plus whether it writes; the sync
method runs it on the store, its async twin awaits it. After a write commits, the state
changes it caused go to this process's subscribers (and, through the store, to other
processes' subscribers).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Generic, Self, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

from unimailtrack.errors import ConfigurationError, InvalidQuery
from unimailtrack.lifecycle import DEFAULT_DEFERRED_EXPIRY, MessageState
from unimailtrack.model import (
    Address,
    BounceKind,
    DeliveryStatus,
    Email,
    EmailEvent,
    EventType,
    SendResult,
    Suppression,
)
from unimailtrack.tracking import _programs as P
from unimailtrack.tracking._live import Callback, ChangeStream, Hub
from unimailtrack.tracking._records import (
    BulkStats,
    DeadLetter,
    DomainAlert,
    IngestResult,
    Page,
    SendRecord,
    StateChange,
    to_micros,
)
from unimailtrack.tracking._store import ProgramFactory, Store

__all__ = ["DEFAULT_PATH", "Tracker"]

T = TypeVar("T")

DEFAULT_PATH = "unimailtrack.sqlite3"
"""Where ``Tracker.open()`` keeps its SQLite database: in the working directory."""

DEFAULT_ALERT_KINDS = (BounceKind.HARD, BounceKind.BLOCK)
"""Bounces that count towards a domain alert: the address refused, or the sender blocked."""

StatusFilter = DeliveryStatus | str | Iterable[DeliveryStatus | str] | None


@dataclass(frozen=True, slots=True)
class _Op(Generic[T]):
    program: ProgramFactory[T]
    write: bool


def _statuses(value: StatusFilter) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else list(value)
    known = {status.value for status in DeliveryStatus}
    for item in items:
        if item not in known:
            listed = ", ".join(status.value for status in DeliveryStatus)
            raise InvalidQuery("status", f"must be one of {listed}, not {item!r}")
    return tuple(DeliveryStatus(item).value for item in items)


def _names(value: str | Iterable[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def _positive(name: str, value: int) -> int:
    if value < 1:
        raise InvalidQuery(name, f"must be at least 1, not {value}")
    return value


def open_store(url: str | None, now: datetime) -> Store:
    """The store a tracker URL names."""
    now_us = to_micros(now)
    if url is None:
        from unimailtrack.tracking._sqlite import SQLiteStore

        return SQLiteStore(os.path.join(os.getcwd(), DEFAULT_PATH), now_us=now_us)
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme == "sqlite":
        return _sqlite_store(url, now_us)
    if scheme in ("postgresql", "postgres"):
        from unimailtrack.tracking._postgres import PostgresStore

        return PostgresStore(url, now_us=now_us)
    raise ConfigurationError(
        "a tracker URL is sqlite:///path/to/file, sqlite:///:memory: or postgresql://..., "
        f"not {url.split('@')[-1]!r}"
    )


def _sqlite_store(url: str, now_us: int) -> Store:
    from unimailtrack.tracking._sqlite import SQLiteStore

    parts = urlsplit(url)
    path = unquote(parts.path)[1:] if parts.path.startswith("/") else ""
    if parts.netloc or not path:
        raise ConfigurationError(
            f"{url!r} names no SQLite file: use sqlite:///relative/path, "
            "sqlite:////absolute/path or sqlite:///:memory:"
        )
    options = dict(parse_qsl(parts.query))
    unknown = sorted(set(options) - {"timeout"})
    if unknown:
        raise ConfigurationError(
            f"unknown SQLite tracker option(s) {', '.join(unknown)}; known: timeout"
        )
    try:
        timeout = float(options.get("timeout", 5.0))
    except ValueError:
        raise ConfigurationError("the SQLite tracker option timeout must be seconds") from None
    return SQLiteStore(path, timeout=timeout, now_us=now_us)


class Tracker:
    """Remembers every send and every event, and answers what the product screens ask
    (contract).

    Open one with :meth:`open`; it implements what ``Mailer(..., tracker=...)`` needs (the
    suppression list and a record of every send) and what a webhook receiver needs (atomic
    ingestion, dead letters, replay protection for webhook tokens). Thread-safe; every
    method has an async twin named with an ``a`` in front. Close it when done (it is a
    context manager, sync and async).

    ``deferred_expiry`` is how long a deferral may stand before the badge reads failed /
    ``"expired"``; ``clock`` replaces the current time (for tests and replays).
    """

    def __init__(
        self,
        store: Store,
        *,
        deferred_expiry: timedelta = DEFAULT_DEFERRED_EXPIRY,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._store = store
        self.deferred_expiry = deferred_expiry
        self._now = clock or (lambda: datetime.now(UTC))
        self._hub = Hub(lambda: store.listen(self._hub.publish))

    @classmethod
    def open(
        cls,
        url: str | None = None,
        *,
        deferred_expiry: timedelta = DEFAULT_DEFERRED_EXPIRY,
        clock: Callable[[], datetime] | None = None,
    ) -> Tracker:
        """Open (creating or migrating as needed) the store ``url`` names (contract).

        ``None``: the SQLite file ``unimailtrack.sqlite3`` in the working directory.
        ``sqlite:///relative/path``, ``sqlite:////absolute/path``, ``sqlite:///:memory:``
        (one connection, for tests), ``postgresql://user@host/db?schema=name``.
        """
        now = (clock or (lambda: datetime.now(UTC)))()
        return cls(open_store(url, now), deferred_expiry=deferred_expiry, clock=clock)

    def __repr__(self) -> str:
        return f"<Tracker {self._store!r}>"

    # ------------------------------------------------------------------ running

    def _run(self, op: _Op[T]) -> T:
        result, changes = self._store.run(op.program, write=op.write)
        self._hub.publish(changes)
        return result

    async def _arun(self, op: _Op[T]) -> T:
        result, changes = await self._store.arun(op.program, write=op.write)
        self._hub.publish(changes)
        return result

    def _clock(self) -> P.Clock:
        return P.Clock(self._now(), self.deferred_expiry)

    def _now_us(self) -> int:
        return to_micros(self._now())

    # ------------------------------------------------------------------ ingestion

    def _ingest(self, events: Iterable[EmailEvent]) -> _Op[IngestResult]:
        batch = P.prepare(events, self._now_us())
        return _Op(lambda: P.ingest(batch), write=True)

    def ingest(self, events: Iterable[EmailEvent]) -> IngestResult:
        """Store a batch of events, all or nothing, and fold them into their states
        (contract). Idempotent: an event already stored is counted as a duplicate. Events
        whose send is not recorded yet are kept and joined when it is. Raises ``StoreError``
        when the store fails, with nothing written."""
        return self._run(self._ingest(events))

    async def aingest(self, events: Iterable[EmailEvent]) -> IngestResult:
        """The async twin of :meth:`ingest`."""
        return await self._arun(self._ingest(events))

    def ping(self) -> bool:
        """True when the store answers a trivial query; raises ``StoreError`` when it does
        not (a readiness check)."""
        return self._run(_Op(P.ping, write=False))

    async def aping(self) -> bool:
        return await self._arun(_Op(P.ping, write=False))

    def count_events(self) -> int:
        """How many events are stored (contract)."""
        return self._run(_Op(P.count_events, write=False))

    async def acount_events(self) -> int:
        return await self._arun(_Op(P.count_events, write=False))

    # ------------------------------------------------------------------ one message

    def _state(self, tracking_id: str) -> _Op[MessageState]:
        clock = self._clock()
        return _Op(lambda: P.state(tracking_id, clock), write=False)

    def state(self, tracking_id: str) -> MessageState:
        """The state of one (message, recipient): ``lifecycle.fold`` of its stored events,
        read now (a deferral older than the window reads failed / ``"expired"``)
        (contract)."""
        return self._run(self._state(tracking_id))

    async def astate(self, tracking_id: str) -> MessageState:
        return await self._arun(self._state(tracking_id))

    def _send(self, tracking_id: str) -> _Op[SendRecord | None]:
        clock = self._clock()
        return _Op(lambda: P.send(tracking_id, clock), write=False)

    def send(self, tracking_id: str) -> SendRecord | None:
        """The record of one (message, recipient), as ``history`` lists it (subject,
        category, metadata, the badge, ...), or None when no send is recorded under
        ``tracking_id``. A send just recorded has its record before any event arrives."""
        return self._run(self._send(tracking_id))

    async def asend(self, tracking_id: str) -> SendRecord | None:
        return await self._arun(self._send(tracking_id))

    def timeline(self, tracking_id: str) -> list[EmailEvent]:
        """Every event of one (message, recipient), oldest first (contract)."""
        return self._run(_Op(lambda: P.timeline(tracking_id), write=False))

    async def atimeline(self, tracking_id: str) -> list[EmailEvent]:
        return await self._arun(_Op(lambda: P.timeline(tracking_id), write=False))

    # ------------------------------------------------------------------ listings

    def _history(self, recipient: str, cursor: str | None, limit: int) -> _Op[Page[SendRecord]]:
        clock, limit = self._clock(), _positive("limit", limit)
        return _Op(lambda: P.history(recipient, cursor, limit, clock), write=False)

    def history(
        self, recipient: str, *, cursor: str | None = None, limit: int = 25
    ) -> Page[SendRecord]:
        """Everything sent to ``recipient`` (matched case-insensitively), newest first, a
        page at a time; pass ``next_cursor`` back for the next page (contract). ``total``
        counts every send to the address."""
        return self._run(self._history(recipient, cursor, limit))

    async def ahistory(
        self, recipient: str, *, cursor: str | None = None, limit: int = 25
    ) -> Page[SendRecord]:
        return await self._arun(self._history(recipient, cursor, limit))

    def _report(
        self,
        since: datetime | None,
        until: datetime | None,
        status: StatusFilter,
        category: str | Iterable[str] | None,
        provider: str | Iterable[str] | None,
        bulk_id: str | None,
        recipient: str | None,
        search: str | None,
        cursor: str | None,
        limit: int,
    ) -> _Op[Page[SendRecord]]:
        filters = P.ReportFilter(
            since=since,
            until=until,
            statuses=_statuses(status),
            categories=_names(category),
            providers=_names(provider),
            bulk_id=bulk_id,
            recipient=recipient,
            search=search,
        )
        clock, limit = self._clock(), _positive("limit", limit)
        return _Op(lambda: P.report(filters, cursor, limit, clock), write=False)

    def report(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        status: StatusFilter = None,
        category: str | Iterable[str] | None = None,
        provider: str | Iterable[str] | None = None,
        bulk_id: str | None = None,
        recipient: str | None = None,
        search: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> Page[SendRecord]:
        """The "Track Emails" view: sends newest first, filtered by when they were sent
        (``since`` inclusive, ``until`` exclusive), badge, category, provider, bulk send or
        recipient; each filter takes one value or several. ``search`` keeps the sends whose
        recipient or subject contains it, case-insensitively."""
        return self._run(
            self._report(
                since,
                until,
                status,
                category,
                provider,
                bulk_id,
                recipient,
                search,
                cursor,
                limit,
            )
        )

    async def areport(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        status: StatusFilter = None,
        category: str | Iterable[str] | None = None,
        provider: str | Iterable[str] | None = None,
        bulk_id: str | None = None,
        recipient: str | None = None,
        search: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> Page[SendRecord]:
        return await self._arun(
            self._report(
                since,
                until,
                status,
                category,
                provider,
                bulk_id,
                recipient,
                search,
                cursor,
                limit,
            )
        )

    def _bulk_stats(self, bulk_id: str) -> _Op[BulkStats]:
        clock = self._clock()
        return _Op(lambda: P.bulk_stats(bulk_id, clock), write=False)

    def bulk_stats(self, bulk_id: str) -> BulkStats:
        """The analytics row of a bulk send (contract): how many recipients reached each
        stage, plus total and unique opens and clicks."""
        return self._run(self._bulk_stats(bulk_id))

    async def abulk_stats(self, bulk_id: str) -> BulkStats:
        return await self._arun(self._bulk_stats(bulk_id))

    def _bulk_rows(
        self,
        bulk_id: str,
        sort: str,
        descending: bool,
        status: StatusFilter,
        cursor: str | None,
        limit: int | None,
    ) -> _Op[Page[SendRecord]]:
        if sort not in P.SORT_KEYS:
            raise InvalidQuery("sort", f"must be one of {', '.join(P.SORT_KEYS)}, not {sort!r}")
        if limit is not None:
            _positive("limit", limit)
        statuses, clock = _statuses(status), self._clock()
        return _Op(
            lambda: P.bulk_rows(bulk_id, sort, descending, statuses, cursor, limit, clock),
            write=False,
        )

    def bulk_rows(
        self,
        bulk_id: str,
        *,
        sort: str = "date",
        descending: bool = False,
        status: StatusFilter = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> Page[SendRecord]:
        """A bulk send's per-recipient rows (contract), sorted by ``"name"``, ``"email"``,
        ``"status"`` (how far each got), ``"date"`` (when its badge last moved) or
        ``"sent_at"``, and filtered by badge. Every row at once unless ``limit`` is given;
        then a page, with ``next_cursor`` for the next one."""
        return self._run(self._bulk_rows(bulk_id, sort, descending, status, cursor, limit))

    async def abulk_rows(
        self,
        bulk_id: str,
        *,
        sort: str = "date",
        descending: bool = False,
        status: StatusFilter = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> Page[SendRecord]:
        return await self._arun(self._bulk_rows(bulk_id, sort, descending, status, cursor, limit))

    def _domain_alerts(
        self,
        threshold: int,
        window: timedelta,
        kinds: Iterable[BounceKind | str],
        now: datetime | None,
    ) -> _Op[list[DomainAlert]]:
        until = now if now is not None else self._now()
        names = tuple(BounceKind(kind).value for kind in kinds)
        threshold = _positive("threshold", threshold)
        return _Op(lambda: P.domain_alerts(threshold, until - window, until, names), write=False)

    def domain_alerts(
        self,
        *,
        threshold: int = 3,
        window: timedelta = timedelta(hours=24),
        kinds: Iterable[BounceKind | str] = DEFAULT_ALERT_KINDS,
        now: datetime | None = None,
    ) -> list[DomainAlert]:
        """Domains where at least ``threshold`` different recipients bounced within the
        last ``window``: a likely block of the sender by the domain, not bad addresses. Hard
        and block bounces count by default."""
        return self._run(self._domain_alerts(threshold, window, kinds, now))

    async def adomain_alerts(
        self,
        *,
        threshold: int = 3,
        window: timedelta = timedelta(hours=24),
        kinds: Iterable[BounceKind | str] = DEFAULT_ALERT_KINDS,
        now: datetime | None = None,
    ) -> list[DomainAlert]:
        return await self._arun(self._domain_alerts(threshold, window, kinds, now))

    # ------------------------------------------------------------------ sending (SendLog)

    def suppressions_for(self, addresses: Sequence[str]) -> Mapping[str, Suppression]:
        """The suppressions among ``addresses``, keyed by ``model.suppression_key``."""
        return self._run(_Op(lambda: P.suppressions_for(addresses), write=False))

    async def asuppressions_for(self, addresses: Sequence[str]) -> Mapping[str, Suppression]:
        return await self._arun(_Op(lambda: P.suppressions_for(addresses), write=False))

    def _record_send(self, email: Email, result: SendResult) -> _Op[list[StateChange]]:
        now_us = self._now_us()
        rows = P.send_rows(email, result, now_us)
        return _Op(lambda: P.record_send(rows, now_us), write=True)

    def record_send(self, email: Email, result: SendResult) -> None:
        """Record one row per recipient of a send (suppressed, duplicate and failed ones
        too), unless the e-mail is untracked; events that arrived first join it."""
        if email.tracked:
            self._run(self._record_send(email, result))

    async def arecord_send(self, email: Email, result: SendResult) -> None:
        if email.tracked:
            await self._arun(self._record_send(email, result))

    # ------------------------------------------------------------------ suppression

    def suppression(self, address: str) -> Suppression | None:
        """Why ``address`` is suppressed, or None (contract). The domain compares
        case-insensitively, the local part as written."""
        return self._run(_Op(lambda: P.suppression(address), write=False))

    async def asuppression(self, address: str) -> Suppression | None:
        return await self._arun(_Op(lambda: P.suppression(address), write=False))

    def unsuppress(self, address: str) -> Suppression | None:
        """Lift the suppression of ``address`` (contract); returns what was lifted."""
        return self._run(_Op(lambda: P.unsuppress(address), write=True))

    async def aunsuppress(self, address: str) -> Suppression | None:
        return await self._arun(_Op(lambda: P.unsuppress(address), write=True))

    def _suppress(self, address: str, reason: str | None, cause: EventType) -> _Op[Suppression]:
        checked = Address.parse(address).email
        now_us = self._now_us()
        return _Op(lambda: P.suppress(checked, reason, cause, now_us), write=True)

    def suppress(
        self, address: str, reason: str | None = None, *, cause: EventType = EventType.UNKNOWN
    ) -> Suppression:
        """Suppress ``address`` by hand (an entry with no ``event_id``); it replaces any
        entry the address had. Raises ``InvalidAddress`` for a malformed address."""
        return self._run(self._suppress(address, reason, cause))

    async def asuppress(
        self, address: str, reason: str | None = None, *, cause: EventType = EventType.UNKNOWN
    ) -> Suppression:
        return await self._arun(self._suppress(address, reason, cause))

    def correct_address(self, old: str, new: str) -> Suppression | None:
        """The application corrected a recipient's address from ``old`` to ``new``: the
        suppression ``old`` earned described the mistake, so it is lifted and returned.
        ``new`` is checked (``InvalidAddress``) and keeps whatever record it has."""
        Address.parse(new)
        return self.unsuppress(old)

    async def acorrect_address(self, old: str, new: str) -> Suppression | None:
        Address.parse(new)
        return await self.aunsuppress(old)

    def suppressions(self, *, cursor: str | None = None, limit: int = 100) -> Page[Suppression]:
        """The suppression list, newest first, a page at a time."""
        limit = _positive("limit", limit)
        return self._run(_Op(lambda: P.list_suppressions(cursor, limit), write=False))

    async def asuppressions(
        self, *, cursor: str | None = None, limit: int = 100
    ) -> Page[Suppression]:
        limit = _positive("limit", limit)
        return await self._arun(_Op(lambda: P.list_suppressions(cursor, limit), write=False))

    # ------------------------------------------------------------------ maintenance

    def sweep(self) -> int:
        """Persist the expiry of every deferral older than the window (so that reports and
        other readers see it) and forget expired webhook tokens; returns how many messages
        expired. Subscribers hear of each."""
        return self._run(self._sweep())

    async def asweep(self) -> int:
        return await self._arun(self._sweep())

    def _sweep(self) -> _Op[int]:
        clock = self._clock()
        return _Op(lambda: P.sweep(clock), write=True)

    def _dead_letter(
        self, provider: str, body: bytes, headers: Mapping[str, str], reason: str
    ) -> _Op[int]:
        now_us = self._now_us()
        return _Op(
            lambda: P.record_dead_letter(provider, body, headers, reason, now_us), write=True
        )

    def record_dead_letter(
        self, provider: str, body: bytes, headers: Mapping[str, str], reason: str
    ) -> int:
        """Keep a webhook body that could not be parsed, with why, to replay later; returns
        its id. Credentials in the headers (``Authorization``, cookies) are not kept."""
        return self._run(self._dead_letter(provider, body, headers, reason))

    async def arecord_dead_letter(
        self, provider: str, body: bytes, headers: Mapping[str, str], reason: str
    ) -> int:
        return await self._arun(self._dead_letter(provider, body, headers, reason))

    def dead_letters(self, *, provider: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """The dead letters kept, newest first."""
        limit = _positive("limit", limit)
        return self._run(_Op(lambda: P.dead_letters(provider, limit), write=False))

    async def adead_letters(
        self, *, provider: str | None = None, limit: int = 100
    ) -> list[DeadLetter]:
        limit = _positive("limit", limit)
        return await self._arun(_Op(lambda: P.dead_letters(provider, limit), write=False))

    def discard_dead_letter(self, letter_id: int) -> bool:
        """Delete a dead letter (once replayed or judged worthless); False if it was gone."""
        return self._run(_Op(lambda: P.discard_dead_letter(letter_id), write=True))

    async def adiscard_dead_letter(self, letter_id: int) -> bool:
        return await self._arun(_Op(lambda: P.discard_dead_letter(letter_id), write=True))

    def add_if_absent(self, key: str, expires_at: datetime) -> bool:
        """Remember a webhook token until ``expires_at``: True when it was new, False for a
        replay (``adapters.base.NonceStore``). Atomic across processes."""
        expires_us, now_us = to_micros(expires_at), self._now_us()
        return self._run(_Op(lambda: P.add_nonce(key, expires_us, now_us), write=True))

    def discard(self, key: str) -> None:
        """Forget a webhook token (``adapters.base.NonceStore``), so that the retry of a
        request which could not be stored is accepted."""
        self._run(_Op(lambda: P.discard_nonce(key), write=True))

    # ------------------------------------------------------------------ live updates

    def subscribe(self, callback: Callback) -> Callable[[], None]:
        """Call ``callback(change)`` with every ``StateChange`` from now on, after it is
        committed; returns the function that unsubscribes. With PostgreSQL, changes made by
        other processes arrive too (on a listener thread). Callbacks must be quick and
        thread-safe; one that raises is logged and skipped."""
        return self._hub.subscribe(callback)

    def changes(self) -> ChangeStream:
        """``async for change in tracker.changes()``: every ``StateChange`` from now on.
        Call it inside the event loop that reads it; close it (``async with``) when done."""
        return ChangeStream(self._hub)

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Close the store; calling it again does nothing. After async use on PostgreSQL,
        prefer ``await aclose()`` in the event loop that used it."""
        self._store.close()

    async def aclose(self) -> None:
        await self._store.aclose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
