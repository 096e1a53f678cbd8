"""Brevo's vocabulary: every transactional event, single and batched bodies."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

import unimailtrack
from unimailtrack import BounceKind, EventType, PayloadError
from unimailtrack.adapters.brevo.events import EVENTS, parse_events

CUSTOM = json.dumps({"unimailtrack_id": "01a2b3c4d5e6f708192a3b4c5d6e7f80", "order": "17"})


def event(name: str, **changes: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "event": name,
        "email": "example@domain.com",
        "id": 26224,
        "date": "2024-10-28 14:33:50",
        "ts": 1730122430,
        "message-id": "<202410281433.74261960842@smtp-relay.mailin.fr>",
        "ts_event": 1730122430,
        "subject": "Subject Line",
        "X-Mailin-custom": CUSTOM,
        "sending_ip": "185.41.28.109",
        "ts_epoch": 1730122430123,
        "template_id": 22,
        "tags": ["transac_messages"],
    }
    item.update(changes)
    return item


def one(item: dict[str, Any]) -> Any:
    events = parse_events(json.dumps(item).encode())
    assert len(events) == 1
    return events[0]


@pytest.mark.parametrize(
    ("name", "expected", "severity", "machine"),
    [
        ("request", EventType.ACCEPTED, None, None),
        ("delivered", EventType.DELIVERED, None, None),
        ("deferred", EventType.DEFERRED, BounceKind.SOFT, None),
        ("soft_bounce", EventType.BOUNCED, BounceKind.SOFT, None),
        ("hard_bounce", EventType.BOUNCED, BounceKind.HARD, None),
        ("invalid_email", EventType.FAILED, None, None),
        ("blocked", EventType.DROPPED, None, None),
        ("error", EventType.FAILED, None, None),
        ("spam", EventType.COMPLAINED, None, None),
        ("complaint", EventType.COMPLAINED, None, None),
        ("opened", EventType.OPENED, None, False),
        ("unique_opened", EventType.OPENED, None, False),
        ("proxy_open", EventType.OPENED, None, True),
        ("unique_proxy_open", EventType.OPENED, None, True),
        ("click", EventType.CLICKED, None, None),
        ("unsubscribed", EventType.UNSUBSCRIBED, None, None),
    ],
)
def test_every_event_maps(
    name: str, expected: EventType, severity: BounceKind | None, machine: bool | None
) -> None:
    found = one(event(name))
    assert found.type is expected
    assert found.bounce is severity
    assert found.machine is machine
    assert found.provider_event == name
    assert found.recipient == "example@domain.com"
    assert found.message_id == "<202410281433.74261960842@smtp-relay.mailin.fr>"
    assert found.tracking_id == "01a2b3c4d5e6f708192a3b4c5d6e7f80"
    assert found.metadata == {"order": "17"}
    assert found.tags == ["transac_messages"]
    assert found.timestamp == datetime(2024, 10, 28, 13, 33, 50, tzinfo=UTC)


def test_the_vocabulary_is_complete() -> None:
    assert len(EVENTS) == 16


def test_a_bounce_reason_gives_the_status_and_an_address_error_is_hard() -> None:
    found = one(event("soft_bounce", reason="550 5.1.1 mailbox does not exist"))
    assert found.reason == "550 5.1.1 mailbox does not exist"
    assert found.smtp_status == "5.1.1"
    assert found.bounce is BounceKind.HARD


def test_a_click_carries_its_link() -> None:
    found = one(event("click", link="https://example.com/rsvp", user_agent="Mozilla/5.0 (X)"))
    assert found.url == "https://example.com/rsvp"
    assert found.user_agent == "Mozilla/5.0 (X)"


def test_times_fall_back_from_ts_event_to_ts_epoch() -> None:
    found = one(event("delivered", ts_event=None, ts_epoch=1730122430500))
    assert found.timestamp == datetime(2024, 10, 28, 13, 33, 50, 500000, tzinfo=UTC)


def test_a_custom_header_that_is_not_ours_is_kept_as_metadata() -> None:
    found = one(event("delivered", **{"X-Mailin-custom": "campaign=spring"}))
    assert found.tracking_id is None
    assert found.metadata == {"X-Mailin-custom": "campaign=spring"}


def test_a_batched_body_is_read_in_order_and_a_bad_item_does_not_spoil_it() -> None:
    body = json.dumps([event("request"), "junk", event("delivered"), {"event": "x"}]).encode()
    found = parse_events(body)
    assert [e.type for e in found] == [
        EventType.ACCEPTED,
        EventType.UNKNOWN,
        EventType.DELIVERED,
        EventType.UNKNOWN,
    ]
    assert len({e.event_id for e in found}) == 4
    assert found[1].reason and found[3].reason


def test_an_unknown_event_is_kept() -> None:
    found = one(event("teleported"))
    assert found.type is EventType.UNKNOWN
    assert "not mapped" in found.reason


def test_an_event_without_recipient_is_unknown() -> None:
    found = one(event("delivered", email=None))
    assert found.type is EventType.UNKNOWN and found.recipient == ""


def test_the_same_event_has_the_same_id() -> None:
    assert one(event("opened")).event_id == one(event("opened")).event_id
    assert one(event("opened")).event_id != one(event("proxy_open")).event_id


@pytest.mark.parametrize("raw", [b"", b"1", b'"x"', b"nope"])
def test_only_an_unreadable_body_raises(raw: bytes) -> None:
    with pytest.raises(PayloadError):
        parse_events(raw)


def test_the_module_helper_reads_brevo() -> None:
    body = json.dumps(event("hard_bounce")).encode()
    assert unimailtrack.parse_webhook("brevo", body)[0].bounce is BounceKind.HARD
