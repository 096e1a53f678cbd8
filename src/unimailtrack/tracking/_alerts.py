"""Sender-reputation alerts: rules, their evaluation, and the alerts' lifecycle.

What is measured (see docs/deliverability.md):

- ``complaint_rate`` and ``bounce_rate``, per sending domain and per (sending domain,
  provider): of the sends accepted in the window (1 to 24 hours), the share that drew a
  complaint (over those delivered) or a hard bounce (over those sent), once at least
  ``min_volume`` were sent in the window. Sender-authentication refusals are not hard
  bounces: they count as ``sender_auth``.
- ``mailbox_block``, per mailbox provider (recipient domains grouped by who runs their mail):
  how many recipients' mail it refused as a block (reputation or policy) in ``block_window``.
- ``sender_auth``, per sending domain: how many recipients' mail was refused because the
  sender failed SPF, DKIM, DMARC or reverse DNS, naming the check.

Everything is a pure function of what is stored, read on a grid of ticks (multiples of
``step`` since the epoch): the rate at tick ``T`` counts the sends of ``[T - window, T)``
(bounce and complaint events count with their send, whenever they came), and the block counts
the refusals timestamped in ``[T - block_window, T)``. An alert opens at the first tick a
rule holds; its sequence goes up each ``repeat`` it holds and each time its level changes; it
closes at the first tick after the measure has stayed under the warn threshold for
``recovery``. Its id is a digest of what it is about and when it opened. So the same events,
in any order, any number of times, give the same alerts; evaluating again changes nothing.

Evaluation reads the last ``lookback`` of ticks and costs about one grouped scan of the sends
in it plus one of its bounces (which have their own index), whatever the number of ticks: a
series is looked at only where its counts change. An alert still open at the start of the
lookback continues the stored one.
"""

from __future__ import annotations

import bisect
import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from email.utils import parseaddr
from functools import lru_cache
from typing import Any

from unimailtrack.deliverability import (
    SENDER_AUTH,
    MxLookup,
    mailbox_provider,
    sender_auth_failure,
)
from unimailtrack.model import EventType
from unimailtrack.tracking._records import from_micros, to_micros
from unimailtrack.tracking._schema import SEEN_BITS
from unimailtrack.tracking._store import Program, Query, Write

__all__ = [
    "ALERT_KINDS",
    "Alert",
    "AlertRules",
    "Measure",
    "SenderRate",
    "alert_data",
    "compute",
    "lifecycle",
    "list_alerts",
    "reconcile",
]

