"""End to end through the emulator: the real adapters send over HTTP, the emulator answers and
posts each provider's own signed webhooks, and every scenario ends in the badge
docs/lifecycle.md promises, through the adapters' verify and parse, and through the receiver
and the tracker. Duplicated and reordered deliveries change nothing.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from live_server import running
from unimailtrack import (
    AsyncMailer,
    BounceKind,
    DeliveryStatus,
    Email,
    EmailEvent,
    Mailer,
    MessageState,
    SendResult,
    fold,
    parse_webhook,
)
from unimailtrack.emulator import PROVIDERS, SCENARIOS, Emulator
from unimailtrack.tracking import Tracker
from unimailtrack.web import create_app
from unimailtrack.webhooks import WebhookReceiver

GUESTS = (*(f"{name}@example.com" for name in SCENARIOS), "ann@example.com")

BOUNCES: Mapping[str, Mapping[str, BounceKind]] = {
    "sendgrid": {
        "bounce": BounceKind.HARD,
        # SendGrid reports a final mailbox-full as type=bounce; its 5.2.2 status makes it soft.
        "soft-bounce": BounceKind.SOFT,
        "blocked": BounceKind.BLOCK,
    },
    "mailgun": {
        "bounce": BounceKind.HARD,
        "soft-bounce": BounceKind.SOFT,
        "blocked": BounceKind.BLOCK,
    },
    "ses": {"bounce": BounceKind.HARD, "soft-bounce": BounceKind.SOFT, "blocked": BounceKind.BLOCK},
    # Resend: Permanent/General, Transient/MailboxFull, Permanent/ContentRejected.
    "resend": {
        "bounce": BounceKind.HARD,
        "soft-bounce": BounceKind.SOFT,
        "blocked": BounceKind.BLOCK,
    },
    # Postmark: HardBounce, SoftBounce, Blocked.
    "postmark": {
        "bounce": BounceKind.HARD,
        "soft-bounce": BounceKind.SOFT,
        "blocked": BounceKind.BLOCK,
    },
    # Brevo: hard_bounce, soft_bounce, and a hard_bounce whose 5.7.1 status makes it a block.
    "brevo": {
        "bounce": BounceKind.HARD,
        "soft-bounce": BounceKind.SOFT,
        "blocked": BounceKind.BLOCK,
    },
}

DIFFERENT: Mapping[str, Mapping[str, DeliveryStatus]] = {
    # Resend reports an unsubscribe as a change to the contact, which concerns no send.
    "resend": {"unsubscribe": DeliveryStatus.DELIVERED},
    # Postmark refuses an address on its inactive list when it is sent to (error 406).
    "postmark": {"dropped": DeliveryStatus.SUPPRESSED},
}
"""Where a provider tells a scenario otherwise, the badge it ends in."""

NO_MACHINE_SIGNAL = frozenset({"ses", "resend", "postmark"})
"""Providers whose open events never say whether a machine made them."""

MESSY = {"duplicate": 1.0, "reorder": True, "seed": 20260321, "sendgrid_batch_size": 2}
"""Every event posted twice, out of order, SendGrid's in batches of two."""


def invite() -> Email:
    return Email(
        sender="Events <events@example.com>",
        to=list(GUESTS),
        subject="You're invited: Spring Gala",
        text="Join us on 21 March.",
        category="rsvp_invite",
        metadata={"event_id": "gala-2026"},
        track_opens=True,
        track_clicks=True,
    )


def expected(address: str, provider: str) -> DeliveryStatus:
    name = address.partition("@")[0]
    if name in DIFFERENT.get(provider, {}):
        return DIFFERENT[provider][name]
    return SCENARIOS[name].outcome if name in SCENARIOS else DeliveryStatus.DELIVERED


def sent_status(address: str, provider: str) -> DeliveryStatus:
    """What the send reports for ``address``: accepted, unless the provider refused it."""
    if expected(address, provider) is DeliveryStatus.SUPPRESSED:
        return DeliveryStatus.SUPPRESSED
    return DeliveryStatus.ACCEPTED


def states_through_adapter(emu: Emulator, provider: str) -> dict[str, MessageState]:
    """Each tracking id's fold of every webhook the emulator made, verified and parsed by the
    real adapter."""
    adapter = emu.adapter(provider)
    events: dict[str, list[EmailEvent]] = defaultdict(list)
    try:
        for delivery in emu.deliveries:
            for event in adapter.unwrap(delivery.body, delivery.headers):
                events[event.tracking_id or ""].append(event)
    finally:
        adapter.close()
    return {tracking_id: fold(found) for tracking_id, found in events.items()}


def send(emu: Emulator, provider: str) -> SendResult:
    with Mailer(emu.dsn(provider)) as mailer:
        result = mailer.send(invite())
    emu.drain()
    return result


