"""The suppression list: claims, their fold, and the programs that read and write them.

Every change to the list is a *claim* appended to ``suppression_history`` and never altered:
an address was ``added`` to a scope (by an event, by hand, by an import, by a provider's own
list), ``lifted`` from it (a resubscribe, ``unsuppress``, a provider removing it), or, for
the log only, ``cleared`` (a soft-bounce limit that a delivery undid) or ``expired``.

What stands is a pure function of the set of claims of an address (:func:`fold`), so it does
not depend on the order the claims arrive in:

- An addition is lifted by any lift of its scope (or of every scope) that is not older than
  it; a resubscribe lifts only unsubscribes, so a resubscribe older than the unsubscribe
  lifts nothing, and no resubscribe ever lifts a hard bounce.
- Of the additions left in a scope, a permanent one stands over one that expires, the
  earliest first (an address stays suppressed since the first thing that suppressed it); of
  expiring ones, the one that lasts longest. Ties are broken by the claims' content, never
  by when they were written.
- The soft-bounce limit is derived from the events themselves (:func:`soft_limit`): N soft
  bounces within the window with no delivery (and no lift) between them suppress every
  stream from the N-th bounce for a set time.

The one column that changes is ``standing``: it marks the claim that stands for its
(address, scope), so that reading the list (one query, whatever the number of recipients) and
paging through it need no fold. Every write re-folds the addresses it touches, in the same
transaction, and moves the marks.

Scopes are stored as keys: ``""`` for every stream, ``"*"`` (lifts only) for every scope, else
the stream's name, ``"default"`` for the default stream.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from unimailtrack.deliverability import sender_auth_failure
from unimailtrack.model import (
    DEFAULT_STREAM,
    Address,
    EventType,
    Suppression,
    SuppressionSource,
    check_stream,
    dedupe_key,
    suppression_key,
)
from unimailtrack.tracking._providers import ListChange
from unimailtrack.tracking._records import encode_cursor, from_micros, to_micros
from unimailtrack.tracking._store import Program, Query, Write

__all__ = [
    "CAUSES",
    "Claim",
    "ImportReport",
    "InvalidRow",
    "SoftBouncePolicy",
    "apply",
    "fold",
    "soft_limit",
]

ALL_STREAMS = ""
EVERY_SCOPE = "*"

SOFT_LIMIT = "soft-bounce-limit"
MANUAL = "manual"
IMPORTED = "imported"
RESUBSCRIBED = EventType.RESUBSCRIBED.value
UNSUBSCRIBED = EventType.UNSUBSCRIBED.value

CAUSES = frozenset(
    {
        EventType.BOUNCED.value,
        EventType.COMPLAINED.value,
        EventType.UNSUBSCRIBED.value,
        EventType.DROPPED.value,
        "blocked",
        "invalid",
        MANUAL,
        IMPORTED,
        SOFT_LIMIT,
    }
)
"""What a suppression can be caused by: an event type, or how it was added."""

_SOURCES = frozenset(s.value for s in SuppressionSource)

ADDED, LIFTED, CLEARED, EXPIRED = "added", "lifted", "cleared", "expired"


def scope_key(scope: str | None) -> str:
    return ALL_STREAMS if scope is None else scope


def stream_scope(stream: str | None) -> str:
    """The scope key of a stream (None is the default stream)."""
    return DEFAULT_STREAM if stream is None else stream


def _scope(key: str) -> str | None:
    return None if key == ALL_STREAMS else key


class Claim(NamedTuple):
    """One row of ``suppression_history``, in its column order (``id`` None until stored)."""

    address_key: str
    scope_key: str
    action: str
    address: str
    cause: str
    reason: str | None
    source: str
    provider: str | None
    event_id: str | None
    tracking_id: str | None
    at_us: int
    expires_at_us: int | None
    recorded_at_us: int
    standing: bool = False
    id: int | None = None

    def content(self) -> tuple[Any, ...]:
        """What the claim says, without when or where it was written: equal contents are the
        same claim."""
        return (
            self.address_key,
            self.scope_key,
            self.action,
            self.cause,
            self.source,
            self.provider or "",
            self.event_id or "",
            self.reason or "",
            self.at_us,
            self.expires_at_us,
        )

    def suppression(self) -> Suppression:
        return Suppression(
            address=self.address,
            scope=_scope(self.scope_key),
            cause=self.cause,
            reason=self.reason,
            source=self.source,
            provider=self.provider,
            event_id=self.event_id,
            tracking_id=self.tracking_id,
            created_at=from_micros(self.at_us),
            expires_at=None if self.expires_at_us is None else from_micros(self.expires_at_us),
        )


_COLUMNS = (
    "address_key, scope_key, action, address, cause, reason, source, provider, event_id, "
    "tracking_id, at_us, expires_at_us, recorded_at_us, standing"
)
_INSERT = f"INSERT INTO suppression_history ({_COLUMNS})"
_SELECT = f"{_COLUMNS}, id"


def _claim(row: Sequence[Any]) -> Claim:
    return Claim(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        row[5],
        row[6],
        row[7],
        row[8],
        row[9],
        int(row[10]),
        None if row[11] is None else int(row[11]),
        int(row[12]),
        bool(row[13]),
        int(row[14]),
    )


# --------------------------------------------------------------------------- the fold


def _lifts(lift: Claim, add: Claim) -> bool:
    """Whether ``lift`` lifts ``add``: a lift covers what is older than it; a lift made by
    hand (or by a correction) also covers every claim recorded before it, whatever that
    claim's own date (a provider's clock may run ahead of ours), so that lifting by hand
    always lifts what the person saw. Both are properties of the claims, not of the order
    they arrived in."""
    if lift.scope_key not in (add.scope_key, EVERY_SCOPE):
        return False
    if lift.at_us < add.at_us and not (
        lift.source == MANUAL and add.recorded_at_us <= lift.recorded_at_us
    ):
        return False
    return lift.cause != RESUBSCRIBED or add.cause == UNSUBSCRIBED


def _earliest(claim: Claim) -> tuple[Any, ...]:
    return claim.content()[8:9] + claim.content()[:8]


def fold(claims: Iterable[Claim], now_us: int, soft: Claim | None = None) -> dict[str, Claim]:
    """The claim that stands in each scope of one address, given all its claims (the stored
    soft-bounce-limit additions are ignored: ``soft`` is the one derived now, if any)."""
    adds: list[Claim] = []
    lifts: list[Claim] = []
    for claim in claims:
        if claim.action == ADDED and claim.cause != SOFT_LIMIT:
            adds.append(claim)
        elif claim.action == LIFTED:
            lifts.append(claim)
    if soft is not None:
        adds.append(soft)
    best: dict[str, Claim] = {}
    for add in adds:
        if add.expires_at_us is not None and add.expires_at_us <= now_us:
            continue
        if any(_lifts(lift, add) for lift in lifts):
            continue
        current = best.get(add.scope_key)
        if current is None or _better(add, current):
            best[add.scope_key] = add
    return best


def _better(a: Claim, b: Claim) -> bool:
    if (a.expires_at_us is None) != (b.expires_at_us is None):
        return a.expires_at_us is None
    if (
        a.expires_at_us is not None
        and b.expires_at_us is not None
        and a.expires_at_us != b.expires_at_us
    ):
        return a.expires_at_us > b.expires_at_us
    return _earliest(a) < _earliest(b)


@dataclass(frozen=True, slots=True)
class SoftBouncePolicy:
    """After ``limit`` soft bounces within ``window`` with no delivery between them, an address
    is suppressed (every stream, cause ``soft-bounce-limit``) for ``duration``. ``limit=0``
    turns the policy off."""

    limit: int = 5
    window: timedelta = timedelta(days=30)
    duration: timedelta = timedelta(days=30)

    def __post_init__(self) -> None:
        if self.limit < 0:
            raise ValueError(f"the soft-bounce limit cannot be negative, got {self.limit}")
        if self.window <= timedelta(0) or self.duration <= timedelta(0):
            raise ValueError("the soft-bounce window and duration must be positive")

    @property
    def on(self) -> bool:
        return self.limit > 0


class SoftBounce(NamedTuple):
    at_us: int
    event_id: str
    address: str
    reason: str | None
    provider: str | None
    tracking_id: str | None


def soft_limit(
    address_key: str,
    bounces: Iterable[SoftBounce],
    resets: Iterable[int],
    policy: SoftBouncePolicy,
    recorded_at_us: int,
) -> Claim | None:
    """The soft-bounce-limit suppression that ``bounces`` earn, given the times of the
    deliveries and lifts (``resets``) that break a run: a pure function of the two sets."""
    if not policy.on:
        return None
    window = policy.window // timedelta(microseconds=1)
    duration = policy.duration // timedelta(microseconds=1)
    timeline: list[tuple[int, int, Any]] = [(t, 0, None) for t in set(resets)]
    timeline.extend((b.at_us, 1, b) for b in set(bounces))
    timeline.sort(key=lambda item: (item[0], item[1], item[2] and item[2].event_id))
    run: list[SoftBounce] = []
    earned: SoftBounce | None = None
    for at, kind, bounce in timeline:
        if kind == 0:
            run.clear()
            if earned is not None and at >= earned.at_us:
                earned = None
            continue
        run = [b for b in run if b.at_us > at - window]
        run.append(bounce)
        if len(run) >= policy.limit:
            earned, run = bounce, []
    if earned is None:
        return None
    return Claim(
        address_key,
        ALL_STREAMS,
        ADDED,
        earned.address,
        SOFT_LIMIT,
        f"{policy.limit} soft bounces without a delivery; "
        f"last: {earned.reason or 'no reason given'}",
        SuppressionSource.EVENT.value,
        earned.provider,
        earned.event_id,
        earned.tracking_id,
        earned.at_us,
        earned.at_us + duration,
        recorded_at_us,
    )


# --------------------------------------------------------------------------- writing

_CHUNK = 16384
"""Keys per look-up statement: within both drivers' parameter limits."""