ALERT_KINDS = ("complaint_rate", "bounce_rate", "mailbox_block", "sender_auth")
WARN, CRITICAL = "warn", "critical"
_HOUR = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class AlertRules:
    """The thresholds and windows alerts are raised by; every field has a default.

    Rates are fractions (``0.001`` is 0.1 %). ``window`` is the rolling window of the rate
    rules (1 to 24 hours), ``min_volume`` the sends it needs before a rate counts.
    ``block_window`` is the window of the count rules; ``block_warn``/``block_critical``
    the recipients refused as a block by one mailbox provider, ``sender_auth_warn``/
    ``sender_auth_critical`` those refused for the sender's authentication. ``step`` is
    the tick alerts are evaluated on, ``recovery`` how long a measure stays under the warn
    threshold before its alert closes, ``repeat`` how often a holding alert's sequence goes
    up, ``lookback`` how far back each evaluation reads.
    """

    complaint_warn: float = 0.001
    complaint_critical: float = 0.003
    bounce_warn: float = 0.02
    bounce_critical: float = 0.05
    window: timedelta = timedelta(hours=24)
    min_volume: int = 100
    block_window: timedelta = timedelta(hours=1)
    block_warn: int = 3
    block_critical: int = 10
    sender_auth_warn: int = 1
    sender_auth_critical: int = 10
    step: timedelta = timedelta(minutes=5)
    recovery: timedelta = timedelta(hours=1)
    repeat: timedelta = timedelta(hours=1)
    lookback: timedelta = timedelta(hours=24)

    def __post_init__(self) -> None:
        if not _HOUR <= self.window <= 24 * _HOUR:
            raise ValueError("the alert window must be between 1 and 24 hours")
        if self.step <= timedelta(0) or self.step > _HOUR:
            raise ValueError("the alert step must be positive and at most an hour")
        for name in ("window", "block_window", "recovery", "repeat", "lookback"):
            value: timedelta = getattr(self, name)
            if value < self.step or value % self.step:
                raise ValueError(f"{name} must be a whole number of steps ({self.step})")
        for low, high in (
            ("complaint_warn", "complaint_critical"),
            ("bounce_warn", "bounce_critical"),
            ("block_warn", "block_critical"),
            ("sender_auth_warn", "sender_auth_critical"),
        ):
            if not 0 < getattr(self, low) <= getattr(self, high):
                raise ValueError(f"{low} must be positive and at most {high}")
        if self.min_volume < 1:
            raise ValueError("min_volume must be at least 1")


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert (contract): what it is about, how bad, and its lifecycle.

    ``kind`` is ``complaint_rate``, ``bounce_rate``, ``mailbox_block`` or ``sender_auth``;
    ``level`` ``warn`` or ``critical``; ``scope`` the sending domain (rates, sender_auth)
    or the mailbox provider (mailbox_block), narrowed by ``provider`` (the sending
    provider) and ``stream`` when set. ``rate`` is the measure at the last evaluation (a
    fraction for the rate rules, a number of recipients for the count rules) and
    ``threshold`` the one its level crossed; ``count`` and ``volume`` what the rate is made
    of (complaints and deliveries, hard bounces and sends, refused recipients and all those
    who bounced there). ``sequence`` starts at 1 and goes up while the alert holds;
    ``closed_at`` is None while it is open. ``check`` names the failed authentication check
    (sender_auth) and ``reply`` the typical reply (mailbox_block, sender_auth).
    """

    id: str
    kind: str
    level: str
    scope: str
    rate: float
    threshold: float
    window: timedelta
    opened_at: datetime
    closed_at: datetime | None
    sequence: int
    count: int = 0
    volume: int = 0
    provider: str | None = None
    stream: str | None = None
    check: str | None = None
    reply: str | None = None
    updated_at: datetime | None = None

    @property
    def open(self) -> bool:
        return self.closed_at is None


@dataclass(frozen=True, slots=True)
class SenderRate:
    """Rolling rates of one sending domain (optionally through one provider) over a window:
    each rate is a fraction of ``sends`` (of ``delivered`` for complaints)."""

    scope: str
    provider: str | None
    stream: str | None
    sends: int
    delivered: int
    hard_bounces: int
    soft_bounces: int
    blocks: int
    complaints: int

    @property
    def delivered_rate(self) -> float:
        return self.delivered / self.sends if self.sends else 0.0

    @property
    def hard_bounce_rate(self) -> float:
        return self.hard_bounces / self.sends if self.sends else 0.0

    @property
    def soft_bounce_rate(self) -> float:
        return self.soft_bounces / self.sends if self.sends else 0.0

    @property
    def complaint_rate(self) -> float:
        return self.complaints / self.delivered if self.delivered else 0.0


# --------------------------------------------------------------------------- reading


def _bit(kind: EventType) -> int:
    return SEEN_BITS[kind]


_ARRIVED = (
    _bit(EventType.DELIVERED)
    | _bit(EventType.OPENED)
    | _bit(EventType.CLICKED)
    | _bit(EventType.COMPLAINED)
    | _bit(EventType.UNSUBSCRIBED)
    | _bit(EventType.RESUBSCRIBED)
)
_SENDS_SQL = (
    "SELECT m.sender, m.provider, m.sent_at_us / :step, COUNT(*), "
    f"COUNT(*) FILTER (WHERE (m.seen & {_ARRIVED}) <> 0), "
    f"COUNT(*) FILTER (WHERE (m.seen & {_bit(EventType.COMPLAINED)}) <> 0) "
    "FROM messages m WHERE m.sent_at_us >= :since AND m.sent_at_us < :until "
    "AND m.send_status = 'accepted' GROUP BY 1, 2, 3"
)
"""Sends, deliveries and complaints of the sends in a range, per sender, provider and tick."""
_BOUNCES_SQL = (
    "SELECT e.tracking_id, e.domain, e.recipient_key, e.bounce, e.smtp_status, e.reason, "
    "e.timestamp_us, m.sender, m.provider, m.sent_at_us, m.send_status "
    "FROM events e LEFT JOIN messages m ON m.tracking_id = e.tracking_id "
    "WHERE e.type = 'bounced' AND e.timestamp_us >= :since AND e.timestamp_us < :until"
)
"""Every bounce in a range (the ``events_bounces`` index), with its send if recorded."""


@dataclass(frozen=True, slots=True)
class AlertData:
    sends: list[tuple[Any, ...]]
    bounces: list[tuple[Any, ...]]


def alert_data(since_us: int, until_us: int, step_us: int) -> Program[AlertData]:
    """What evaluation reads, in one read transaction."""
    params = {"since": since_us, "until": until_us, "step": step_us}
    sends = yield Query(_SENDS_SQL, params)
    bounces = yield Query(_BOUNCES_SQL, params)
    return AlertData(sends, bounces)


@lru_cache(maxsize=65536)
def sender_domain(sender: str | None) -> str:
    """The domain of a recorded sender (``"Events <events@Example.com>"`` ->
    ``"example.com"``); ``""`` when unknown."""
    if not sender:
        return ""
    return parseaddr(sender)[1].rpartition("@")[2].lower()


# --------------------------------------------------------------------------- measuring


@dataclass(frozen=True, slots=True)
class Measure:
    """A rule's measure at one tick: the level it reaches (None: under warn) and the rest."""

    level: str | None
    rate: float
    threshold: float
    count: int
    volume: int
    check: str | None = None
    reply: str | None = None


