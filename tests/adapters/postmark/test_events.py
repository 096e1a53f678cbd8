"""Postmark's vocabulary: every record type and every documented bounce type."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from unimailtrack import BounceKind, EventType, PayloadError
from unimailtrack.adapters.postmark.events import BOUNCE_TYPES, parse_events

META = {"unimailtrack_id": "01a2b3c4d5e6f708192a3b4c5d6e7f80", "order": "17"}


def one(payload: dict[str, Any]) -> Any:
    events = parse_events(json.dumps(payload).encode())
    assert len(events) == 1
    return events[0]


def bounce(kind: str, **changes: Any) -> dict[str, Any]:
    payload = {
        "RecordType": "Bounce",
        "ID": 4323372036854775807,
        "Type": kind,
        "TypeCode": 1,
        "Name": kind,
        "Tag": "Invitation",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "ServerID": 23,
        "MessageStream": "outbound",
        "Description": "The server was unable to deliver your message (ex: unknown user).",
        "Details": "Test bounce details",
        "Email": "john@example.com",
        "From": "sender@example.com",
        "BouncedAt": "2019-11-05T16:33:54.9070259Z",
        "DumpAvailable": True,
        "Inactive": False,
        "CanActivate": True,
        "Subject": "Test subject",
        "Metadata": META,
    }
    payload.update(changes)
    return payload


def test_a_delivery() -> None:
    event = one(
        {
            "RecordType": "Delivery",
            "ServerID": 23,
            "MessageStream": "outbound",
            "MessageID": "883953f4",
            "Recipient": "john@example.com",
            "Tag": "welcome-email",
            "DeliveredAt": "2019-11-05T16:33:54.9070259Z",
            "Details": "Test delivery webhook details",
            "Metadata": META,
        }
    )
    assert event.type is EventType.DELIVERED
    assert event.recipient == "john@example.com"
    assert event.message_id == "883953f4"
    assert event.tracking_id == META["unimailtrack_id"]
    assert event.metadata == {"order": "17"}
    assert event.tags == ["welcome-email"]
    assert event.reason == "Test delivery webhook details"
    assert event.timestamp == datetime(2019, 11, 5, 16, 33, 54, 907025, tzinfo=UTC)


@pytest.mark.parametrize(
    ("kind", "expected", "severity"),
    [
        ("HardBounce", EventType.BOUNCED, BounceKind.HARD),
        ("Transient", EventType.DEFERRED, BounceKind.SOFT),
        ("Unsubscribe", EventType.UNSUBSCRIBED, None),
        ("Subscribe", EventType.RESUBSCRIBED, None),
        ("AutoResponder", EventType.DELIVERED, None),
        ("AddressChange", EventType.BOUNCED, BounceKind.UNDETERMINED),
        ("DnsError", EventType.DEFERRED, BounceKind.SOFT),
        ("SpamNotification", EventType.BOUNCED, BounceKind.BLOCK),
        ("OpenRelayTest", EventType.UNKNOWN, None),
        ("Unknown", EventType.BOUNCED, BounceKind.UNDETERMINED),
        ("SoftBounce", EventType.BOUNCED, BounceKind.SOFT),
        ("VirusNotification", EventType.BOUNCED, BounceKind.BLOCK),
        ("ChallengeVerification", EventType.DEFERRED, None),
        ("BadEmailAddress", EventType.BOUNCED, BounceKind.HARD),
        ("SpamComplaint", EventType.COMPLAINED, None),
        ("ManuallyDeactivated", EventType.DROPPED, None),
        ("Unconfirmed", EventType.DROPPED, None),
        ("Blocked", EventType.BOUNCED, BounceKind.BLOCK),
        ("SMTPApiError", EventType.FAILED, None),
        ("InboundError", EventType.UNKNOWN, None),
        ("DMARCPolicy", EventType.BOUNCED, BounceKind.BLOCK),
        ("TemplateRenderingFailed", EventType.FAILED, None),
    ],
)
def test_every_bounce_type_maps_to_its_type_and_severity(
    kind: str, expected: EventType, severity: BounceKind | None
) -> None:
    event = one(bounce(kind))
    assert event.type is expected
    assert event.bounce is severity
    assert event.provider_event == f"Bounce:{kind}"
    assert event.reason


def test_the_table_covers_every_type_tested() -> None:
    assert len(BOUNCE_TYPES) == 22


def test_details_are_the_reason_and_the_description_the_fallback() -> None:
    assert one(bounce("HardBounce", Details="smtp;550 5.1.1 user unknown")).smtp_status == "5.1.1"
    event = one(bounce("HardBounce", Details=""))
    assert event.reason.startswith("The server was unable")


def test_inactive_makes_a_soft_or_unclassified_bounce_hard_but_not_a_block() -> None:
    assert one(bounce("SoftBounce", Inactive=True)).bounce is BounceKind.HARD
    assert one(bounce("Unknown", Inactive=True)).bounce is BounceKind.HARD
    assert one(bounce("Blocked", Inactive=True)).bounce is BounceKind.BLOCK
    assert one(bounce("SoftBounce", Inactive=False)).bounce is BounceKind.SOFT


def test_an_address_error_status_is_hard_whatever_the_type() -> None:
    assert one(bounce("SoftBounce", Details="550 5.1.1 no mailbox")).bounce is BounceKind.HARD


def test_a_spam_complaint_record() -> None:
    event = one(bounce("SpamComplaint", RecordType="SpamComplaint", TypeCode=512))
    assert event.type is EventType.COMPLAINED


def test_an_open_and_a_click() -> None:
    common = {
        "MessageID": "m1",
        "Recipient": "john@example.com",
        "Metadata": META,
        "ReceivedAt": "2019-11-05T16:33:54.9070259Z",
        "UserAgent": "Mozilla/5.0 (Mac)",
    }
    opened = one({"RecordType": "Open", "FirstOpen": True, "Platform": "WebMail", **common})
    assert opened.type is EventType.OPENED and opened.user_agent == "Mozilla/5.0 (Mac)"
    assert opened.machine is None
    clicked = one(
        {
            "RecordType": "Click",
            "ClickLocation": "HTML",
            "OriginalLink": "https://example.com/rsvp",
            **common,
        }
    )
    assert clicked.type is EventType.CLICKED and clicked.url == "https://example.com/rsvp"
    assert opened.event_id != clicked.event_id


def test_a_subscription_change_both_ways() -> None:
    change = {
        "RecordType": "SubscriptionChange",
        "MessageID": "m1",
        "ServerID": 23,
        "MessageStream": "outbound",
        "ChangedAt": "2020-02-01T10:53:34.416071Z",
        "Recipient": "bounced-address@wildbit.com",
        "Origin": "Recipient",
        "SuppressionReason": "ManualSuppression",
        "Metadata": META,
    }
    off = one({**change, "SuppressSending": True})
    assert off.type is EventType.UNSUBSCRIBED and "ManualSuppression" in off.reason
    on = one({**change, "SuppressSending": False, "SuppressionReason": None})
    assert on.type is EventType.RESUBSCRIBED


def test_the_bounce_id_makes_the_event_id() -> None:
    assert one(bounce("HardBounce")).event_id == one(bounce("HardBounce", Details="x")).event_id
    assert one(bounce("HardBounce")).event_id != one(bounce("HardBounce", ID=1)).event_id


@pytest.mark.parametrize(
    "payload",
    [
        {"RecordType": "Teleport", "Recipient": "a@b.c", "ReceivedAt": "2020-01-01T00:00:00Z"},
        {
            "RecordType": "Bounce",
            "Type": "Novel",
            "Email": "a@b.c",
            "BouncedAt": "2020-01-01T00:00:00Z",
        },
        {"Recipient": "a@b.c"},
        {"RecordType": "Delivery", "Recipient": "a@b.c", "DeliveredAt": "soon"},
        {"RecordType": "Delivery", "DeliveredAt": "2020-01-01T00:00:00Z"},
    ],
)
def test_what_cannot_be_mapped_is_unknown_and_kept(payload: dict[str, Any]) -> None:
    event = one(payload)
    assert event.type is EventType.UNKNOWN
    assert event.reason and event.raw


@pytest.mark.parametrize("raw", [b"", b"[]", b"x", b"[{}]"])
def test_only_an_unreadable_body_raises(raw: bytes) -> None:
    with pytest.raises(PayloadError):
        parse_events(raw)
