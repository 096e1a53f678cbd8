from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from unimailtrack import (
    Address,
    Attachment,
    BounceKind,
    DeliveryStatus,
    Email,
    EmailEvent,
    EventType,
    InvalidAddress,
    RecipientResult,
    SendResult,
)
from unimailtrack.model import dedupe_key, make_event, new_tracking_id, suppression_key


def make(**kwargs: object) -> Email:
    base: dict[str, object] = {
        "sender": "Events <events@example.com>",
        "to": ["a@example.com"],
        "subject": "Hello",
        "text": "Hi",
    }
    base.update(kwargs)
    return Email(**base)


def test_contract_values() -> None:
    assert [e.value for e in EventType] == [
        "accepted",
        "processed",
        "deferred",
        "delivered",
        "bounced",
        "dropped",
        "rejected",
        "failed",
        "opened",
        "clicked",
        "complained",
        "unsubscribed",
        "resubscribed",
        "unknown",
    ]
    assert set(DeliveryStatus) - {DeliveryStatus(e.value) for e in EventType} == {
        DeliveryStatus.SUPPRESSED,
        DeliveryStatus.DUPLICATE,
    }
    assert [b.value for b in BounceKind] == ["hard", "soft", "block", "undetermined"]


def test_display_names_and_idn() -> None:
    email = make(
        to=["Zoë Ü <zoe@bücher.example>", '"Doe, Jane" <jane@example.com>'],
        reply_to="Support <help@example.com>",
    )
    assert email.sender == Address("events@example.com", "Events")
    assert email.to[0].name == "Zoë Ü"
    assert email.to[0].domain == "bücher.example"
    assert email.to[1] == Address("jane@example.com", "Doe, Jane")
    assert str(email.to[1]) == '"Doe, Jane" <jane@example.com>'
    assert email.reply_to is not None and email.reply_to.email == "help@example.com"


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("not-an-address", "@-sign"),
        ("a@b@example.com", "invalid characters"),
        ("Foo <>", "no address"),
        ("a@example.com, b@example.com", "invalid characters"),
        ("", "empty"),
        ("x@example.com\r\nBcc: evil@example.com", "line breaks"),
        ("user@-bad-.example", ""),
    ],
)
def test_malformed_address_raises_typed_error(address: str, problem: str) -> None:
    with pytest.raises(InvalidAddress) as caught:
        make(to=[address])
    assert caught.value.address == address
    assert problem in caught.value.problem
    assert isinstance(caught.value, ValueError)
    assert repr(address) in str(caught.value)


def test_sender_is_validated_too() -> None:
    with pytest.raises(InvalidAddress):
        make(sender="nobody")


def test_email_needs_a_recipient_and_a_body() -> None:
    with pytest.raises(ValidationError, match="at least one recipient"):
        make(to=[])
    with pytest.raises(ValidationError, match="text or an html body"):
        make(text=None)
    assert make(to=[], bcc=["b@example.com"]).bcc[0].email == "b@example.com"


def test_header_injection_is_refused() -> None:
    with pytest.raises(ValidationError, match="line breaks"):
        make(subject="Hi\r\nBcc: x@example.com")
    with pytest.raises(ValidationError, match="line breaks"):
        make(headers={"X-Campaign": "a\nb"})
    with pytest.raises(ValidationError, match="set from the Email"):
        make(headers={"Subject": "x"})
    with pytest.raises(ValidationError, match="not a valid header"):
        make(headers={"Bad Name": "x"})


def test_tracking_is_off_by_default() -> None:
    email = make()
    assert email.track_opens is False
    assert email.track_clicks is False
    assert email.tracked is True


def test_send_at_must_be_aware() -> None:
    with pytest.raises(ValidationError, match="timezone-aware"):
        make(send_at=datetime(2030, 1, 1))


def test_inline_attachment_needs_content_id() -> None:
    with pytest.raises(ValidationError, match="content_id"):
        Attachment(filename="logo.png", content=b"x", inline=True)