SeriesKey = tuple[str, str, str | None, str | None]
"""(kind, scope, provider, stream)"""

_RATE_FIELDS = 5
"""sends, delivered, complaints, hard bounces, soft bounces (per tick of sending)."""


class _RateSeries:
    __slots__ = ("ticks",)

    def __init__(self) -> None:
        self.ticks: dict[int, list[int]] = {}

    def add(self, tick: int, index: int, amount: int) -> None:
        counts = self.ticks.get(tick)
        if counts is None:
            counts = self.ticks[tick] = [0] * _RATE_FIELDS
        counts[index] += amount


class _CountSeries:
    """Refusals per tick: the recipients (distinct per tick), their replies and checks."""

    __slots__ = ("ticks",)

    def __init__(self) -> None:
        self.ticks: dict[int, dict[str, tuple[str, str | None]]] = {}

    def add(self, tick: int, recipient: str, reply: str, check: str | None) -> None:
        self.ticks.setdefault(tick, {}).setdefault(recipient, (reply, check))


@dataclass
class _Collected:
    rates: dict[tuple[str, str | None], _RateSeries] = field(default_factory=dict)
    blocks: dict[str, _CountSeries] = field(default_factory=dict)
    auth: dict[str, _CountSeries] = field(default_factory=dict)
    bounced_at: dict[str, dict[int, set[str]]] = field(default_factory=dict)


def _rate_series(collected: _Collected, scope: str, provider: str | None) -> list[_RateSeries]:
    """The series a send counts in: its sending domain's, and its domain's through its
    provider (when it has one)."""
    found = []
    for key in ((scope, None), (scope, provider)) if provider else ((scope, None),):
        series = collected.rates.get(key)
        if series is None:
            series = collected.rates[key] = _RateSeries()
        found.append(series)
    return found