def _padded(keys: Sequence[str]) -> list[str]:
    """``keys`` padded to a power of two (with the last key again), so that a few statement
    texts serve every size and each is prepared once."""
    size = 1 << max(0, (len(keys) - 1).bit_length())
    return [*keys, *([keys[-1]] * (size - len(keys)))]


def _in(column: str, count: int) -> str:
    return f"{column} IN ({', '.join('?' * count)})"


LOCK_BUCKETS = 1024
_LOCK = "INSERT INTO suppression_locks (bucket)"
_LOCK_TAIL = "ON CONFLICT (bucket) DO UPDATE SET bucket = excluded.bucket"


def lock(keys: Iterable[str]) -> Program[None]:
    """Hold the lock buckets of ``keys`` until the transaction ends, taken in bucket order, so
    that two writers re-folding the same address queue instead of each folding without the
    other's claims (PostgreSQL at READ COMMITTED; SQLite writers are serial anyway). Buckets
    (a CRC of the key, of 1024) keep the locks few however many addresses an import
    touches."""
    yield from lock_buckets({zlib.crc32(key.encode()) % LOCK_BUCKETS for key in keys})


def lock_buckets(buckets: Iterable[int]) -> Program[None]:
    ordered = sorted(set(buckets))
    if ordered:
        yield Write(_LOCK, [(b,) for b in ordered], _LOCK_TAIL)


