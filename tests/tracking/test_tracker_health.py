"""Provider health and orphans, on every backend: a webhook that died shows as silence while
sends go out; events nobody sent stay stored, are listed, and join their send when it comes."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from tracking_support import Store, event

from unimailtrack import DeliveryStatus, Email, EventType, RecipientResult, SendResult
from unimailtrack.tracking import Tracker


def _send(tracker: Tracker, tracking_id: str, provider: str = "mailgun") -> None:
    tracker.record_send(
        Email(sender="events@example.com", to=["ann@example.com"], subject="Hi", text="..."),
        SendResult(
            bulk_id=f"b-{tracking_id}",
            recipients=[
                RecipientResult(
                    recipient="ann@example.com",
                    tracking_id=tracking_id,
                    status=DeliveryStatus.ACCEPTED,
                    provider=provider,
                    message_id=f"m-{tracking_id}",
                )
            ],
        ),
    )


def test_sends_without_events_for_the_silence_window_are_unhealthy(store: Store) -> None:
    tracker = store.open()
    _send(tracker, "t1")
    store.clock.advance(timedelta(minutes=5))
    report = tracker.provider_health(["mailgun", "sendgrid"])
    assert report.healthy  # too young to expect an event: the grace period
    store.clock.advance(timedelta(hours=1))
    report = tracker.provider_health(["mailgun", "sendgrid"])
    mailgun, sendgrid = report.providers
    assert (mailgun.provider, mailgun.healthy, mailgun.sends) == ("mailgun", False, 1)
    assert mailgun.last_event_at is None
    assert "no event came back (never)" in (mailgun.reason or "")
    assert (sendgrid.healthy, sendgrid.sends) == (True, 0)  # quiet, nothing sent through it
    assert not report.healthy
    assert report.as_dict()["providers"]["mailgun"]["healthy"] is False


def test_an_event_within_the_window_keeps_a_provider_healthy(store: Store) -> None:
    tracker = store.open()
    _send(tracker, "t1")
    store.clock.advance(timedelta(hours=1))
    tracker.ingest([event(EventType.DELIVERED, "t1", provider="mailgun")])
    arrived = store.clock.now
    store.clock.advance(timedelta(hours=2))
    _send(tracker, "t2")
    store.clock.advance(timedelta(hours=1))
    (mailgun,) = tracker.provider_health().providers
    assert mailgun.healthy and mailgun.last_event_at == arrived
    # Over six hours after the last event, with a send since: the webhook went silent.
    store.clock.advance(timedelta(hours=3, minutes=1))
    (mailgun,) = tracker.provider_health().providers
    assert not mailgun.healthy
    assert mailgun.last_event_at == arrived


def test_old_sends_outside_the_window_do_not_make_a_quiet_provider_unhealthy(
    store: Store,
) -> None:
    tracker = store.open()
    _send(tracker, "t1")
    store.clock.advance(timedelta(days=2))
    assert tracker.provider_health(["mailgun"]).healthy


def test_async_twin_answers_alike(store: Store) -> None:
    tracker = store.open()
    _send(tracker, "t1")
    store.clock.advance(timedelta(hours=1))
    report = asyncio.run(tracker.aprovider_health())
    assert [p.healthy for p in report.providers] == [False]
    assert asyncio.run(tracker.aorphans()) == []


def test_orphans_are_listed_after_a_while_and_join_their_send(store: Store) -> None:
    tracker = store.open()
    early = event(
        EventType.DELIVERED,
        None,
        provider="mailgun",
        message_id="m-t1",
        recipient="ann@example.com",
    )
    account_wide = event(
        EventType.BOUNCED,
        None,
        provider="mailgun",
        message_id="sent-elsewhere",
        recipient="zed@example.org",
        bounce="hard",
    )
    assert tracker.ingest([early, account_wide]).new == 2
    assert tracker.orphans() == []  # not yet a while
    store.clock.advance(timedelta(hours=2))
    assert [e.event_id for e in tracker.orphans()] == sorted(
        [early.event_id, account_wide.event_id]
    )
    assert tracker.provider_health().orphans == 2
    assert tracker.orphans(provider="sendgrid") == []
    _send(tracker, "t1")  # the early event's send, recorded late: it joins
    assert [e.event_id for e in tracker.orphans()] == [account_wide.event_id]
    assert tracker.state("t1").status is DeliveryStatus.DELIVERED
    assert tracker.provider_health().orphans == 1


def test_dead_letters_are_counted(store: Store) -> None:
    tracker = store.open()
    tracker.record_dead_letter("sendgrid", b"{not json", {}, "not JSON")
    assert tracker.provider_health().dead_letters == 1