def collect(data: AlertData, step_us: int, mx: MxLookup | None) -> _Collected:
    """The per-tick counts of every series, from what ``alert_data`` read."""
    collected = _Collected()
    for sender, provider, tick, sends, delivered, complaints in data.sends:
        scope = sender_domain(sender)
        if not scope:
            continue
        for series in _rate_series(collected, scope, provider):
            series.add(int(tick), 0, int(sends))
            series.add(int(tick), 1, int(delivered))
            series.add(int(tick), 2, int(complaints))
    hard_seen: set[str] = set()
    soft_seen: set[str] = set()
    providers: dict[str, str] = {}
    for row in data.bounces:
        (tracking_id, domain, recipient, bounce, status, reason, at_us) = row[:7]
        sender, provider, sent_at_us, send_status = row[7:]
        failure = sender_auth_failure(status, reason)
        event_tick = at_us // step_us
        scope = sender_domain(sender)
        if failure is not None:
            key = scope or "(unknown sender)"
            collected.auth.setdefault(key, _CountSeries()).add(
                event_tick, recipient, failure.reply, failure.check
            )
            continue
        mailbox = providers.get(domain)
        if mailbox is None:
            mailbox = providers[domain] = mailbox_provider(domain, mx=mx) if domain else ""
        if mailbox:
            collected.bounced_at.setdefault(mailbox, {}).setdefault(event_tick, set()).add(
                recipient
            )
            if bounce == "block":
                collected.blocks.setdefault(mailbox, _CountSeries()).add(
                    event_tick, recipient, reason or status or "", None
                )
        if not scope or send_status != "accepted" or sent_at_us is None:
            continue
        if bounce == "hard":
            index, seen = 3, hard_seen
        elif bounce in ("soft", "undetermined"):
            index, seen = 4, soft_seen
        else:
            continue
        if tracking_id in seen:
            continue
        seen.add(tracking_id)
        send_tick = sent_at_us // step_us
        for series in _rate_series(collected, scope, provider):
            series.add(send_tick, index, 1)
    return collected


def _level(value: float, warn: float, critical: float) -> tuple[str | None, float]:
    if value >= critical:
        return CRITICAL, critical
    if value >= warn:
        return WARN, warn
    return None, warn


def _window_sums(
    ticks: Mapping[int, list[int]], points: Sequence[int], width: int
) -> list[list[int]]:
    """The sums of ``ticks`` over ``[p - width, p)`` for each tick ``p`` of ``points``."""
    order = sorted(ticks)
    prefix = [[0] * _RATE_FIELDS]
    for tick in order:
        last = prefix[-1]
        prefix.append([a + b for a, b in zip(last, ticks[tick], strict=True)])
    sums = []
    for point in points:
        hi = bisect.bisect_left(order, point)
        lo = bisect.bisect_left(order, point - width)
        sums.append([a - b for a, b in zip(prefix[hi], prefix[lo], strict=True)])
    return sums


def _change_points(ticks: Iterable[int], width: int, first: int, last: int) -> list[int]:
    """The ticks in ``[first, last]`` at which a window of ``width`` ticks gains or loses
    a tick of data, and ``first`` itself."""
    points = {first}
    for tick in ticks:
        for point in (tick + 1, tick + 1 + width):
            if first < point <= last:
                points.add(point)
    return sorted(points)


def _rate_measures(
    series: _RateSeries, rules: AlertRules, width: int, first: int, last: int
) -> tuple[list[int], list[Measure], list[Measure]]:
    points = _change_points(series.ticks, width, first, last)
    complaint: list[Measure] = []
    bounce: list[Measure] = []
    for sends, delivered, complaints, hard, _soft in _window_sums(series.ticks, points, width):
        if sends < rules.min_volume:
            complaint.append(Measure(None, 0.0, rules.complaint_warn, complaints, delivered))
            bounce.append(Measure(None, 0.0, rules.bounce_warn, hard, sends))
            continue
        rate = complaints / delivered if delivered else 0.0
        level, threshold = _level(rate, rules.complaint_warn, rules.complaint_critical)
        complaint.append(Measure(level, rate, threshold, complaints, delivered))
        rate = hard / sends
        level, threshold = _level(rate, rules.bounce_warn, rules.bounce_critical)
        bounce.append(Measure(level, rate, threshold, hard, sends))
    return points, complaint, bounce