def load(keys: Sequence[str], *, standing_only: bool = False) -> Program[dict[str, list[Claim]]]:
    """The claims of ``keys`` that the fold reads (or only those standing): one statement per
    16384 keys, in any order."""
    found: dict[str, list[Claim]] = {}
    where = "standing" if standing_only else f"action IN ('{ADDED}', '{LIFTED}')"
    for start in range(0, len(keys), _CHUNK):
        chunk = _padded(keys[start : start + _CHUNK])
        rows = yield Query(
            f"SELECT {_SELECT} FROM suppression_history "
            f"WHERE {_in('address_key', len(chunk))} AND {where}",
            chunk,
        )
        for row in rows:
            claim = _claim(row)
            found.setdefault(claim.address_key, []).append(claim)
    return found


@dataclass(slots=True)
class Applied:
    """What a write did to the list: per (address key, scope key), what stood before and what
    stands now (None: nothing)."""

    before: dict[tuple[str, str], Claim | None] = field(default_factory=dict)
    after: dict[tuple[str, str], Claim | None] = field(default_factory=dict)
    inserted: int = 0
    kept: list[Claim] = field(default_factory=list)
    """The given claims that were written (all of them, unless ``only_if_changing``)."""
    unseen: int = 0
    """How many of them were the one claim about an address the list had never seen."""

    def changed(self) -> Iterator[tuple[tuple[str, str], Claim | None, Claim | None]]:
        for key, now in self.after.items():
            was = self.before.get(key)
            if (was is None) != (now is None) or (
                was is not None and now is not None and was.content() != now.content()
            ):
                yield key, was, now


def _soft_inputs(
    keys: Sequence[str], claims: Mapping[str, Sequence[Claim]]
) -> Program[tuple[dict[str, list[SoftBounce]], dict[str, list[int]]]]:
    """The soft bounces and the deliveries of ``keys``, read from the events (one partial
    index holds exactly these)."""
    by_recipient: dict[str, list[str]] = {}
    for key in keys:
        by_recipient.setdefault(dedupe_key(key), []).append(key)
    recipients = sorted(by_recipient)
    bounces: dict[str, list[SoftBounce]] = {}
    resets: dict[str, list[int]] = {key: [] for key in keys}
    for start in range(0, len(recipients), _CHUNK):
        chunk = _padded(recipients[start : start + _CHUNK])
        rows = yield Query(
            "SELECT recipient, type, timestamp_us, event_id, reason, provider, tracking_id "
            f"FROM events WHERE {_in('recipient_key', len(chunk))} "
            "AND ((type = 'bounced' AND bounce = 'soft') OR type = 'delivered')",
            chunk,
        )
        for recipient, kind, at, event_id, reason, provider, tracking_id in rows:
            key = suppression_key(recipient)
            if key not in resets:
                continue
            if kind == _DELIVERED:
                resets[key].append(int(at))
            else:
                bounces.setdefault(key, []).append(
                    SoftBounce(int(at), event_id, recipient.strip(), reason, provider, tracking_id)
                )
    for key in keys:
        resets[key].extend(
            c.at_us
            for c in claims.get(key, ())
            if c.action == LIFTED
            and c.cause != RESUBSCRIBED
            and c.scope_key in (ALL_STREAMS, EVERY_SCOPE)
        )
    return bounces, resets


