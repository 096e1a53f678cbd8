"""Is every provider's webhook still alive? And which events never met their send?

A webhook that died (a 404 after an upgrade, a lapsed subscription, an endpoint a provider
switched off) shows as silence: sends keep going out through a provider and nothing comes
back. :func:`provider_health` reads exactly that from the store, per provider:

- the last event received from it, and the last send that went out through it;
- *unhealthy* when sends went out through it during the last ``silence`` (older than
  ``grace``, the time a provider takes to report anything) and no event at all arrived from
  it during that ``silence``.

Orphans are events that no recorded send has claimed ``orphan_after`` their arrival:
account-wide webhooks about mail another application sent, or events whose send was never
recorded. They are kept (an event is never dropped) and joined the moment their send is
recorded; :func:`orphans` lists them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from unimailtrack.model import EmailEvent
from unimailtrack.tracking._records import DeadLetter, from_micros, to_micros
from unimailtrack.tracking._store import Program, Query

__all__ = ["HealthReport", "ProviderHealth", "dead_letter", "orphans", "provider_health"]


@dataclass(frozen=True, slots=True)
class ProviderHealth:
    """One provider's webhook, as the store sees it."""

    provider: str
    healthy: bool
    last_event_at: datetime | None
    """When the last event from this provider was received (None: never)."""
    last_send_at: datetime | None
    """The last accepted send through this provider within the silence window."""
    sends: int
    """Accepted sends through it within the silence window, older than the grace period."""
    reason: str | None
    """Why it is unhealthy, in words; None when healthy."""


@dataclass(frozen=True, slots=True)
class HealthReport:
    """Every provider's health, the orphans and the dead letters waiting."""

    checked_at: datetime
    silence: timedelta
    providers: tuple[ProviderHealth, ...]
    orphans: int
    """Events no send has claimed ``orphan_after`` their arrival."""
    dead_letters: int
    """Bodies kept because they could not be read (``unimailtrack dead-letters``)."""

    @property
    def healthy(self) -> bool:
        return all(p.healthy for p in self.providers)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form, for ``/readyz`` and ``unimailtrack health --json``."""
        return {
            "healthy": self.healthy,
            "checked_at": self.checked_at.isoformat(),
            "silence_seconds": int(self.silence.total_seconds()),
            "orphans": self.orphans,
            "dead_letters": self.dead_letters,
            "providers": {
                p.provider: {
                    "healthy": p.healthy,
                    "last_event_at": p.last_event_at.isoformat() if p.last_event_at else None,
                    "last_send_at": p.last_send_at.isoformat() if p.last_send_at else None,
                    "sends": p.sends,
                    "reason": p.reason,
                }
                for p in self.providers
            },
        }


def provider_health(
    providers: Iterable[str],
    now: datetime,
    silence: timedelta,
    grace: timedelta,
    orphan_after: timedelta,
) -> Program[HealthReport]:
    since, until = to_micros(now - silence), to_micros(now - grace)
    names = set(providers)
    found = yield Query(
        "SELECT DISTINCT provider FROM messages WHERE sent_at_us >= :since "
        "AND provider IS NOT NULL",
        {"since": since},
    )
    names.update(row[0] for row in found)
    report: list[ProviderHealth] = []
    for name in sorted(names):
        last = yield Query(
            "SELECT MAX(received_at_us) FROM events WHERE provider = :provider",
            {"provider": name},
        )
        sent = yield Query(
            "SELECT COUNT(*), MAX(sent_at_us) FROM messages WHERE sent_at_us >= :since "
            "AND sent_at_us <= :until AND provider = :provider AND send_status = 'accepted'",
            {"since": since, "until": until, "provider": name},
        )
        last_event = None if last[0][0] is None else from_micros(int(last[0][0]))
        sends = int(sent[0][0])
        last_send = None if sent[0][1] is None else from_micros(int(sent[0][1]))
        silent = last_event is None or last_event < now - silence
        healthy = not (silent and sends)
        reason = None
        if not healthy:
            heard = "never" if last_event is None else f"not since {last_event.isoformat()}"
            reason = (
                f"{sends} send(s) went out through {name} in the last {_span(silence)} and no "
                f"event came back ({heard}): is its webhook still configured and reachable?"
            )
        report.append(ProviderHealth(name, healthy, last_event, last_send, sends, reason))
    cutoff = {"cutoff": to_micros(now - orphan_after)}
    unlinked = yield Query(f"SELECT COUNT(*) FROM events e WHERE {_UNLINKED}", cutoff)
    unsent = yield Query(f"SELECT COUNT(*) FROM events e WHERE {_UNSENT}", cutoff)
    waiting = [(int(unlinked[0][0]) + int(unsent[0][0]),)]
    letters = yield Query("SELECT COUNT(*) FROM dead_letters")
    return HealthReport(now, silence, tuple(report), int(waiting[0][0]), int(letters[0][0]))


def orphans(
    now: datetime, older_than: timedelta, provider: str | None, limit: int
) -> Program[list[EmailEvent]]:
    """Events still unmatched ``older_than`` after their arrival, oldest first."""
    from unimailtrack.tracking._programs import _EVENT_SELECT, event_from_row

    params: dict[str, Any] = {"cutoff": to_micros(now - older_than), "limit": limit}
    where = ""
    if provider is not None:
        where = "AND e.provider = :provider "
        params["provider"] = provider
    found = []
    for condition in (_UNLINKED, _UNSENT):
        rows = yield Query(
            f"SELECT {_columns(_EVENT_SELECT)} FROM events e WHERE {condition} {where}"
            "ORDER BY e.received_at_us, e.event_id LIMIT :limit",
            params,
        )
        found += [(row[-2], row[-1], event_from_row(row[:-2])) for row in rows]
    found.sort(key=lambda item: (item[0], item[1]))
    return [event for _, _, event in found[:limit]]


_UNLINKED = "e.tracking_id IS NULL AND e.received_at_us < :cutoff"
"""Events that carry no tracking id and whose provider message id met no recorded send."""
_UNSENT = (
    "e.tracking_id IN (SELECT m.tracking_id FROM messages m WHERE m.sent_at_us IS NULL) "
    "AND e.received_at_us < :cutoff"
)
"""Events that carry a tracking id no send was recorded under (their row in ``messages``
was made by the events alone)."""


def _columns(select: str) -> str:
    """The event columns, qualified, then the arrival time and the id again, to sort by."""
    names = [name.strip() for name in select.split(",")]
    return ", ".join([*(f"e.{name}" for name in names), "e.received_at_us", "e.event_id"])


def dead_letter(letter_id: int) -> Program[DeadLetter | None]:
    """One dead letter by its id (``unimailtrack dead-letters show``)."""
    rows = yield Query(
        "SELECT id, provider, received_at_us, reason, headers, body FROM dead_letters "
        "WHERE id = :id",
        {"id": letter_id},
    )
    if not rows:
        return None
    row = rows[0]
    return DeadLetter(
        id=int(row[0]),
        provider=row[1],
        received_at=from_micros(row[2]),
        reason=row[3],
        headers=json.loads(row[4]),
        body=bytes(row[5]),
    )


def _span(window: timedelta) -> str:
    seconds = int(window.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"