def _count_measures(
    series: _CountSeries,
    bounced: Mapping[int, set[str]] | None,
    warn: int,
    critical: int,
    width: int,
    first: int,
    last: int,
    named: bool,
) -> tuple[list[int], list[Measure]]:
    points = _change_points(series.ticks, width, first, last)
    order = sorted(series.ticks)
    measures = []
    for point in points:
        lo = bisect.bisect_left(order, point - width)
        hi = bisect.bisect_left(order, point)
        recipients: dict[str, tuple[str, str | None]] = {}
        for tick in order[lo:hi]:
            for recipient, detail in series.ticks[tick].items():
                recipients.setdefault(recipient, detail)
        count = len(recipients)
        volume = count
        if bounced is not None:
            everyone = {
                r for tick, rs in bounced.items() if point - width <= tick < point for r in rs
            }
            volume = max(count, len(everyone))
        level, threshold = _level(float(count), warn, critical)
        reply = check = None
        if count:
            reply = _most_common(detail[0] for detail in recipients.values())
            if named:
                check = _most_common(d[1] for d in recipients.values() if d[1] is not None)
        measures.append(Measure(level, float(count), threshold, count, volume, check, reply))
    return points, measures


def _most_common(values: Iterable[str]) -> str | None:
    counted = Counter(values)
    if not counted:
        return None
    return min(counted.items(), key=lambda item: (-item[1], item[0]))[0]


# --------------------------------------------------------------------------- lifecycle


@dataclass(frozen=True, slots=True)
class Episode:
    """An alert as computed: a series, the ticks it opened (and closed) at, and its state."""

    key: SeriesKey
    opened: int
    closed: int | None
    measure: Measure
    level: str
    sequence: int
    window: timedelta
    from_start: bool
    """It already held at the first tick read: it may continue a stored alert."""


def lifecycle(
    key: SeriesKey,
    points: Sequence[int],
    measures: Sequence[Measure],
    last: int,
    *,
    recovery: int,
    repeat: int,
    window: timedelta,
) -> list[Episode]:
    """The alerts of one series whose measure is ``measures[i]`` from tick ``points[i]``
    until the next point (the last until ``last``). ``recovery`` and ``repeat`` in ticks."""
    episodes: list[Episode] = []
    opened: int | None = None
    under_since: int | None = None
    level = ""
    changes = held = 0
    current: Measure | None = None
    for index, (point, measure) in enumerate(zip(points, measures, strict=True)):
        until = points[index + 1] if index + 1 < len(points) else last + 1
        if measure.level is not None:
            if opened is None:
                opened, changes, held, level = point, 0, 0, measure.level
            elif measure.level != level:
                changes += 1
                level = measure.level
            under_since = None
            held += until - point
            current = measure
            continue
        if opened is None:
            continue
        current = measure if current is None else current
        if under_since is None:
            under_since = point
        close = under_since + recovery
        if close < until and close <= last:
            assert current is not None
            episodes.append(
                _episode(key, opened, close, current, level, changes, held, repeat, window, points)
            )
            opened = under_since = current = None
            continue
        current = replace(measure, threshold=current.threshold)
    if opened is not None:
        assert current is not None
        episodes.append(
            _episode(key, opened, None, current, level, changes, held, repeat, window, points)
        )
    return episodes


def _episode(
    key: SeriesKey,
    opened: int,
    closed: int | None,
    measure: Measure,
    level: str,
    changes: int,
    held: int,
    repeat: int,
    window: timedelta,
    points: Sequence[int],
) -> Episode:
    sequence = 1 + changes + (held - 1) // repeat
    return Episode(key, opened, closed, measure, level, sequence, window, opened == points[0])


