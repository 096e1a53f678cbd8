"""``Tracker``: the one API over every store (contract).

Each operation is built once, as a program (``_programs``) plus whether it writes; the sync
method runs it on the store, its async twin awaits it. After a write commits, the state
changes it caused go to this process's subscribers (and, through the store, to other
processes' subscribers).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Protocol, Self, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

from unimailtrack import _constants as C
from unimailtrack import _telemetry as telemetry
from unimailtrack.deliverability import MxLookup
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
    SuppressionSource,
    check_stream,
    suppression_key,
)
from unimailtrack.tracking import _alerts as A
from unimailtrack.tracking import _engagement as G
from unimailtrack.tracking import _health as H
from unimailtrack.tracking import _outbox as O
from unimailtrack.tracking import _programs as P
from unimailtrack.tracking import _suppression as S
from unimailtrack.tracking._alerts import Alert, AlertRules, SenderRate
from unimailtrack.tracking._health import HealthReport
from unimailtrack.tracking._live import Callback, ChangeStream, Hub
from unimailtrack.tracking._providers import ProviderRules
from unimailtrack.tracking._records import (
    Badge,
    BulkStats,
    DeadLetter,
    DomainAlert,
    IngestResult,
    Page,
    SendRecord,
    StateChange,
    to_micros,
)
from unimailtrack.tracking._store import Program, ProgramFactory, Query, Store

if TYPE_CHECKING:
    from unimailtrack.tracking._partitions import RetentionReport, SplitReport

__all__ = ["DEFAULT_PATH", "SuppressionChange", "Tracker"]

T = TypeVar("T")

DEFAULT_PATH = "unimailtrack.sqlite3"
"""Where ``Tracker.open()`` keeps its SQLite database: in the working directory."""

DEFAULT_ALERT_KINDS = (BounceKind.HARD, BounceKind.BLOCK)
"""Bounces that count towards a domain alert: the address refused, or the sender blocked."""

StatusFilter = DeliveryStatus | str | Iterable[DeliveryStatus | str] | None


class WebhookToken(Protocol):
    """A single-use webhook token to spend with a batch (``adapters.base.ReplayToken``)."""

    @property
    def key(self) -> str: ...

    @property
    def digest(self) -> str: ...

    @property
    def expires_at(self) -> datetime: ...


BULK_PAGE = 1000
"""Rows in a page of ``bulk_rows`` when no ``limit`` is given, and in each page that
``iter_bulk_rows`` fetches."""
TIMELINE_PAGE = 100
"""Events in a page of ``timeline_page`` when no ``limit`` is given: a screen's worth."""
TIMELINE_READ = 1000
"""Events in each page that ``iter_timeline`` fetches when no ``page_size`` is given. Each
page costs the database a look at every event of the send (it sorts them to find where the
page starts), so an export reads fewer, larger pages: a few MiB of events at a time."""


@dataclass(frozen=True, slots=True)
class _Op(Generic[T]):
    program: ProgramFactory[T]
    write: bool


def _ping() -> Program[None]:
    yield Query("SELECT 1")


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


@dataclass(frozen=True, slots=True)
class SuppressionChange:
    """One entry of an address's suppression history: ``action`` (``added``, ``lifted``,
    ``cleared`` or ``expired``), the claim (``suppression``: its scope, cause, reason,
    source, provider, event id and times), and when it was recorded."""

    action: str
    suppression: Suppression
    recorded_at: datetime


class _Replayable:
    """The rows of an import, which a store may need to run again from the start (it retries
    a transaction whole after a conflict): a sequence is read again; a one-shot iterator can
    be read once, and a retry of it fails loudly rather than import half."""

    def __init__(self, rows: Iterable[Any], *, numbered: bool) -> None:
        self._rows = rows
        self._numbered = numbered
        self._started = False

    def rows(self) -> Iterable[Any]:
        if isinstance(self._rows, Sequence) or hasattr(self._rows, "reopen"):
            return self._rows if self._numbered else enumerate(self._rows, start=1)
        if self._started:
            from unimailtrack.errors import StoreError

            raise StoreError("the import must be retried but its rows were read once already")
        self._started = True
        return self._rows if self._numbered else enumerate(self._rows, start=1)


def _only(kind: type[Any], callback: Callable[[Any], object]) -> Callable[[Any], object]:
    """``callback``, called only with the changes of ``kind``."""

    def only(change: object) -> object:
        return callback(change) if isinstance(change, kind) else None

    return only


class _Filtered:
    """A hub seen through a filter: what a ``ChangeStream`` subscribes to."""

    def __init__(self, hub: Hub, kind: type[Any]) -> None:
        self._hub, self._kind = hub, kind

    def subscribe(self, callback: Callback) -> Callable[[], None]:
        return self._hub.subscribe(_only(self._kind, callback))


