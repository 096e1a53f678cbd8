"""Resend's vocabulary: every documented event type, bounces, clicks, account-wide events."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

import unimailtrack
from unimailtrack import BounceKind, EventType, PayloadError
from unimailtrack.adapters.resend.events import EVENTS, parse_events

CREATED = "2024-11-22T23:41:12.126Z"
AT = datetime(2024, 11, 22, 23, 41, 12, 126000, tzinfo=UTC)


def body(kind: str, **data: Any) -> bytes:
    payload = {
        "broadcast_id": None,
        "created_at": "2024-11-22T23:41:11.894719+00:00",
        "email_id": "56761188-7520-42d8-8898-ff6fc54ce618",
        "from": "Acme <onboarding@resend.dev>",
        "to": ["delivered@resend.dev"],
        "subject": "Sending this example",
        "tags": {
            "unimailtrack_id": "01a2b3c4d5e6f708192a3b4c5d6e7f80",
            "category": "confirm_email",
        },
    }
    payload.update(data)
    return json.dumps({"type": kind, "created_at": CREATED, "data": payload}).encode()


def one(raw: bytes) -> Any:
    events = parse_events(raw)
    assert len(events) == 1
    return events[0]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("email.sent", EventType.ACCEPTED),
        ("email.scheduled", EventType.ACCEPTED),
        ("email.delivered", EventType.DELIVERED),
        ("email.delivery_delayed", EventType.DEFERRED),
        ("email.complained", EventType.COMPLAINED),
        ("email.opened", EventType.OPENED),
        ("email.failed", EventType.FAILED),
        ("email.suppressed", EventType.DROPPED),
    ],
)
def test_every_email_event_maps(kind: str, expected: EventType) -> None:
    event = one(body(kind))
    assert event.type is expected
    assert event.provider == "resend"
    assert event.provider_event == kind
    assert event.recipient == "delivered@resend.dev"
    assert event.message_id == "56761188-7520-42d8-8898-ff6fc54ce618"
    assert event.tracking_id == "01a2b3c4d5e6f708192a3b4c5d6e7f80"
    assert event.metadata == {"category": "confirm_email"}
    assert event.timestamp == AT
    assert event.raw["type"] == kind


@pytest.mark.parametrize(
    ("bounce", "kind", "status"),
    [
        (
            {
                "type": "Permanent",
                "subType": "General",
                "message": "The recipient's email address bounced. 550 5.1.1 user unknown",
            },
            BounceKind.HARD,
            "5.1.1",
        ),
        (
            {"type": "Permanent", "subType": "Suppressed", "message": "on the suppression list"},
            BounceKind.HARD,
            None,
        ),
        (
            {"type": "Transient", "subType": "MailboxFull", "message": "452 4.2.2 mailbox full"},
            BounceKind.SOFT,
            "4.2.2",
        ),
        (
            {"type": "Transient", "subType": "General", "message": "550 5.1.1 no such user"},
            BounceKind.HARD,
            "5.1.1",
        ),
        (
            {"type": "Transient", "subType": "ContentRejected", "message": "554 5.7.1 spam"},
            BounceKind.BLOCK,
            "5.7.1",
        ),
        (
            {"type": "Permanent", "subType": "AttachmentRejected", "message": "refused"},
            BounceKind.BLOCK,
            None,
        ),
        (
            {"type": "Undetermined", "subType": "Undetermined", "message": "?"},
            BounceKind.UNDETERMINED,
            None,
        ),
        ({"type": 7}, BounceKind.UNDETERMINED, None),
    ],
)
def test_a_bounce_keeps_its_kind_reason_and_status(
    bounce: dict[str, Any], kind: BounceKind, status: str | None
) -> None:
    event = one(body("email.bounced", bounce=bounce))
    assert event.type is EventType.BOUNCED
    assert event.bounce is kind
    assert event.smtp_status == status
    assert event.reason


def test_a_click_has_its_link_and_user_agent() -> None:
    click = {
        "ipAddress": "122.115.53.11",
        "link": "https://resend.com",
        "timestamp": "2024-11-24T05:00:57.163Z",
        "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7)",
    }
    event = one(body("email.clicked", click=click))
    assert event.type is EventType.CLICKED
    assert event.url == "https://resend.com"
    assert event.user_agent.startswith("Mozilla/5.0")


def test_failed_and_suppressed_carry_resend_reasons() -> None:
    assert one(body("email.failed", failed={"reason": "reached_daily_quota"})).reason == (
        "reached_daily_quota"
    )
    event = one(body("email.suppressed", suppressed={"type": "OnSuppressionList", "message": "x"}))
    assert event.reason == "x"
    assert event.bounce is None


def test_tags_come_back_as_tags_category_and_metadata() -> None:
    tags = {
        "unimailtrack_id": "t1",
        "unimailtrack_category": "receipt",
        "unimailtrack_tag_vip": "1",
        "order_ref": "ORD_17",
    }
    event = one(body("email.delivered", tags=tags))
    assert event.tracking_id == "t1"
    assert event.tags == ["receipt", "vip"]
    assert event.metadata == {"order_ref": "ORD_17"}
    listed = one(body("email.delivered", tags=[{"name": "unimailtrack_id", "value": "t2"}]))
    assert listed.tracking_id == "t2"


def test_mail_this_application_never_sent_is_kept_without_a_tracking_id() -> None:
    event = one(body("email.delivered", tags=None))
    assert event.type is EventType.DELIVERED
    assert event.tracking_id is None


def test_several_recipients_become_one_event_each_with_distinct_ids() -> None:
    events = parse_events(body("email.delivered", to=["a@example.com", "b@example.com"]))
    assert [e.recipient for e in events] == ["a@example.com", "b@example.com"]
    assert len({e.event_id for e in events}) == 2


@pytest.mark.parametrize(
    "kind",
    [
        "contact.created",
        "contact.updated",
        "contact.deleted",
        "domain.created",
        "domain.updated",
        "domain.deleted",
        "email.received",
        "inbox.thread.created",
    ],
)
def test_contact_domain_and_inbound_events_are_unknown_without_a_recipient(kind: str) -> None:
    event = one(body(kind))
    assert event.type is EventType.UNKNOWN
    assert event.recipient == ""
    assert event.message_id is None
    assert event.reason


@pytest.mark.parametrize("kind", ["suppression.added", "suppression.removed"])
def test_suppression_events_are_kept_for_their_address(kind: str) -> None:
    raw = json.dumps(
        {
            "type": kind,
            "created_at": CREATED,
            "data": {
                "id": "s1",
                "email": "gone@example.com",
                "origin": "bounce",
                "source_id": None,
                "created_at": CREATED,
            },
        }
    ).encode()
    event = one(raw)
    assert event.type is EventType.UNKNOWN
    assert event.recipient == "gone@example.com"
    assert "bounce" in (event.reason or "")


def test_an_email_type_added_later_is_unknown_for_each_recipient() -> None:
    events = parse_events(body("email.teleported", to=["a@example.com", "b@example.com"]))
    assert [(e.type, e.recipient) for e in events] == [
        (EventType.UNKNOWN, "a@example.com"),
        (EventType.UNKNOWN, "b@example.com"),
    ]
    assert all("not mapped" in (e.reason or "") for e in events)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"created_at": "2024-01-01T00:00:00Z", "data": {}}',
        b'{"type": "email.delivered", "created_at": "yesterday", "data": {"to": ["a@b.c"]}}',
        b'{"type": "email.delivered", "created_at": "2024-01-01T00:00:00Z", "data": []}',
        b'{"type": "email.delivered", "created_at": "2024-01-01T00:00:00Z", "data": {"to": 5}}',
    ],
)
def test_an_event_that_cannot_be_mapped_is_kept_as_unknown(raw: bytes) -> None:
    event = one(raw)
    assert event.type is EventType.UNKNOWN
    assert event.reason
    assert event.raw


@pytest.mark.parametrize("raw", [b"", b"[]", b"nope", b'"x"', b"[" * 3000 + b"]" * 3000])
def test_only_an_unreadable_body_raises(raw: bytes) -> None:
    with pytest.raises(PayloadError):
        parse_events(raw)


def test_ids_are_the_same_for_the_same_event() -> None:
    raw = body("email.opened")
    assert one(raw).event_id == one(raw).event_id
    assert one(raw).event_id != one(body("email.delivered")).event_id


def test_the_module_helper_reads_resend() -> None:
    assert unimailtrack.parse_webhook("resend", body("email.sent"))[0].type is EventType.ACCEPTED


def test_the_vocabulary_names_every_documented_email_event() -> None:
    documented = {
        "email.sent",
        "email.scheduled",
        "email.delivered",
        "email.delivery_delayed",
        "email.bounced",
        "email.complained",
        "email.opened",
        "email.clicked",
        "email.received",
        "email.failed",
        "email.suppressed",
        "suppression.added",
        "suppression.removed",
    }
    assert documented <= set(EVENTS)
