"""What happens to each copy the emulator accepts, chosen by the recipient's address.

A scenario is a short story told in neutral terms (queued, deferred, delivered, bounced ...);
each provider module of the emulator tells it in that provider's own words. The local part of
the address picks the story, up to an optional ``+label``, the way Amazon's mailbox simulator
does: ``bounce@example.com`` and ``bounce+cyd@example.com`` both bounce, and several different
addresses can share one story. Any address whose local part names no scenario is delivered.

The names are the memory adapter's, so a test suite can move between the two without changing
its addresses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from unimailtrack.model import BounceKind, DeliveryStatus

__all__ = [
    "CLICKED_URL",
    "DEFAULT_SCENARIO",
    "PERSON_USER_AGENT",
    "PROXY_USER_AGENT",
    "SCENARIOS",
    "Scenario",
    "SmtpReply",
    "Step",
    "StepKind",
    "scenario_for",
]


class StepKind(StrEnum):
    """Something that happens to a copy, before any provider has named it."""

    QUEUED = "queued"
    DEFERRED = "deferred"
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    DROPPED = "dropped"
    COMPLAINED = "complained"
    OPENED = "opened"
    CLICKED = "clicked"
    UNSUBSCRIBED = "unsubscribed"


CLICKED_URL: Final = "https://example.com/rsvp"
"""The link every scenario's click follows."""

PERSON_USER_AGENT: Final = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"
)
PROXY_USER_AGENT: Final = "Mozilla/5.0"
"""Apple Mail Privacy Protection fetches images through a proxy with exactly this user agent."""


@dataclass(frozen=True, slots=True)
class SmtpReply:
    """What the recipient's server answered: ``550 5.1.1 The email account ...``."""

    code: int
    status: str
    """The RFC 3463 enhanced status code, e.g. ``5.1.1``."""
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.status} {self.text}"


@dataclass(frozen=True, slots=True)
class Step:
    """One event of a scenario. ``attempt`` counts delivery attempts on deferrals and the
    delivery that follows them; ``machine`` marks an open made by a privacy proxy."""

    kind: StepKind
    smtp: SmtpReply | None = None
    bounce: BounceKind | None = None
    attempt: int | None = None
    machine: bool = False

    @property
    def user_agent(self) -> str:
        """The browser or proxy that fetched the tracking pixel or followed the link."""
        return PROXY_USER_AGENT if self.machine else PERSON_USER_AGENT


@dataclass(frozen=True, slots=True)
class Scenario:
    """A named story and the badge it ends in (docs/lifecycle.md), when the send turned open
    and click tracking on."""

    name: str
    summary: str
    steps: tuple[Step, ...]
    outcome: DeliveryStatus

    def played(self, *, opens: bool, clicks: bool) -> tuple[Step, ...]:
        """The steps a provider reports for a copy sent with this open and click tracking:
        no provider can see an open or a click it was not asked to track."""
        return tuple(
            step
            for step in self.steps
            if (step.kind is not StepKind.OPENED or opens)
            and (step.kind is not StepKind.CLICKED or clicks)
        )


_QUEUED: Final = Step(StepKind.QUEUED)
_DELIVERED: Final = Step(StepKind.DELIVERED, SmtpReply(250, "2.0.0", "OK"))
_MAILBOX_FULL: Final = SmtpReply(452, "4.2.2", "The recipient's mailbox is full; try again later")
_GREYLISTED: Final = SmtpReply(451, "4.7.1", "Greylisted; please try again later")


def _scenario(name: str, summary: str, outcome: DeliveryStatus, *steps: Step) -> Scenario:
    return Scenario(name=name, summary=summary, steps=steps, outcome=outcome)


DEFAULT_SCENARIO: Final = _scenario(
    "delivered",
    "queued, then delivered",
    DeliveryStatus.DELIVERED,
    _QUEUED,
    _DELIVERED,
)

SCENARIOS: Final[Mapping[str, Scenario]] = MappingProxyType(
    {
        scenario.name: scenario
        for scenario in (
            DEFAULT_SCENARIO,
            _scenario(
                "bounce",
                "the address does not exist: a hard bounce, which suppresses it",
                DeliveryStatus.BOUNCED,
                _QUEUED,
                Step(
                    StepKind.BOUNCED,
                    SmtpReply(
                        550, "5.1.1", "The email account that you tried to reach does not exist"
                    ),
                    BounceKind.HARD,
                ),
            ),
            _scenario(
                "soft-bounce",
                "the mailbox is full: deferred once, then given up as a soft bounce",
                DeliveryStatus.BOUNCED,
                _QUEUED,
                Step(StepKind.DEFERRED, _MAILBOX_FULL, attempt=1),
                Step(
                    StepKind.BOUNCED,
                    SmtpReply(552, "5.2.2", "The recipient's mailbox is full"),
                    BounceKind.SOFT,
                ),
            ),
            _scenario(
                "blocked",
                "the receiving server refuses the sender's reputation: a block, not the address",
                DeliveryStatus.BOUNCED,
                _QUEUED,
                Step(
                    StepKind.BOUNCED,
                    SmtpReply(554, "5.7.1", "Service unavailable; client host blocked by policy"),
                    BounceKind.BLOCK,
                ),
            ),
            _scenario(
                "deferred",
                "greylisted and still being retried when the story ends",
                DeliveryStatus.DEFERRED,
                _QUEUED,
                Step(StepKind.DEFERRED, _GREYLISTED, attempt=1),
            ),
            _scenario(
                "deferred-then-delivered",
                "greylisted twice, delivered on the third attempt",
                DeliveryStatus.DELIVERED,
                _QUEUED,
                Step(StepKind.DEFERRED, _GREYLISTED, attempt=1),
                Step(StepKind.DEFERRED, _GREYLISTED, attempt=2),
                Step(StepKind.DELIVERED, SmtpReply(250, "2.0.0", "OK"), attempt=3),
            ),
            _scenario(
                "dropped",
                "on the provider's suppression list: never sent",
                DeliveryStatus.DROPPED,
                _QUEUED,
                Step(StepKind.DROPPED, bounce=BounceKind.HARD),
            ),
            _scenario(
                "complaint",
                "delivered, then marked as spam, which suppresses the address",
                DeliveryStatus.COMPLAINED,
                _QUEUED,
                _DELIVERED,
                Step(StepKind.COMPLAINED),
            ),
            _scenario(
                "opens-and-clicks",
                "delivered, opened by a person, and the link clicked",
                DeliveryStatus.CLICKED,
                _QUEUED,
                _DELIVERED,
                Step(StepKind.OPENED),
                Step(StepKind.CLICKED),
            ),
            _scenario(
                "machine-open",
                "delivered and opened by a privacy proxy, not by a person",
                DeliveryStatus.OPENED,
                _QUEUED,
                _DELIVERED,
                Step(StepKind.OPENED, machine=True),
            ),
            _scenario(
                "unsubscribe",
                "delivered, then unsubscribed, which suppresses the address",
                DeliveryStatus.UNSUBSCRIBED,
                _QUEUED,
                _DELIVERED,
                Step(StepKind.UNSUBSCRIBED),
            ),
        )
    }
)
"""Every scenario by name."""


def scenario_for(address: str) -> Scenario:
    """The scenario an address plays: its local part up to any ``+label``, case-insensitive;
    the delivered scenario when that names none."""
    local = address.strip().rpartition("@")[0] or address.strip()
    name = local.partition("+")[0].lower()
    return SCENARIOS.get(name, DEFAULT_SCENARIO)