class Tracker:
    """Remembers every send and every event, and answers what the product screens ask
    (contract).

    Open one with :meth:`open`; it implements what ``Mailer(..., tracker=...)`` needs (the
    suppression list and a record of every send) and what a webhook receiver needs (atomic
    ingestion, dead letters, replay protection for webhook tokens). Thread-safe; every
    method has an async twin named with an ``a`` in front. Close it when done (it is a
    context manager, sync and async).

    ``deferred_expiry`` is how long a deferral may stand before the badge reads failed /
    ``"expired"``; ``soft_bounces`` is the soft-bounce policy (``SoftBouncePolicy(limit=0)``
    turns it off); ``clock`` replaces the current time (for tests and replays).
    ``alert_rules`` tunes the sender-reputation alerts, ``on_alert`` is called with every
    alert that opens, moves or closes, and ``mx_lookup`` lets alerts group company domains
    by the mailbox provider their MX hosts belong to (see docs/deliverability.md).
    ``webhooks`` are the application's endpoints told of every state change and alert,
    through an outbox written in the same transaction (``unimailtrack.outbox``).
    ``providers`` are the providers' rules the tracker needs (how event message ids join their
    send's, which events change a provider's own list); by default the registered adapters'
    (``unimailtrack.adapter_rules.REGISTERED``).
    """

    def __init__(
        self,
        store: Store,
        *,
        deferred_expiry: timedelta = DEFAULT_DEFERRED_EXPIRY,
        soft_bounces: S.SoftBouncePolicy | None = None,
        clock: Callable[[], datetime] | None = None,
        alert_rules: AlertRules | None = None,
        on_alert: Callable[[Alert], object] | None = None,
        mx_lookup: MxLookup | None = None,
        webhooks: Sequence[O.WebhookEndpoint] = (),
        providers: ProviderRules | None = None,
    ) -> None:
        if providers is None:
            from unimailtrack.adapter_rules import REGISTERED

            providers = REGISTERED
        self.providers = providers
        self._store = store
        self.deferred_expiry = deferred_expiry
        self.soft_bounces = soft_bounces if soft_bounces is not None else S.SoftBouncePolicy()
        self._now = clock or (lambda: datetime.now(UTC))
        self._hub = Hub(lambda: store.listen(self._hub.publish))
        self.alert_rules = alert_rules or AlertRules()
        self.mx_lookup = mx_lookup
        self.webhooks = tuple(webhooks)
        if len({endpoint.name for endpoint in self.webhooks}) != len(self.webhooks):
            raise ConfigurationError("every outbound webhook endpoint needs a name of its own")
        if on_alert is not None:
            self.subscribe_alerts(on_alert)

    @classmethod
    def open(
        cls,
        url: str | None = None,
        *,
        deferred_expiry: timedelta = DEFAULT_DEFERRED_EXPIRY,
        soft_bounces: S.SoftBouncePolicy | None = None,
        clock: Callable[[], datetime] | None = None,
        alert_rules: AlertRules | None = None,
        on_alert: Callable[[Alert], object] | None = None,
        mx_lookup: MxLookup | None = None,
        webhooks: Sequence[O.WebhookEndpoint] = (),
        providers: ProviderRules | None = None,
    ) -> Tracker:
        """Open (creating or migrating as needed) the store ``url`` names (contract).

        ``None``: the SQLite file ``unimailtrack.sqlite3`` in the working directory.
        ``sqlite:///relative/path``, ``sqlite:////absolute/path``, ``sqlite:///:memory:``
        (one connection, for tests), ``postgresql://user@host/db?schema=name``.
        """
        now = (clock or (lambda: datetime.now(UTC)))()
        return cls(
            open_store(url, now),
            deferred_expiry=deferred_expiry,
            soft_bounces=soft_bounces,
            clock=clock,
            alert_rules=alert_rules,
            on_alert=on_alert,
            mx_lookup=mx_lookup,
            webhooks=webhooks,
            providers=providers,
        )

    def __repr__(self) -> str:
        return f"<Tracker {self._store!r}>"

    # ------------------------------------------------------------------ running

    def _program(self, op: _Op[T]) -> ProgramFactory[T]:
        """``op``'s program; a write also queues what it emits for the webhook endpoints."""
        if not (op.write and self.webhooks):
            return op.program
        endpoints, now_us, program = self.webhooks, self._now_us(), op.program
        return lambda: O.with_outbox(program(), endpoints, now_us)

    def _run(self, op: _Op[T]) -> T:
        result, changes = self._store.run(self._program(op), write=op.write)
        self._hub.publish(changes)
        return result

    async def _arun(self, op: _Op[T]) -> T:
        result, changes = await self._store.arun(self._program(op), write=op.write)
        self._hub.publish(changes)
        return result

    def _clock(self) -> P.Clock:
        return P.Clock(self._now(), self.deferred_expiry)

    def _now_us(self) -> int:
        return to_micros(self._now())

    # ------------------------------------------------------------------ ingestion

    def _ingest(self, events: Iterable[EmailEvent]) -> _Op[IngestResult]:
        batch, policy = P.prepare(events, self._now_us(), self.providers), self.soft_bounces
        return _Op(lambda: P.ingest(batch, policy), write=True)

    def ingest(self, events: Iterable[EmailEvent]) -> IngestResult:
        """Store a batch of events, all or nothing, and fold them into their states
        (contract). Idempotent: an event already stored is counted as a duplicate. Events
        whose send is not recorded yet are kept and joined when it is. Raises ``StoreError``
        when the store fails, with nothing written."""
        with telemetry.ingesting():
            return self._run(self._ingest(events))

    async def aingest(self, events: Iterable[EmailEvent]) -> IngestResult:
        """The async twin of :meth:`ingest`."""
        with telemetry.ingesting():
            return await self._arun(self._ingest(events))

    def _ingest_once(
        self, events: Iterable[EmailEvent], tokens: Iterable[WebhookToken]
    ) -> _Op[IngestResult | None]:
        now_us = self._now_us()
        batch = P.prepare(events, now_us, self.providers)
        rows = tuple((t.key, t.digest, to_micros(t.expires_at)) for t in tokens)
        return _Op(lambda: P.ingest_once(batch, rows, now_us), write=True)

    def ingest_once(
        self, events: Iterable[EmailEvent], tokens: Iterable[WebhookToken]
    ) -> IngestResult | None:
        """Spend the single-use webhook ``tokens`` of a verified request and store its
        ``events``, in one transaction: a request is stored with its tokens or not at all,
        so a failure or a crash at any point leaves the provider's retry welcome. A token
        already spent by the same request (same digest) admits the retry, whose events count
        as duplicates; one spent by a different request returns None with nothing written.
        Raises ``StoreError`` when the store fails, with nothing written."""
        with telemetry.ingesting():
            return self._run(self._ingest_once(events, tokens))

    async def aingest_once(
        self, events: Iterable[EmailEvent], tokens: Iterable[WebhookToken]
    ) -> IngestResult | None:
        """The async twin of :meth:`ingest_once`."""
        with telemetry.ingesting():
            return await self._arun(self._ingest_once(events, tokens))

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

    def _badge(self, tracking_id: str) -> _Op[Badge | None]:
        clock = self._clock()
        return _Op(lambda: P.badge_of(tracking_id, clock), write=False)

    def badge(self, tracking_id: str) -> Badge | None:
        """The badge of one (message, recipient) and its reason, read from its stored state
        in one row whatever the number of its events: what ``state(tracking_id)`` folds its
        events to, without reading them, and still there once retention has dropped them
        (None when nothing is stored under ``tracking_id``)."""
        return self._run(self._badge(tracking_id))

    async def abadge(self, tracking_id: str) -> Badge | None:
        return await self._arun(self._badge(tracking_id))

    def timeline(self, tracking_id: str) -> list[EmailEvent]:
        """Every event of one (message, recipient), oldest first (contract). A send's events
        are few, but nothing bounds how often a reader opens it or clicks: to show or export
        a timeline in bounded memory, page it (:meth:`timeline_page`) or iterate it
        (:meth:`iter_timeline`)."""
        return self._run(_Op(lambda: P.timeline(tracking_id), write=False))

    async def atimeline(self, tracking_id: str) -> list[EmailEvent]:
        return await self._arun(_Op(lambda: P.timeline(tracking_id), write=False))

    def _timeline_page(
        self, tracking_id: str, cursor: str | None, limit: int, count: bool = True
    ) -> _Op[Page[EmailEvent]]:
        size = _positive("limit", limit)
        return _Op(lambda: P.timeline_page(tracking_id, cursor, size, count=count), write=False)

    def timeline_page(
        self, tracking_id: str, *, cursor: str | None = None, limit: int = TIMELINE_PAGE
    ) -> Page[EmailEvent]:
        """A page of one send's events in ``timeline`` order (oldest first): at most ``limit``
        events, ``next_cursor`` for the next page and ``total`` across all pages. The pages
        end to end are the timeline; events stored while paging that sort after the page
        read so far appear on a later page."""
        return self._run(self._timeline_page(tracking_id, cursor, limit))

    async def atimeline_page(
        self, tracking_id: str, *, cursor: str | None = None, limit: int = TIMELINE_PAGE
    ) -> Page[EmailEvent]:
        return await self._arun(self._timeline_page(tracking_id, cursor, limit))

    def iter_timeline(
        self, tracking_id: str, *, page_size: int = TIMELINE_READ
    ) -> Iterator[EmailEvent]:
        """Every event of one send in ``timeline`` order, fetched ``page_size`` at a time by
        keyset cursor, each page in its own read: one page in memory, however many events."""
        cursor: str | None = None
        while True:
            page = self._run(self._timeline_page(tracking_id, cursor, page_size, False))
            yield from page.items
            cursor = page.next_cursor
            if cursor is None:
                return

    async def aiter_timeline(
        self, tracking_id: str, *, page_size: int = TIMELINE_READ
    ) -> AsyncIterator[EmailEvent]:
        """The async twin of :meth:`iter_timeline`: ``async for event in ...``."""
        cursor: str | None = None
        while True:
            page = await self._arun(self._timeline_page(tracking_id, cursor, page_size, False))
            for event in page.items:
                yield event
            cursor = page.next_cursor
            if cursor is None:
                return

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
        return _Op(lambda: G.with_engagement(P.bulk_stats(bulk_id, clock), bulk_id), write=False)

    def bulk_stats(self, bulk_id: str) -> BulkStats:
        """The analytics row of a bulk send (contract): how many recipients reached each
        stage, plus total and unique opens and clicks, and the open and click rates with
        machine events (privacy-proxy prefetches, link scanners) left out, saying how many
        were (see ``BulkStats``)."""
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
        count: bool = True,
    ) -> _Op[Page[SendRecord]]:
        if sort not in P.SORT_KEYS:
            raise InvalidQuery("sort", f"must be one of {', '.join(P.SORT_KEYS)}, not {sort!r}")
        size = BULK_PAGE if limit is None else _positive("limit", limit)
        statuses, clock = _statuses(status), self._clock()
        return _Op(
            lambda: P.bulk_rows(
                bulk_id, sort, descending, statuses, cursor, size, clock, count=count
            ),
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
        """A page of a bulk send's per-recipient rows (contract), sorted by ``"name"``,
        ``"email"``, ``"status"`` (how far each got), ``"date"`` (when its badge last moved)
        or ``"sent_at"``, and filtered by badge: at most ``limit`` rows (``BULK_PAGE`` when
        not given), with ``next_cursor`` for the next page and ``total`` across all pages.
        Memory is bounded by the page, whatever the size of the send; to go through every
        row (an export), iterate :meth:`iter_bulk_rows`."""
        return self._run(self._bulk_rows(bulk_id, sort, descending, status, cursor, limit))

    def iter_bulk_rows(
        self,
        bulk_id: str,
        *,
        sort: str = "date",
        descending: bool = False,
        status: StatusFilter = None,
        page_size: int = BULK_PAGE,
    ) -> Iterator[SendRecord]:
        """Every row of a bulk send in ``bulk_rows`` order, fetched ``page_size`` at a time
        by keyset cursor, each page in its own read: an export of a million recipients holds
        one page in memory. Rows that change while it runs are seen as they are when their
        page is read."""
        cursor: str | None = None
        while True:
            page = self._run(
                self._bulk_rows(bulk_id, sort, descending, status, cursor, page_size, False)
            )
            yield from page.items
            cursor = page.next_cursor
            if cursor is None:
                return

    async def aiter_bulk_rows(
        self,
        bulk_id: str,
        *,
        sort: str = "date",
        descending: bool = False,
        status: StatusFilter = None,
        page_size: int = BULK_PAGE,
    ) -> AsyncIterator[SendRecord]:
        """The async twin of :meth:`iter_bulk_rows`: ``async for row in ...``."""
        cursor: str | None = None
        while True:
            page = await self._arun(
                self._bulk_rows(bulk_id, sort, descending, status, cursor, page_size, False)
            )
            for row in page.items:
                yield row
            cursor = page.next_cursor
            if cursor is None:
                return

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

    # ------------------------------------------------------------------ alerts

    def _alert_read(self, now: datetime | None) -> tuple[datetime, _Op[A.AlertData]]:
        at = now if now is not None else self._now()
        rules = self.alert_rules
        step = rules.step // timedelta(microseconds=1)
        until = (to_micros(at) // step + 1) * step
        since = until - (rules.lookback + rules.window + rules.step) // timedelta(microseconds=1)
        return at, _Op(lambda: A.alert_data(since, until, step), write=False)

    def _alert_write(self, episodes: list[A.Episode], at: datetime) -> _Op[list[Alert]]:
        rules, endpoints, now_us = self.alert_rules, self.webhooks, self._now_us()

        def program() -> Program[list[Alert]]:
            changed = yield from A.reconcile(episodes, rules, at)
            if endpoints and changed:
                yield from O.enqueue(changed, endpoints, now_us)
            return changed

        return _Op(program, write=True)

    def evaluate_alerts(self, *, now: datetime | None = None) -> list[Alert]:
        """Evaluate every alert rule over the stored sends and events and store the result;
        returns the alerts that opened, moved (level, sequence) or closed, which also go to
        ``on_alert`` and to the subscribers of alert changes. Cheap enough to run every
        minute; running it again changes nothing."""
        at, read = self._alert_read(now)
        episodes = A.compute(self._run(read), self.alert_rules, at, self.mx_lookup)
        changed = self._run(self._alert_write(episodes, at))
        self._hub.publish(changed)  # type: ignore[arg-type]
        return changed

    async def aevaluate_alerts(self, *, now: datetime | None = None) -> list[Alert]:
        at, read = self._alert_read(now)
        data = await self._arun(read)
        episodes = await asyncio.to_thread(A.compute, data, self.alert_rules, at, self.mx_lookup)
        changed = await self._arun(self._alert_write(episodes, at))
        self._hub.publish(changed)  # type: ignore[arg-type]
        return changed

    def alerts(
        self,
        *,
        open_only: bool = True,
        evaluate: bool = True,
        now: datetime | None = None,
        limit: int = 1000,
    ) -> list[Alert]:
        """The sender-reputation alerts (contract), newest first: the open ones, or all
        (``open_only=False``). Evaluates the rules first unless ``evaluate=False``."""
        limit = _positive("limit", limit)
        if evaluate:
            self.evaluate_alerts(now=now)
        return self._run(_Op(lambda: A.list_alerts(open_only, limit), write=False))

    async def aalerts(
        self,
        *,
        open_only: bool = True,
        evaluate: bool = True,
        now: datetime | None = None,
        limit: int = 1000,
    ) -> list[Alert]:
        limit = _positive("limit", limit)
        if evaluate:
            await self.aevaluate_alerts(now=now)
        return await self._arun(_Op(lambda: A.list_alerts(open_only, limit), write=False))

    def sender_rates(self, *, now: datetime | None = None) -> list[SenderRate]:
        """The rolling rates (delivered, hard and soft bounce, complaint) of every sending
        domain, and of each through each provider, over ``alert_rules.window``."""
        at, read = self._alert_read(now)
        return A.sender_rates(self._run(read), self.alert_rules, at)

    async def asender_rates(self, *, now: datetime | None = None) -> list[SenderRate]:
        at, read = self._alert_read(now)
        return A.sender_rates(await self._arun(read), self.alert_rules, at)

    def subscribe_alerts(self, callback: Callable[[Alert], object]) -> Callable[[], None]:
        """Call ``callback(alert)`` with every alert that opens, moves or closes in this
        process's evaluations; returns the function that unsubscribes."""
        return self._hub.subscribe(_only(Alert, callback))

    # ------------------------------------------------------------------ outbound webhooks

    def outbox(
        self, *, status: str | Iterable[str] = ("pending", "failed"), limit: int = 100
    ) -> list[O.OutboxEntry]:
        """The outbound webhook messages in ``status`` (pending, failed, delivered), oldest
        first."""
        wanted, limit = _names(status), _positive("limit", limit)
        return self._run(_Op(lambda: O.entries(wanted, limit), write=False))

    async def aoutbox(
        self, *, status: str | Iterable[str] = ("pending", "failed"), limit: int = 100
    ) -> list[O.OutboxEntry]:
        wanted, limit = _names(status), _positive("limit", limit)
        return await self._arun(_Op(lambda: O.entries(wanted, limit), write=False))

    def replay_outbox(self, ids: Sequence[int] | None = None) -> int:
        """Queue failed outbound messages (``ids``, or every one) again; how many."""
        now_us = self._now_us()
        chosen = None if ids is None else list(ids)
        return self._run(_Op(lambda: O.replay(chosen, now_us), write=True))

    async def areplay_outbox(self, ids: Sequence[int] | None = None) -> int:
        now_us = self._now_us()
        chosen = None if ids is None else list(ids)
        return await self._arun(_Op(lambda: O.replay(chosen, now_us), write=True))

    # ------------------------------------------------------------------ sending (SendLog)

    def _suppressions_for(
        self, addresses: Sequence[str], stream: str | None
    ) -> _Op[dict[str, Suppression]]:
        now_us = self._now_us()
        return _Op(lambda: P.suppressions_for(addresses, stream, now_us), write=False)

    def suppressions_for(
        self, addresses: Sequence[str], *, stream: str | None = None
    ) -> Mapping[str, Suppression]:
        """The suppressions that refuse ``addresses`` on ``stream``, keyed by
        ``model.suppression_key``: one statement to the store for a whole bulk send (up to
        16384 recipients; beyond, one per 16384)."""
        return self._run(self._suppressions_for(addresses, stream))

    async def asuppressions_for(
        self, addresses: Sequence[str], *, stream: str | None = None
    ) -> Mapping[str, Suppression]:
        return await self._arun(self._suppressions_for(addresses, stream))

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

    def _suppression(self, address: str, stream: str | None) -> _Op[Suppression | None]:
        now_us = self._now_us()
        return _Op(lambda: P.suppression(address, stream, now_us), write=False)

    def suppression(self, address: str, *, stream: str | None = None) -> Suppression | None:
        """Why ``address`` is refused on ``stream`` (None: the default stream), or None
        (contract). An every-stream suppression is returned before a stream's own. The domain
        compares case-insensitively, the local part as written."""
        return self._run(self._suppression(address, stream))

    async def asuppression(self, address: str, *, stream: str | None = None) -> Suppression | None:
        return await self._arun(self._suppression(address, stream))

    def _unsuppress(self, address: str, cause: str, reason: str | None) -> _Op[list[Suppression]]:
        now_us, policy = self._now_us(), self.soft_bounces
        return _Op(lambda: P.unsuppress(address, reason, cause, now_us, policy), write=True)

    @staticmethod
    def _first(lifted: list[Suppression]) -> Suppression | None:
        every = [s for s in lifted if s.scope is None]
        found = every or list(lifted)
        return found[0] if found else None

    def unsuppress(self, address: str, *, reason: str | None = None) -> Suppression | None:
        """Lift every suppression of ``address``, in every scope (contract); returns what was
        lifted (the every-stream one when there were several), or None. The lift is kept in
        the history; an event older than it suppresses nothing again."""
        return self._first(self._run(self._unsuppress(address, S.MANUAL, reason)))

    async def aunsuppress(self, address: str, *, reason: str | None = None) -> Suppression | None:
        return self._first(await self._arun(self._unsuppress(address, S.MANUAL, reason)))

    def _suppress(
        self,
        address: str,
        reason: str | None,
        cause: str,
        scope: str | None,
        expires_at: datetime | None,
    ) -> _Op[Suppression]:
        checked = Address.parse(address).email
        cause = str(cause)
        if cause not in S.CAUSES and cause != EventType.UNKNOWN.value:
            raise ValueError(f"unknown cause {cause!r}; use one of {', '.join(sorted(S.CAUSES))}")
        if cause == EventType.UNKNOWN.value:
            cause = S.MANUAL
        key = S.ALL_STREAMS if scope is None else check_stream(scope)
        now_us, policy = self._now_us(), self.soft_bounces
        expires_us = None if expires_at is None else to_micros(expires_at)
        if expires_us is not None and expires_us <= now_us:
            raise ValueError("expires_at must be in the future")
        claim = S.Claim(
            suppression_key(checked),
            key,
            S.ADDED,
            checked,
            cause,
            reason,
            SuppressionSource.MANUAL.value,
            None,
            None,
            None,
            now_us,
            expires_us,
            now_us,
        )
        return _Op(lambda: P.suppress(claim, now_us, policy), write=True)

    def suppress(
        self,
        address: str,
        reason: str | None = None,
        *,
        cause: str = S.MANUAL,
        scope: str | None = None,
        expires_at: datetime | None = None,
    ) -> Suppression:
        """Suppress ``address`` by hand (source ``manual``) in ``scope`` (None: every stream)
        until ``expires_at`` (None: until lifted). Raises ``InvalidAddress`` for a malformed
        address. If the address was already suppressed there, the earlier entry keeps
        standing; the new one is in the history."""
        return self._run(self._suppress(address, reason, cause, scope, expires_at))

    async def asuppress(
        self,
        address: str,
        reason: str | None = None,
        *,
        cause: str = S.MANUAL,
        scope: str | None = None,
        expires_at: datetime | None = None,
    ) -> Suppression:
        return await self._arun(self._suppress(address, reason, cause, scope, expires_at))

    def correct_address(self, old: str, new: str) -> Suppression | None:
        """The application corrected a recipient's address from ``old`` to ``new``: the
        suppression ``old`` earned described the mistake, so it is lifted (as ``corrected``
        in the history) and returned. ``new`` is checked (``InvalidAddress``) and keeps
        whatever record it has."""
        Address.parse(new)
        return self._first(self._run(self._unsuppress(old, "corrected", f"corrected to {new}")))

    async def acorrect_address(self, old: str, new: str) -> Suppression | None:
        Address.parse(new)
        lifted = await self._arun(self._unsuppress(old, "corrected", f"corrected to {new}"))
        return self._first(lifted)

    def _list(self, cursor: str | None, limit: int) -> _Op[Page[Suppression]]:
        limit, now_us = _positive("limit", limit), self._now_us()
        return _Op(lambda: P.list_suppressions(cursor, limit, now_us), write=False)

    def suppressions(self, *, cursor: str | None = None, limit: int = 100) -> Page[Suppression]:
        """The suppression list (what stands now, one entry per address and scope), newest
        first, a page at a time."""
        return self._run(self._list(cursor, limit))

    async def asuppressions(
        self, *, cursor: str | None = None, limit: int = 100
    ) -> Page[Suppression]:
        return await self._arun(self._list(cursor, limit))

    def suppression_history(self, address: str) -> list[SuppressionChange]:
        """Every change ever made to the list for ``address``, oldest first (contract):
        what was added, lifted, cleared or expired, with the claim's provenance, so that "why
        can't I e-mail this person?" always has an answer."""
        return [
            SuppressionChange(action, entry, at)
            for action, entry, at in self._run(_Op(lambda: S.history(address), write=False))
        ]

    async def asuppression_history(self, address: str) -> list[SuppressionChange]:
        found = await self._arun(_Op(lambda: S.history(address), write=False))
        return [SuppressionChange(action, entry, at) for action, entry, at in found]

    def _import(
        self,
        rows: Iterable[Any],
        source: str,
        dry_run: bool,
        skip_invalid: bool,
        progress: Callable[[int], None] | None,
        *,
        numbered: bool = False,
    ) -> _Op[S.ImportReport]:
        S.check_source(source)
        now_us, policy = self._now_us(), self.soft_bounces
        replays = _Replayable(rows, numbered=numbered)
        return _Op(
            lambda: S.import_rows(
                replays.rows(),
                source,
                now_us,
                policy=policy,
                dry_run=dry_run,
                skip_invalid=skip_invalid,
                progress=progress,
            ),
            write=not dry_run,
        )

    def import_suppressions(
        self,
        rows: Iterable[Mapping[str, Any] | Suppression],
        *,
        source: str = SuppressionSource.IMPORT.value,
        dry_run: bool = True,
        skip_invalid: bool = False,
    ) -> S.ImportReport:
        """Import suppressions (contract): mappings with the columns ``address`` (required),
        ``scope``, ``cause``, ``reason``, ``provider``, ``event_id``, ``created_at``,
        ``expires_at``, or ``Suppression`` objects; ``source`` is recorded with each
        (``import``, ``provider-sync`` or ``manual``).

        A dry run (the default) writes nothing and reports what an import would do. All of
        an import happens in one transaction: with invalid rows, nothing is imported
        (``applied`` is False and ``errors`` names each row and why) unless
        ``skip_invalid``. Idempotent: importing the same rows again changes nothing."""
        try:
            return self._run(self._import(rows, source, dry_run, skip_invalid, None))
        except S.Refused as refused:
            return refused.report

    def import_numbered(
        self,
        rows: Iterable[tuple[int, Mapping[str, Any] | Suppression]],
        *,
        source: str = SuppressionSource.IMPORT.value,
        dry_run: bool = True,
        skip_invalid: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> S.ImportReport:
        """``import_suppressions`` for rows that come with their own line numbers (a file
        reader's), calling ``progress(rows_read)`` as it goes."""
        op = self._import(rows, source, dry_run, skip_invalid, progress, numbered=True)
        try:
            return self._run(op)
        except S.Refused as refused:
            return refused.report

    async def aimport_suppressions(
        self,
        rows: Iterable[Mapping[str, Any] | Suppression],
        *,
        source: str = SuppressionSource.IMPORT.value,
        dry_run: bool = True,
        skip_invalid: bool = False,
    ) -> S.ImportReport:
        op = self._import(rows, source, dry_run, skip_invalid, None)
        try:
            return await self._arun(op)
        except S.Refused as refused:
            return refused.report

    def export_suppressions(self, *, page_size: int = 5000) -> Iterator[Suppression]:
        """Every suppression that stands now, by address then scope (contract), read a page
        at a time (each page its own read)."""
        size = _positive("page_size", page_size)
        after: tuple[str, str] | None = None
        now_us = self._now_us()
        while True:
            page = self._run(_Op(partial(S.export_page, after, size, now_us), write=False))
            yield from page
            if len(page) < size:
                return
            last = page[-1]
            after = (suppression_key(last.address), S.scope_key(last.scope))

    # ------------------------------------------------------------------ maintenance

    def sweep(self) -> int:
        """Persist the expiry of every deferral older than the window (so that reports and
        other readers see it), log the suppressions whose time is up as expired, and forget
        expired webhook tokens; returns how many messages expired. Subscribers hear of
        each."""
        return self._run(self._sweep())

    async def asweep(self) -> int:
        return await self._arun(self._sweep())

    def _sweep(self) -> _Op[int]:
        clock = self._clock()

        def program() -> Program[int]:
            expired = yield from P.sweep(clock)
            yield from S.expire(to_micros(clock.now))
            return expired

        return _Op(program, write=True)

    # ------------------------------------------------------------------ health

    def _provider_health(
        self,
        providers: Iterable[str],
        silence: timedelta,
        grace: timedelta,
        orphan_after: timedelta,
    ) -> _Op[HealthReport]:
        now = self._now()
        names = tuple(providers)
        return _Op(lambda: H.provider_health(names, now, silence, grace, orphan_after), write=False)

    def provider_health(
        self,
        providers: Iterable[str] = (),
        *,
        silence: timedelta = C.HEALTH_SILENCE,
        grace: timedelta = C.HEALTH_GRACE,
        orphan_after: timedelta = C.ORPHAN_AFTER,
    ) -> HealthReport:
        """Every provider's webhook health (``providers`` plus every provider sent through
        lately): the last event received from it, and unhealthy when sends went out through
        it during ``silence`` and no event came back in that time. Also counts the orphans
        and the dead letters. Raises ``StoreError`` when the store cannot answer."""
        report = self._run(self._provider_health(providers, silence, grace, orphan_after))
        telemetry.health(report)
        return report

    async def aprovider_health(
        self,
        providers: Iterable[str] = (),
        *,
        silence: timedelta = C.HEALTH_SILENCE,
        grace: timedelta = C.HEALTH_GRACE,
        orphan_after: timedelta = C.ORPHAN_AFTER,
    ) -> HealthReport:
        """The async twin of :meth:`provider_health`."""
        op = self._provider_health(providers, silence, grace, orphan_after)
        report = await self._arun(op)
        telemetry.health(report)
        return report

    def _orphans(
        self, older_than: timedelta, provider: str | None, limit: int
    ) -> _Op[list[EmailEvent]]:
        now, count = self._now(), _positive("limit", limit)
        return _Op(lambda: H.orphans(now, older_than, provider, count), write=False)

    def orphans(
        self,
        *,
        older_than: timedelta = C.ORPHAN_AFTER,
        provider: str | None = None,
        limit: int = 100,
    ) -> list[EmailEvent]:
        """Events no recorded send has claimed ``older_than`` after their arrival, oldest
        first: account-wide events about mail sent elsewhere, or sends never recorded. They
        stay stored, and join their send as soon as it is recorded."""
        return self._run(self._orphans(older_than, provider, limit))

    async def aorphans(
        self,
        *,
        older_than: timedelta = C.ORPHAN_AFTER,
        provider: str | None = None,
        limit: int = 100,
    ) -> list[EmailEvent]:
        """The async twin of :meth:`orphans`."""
        return await self._arun(self._orphans(older_than, provider, limit))

    def dead_letter(self, letter_id: int) -> DeadLetter | None:
        """One dead letter by its id, or None."""
        return self._run(_Op(lambda: H.dead_letter(letter_id), write=False))

    async def adead_letter(self, letter_id: int) -> DeadLetter | None:
        """The async twin of :meth:`dead_letter`."""
        return await self._arun(_Op(lambda: H.dead_letter(letter_id), write=False))

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

    def _run_program(self, program: ProgramFactory[Any], write: bool) -> Any:
        """Run one program: how the maintenance steps of ``_partitions`` reach the store."""
        return self._run(_Op(program, write=write))

    def retention(
        self,
        keep: timedelta,
        *,
        apply: bool = False,
        dedupe_window: timedelta | None = None,
    ) -> RetentionReport:
        """Forget the events received more than ``keep`` ago (at least 72 hours): on
        PostgreSQL by dropping whole monthly partitions, on SQLite in bounded batches. The
        per-message state (badges, first-seen times, counters) and the suppression list are
        kept. A dry run that only counts unless ``apply``. ``dedupe_window`` (PostgreSQL;
        default 14 days, at least 72 hours) is how long event ids are remembered so that a
        provider's retry is told from a new event."""
        from unimailtrack.tracking import _partitions

        return _partitions.retention(
            self._store.dialect.name,
            self._run_program,
            keep=keep,
            now=self._now(),
            apply=apply,
            dedupe_window=(
                _partitions.DEFAULT_DEDUPE_WINDOW if dedupe_window is None else dedupe_window
            ),
        )

    def split_legacy(
        self, *, batch: int = 50_000, apply: bool = False, max_batches: int | None = None
    ) -> SplitReport:
        """Move the events of ``events_legacy`` (PostgreSQL: the table of before the monthly
        partitions, kept whole by the migration) into one partition a month, so that
        retention can drop its months one by one. A dry run that only counts the rows of each
        month unless ``apply``. Copies about ``batch`` rows a transaction, at most
        ``max_batches`` transactions a call (None: all of them), each committed with its
        progress: a later call goes on where one stopped or failed. When the copy is complete
        it is checked, then swapped in for ``events_legacy`` in one short transaction. The
        store stays usable throughout. Refused (``ConfigurationError``) while the month of
        ``events_legacy`` is not over, as it can still receive events; on SQLite, or without
        ``events_legacy``, there is nothing to split."""
        from unimailtrack.tracking import _partitions

        return _partitions.split_legacy(
            self._store.dialect.name,
            self._run_program,
            now=self._now(),
            batch=batch,
            apply=apply,
            max_batches=max_batches,
        )

    def abandon_split(self) -> SplitReport:
        """Give up a ``split_legacy`` under way, before it is swapped in: the copy made so
        far and the trigger that records writes to ``events_legacy`` for it are dropped, and
        ``events_legacy`` is left as it always was (the split never changes it). A later
        ``split_legacy(apply=True)`` starts again from the first block."""
        from unimailtrack.tracking import _partitions

        return _partitions.abandon_split(self._store.dialect.name, self._run_program)

    def ping_writable(self) -> None:
        """Raise ``StoreError`` unless the store can begin a write transaction now (it
        writes nothing): how a worker tells a store that is down from a batch it refuses."""
        self._run(_Op(_ping, write=True))

    # ------------------------------------------------------------------ live updates

    def subscribe(self, callback: Callback, *, alerts: bool = False) -> Callable[[], None]:
        """Call ``callback(change)`` with every ``StateChange`` from now on, after it is
        committed; returns the function that unsubscribes. With PostgreSQL, changes made by
        other processes arrive too (on a listener thread). Callbacks must be quick and
        thread-safe; one that raises is logged and skipped. ``alerts=True`` also passes
        every ``Alert`` change of this process's evaluations."""
        return self._hub.subscribe(callback if alerts else _only(StateChange, callback))

    def changes(self, *, alerts: bool = False) -> ChangeStream:
        """``async for change in tracker.changes()``: every ``StateChange`` from now on
        (and, with ``alerts=True``, every ``Alert`` change). Call it inside the event loop
        that reads it; close it (``async with``) when done."""
        return ChangeStream(self._hub if alerts else _Filtered(self._hub, StateChange))  # type: ignore[arg-type]

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