def test_email_is_immutable_and_round_trips() -> None:
    email = make(
        cc=["c@example.com"],
        bcc=["d@example.com"],
        html="<p>Hi</p>",
        attachments=[
            Attachment(filename="a.pdf", content=b"%PDF\x00\xff", content_type="application/pdf"),
            Attachment(
                filename="logo.png",
                content=b"\x89PNG",
                content_type="image/png",
                inline=True,
                content_id="logo",
            ),
        ],
        headers={"X-Campaign": "spring"},
        tags=["invite"],
        metadata={"event_id": "42"},
        category="rsvp_invite",
        track_opens=True,
        send_at=datetime(2030, 1, 1, 9, tzinfo=timezone(timedelta(hours=2))),
    )
    with pytest.raises(ValidationError):
        email.subject = "changed"  # type: ignore[misc]
    again = Email.model_validate_json(email.model_dump_json())
    assert again == email
    assert again.attachments[0].content == b"%PDF\x00\xff"
    assert list(again.recipients()) == [*email.to, *email.cc, *email.bcc]


def test_event_round_trips_through_json() -> None:
    event = EmailEvent(
        provider="sendgrid",
        type=EventType.BOUNCED,
        provider_event="bounce",
        recipient="a@example.com",
        event_id="e1",
        timestamp=datetime(2024, 1, 15, 9, 30, tzinfo=UTC),
        message_id="m1",
        tracking_id="t1",
        reason="550 5.1.1 user unknown",
        bounce=BounceKind.HARD,
        smtp_status="5.1.1",
        attempt=1,
        tags=["x"],
        metadata={"k": "v"},
        raw={"event": "bounce", "nested": [1, {"a": None}]},
    )
    assert EmailEvent.from_json(event.to_json()) == event
    assert EmailEvent.from_dict(event.to_dict()) == event
    with pytest.raises(AttributeError):
        event.reason = "x"  # type: ignore[misc]


def test_event_from_json_refuses_naive_timestamps() -> None:
    data = {
        "provider": "p",
        "type": "delivered",
        "provider_event": "d",
        "recipient": "a@b.c",
        "event_id": "1",
        "timestamp": "2024-01-01T00:00:00",
    }
    with pytest.raises(ValueError, match="timezone-aware"):
        EmailEvent.from_dict(data)


def test_send_result_round_trip_and_lookup() -> None:
    result = SendResult(
        bulk_id="b",
        recipients=[
            RecipientResult(
                recipient="a@example.com",
                tracking_id="t",
                status=DeliveryStatus.ACCEPTED,
                message_id="m",
                provider="memory",
            )
        ],
    )
    assert SendResult.model_validate_json(result.model_dump_json()) == result
    assert result.for_recipient("A@Example.com").tracking_id == "t"
    assert result.accepted == result.recipients
    with pytest.raises(KeyError):
        result.for_recipient("b@example.com")


def test_tracking_ids_are_unique_and_time_ordered() -> None:
    ids = [new_tracking_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert ids[0][:12] <= ids[-1][:12]


def test_address_keys() -> None:
    assert suppression_key("Bob@Example.COM") == "Bob@example.com"
    assert dedupe_key(" Bob@Example.com ") == "bob@example.com"


def test_make_event_builds_an_ordinary_frozen_event() -> None:
    when = datetime(2024, 1, 15, 9, 30, tzinfo=UTC)
    fast = make_event("ses", EventType.BOUNCED, "Bounce", "a@example.com", "id-1", when, reason="x")
    slow = EmailEvent(
        provider="ses",
        type=EventType.BOUNCED,
        provider_event="Bounce",
        recipient="a@example.com",
        event_id="id-1",
        timestamp=when,
        reason="x",
    )
    assert type(fast) is EmailEvent
    assert fast == slow
    assert (fast.tags, fast.metadata, fast.raw) == ([], {}, {})
    assert EmailEvent.from_json(fast.to_json()) == fast
    with pytest.raises(AttributeError):
        fast.reason = "changed"  # type: ignore[misc]