def apply(
    claims: Sequence[Claim],
    now_us: int,
    *,
    policy: SoftBouncePolicy,
    soft_keys: Iterable[str] = (),
    only_if_changing: bool = False,
    dry_run: bool = False,
    stored_only: set[str] | None = None,
) -> Program[Applied]:
    """Append ``claims``, re-fold every address they (or ``soft_keys``) touch and move the
    ``standing`` marks. ``only_if_changing`` drops the claims that would change nothing
    (imports and provider pulls, so that doing them twice changes nothing the second time);
    ``dry_run`` writes nothing. ``stored_only``: the caller holds every lock bucket and knows
    that only these keys can have stored claims (an import into a list that was empty)."""
    soft = set(soft_keys) if policy.on else set()
    unique = {c[0] for c in claims}.union(soft)
    if not unique:
        return Applied()
    keys = list(unique)
    if stored_only is None:
        if not dry_run:
            yield from lock(keys)
        stored = yield from load(keys)
    else:
        stored = yield from load([k for k in keys if k in stored_only])
    if soft:
        lifts = {k: [c for c in stored.get(k, ()) if c.action == LIFTED] for k in soft}
        for claim in claims:
            if claim.action == LIFTED and claim.address_key in soft:
                lifts[claim.address_key].append(claim)
        bounces, resets = yield from _soft_inputs(sorted(soft), lifts)
    new_by_key: dict[str, list[Claim]] = {}
    for claim in claims:
        listed = new_by_key.get(claim.address_key)
        if listed is None:
            new_by_key[claim.address_key] = [claim]
        else:
            listed.append(claim)
    applied = Applied()
    inserts: list[tuple[Any, ...]] = []
    slow: list[str] = []
    stand: list[int] = []
    fall: list[int] = []
    kept_append, insert = applied.kept.append, inserts.append
    for key, new in new_by_key.items() if not soft and not stored else ():
        # The common case of an import: addresses the list has never seen, one claim each.
        if len(new) == 1:
            claim = new[0]
            if claim[2] == ADDED and (claim[11] is None or claim[11] > now_us):
                kept_append(claim)
                insert((*claim[:13], True))
                applied.unseen += 1
                continue
            if only_if_changing:
                continue
        slow.append(key)
    for key in slow if not soft and not stored else sorted(keys):
        old = stored.get(key, [])
        new = new_by_key.get(key, [])
        if not old and len(new) == 1 and key not in soft:
            claim = new[0]
            if claim.action == ADDED and (
                claim.expires_at_us is None or claim.expires_at_us > now_us
            ):
                kept_append(claim)
                insert((*claim[:13], True))
                continue
            if only_if_changing:
                continue

        standing_before = {c.scope_key: c for c in old if c.standing}
        if key in soft:
            derived = soft_limit(key, bounces.get(key, ()), resets[key], policy, now_us)
        else:
            derived = next(
                (c for c in old if c.standing and c.cause == SOFT_LIMIT and c.action == ADDED),
                None,
            )
        if only_if_changing and new:
            base = fold(old, now_us, derived)
            kept: list[Claim] = []
            for claim in new:
                trial = fold([*old, *kept, claim], now_us, derived)
                if _contents(trial) != _contents(base):
                    kept.append(claim)
                    base = trial
            new = kept
        known = {c.content(): c for c in old}
        fresh = [c for c in new if c.content() not in known]
        applied.kept.extend(fresh)
        if derived is not None and derived.id is None:
            existing = known.get(derived.content())
            if existing is not None:
                derived = existing
            else:
                fresh.append(derived)
        result = fold([*old, *fresh], now_us, derived)
        chosen = {id(c) for c in result.values()}
        previous_soft = next((c for c in standing_before.values() if c.cause == SOFT_LIMIT), None)
        if previous_soft is not None and key in soft and derived is None:
            fresh.append(
                previous_soft._replace(
                    action=CLEARED,
                    reason="a delivery or a lift ended the run of soft bounces",
                    recorded_at_us=now_us,
                    at_us=now_us,
                    expires_at_us=None,
                    id=None,
                    standing=False,
                )
            )
        for claim in old:
            now_standing = id(claim) in chosen
            if now_standing and not claim.standing:
                stand.append(claim.id)  # type: ignore[arg-type]
            elif claim.standing and not now_standing:
                fall.append(claim.id)  # type: ignore[arg-type]
        for claim in fresh:
            inserts.append((*claim[:12], now_us, id(claim) in chosen))
        for scope in {*standing_before, *result}:
            applied.before[(key, scope)] = standing_before.get(scope)
            applied.after[(key, scope)] = result.get(scope)
    applied.inserted = len(inserts)
    if dry_run:
        return applied
    for ids, value in ((sorted(fall), "FALSE"), (sorted(stand), "TRUE")):
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            yield Query(
                f"UPDATE suppression_history SET standing = {value} WHERE {_in('id', len(chunk))}",
                chunk,
            )
    if inserts:
        yield Write(_INSERT, inserts)
    return applied