def compute(
    data: AlertData, rules: AlertRules, now: datetime, mx: MxLookup | None = None
) -> list[Episode]:
    """Every alert the stored data gives at ``now`` (over the lookback)."""
    step = rules.step // timedelta(microseconds=1)
    last = to_micros(now) // step
    first = last - rules.lookback // rules.step
    width = rules.window // rules.step
    block_width = rules.block_window // rules.step
    recovery = rules.recovery // rules.step
    repeat = rules.repeat // rules.step
    collected = collect(data, step, mx)
    episodes: list[Episode] = []

    def run(key: SeriesKey, points: list[int], measures: list[Measure], w: timedelta) -> None:
        if any(m.level for m in measures):
            episodes.extend(
                lifecycle(key, points, measures, last, recovery=recovery, repeat=repeat, window=w)
            )

    for (scope, provider), series in collected.rates.items():
        points, complaint, bounce = _rate_measures(series, rules, width, first, last)
        run(("complaint_rate", scope, provider, None), points, complaint, rules.window)
        run(("bounce_rate", scope, provider, None), points, bounce, rules.window)
    for mailbox, blocks in collected.blocks.items():
        points, measures = _count_measures(
            blocks,
            collected.bounced_at.get(mailbox),
            rules.block_warn,
            rules.block_critical,
            block_width,
            first,
            last,
            named=False,
        )
        run(("mailbox_block", mailbox, None, None), points, measures, rules.block_window)
    for scope, failures in collected.auth.items():
        points, measures = _count_measures(
            failures,
            None,
            rules.sender_auth_warn,
            rules.sender_auth_critical,
            block_width,
            first,
            last,
            named=True,
        )
        run((SENDER_AUTH, scope, None, None), points, measures, rules.block_window)
    return episodes


def sender_rates(data: AlertData, rules: AlertRules, now: datetime) -> list[SenderRate]:
    """The rolling rates over ``rules.window`` up to ``now``, per sending domain and per
    (sending domain, provider); blocks count each refused recipient of the domain."""
    step = rules.step // timedelta(microseconds=1)
    last = to_micros(now) // step
    width = rules.window // rules.step
    collected = collect(data, step, None)
    blocks: Counter[tuple[str, str | None]] = Counter()
    for row in data.bounces:
        if row[3] == "block" and row[6] // step >= last + 1 - width:
            blocks[(sender_domain(row[7]), None)] += 1
            if row[8]:
                blocks[(sender_domain(row[7]), row[8])] += 1
    rates = []
    for (scope, provider), series in sorted(
        collected.rates.items(), key=lambda item: (item[0][0], item[0][1] or "")
    ):
        [(sends, delivered, complaints, hard, soft)] = _window_sums(series.ticks, [last + 1], width)
        if sends:
            rates.append(
                SenderRate(
                    scope,
                    provider,
                    None,
                    sends,
                    delivered,
                    hard,
                    soft,
                    blocks[(scope, provider)],
                    complaints,
                )
            )
    return rates


# --------------------------------------------------------------------------- storing