@pytest.mark.parametrize("provider", PROVIDERS)
def test_every_scenario_ends_in_its_promised_status(provider: str) -> None:
    with Emulator() as emu:
        result = send(emu, provider)
        states = states_through_adapter(emu, provider)
    for sent in result.recipients:
        assert sent.status is sent_status(sent.recipient, provider), sent.recipient
        if sent.status is not DeliveryStatus.ACCEPTED:
            assert sent.tracking_id not in states  # never sent: nothing to report
            continue
        state = states[sent.tracking_id]
        name = sent.recipient.partition("@")[0]
        assert state.status is expected(sent.recipient, provider), sent.recipient
        assert state.bounce is BOUNCES[provider].get(name, state.bounce), sent.recipient
        assert all(e.metadata.get("event_id") == "gala-2026" for e in state.timeline)
    by_address = {
        r.recipient: states[r.tracking_id] for r in result.recipients if r.tracking_id in states
    }
    assert "550 5.1.1" in (by_address["bounce@example.com"].reason or "")
    machine = by_address["machine-open@example.com"].event
    assert machine is not None
    assert machine.machine is (None if provider in NO_MACHINE_SIGNAL else True)
    assert by_address["deferred-then-delivered@example.com"].attempts >= 2


@pytest.mark.parametrize("provider", PROVIDERS)
def test_duplicated_and_reordered_deliveries_change_nothing(provider: str) -> None:
    with Emulator() as clean:
        plain = send(clean, provider)
        plain_states = states_through_adapter(clean, provider)
    with Emulator(**MESSY) as messy:  # type: ignore[arg-type]
        shuffled = send(messy, provider)
        messy_states = states_through_adapter(messy, provider)
    assert len(messy.deliveries) > len(clean.deliveries)
    for before, after in zip(plain.recipients, shuffled.recipients, strict=True):
        if before.tracking_id not in plain_states:  # refused when sent: nothing reported
            assert after.tracking_id not in messy_states
            continue
        first, second = plain_states[before.tracking_id], messy_states[after.tracking_id]
        assert (second.status, second.reason, second.bounce) == (
            first.status,
            first.reason,
            first.bounce,
        )
        assert len(second.timeline) == len(first.timeline)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_async_mailer_runs_against_the_emulator(provider: str) -> None:
    async def go(emu: Emulator) -> SendResult:
        async with AsyncMailer(emu.dsn(provider)) as mailer:
            return await mailer.send(invite())

    with Emulator() as emu:
        result = asyncio.run(go(emu))
        emu.drain()
        states = states_through_adapter(emu, provider)
    found = {
        states[r.tracking_id].status if r.tracking_id in states else r.status
        for r in result.recipients
    }
    assert found == {expected(a, provider) for a in GUESTS}


# --------------------------------------------------------------------------- the tracker


@pytest.fixture
def tracker(tmp_path: Path) -> Iterator[Tracker]:
    with Tracker.open(f"sqlite:///{tmp_path / 'tracking.db'}") as opened:
        yield opened


def suppressed_scenarios(provider: str) -> set[str]:
    bounced_hard = {n for n, kind in BOUNCES[provider].items() if kind is BounceKind.HARD}
    told = {n for n in ("complaint", "unsubscribe") if n not in DIFFERENT.get(provider, {})}
    return bounced_hard | told


@pytest.fixture
def site(tracker: Tracker) -> Iterator[tuple[Emulator, str]]:
    """An emulator and, on another port, the webhook receiver that stores into ``tracker``,
    trusting that emulator's webhooks for every provider."""
    with Emulator(**MESSY) as emu:  # type: ignore[arg-type]
        adapters = {name: emu.adapter(name) for name in PROVIDERS}
        receiver = WebhookReceiver(adapters, tracker)
        try:
            with running(create_app(receiver, api=False)) as url:
                emu.webhooks = url + "/webhooks/{provider}"
                yield emu, url
        finally:
            for adapter in adapters.values():
                adapter.close()


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_tracker_ends_every_scenario_where_the_lifecycle_promises(
    provider: str, tracker: Tracker, site: tuple[Emulator, str]
) -> None:
    emu, _ = site
    with Mailer(emu.dsn(provider), tracker=tracker) as mailer:
        result = mailer.send(invite())
    emu.drain()
    assert {d.status for d in emu.deliveries} == {200}
    distinct = sum(len(copy.steps) for copy in emu.sent)
    posted = sum(len(parse_webhook(d.provider, d.body, d.headers)) for d in emu.deliveries)
    assert posted == 2 * distinct  # every event twice ...
    assert tracker.count_events() == distinct  # ... and stored once
    for sent in result.recipients:
        if sent.status is DeliveryStatus.SUPPRESSED:  # the provider refused it when sent
            assert expected(sent.recipient, provider) is DeliveryStatus.SUPPRESSED
            continue
        state = tracker.state(sent.tracking_id)
        assert state.status is expected(sent.recipient, provider), sent.recipient
    suppressed = {s.address.partition("@")[0] for s in tracker.suppressions().items}
    assert suppressed == suppressed_scenarios(provider)
    stats = tracker.bulk_stats(result.bulk_id)
    unsubscribed = 0 if "unsubscribe" in DIFFERENT.get(provider, {}) else 1
    refused = sum(r.status is DeliveryStatus.SUPPRESSED for r in result.recipients)
    assert (stats.sent, stats.complained, stats.unsubscribed, stats.clicked) == (
        len(GUESTS) - refused,
        1,
        unsubscribed,
        1,
    )


def test_the_suppression_list_refuses_the_next_send(
    tracker: Tracker, site: tuple[Emulator, str]
) -> None:
    emu, _ = site
    with Mailer(emu.dsn("ses"), tracker=tracker) as mailer:
        mailer.send(invite())
        emu.drain()
        again = mailer.send(invite())
    refused = {
        r.recipient.partition("@")[0]
        for r in again.recipients
        if r.status is DeliveryStatus.SUPPRESSED
    }
    assert refused == suppressed_scenarios("ses")