def _contents(result: Mapping[str, Claim]) -> dict[str, tuple[Any, ...]]:
    return {scope: claim.content() for scope, claim in result.items()}


# --------------------------------------------------------------------------- reading

_UNEXPIRED = "(expires_at_us IS NULL OR expires_at_us > ?)"


def lookup(
    addresses: Sequence[str], stream: str | None, now_us: int
) -> Program[dict[str, Suppression]]:
    """The suppressions that refuse ``addresses`` on ``stream``, keyed by suppression key: one
    statement for up to 16384 addresses. Where both stand, every-stream wins."""
    keys = sorted({suppression_key(a) for a in addresses})
    scope = stream_scope(stream)
    found: dict[str, Claim] = {}
    for start in range(0, len(keys), _CHUNK):
        chunk = _padded(keys[start : start + _CHUNK])
        rows = yield Query(
            f"SELECT {_SELECT} FROM suppression_history "
            f"WHERE standing AND {_in('address_key', len(chunk))} "
            f"AND scope_key IN ('', ?) AND {_UNEXPIRED}",
            [*chunk, scope, now_us],
        )
        for row in rows:
            claim = _claim(row)
            current = found.get(claim.address_key)
            if current is None or claim.scope_key == ALL_STREAMS:
                found[claim.address_key] = claim
    return {key: claim.suppression() for key, claim in found.items()}


def history(address: str) -> Program[list[tuple[str, Suppression, datetime]]]:
    """Every claim about ``address``, in the order they were recorded."""
    rows = yield Query(
        f"SELECT {_SELECT} FROM suppression_history WHERE address_key = ? ORDER BY id",
        (suppression_key(address),),
    )
    return [
        (claim.action, claim.suppression(), from_micros(claim.recorded_at_us))
        for claim in map(_claim, rows)
    ]


def listing(
    cursor: tuple[int, str, str] | None, limit: int, now_us: int
) -> Program[tuple[list[Suppression], str | None, int]]:
    """Standing suppressions, newest first."""
    where = f"standing AND {_UNEXPIRED}"
    params: list[Any] = [now_us]
    if cursor is not None:
        where += " AND (at_us, address_key, scope_key) < (?, ?, ?)"
        params.extend(cursor)
    rows = yield Query(
        f"SELECT {_SELECT} FROM suppression_history WHERE {where} "
        "ORDER BY at_us DESC, address_key DESC, scope_key DESC LIMIT ?",
        [*params, limit + 1],
    )
    total = yield Query(
        f"SELECT COUNT(*) FROM suppression_history WHERE standing AND {_UNEXPIRED}", (now_us,)
    )
    claims = [_claim(row) for row in rows]
    more = len(claims) > limit
    claims = claims[:limit]
    next_cursor = None
    if more:
        last = claims[-1]
        next_cursor = encode_cursor("suppressions", [last.at_us, last.address_key, last.scope_key])
    return [c.suppression() for c in claims], next_cursor, int(total[0][0])


def export_page(
    after: tuple[str, str] | None, limit: int, now_us: int
) -> Program[list[Suppression]]:
    """A page of the standing list in (address, scope) order, for export."""
    where = f"standing AND {_UNEXPIRED}"
    params: list[Any] = [now_us]
    if after is not None:
        where += " AND (address_key, scope_key) > (?, ?)"
        params.extend(after)
    rows = yield Query(
        f"SELECT {_SELECT} FROM suppression_history WHERE {where} "
        "ORDER BY address_key, scope_key LIMIT ?",
        [*params, limit],
    )
    return [_claim(row).suppression() for row in rows]


def expiring(now_us: int) -> Program[list[str]]:
    """The addresses whose standing suppression has expired and is still marked."""
    rows = yield Query(
        "SELECT DISTINCT address_key FROM suppression_history "
        "WHERE standing AND expires_at_us IS NOT NULL AND expires_at_us <= ?",
        (now_us,),
    )
    return sorted(row[0] for row in rows)


