from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

import unimailtrack
from unimailtrack import (
    DeliveryStatus,
    Email,
    EventType,
    Mailer,
    PayloadError,
    ProviderUnavailable,
    SignatureError,
    fold,
)
from unimailtrack._http import RetryPolicy
from unimailtrack.adapters import MemoryAdapter
from unimailtrack.adapters.memory import SCENARIOS

EMAIL = Email(
    sender="Events <events@example.com>",
    to=["ann@example.com", "bob@example.org"],
    subject="Invite",
    text="Come",
    tags=["invite"],
    metadata={"event": "42"},
)

EXPECTED = {
    "delivered": DeliveryStatus.DELIVERED,
    "bounce": DeliveryStatus.BOUNCED,
    "soft-bounce": DeliveryStatus.BOUNCED,
    "blocked": DeliveryStatus.BOUNCED,
    "deferred": DeliveryStatus.DEFERRED,
    "deferred-then-delivered": DeliveryStatus.DELIVERED,
    "dropped": DeliveryStatus.DROPPED,
    "complaint": DeliveryStatus.COMPLAINED,
    "opens-and-clicks": DeliveryStatus.CLICKED,
    "machine-open": DeliveryStatus.OPENED,
    "unsubscribe": DeliveryStatus.UNSUBSCRIBED,
}


def test_send_keeps_an_outbox_with_one_copy_per_recipient() -> None:
    memory = MemoryAdapter()
    result = memory.send(EMAIL)
    assert [r.status for r in result.recipients] == [DeliveryStatus.ACCEPTED] * 2
    assert [m.recipient for m in memory.outbox] == ["ann@example.com", "bob@example.org"]
    assert {m.tracking_id for m in memory.outbox} == {r.tracking_id for r in result.recipients}
    assert all(r.message_id and r.provider == "memory" for r in result.recipients)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_scenario_round_trips_through_a_signed_webhook(scenario: str) -> None:
    memory = MemoryAdapter()
    tid = memory.send(EMAIL).recipients[0].tracking_id
    body, headers = memory.webhook(memory.scenario(tid, scenario))
    events = memory.unwrap(body, headers)
    assert {e.tracking_id for e in events} == {tid}
    assert all(e.tags == ["invite"] and e.metadata == {"event": "42"} for e in events)
    state = fold(events, now=events[-1].timestamp)
    assert state.status is EXPECTED[scenario]
    assert unimailtrack.parse_webhook("memory", body) == events


def test_bounce_carries_reason_and_kind() -> None:
    memory = MemoryAdapter()
    tid = memory.send(EMAIL).recipients[1].tracking_id
    body, headers = memory.webhook(memory.scenario(tid, "bounce"))
    bounce = memory.unwrap(body, headers)[-1]
    assert bounce.type is EventType.BOUNCED
    assert bounce.reason is not None and bounce.reason.startswith("550 5.1.1")
    assert bounce.bounce is not None and bounce.bounce.value == "hard"


def test_forged_stale_and_unsigned_webhooks_are_refused() -> None:
    memory = MemoryAdapter()
    tid = memory.send(EMAIL).recipients[0].tracking_id
    body, headers = memory.webhook(memory.scenario(tid, "delivered"))
    with pytest.raises(SignatureError):
        memory.verify_webhook(body + b" ", headers)
    with pytest.raises(SignatureError):
        memory.verify_webhook(body, {})
    with pytest.raises(SignatureError):
        MemoryAdapter(webhook_secret="other").verify_webhook(body, headers)
    with pytest.raises(SignatureError):
        memory.verify_webhook(body, headers, now=datetime.now(UTC) + timedelta(minutes=10))
    messages = set()
    for bad in ({}, {"X-Unimailtrack-Signature": "t=x,v1=y"}):
        with pytest.raises(SignatureError) as caught:
            memory.verify_webhook(body, bad)
        messages.add(str(caught.value))
    assert len(messages) == 1


def test_verification_can_be_turned_off_explicitly() -> None:
    MemoryAdapter(verify_webhooks=False).verify_webhook(b"{}", {})


def test_bad_bodies_raise_payload_error_and_bad_items_become_unknown() -> None:
    with pytest.raises(PayloadError):
        MemoryAdapter.parse_webhook_body(b"{not json")
    with pytest.raises(PayloadError):
        MemoryAdapter.parse_webhook_body(b"[]")
    body = json.dumps({"events": [42, {"event": "teleported", "recipient": "a@example.com"}]})
    events = MemoryAdapter.parse_webhook_body(body.encode())
    assert [e.type for e in events] == [EventType.UNKNOWN, EventType.UNKNOWN]
    assert events[1].recipient == "a@example.com"
    assert events[1].raw["event"] == "teleported"
    assert "cannot map" in (events[1].reason or "")


def test_failures_go_through_the_retry_policy() -> None:
    memory = MemoryAdapter(retry=RetryPolicy(max_retries=1, initial_delay=0.0))
    memory.fail_next(503, times=1)
    assert memory.send(EMAIL).recipients[0].status is DeliveryStatus.ACCEPTED
    memory.fail_next(503, times=2)
    with pytest.raises(ProviderUnavailable):
        memory.send(EMAIL)


def test_unknown_scenario_is_a_configuration_error() -> None:
    memory = MemoryAdapter()
    tid = memory.send(EMAIL).recipients[0].tracking_id
    with pytest.raises(unimailtrack.ConfigurationError, match="unknown scenario"):
        memory.scenario(tid, "lost-in-space")


def test_from_dsn_reads_the_secret() -> None:
    mailer = Mailer("memory://default?webhook_secret=s3cret")
    adapter = mailer.adapters["memory"]
    assert isinstance(adapter, MemoryAdapter)
    assert adapter.webhook_secret == "s3cret"
