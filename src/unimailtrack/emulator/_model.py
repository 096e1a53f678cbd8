"""What the emulator's server and its provider modules exchange.

A provider module reads a send request into an :class:`Answer` and the :class:`SentCopy` of
each recipient it accepted; later it writes a step of each copy's scenario as one of its own
events, and packs events into signed :class:`Posting` requests. Everything else (sockets,
rate limits, timing, duplication, reordering, delivery) is the server's.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol

from unimailtrack.adapters.base import Adapter
from unimailtrack.emulator.scenarios import Scenario, Step, StepKind

__all__ = [
    "Answer",
    "Incoming",
    "Posting",
    "ProviderEmulator",
    "SentCopy",
    "SuppressionLists",
    "iso_time",
    "stable_token",
]


@dataclass(frozen=True, slots=True)
class Incoming:
    """One HTTP request the emulator received; header names are lower-cased."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    query: str = ""


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer, as the provider would give it."""

    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, value: Any, headers: Mapping[str, str] | None = None) -> Answer:
        body = json.dumps(value, separators=(",", ":")).encode()
        return cls(status, body, {"Content-Type": "application/json", **(headers or {})})


@dataclass(frozen=True, slots=True)
class SentCopy:
    """One recipient's copy of an accepted send, and the scenario it plays.

    ``message_id`` is the id the provider's events carry; ``variables`` are the custom values
    the provider echoes back in every event (SendGrid custom args, Mailgun user variables, SES
    message tags); ``opens`` and ``clicks`` tell whether the send asked to track them.
    """

    provider: str
    recipient: str
    message_id: str
    scenario: Scenario
    sender: str
    subject: str
    accepted_at: datetime
    tags: tuple[str, ...] = ()
    variables: Mapping[str, str] = field(default_factory=dict)
    destination: tuple[str, ...] = ()
    """Every recipient of the message this copy belongs to (SES events list them all)."""
    opens: bool = False
    clicks: bool = False
    unreported: frozenset[StepKind] = frozenset()
    """Steps the provider posts no webhook for (Postmark says nothing when it queues a copy)."""

    @property
    def steps(self) -> tuple[Step, ...]:
        """The scenario's steps the provider reports for this copy."""
        played = self.scenario.played(opens=self.opens, clicks=self.clicks)
        if not self.unreported:
            return played
        return tuple(step for step in played if step.kind not in self.unreported)


@dataclass(frozen=True, slots=True)
class Posting:
    """One webhook request, signed, ready to post."""

    body: bytes
    headers: Mapping[str, str]


class ProviderEmulator(Protocol):
    """What the server needs of each provider module."""

    name: ClassVar[str]

    def handles(self, path: str) -> bool:
        """True when ``path`` is this provider's send endpoint."""
        ...

    def accept(self, request: Incoming, now: datetime) -> tuple[Answer, list[SentCopy]]:
        """The provider's answer to a send request and the copies it accepted (none when it
        refused the request)."""
        ...

    def throttled(self, retry_after: int) -> Answer:
        """The provider's answer when the rate limit is reached."""
        ...

    def event(self, copy: SentCopy, index: int, at: datetime) -> dict[str, Any]:
        """Step ``index`` of the copy's scenario as the provider's event, happening at ``at``.
        Deterministic: the same step renders the same event, ids included, so that a
        duplicated delivery is a true duplicate."""
        ...

    def postings(self, events: Sequence[dict[str, Any]]) -> list[Posting]:
        """Events packed and signed the way the provider posts them."""
        ...

    def dsn(self, base_url: str) -> str:
        """A DSN that points the real adapter at the emulator and trusts its webhooks."""
        ...

    def adapter(self, base_url: str, **options: Any) -> Adapter:
        """The real adapter, pointed at the emulator and trusting its webhooks."""
        ...


@dataclass
class SuppressionLists:
    """A provider's own suppression lists, as the emulator keeps them: list name -> records
    in the provider's shape. ``fail_after`` makes list reads answer 500 once that many pages
    were served (to test a pull that fails half-way); set it back to None to recover."""

    lists: dict[str, list[Any]] = field(default_factory=dict)
    fail_after: int | None = None
    served: int = 0

    def __post_init__(self) -> None:
        import threading

        self._lock = threading.Lock()

    def add(self, name: str, *records: Any) -> None:
        with self._lock:
            self.lists.setdefault(name, []).extend(records)

    def records(self, name: str) -> list[Any]:
        with self._lock:
            return list(self.lists.get(name, ()))

    def page(self, name: str, offset: int, limit: int) -> list[Any] | None:
        """Records ``offset`` to ``offset + limit`` of ``name``; None when failing."""
        with self._lock:
            if self.fail_after is not None and self.served >= self.fail_after:
                return None
            self.served += 1
            return list(self.lists.get(name, ())[offset : offset + limit])


def query_int(query: Mapping[str, list[str]], name: str, default: int, most: int) -> int:
    try:
        value = int(query.get(name, [str(default)])[0])
    except ValueError:
        return default
    return max(0, min(value, most))


def stable_token(*parts: str | int, size: int = 16) -> str:
    """A URL-safe id derived from ``parts``: the same parts always give the same id."""
    digest = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode(), digest_size=size).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def iso_time(moment: datetime) -> str:
    """``2024-01-15T09:30:04.901Z``: the millisecond UTC form AWS writes."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"