def expire(now_us: int) -> Program[int]:
    """Log the expiry of every standing suppression whose time is up, and re-fold those
    addresses so that the marks move to what stands now (if anything)."""
    keys = yield from expiring(now_us)
    if not keys:
        return 0
    yield from lock(keys)
    stored = yield from load(keys, standing_only=True)
    logs = [
        c._replace(action=EXPIRED, recorded_at_us=now_us, standing=False, id=None)
        for claims in stored.values()
        for c in claims
        if c.expires_at_us is not None and c.expires_at_us <= now_us
    ]
    yield from _refold(keys, now_us)
    if logs:
        yield Write(_INSERT, [c[:14] for c in logs])
    return len(logs)


def _refold(keys: Sequence[str], now_us: int) -> Program[None]:
    stored = yield from load(keys)
    fall: list[int] = []
    stand: list[int] = []
    for key in keys:
        old = stored.get(key, [])
        soft = next(
            (
                c
                for c in old
                if c.standing
                and c.cause == SOFT_LIMIT
                and (c.expires_at_us is None or c.expires_at_us > now_us)
            ),
            None,
        )
        chosen = {id(c) for c in fold(old, now_us, soft).values()}
        for claim in old:
            if claim.standing and id(claim) not in chosen:
                fall.append(claim.id)  # type: ignore[arg-type]
            elif not claim.standing and id(claim) in chosen:
                stand.append(claim.id)  # type: ignore[arg-type]
    for ids, value in ((sorted(fall), "FALSE"), (sorted(stand), "TRUE")):
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            yield Query(
                f"UPDATE suppression_history SET standing = {value} WHERE {_in('id', len(chunk))}",
                chunk,
            )


# --------------------------------------------------------------------------- importing


@dataclass(frozen=True, slots=True)
class InvalidRow:
    """A row that cannot be imported: its line (or row number) and why."""

    line: int
    reason: str


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What an import did (or, in a dry run, would do): rows that add an address to a scope
    (``new``), change what stands there (``updated``), or change nothing (``unchanged``), and
    the ``invalid`` ones with the reason for each (``errors``). ``applied`` is False for a
    dry run and for an import refused because of invalid rows."""

    new: int = 0
    unchanged: int = 0
    updated: int = 0
    invalid: int = 0
    errors: tuple[InvalidRow, ...] = ()
    applied: bool = False

    @property
    def rows(self) -> int:
        return self.new + self.unchanged + self.updated + self.invalid


_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
)
_SPECIAL_USE = frozenset({"arpa", "invalid", "local", "localhost", "onion", "test"})


def check_address(value: str) -> str:
    """``value`` as the address the list keeps (the domain in lower case, as ``Address.parse``
    gives it); ``InvalidAddress`` when it is not one. Plain ASCII addresses are checked by
    a pattern that accepts a subset of what ``Address.parse`` accepts (and refuses the
    special-use top-level domains it refuses); anything else goes through
    ``Address.parse``."""
    text = value.strip()
    local, _, domain = text.rpartition("@")
    if (
        _PLAIN_ADDRESS.fullmatch(text)
        and len(local) <= 64
        and len(text) <= 254
        and domain.rpartition(".")[2].lower() not in _SPECIAL_USE
    ):
        lower = domain.lower()
        return text if lower == domain else f"{local}@{lower}"
    return Address.parse(text).email


_TIME_FORMATS = ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M:%S%z")


def parse_time(value: Any, what: str) -> int | None:
    """Microseconds since the epoch from an aware ISO 8601 text, a datetime or unix seconds."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        return int(value * 1_000_000)
    elif isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d{9,11}(\.\d+)?", text):
            return int(float(text) * 1_000_000)
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{what} {value!r} is not an ISO 8601 time") from None
    else:
        raise ValueError(f"{what} {value!r} is not a time")
    if moment.tzinfo is None:
        raise ValueError(f"{what} {value!r} has no time zone (add Z or +00:00)")
    return to_micros(moment)


IMPORT_COLUMNS = frozenset(
    {
        "address",
        "scope",
        "cause",
        "reason",
        "provider",
        "event_id",
        "created_at",
        "expires_at",
        "source",
        "tracking_id",
    }
)
"""The columns an import reads (``source`` and ``tracking_id`` are accepted, so that an export
imports as it is, and ignored: the import's own ``source`` is recorded)."""


def _text(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} must be text")
    if len(value) > 2000:
        raise ValueError(f"{name} is longer than 2000 characters")
    return value


_ALL_SCOPES = frozenset({"", "*", "all"})