def alert_id(key: SeriesKey, opened_us: int) -> str:
    kind, scope, provider, stream = key
    text = json.dumps([kind, scope, provider, stream, opened_us], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _to_body(alert: Alert) -> str:
    data = asdict(alert)
    data["window"] = alert.window.total_seconds()
    for name in ("opened_at", "closed_at", "updated_at"):
        value = data[name]
        data[name] = None if value is None else to_micros(value)
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def _from_body(body: str) -> Alert:
    data = json.loads(body)
    data["window"] = timedelta(seconds=data["window"])
    for name in ("opened_at", "closed_at", "updated_at"):
        value = data[name]
        data[name] = None if value is None else from_micros(value)
    return Alert(**data)


_ALERT_INSERT = (
    "INSERT INTO alerts (id, kind, scope, opened_at_us, closed_at_us, sequence, "
    "updated_at_us, body)"
)
_ALERT_UPSERT = (
    "ON CONFLICT (id) DO UPDATE SET closed_at_us = excluded.closed_at_us, "
    "sequence = excluded.sequence, updated_at_us = excluded.updated_at_us, "
    "body = excluded.body"
)
_SAME = ("level", "closed_at", "sequence")
"""What makes an alert change worth telling: the rest (the rate) moves at every tick."""


def _as_alert(episode: Episode, step: timedelta, now: datetime, stored: Alert | None) -> Alert:
    kind, scope, provider, stream = episode.key
    measure = episode.measure
    opened_at = stored.opened_at if stored is not None else _tick_time(episode.opened, step)
    sequence = episode.sequence
    if stored is not None:
        sequence = max(sequence, stored.sequence)
    return Alert(
        id=stored.id if stored is not None else alert_id(episode.key, to_micros(opened_at)),
        kind=kind,
        level=episode.level,
        scope=scope,
        rate=measure.rate,
        threshold=measure.threshold,
        window=episode.window,
        opened_at=opened_at,
        closed_at=None if episode.closed is None else _tick_time(episode.closed, step),
        sequence=sequence,
        count=measure.count,
        volume=measure.volume,
        provider=provider,
        stream=stream,
        check=measure.check,
        reply=measure.reply,
        updated_at=now,
    )


def _tick_time(tick: int, step: timedelta) -> datetime:
    return from_micros(tick * (step // timedelta(microseconds=1)))


def reconcile(
    episodes: Sequence[Episode], rules: AlertRules, now: datetime
) -> Program[list[Alert]]:
    """Store the computed alerts; the ones that opened, moved (level, sequence) or closed.

    An alert stored open that the data no longer gives (late events changed the picture) is
    closed now; one open since before the lookback is continued by the computed alert that
    holds from the first tick read.
    """
    step_us = rules.step // timedelta(microseconds=1)
    first_us = (to_micros(now) // step_us - rules.lookback // rules.step) * step_us
    rows = yield Query(
        "SELECT body FROM alerts WHERE closed_at_us IS NULL OR opened_at_us >= ?", (first_us,)
    )
    stored = [_from_body(row[0]) for row in rows]
    by_id = {alert.id: alert for alert in stored}
    open_by_series = {
        (a.kind, a.scope, a.provider, a.stream): a for a in stored if a.closed_at is None
    }
    final: dict[str, Alert] = {}
    for episode in episodes:
        opened_us = episode.opened * step_us
        previous = by_id.get(alert_id(episode.key, opened_us))
        if previous is None and episode.from_start:
            candidate = open_by_series.get(episode.key)
            if candidate is not None and to_micros(candidate.opened_at) <= opened_us:
                previous = candidate
        alert = _as_alert(episode, rules.step, now, previous)
        if previous is not None and (
            previous.level != alert.level or previous.closed_at != alert.closed_at
        ):
            alert = replace(alert, sequence=max(alert.sequence, previous.sequence + 1))
        final[alert.id] = alert
    for alert in stored:
        if alert.closed_at is None and alert.id not in final:
            final[alert.id] = replace(alert, closed_at=now, updated_at=now)
    changed: list[Alert] = []
    writes: list[tuple[Any, ...]] = []
    for alert_key in sorted(final):
        alert = final[alert_key]
        before = by_id.get(alert_key)
        if before is not None and all(
            getattr(before, name) == getattr(alert, name) for name in _SAME
        ):
            if before.rate == alert.rate and before.count == alert.count:
                continue
        else:
            changed.append(alert)
        writes.append(
            (
                alert.id,
                alert.kind,
                alert.scope,
                to_micros(alert.opened_at),
                None if alert.closed_at is None else to_micros(alert.closed_at),
                alert.sequence,
                to_micros(now),
                _to_body(alert),
            )
        )
    if writes:
        yield Write(_ALERT_INSERT, writes, _ALERT_UPSERT)
    return changed


def list_alerts(open_only: bool, limit: int) -> Program[list[Alert]]:
    where = "WHERE closed_at_us IS NULL " if open_only else ""
    rows = yield Query(
        f"SELECT body FROM alerts {where}ORDER BY opened_at_us DESC, id LIMIT ?",
        (limit,),
    )
    return [_from_body(row[0]) for row in rows]