def claim_from_row(row: Mapping[str, Any] | Suppression, source: str, now_us: int) -> Claim:
    """The claim one import row makes; ``ValueError`` (or ``InvalidAddress``) saying what is
    wrong with it. The hot path of an import: one dictionary look-up per column."""
    data: Mapping[str, Any]
    if type(row) is dict or (not isinstance(row, Suppression) and isinstance(row, Mapping)):
        data = row
        if not data.keys() <= IMPORT_COLUMNS:
            problem = data.get("__problem__")
            if problem:
                raise ValueError(str(problem))
            unknown = sorted(str(k) for k in data if k not in IMPORT_COLUMNS)
            raise ValueError(f"unknown column(s) {', '.join(unknown)}")
    elif isinstance(row, Suppression):
        data = row.model_dump()
    else:
        raise ValueError(f"a row must be a mapping or a Suppression, not {type(row).__name__}")
    raw_address = data.get("address")
    if not isinstance(raw_address, str) or not raw_address.strip():
        raise ValueError("the address is missing")
    address = check_address(raw_address)
    scope_value = data.get("scope")
    if scope_value is None or scope_value in _ALL_SCOPES:
        scope = ALL_STREAMS
    elif isinstance(scope_value, str):
        try:
            scope = check_stream(scope_value)
        except ValueError:
            raise ValueError(f"unknown scope {scope_value!r}") from None
    else:
        raise ValueError(f"unknown scope {scope_value!r}")
    cause = data.get("cause") or IMPORTED
    if cause not in CAUSES:
        raise ValueError(f"unknown cause {cause!r}; use one of {', '.join(sorted(CAUSES))}")
    created = data.get("created_at")
    at = now_us if created is None or created == "" else parse_time(created, "created_at")
    expires_value = data.get("expires_at")
    expires = None
    if expires_value is not None and expires_value != "":
        expires = parse_time(expires_value, "expires_at")
        if expires is not None and at is not None and expires <= at:
            raise ValueError("expires_at is not after created_at")
    reason, provider, event_id = data.get("reason"), data.get("provider"), data.get("event_id")
    if not (reason is None or (type(reason) is str and len(reason) <= 2000)):
        reason = _text(data, "reason")
    if not (provider is None or (type(provider) is str and len(provider) <= 2000)):
        provider = _text(data, "provider")
    if not (event_id is None or (type(event_id) is str and len(event_id) <= 2000)):
        event_id = _text(data, "event_id")
    # ``check_address`` gives the domain in lower case: the address is its own key.
    return Claim(
        address,
        scope,
        ADDED,
        address,
        str(cause),
        reason or None,
        source,
        provider or None,
        event_id or None,
        None,
        now_us if at is None else at,
        expires,
        now_us,
    )


def check_source(source: str) -> str:
    if source not in _SOURCES:
        raise ValueError(f"unknown source {source!r}; use one of {', '.join(sorted(_SOURCES))}")
    return source


IMPORT_CHUNK = 20000
"""Rows folded and written per step of an import (all of them in one transaction)."""


class Refused(Exception):
    """Raised inside an import's transaction to roll it back: the file had invalid rows."""

    def __init__(self, report: ImportReport) -> None:
        super().__init__(f"{report.invalid} invalid row(s)")
        self.report = report


def import_rows(
    rows: Iterable[tuple[int, Mapping[str, Any] | Suppression]],
    source: str,
    now_us: int,
    *,
    policy: SoftBouncePolicy,
    dry_run: bool,
    skip_invalid: bool,
    progress: Any = None,
) -> Program[ImportReport]:
    """Import numbered rows, ``IMPORT_CHUNK`` at a time, in the one transaction the program
    runs in. With invalid rows and no ``skip_invalid``, every row is still checked (so that
    the report names them all) but nothing is written, and :class:`Refused` rolls back what
    earlier chunks wrote."""
    new = unchanged = updated = 0
    errors: list[InvalidRow] = []
    counted: set[tuple[str, str]] = set()
    chunk: list[tuple[int, Claim]] = []
    read = 0
    written: set[str] | None = None
    if not dry_run:
        # Into an empty list (the usual first import), with every lock bucket held, only
        # the addresses this import wrote itself can have claims: the others need no look-up.
        yield from lock_buckets(range(LOCK_BUCKETS))
        rows_there = yield Query("SELECT address_key FROM suppression_history LIMIT 1")
        if not rows_there:
            written = set()

    def fold_chunk(batch: list[tuple[int, Claim]]) -> Program[None]:
        nonlocal new, unchanged, updated
        refusing = bool(errors) and not skip_invalid
        claims = [claim for _, claim in batch]
        applied = yield from apply(
            claims,
            now_us,
            policy=policy,
            only_if_changing=True,
            dry_run=dry_run or refusing,
            stored_only=written,
        )
        if written is not None and not refusing:
            written.update(c[0] for c in applied.kept)
        if applied.unseen == len(batch):  # every row a new address: nothing to tell apart
            new += len(batch)
            return
        kept = {id(c) for c in applied.kept}
        for _, claim in batch:
            if id(claim) not in kept:
                unchanged += 1
                continue
            place = (claim.address_key, claim.scope_key)
            if applied.before.get(place) is None and place not in counted:
                new += 1
            else:
                updated += 1
            counted.add(place)

    for line, row in rows:
        read += 1
        try:
            chunk.append((line, claim_from_row(row, source, now_us)))
        except ValueError as exc:  # InvalidAddress is a ValueError too
            errors.append(InvalidRow(line, str(exc)))
        if len(chunk) >= IMPORT_CHUNK:
            yield from fold_chunk(chunk)
            chunk = []
            if progress is not None:
                progress(read)
    if chunk:
        yield from fold_chunk(chunk)
    if progress is not None:
        progress(read)
    refused = bool(errors) and not skip_invalid
    report = ImportReport(
        new=new,
        unchanged=unchanged,
        updated=updated,
        invalid=len(errors),
        errors=tuple(errors),
        applied=not dry_run and not refused,
    )
    if refused and not dry_run:
        raise Refused(report)
    return report


# --------------------------------------------------------------------------- from events

_ALL_STREAM_CAUSES = frozenset({EventType.COMPLAINED.value})
_HARD_CAUSES = frozenset({EventType.BOUNCED.value, EventType.DROPPED.value})
_DELIVERED = EventType.DELIVERED.value
_UNKNOWN = EventType.UNKNOWN.value
_PROVIDER_BLOCK = "blocked"


def from_events(
    rows: Sequence[Sequence[Any]],
    now_us: int,
    policy: SoftBouncePolicy,
    list_change: Callable[[str], ListChange | None],
) -> Program[None]:
    """Fold newly stored events (as ``events`` rows) into the list: hard bounces, provider
    blocks of the address and complaints suppress every stream; an unsubscribe the stream of
    its send; a resubscribe lifts that unsubscribe; soft bounces (and deliveries to an
    address held by the soft-bounce limit) re-derive the limit. An event by which the
    provider says its own list changed (``list_change(provider)``, the provider's rules) is
    recorded with source ``provider-sync``."""
    claims: list[Claim] = []
    soft: set[str] = set()
    delivered: set[str] = set()
    needs_stream: set[str] = set()
    picked: list[tuple[Sequence[Any], str, str | None]] = []
    changes: dict[str, Any] = {}
    for row in rows:
        kind, recipient, provider = row[2], row[4], row[1]
        if not recipient:
            continue
        if provider not in changes:
            changes[provider] = list_change(provider)
        asked = changes[provider]
        change = asked(row[3], EventType(kind)) if asked is not None else None
        bounce = row[13]
        if kind in (UNSUBSCRIBED, RESUBSCRIBED):
            picked.append((row, "", change))
            if row[9] is not None:
                needs_stream.add(row[9])
        elif (
            (
                kind in _HARD_CAUSES
                and bounce == "hard"
                # the sender failed authentication: nothing is wrong with the address
                and not sender_auth_failure(row[14], row[12])
            )
            or kind in _ALL_STREAM_CAUSES
            or change == "added"
        ):
            picked.append((row, ALL_STREAMS, change))
        elif change == "lifted":
            picked.append((row, EVERY_SCOPE, change))
        elif kind == EventType.BOUNCED.value and bounce == "soft":
            soft.add(suppression_key(recipient))
        elif kind == _DELIVERED:
            delivered.add(suppression_key(recipient))
    if not picked and not soft and not delivered:
        return None
    streams: dict[str, str | None] = {}
    ids = sorted(needs_stream)
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        found = yield Query(
            f"SELECT tracking_id, stream FROM messages WHERE {_in('tracking_id', len(chunk))}",
            chunk,
        )
        streams.update((tid, stream) for tid, stream in found)
    for row, scope, change in picked:
        kind, provider = row[2], row[1]
        synced = change is not None
        if kind in (UNSUBSCRIBED, RESUBSCRIBED):
            scope = stream_scope(streams.get(row[9]) if row[9] is not None else None)
        lifting = kind == RESUBSCRIBED or (change == "lifted" and kind != UNSUBSCRIBED)
        recipient = row[4]
        claims.append(
            Claim(
                suppression_key(recipient),
                scope,
                LIFTED if lifting else ADDED,
                recipient.strip(),
                # a provider's own list change that is no delivery event: the provider blocks it
                _PROVIDER_BLOCK if kind == _UNKNOWN else kind,
                row[12],
                (SuppressionSource.PROVIDER_SYNC if synced else SuppressionSource.EVENT).value,
                provider,
                row[0],
                row[9],
                int(row[10]),
                None,
                now_us,
            )
        )
    if delivered and policy.on:
        held = sorted(delivered)
        for start in range(0, len(held), _CHUNK):
            chunk = _padded(held[start : start + _CHUNK])
            found = yield Query(
                "SELECT DISTINCT address_key FROM suppression_history WHERE standing "
                f"AND cause = '{SOFT_LIMIT}' AND {_in('address_key', len(chunk))}",
                chunk,
            )
            soft.update(row[0] for row in found)
    yield from apply(claims, now_us, policy=policy, soft_keys=soft)
    return None
