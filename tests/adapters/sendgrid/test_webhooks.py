"""SendGrid's Signed Event Webhook: verification, refusals, key rotation, interop, and the
mapping of every documented event."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import given, settings
from hypothesis import strategies as st
from sendgrid.helpers.eventwebhook import EventWebhook

from unimailtrack import (
    BounceKind,
    ConfigurationError,
    EmailEvent,
    EventType,
    PayloadError,
    SignatureError,
    parse_webhook,
)
from unimailtrack.adapters.sendgrid import (
    SENDGRID_KEYS,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SendGridAdapter,
    SendGridWebhookSigner,
    load_webhook_key,
    parse_events,
)
from unimailtrack.model import TRACKING_KEY
from webhook_fixtures import fixtures_for, load_fixture

SIGNER = SendGridWebhookSigner()
OTHER_SIGNER = SendGridWebhookSigner()
ADAPTER = SendGridAdapter(webhook_keys=SIGNER.public_key)
FIXTURE_TIME = 1705311060
FIXTURE_NOW = datetime.fromtimestamp(FIXTURE_TIME, UTC)


def signed_fixture(
    name: str, signer: SendGridWebhookSigner = SIGNER
) -> tuple[bytes, dict[str, str]]:
    case = load_fixture(name)
    body = case["body"].encode()
    headers = dict(case["headers"])
    stamp = headers[TIMESTAMP_HEADER]
    headers[SIGNATURE_HEADER] = signer.signature(body, stamp)
    return body, headers


# --------------------------------------------------------------------------- the fixtures


@pytest.mark.parametrize("name", fixtures_for("sendgrid"))
def test_every_fixture_verifies_and_parses_as_expected(name: str) -> None:
    case = load_fixture(name)
    body, headers = signed_fixture(name)

    ADAPTER.verify_webhook(body, headers, now=FIXTURE_NOW)

    if case.get("expect_error"):
        with pytest.raises(PayloadError):
            ADAPTER.parse_webhook(body, headers)
        return
    events = ADAPTER.unwrap(body, headers, now=FIXTURE_NOW)
    assert len(events) == len(case["expected"])
    for event, expected in zip(events, case["expected"], strict=True):
        assert event.provider == "sendgrid"
        assert event.type == expected["type"]
        assert event.provider_event == expected["provider_event"]
        assert event.recipient == expected["recipient"]
        assert event.message_id == expected["message_id"]
        assert SendGridAdapter.message_key(event.message_id or "") == expected["x_message_id"]
        if "machine_open" in expected:
            assert event.machine is expected["machine_open"]
        if expected.get("severity") == "permanent":
            assert event.bounce is BounceKind.HARD
        assert event.metadata == {"order_ref": "ORD-2024-00017", "tenant": "acme"}
        assert event.tags == ["transactional", "order-confirmation"]
        assert event.raw["sg_event_id"] == event.event_id


def test_the_fixture_details_survive_mapping() -> None:
    batch = parse_webhook("sendgrid", signed_fixture("sendgrid_batch_lifecycle.json")[0])
    deferred, delivered, opened, clicked = batch[2], batch[3], batch[4], batch[6]
    assert (deferred.reason, deferred.attempt) == ("450 4.2.1 mailbox temporarily unavailable", 1)
    assert delivered.reason == "250 OK"
    assert opened.user_agent == "Mozilla/5.0 (Windows NT 10.0; Win64; x64)"
    assert clicked.url == "https://shop.example.com/"
    assert deferred.timestamp == datetime(2024, 1, 15, 9, 15, tzinfo=UTC)

    (bounce,) = parse_webhook("sendgrid", signed_fixture("sendgrid_bounce_hard.json")[0])
    assert bounce.reason == "550 5.1.1 The email account that you tried to reach does not exist."
    assert bounce.smtp_status == "5.1.1"
    assert bounce.raw["bounce_classification"] == "Invalid Address"


# --------------------------------------------------------------------------- refusals


def refusal(body: bytes, headers: dict[str, str], **kw: Any) -> SignatureError:
    adapter = kw.pop("adapter", ADAPTER)
    with pytest.raises(SignatureError) as caught:
        adapter.verify_webhook(body, headers, now=kw.pop("now", FIXTURE_NOW))
    return caught.value


def without(headers: dict[str, str], name: str) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k != name}


def changed(headers: dict[str, str], name: str, value: str) -> dict[str, str]:
    return {**headers, name: value}


BODY, HEADERS = signed_fixture("sendgrid_batch_lifecycle.json")
FLIPPED = BODY[:40] + bytes([BODY[40] ^ 1]) + BODY[41:]
RANDOM_DER = base64.b64encode(b"0D\x02 " + bytes(32) + b"\x02 " + bytes(32)).decode()

REFUSALS: dict[str, tuple[bytes, dict[str, str], dict[str, Any]]] = {
    "no key configured": (BODY, HEADERS, {"adapter": SendGridAdapter()}),
    "signature header missing": (BODY, without(HEADERS, SIGNATURE_HEADER), {}),
    "timestamp header missing": (BODY, without(HEADERS, TIMESTAMP_HEADER), {}),
    "empty signature": (BODY, changed(HEADERS, SIGNATURE_HEADER, ""), {}),
    "timestamp not a number": (BODY, changed(HEADERS, TIMESTAMP_HEADER, "soon"), {}),
    "timestamp absurdly long": (BODY, changed(HEADERS, TIMESTAMP_HEADER, "9" * 5000), {}),
    "signature not base64": (BODY, changed(HEADERS, SIGNATURE_HEADER, "not base64!"), {}),
    "signature not DER": (BODY, changed(HEADERS, SIGNATURE_HEADER, "AAAA"), {}),
    "signature of zeros": (BODY, changed(HEADERS, SIGNATURE_HEADER, RANDOM_DER), {}),
    "one body byte changed": (FLIPPED, HEADERS, {}),
    "body re-serialised": (BODY.rstrip(b"\r\n"), HEADERS, {}),
    "timestamp header changed": (
        BODY,
        changed(HEADERS, TIMESTAMP_HEADER, str(FIXTURE_TIME + 1)),
        {"now": FIXTURE_NOW},
    ),
    "signed by another key": (BODY, signed_fixture("sendgrid_delivered.json", OTHER_SIGNER)[1], {}),
    "too old": (BODY, HEADERS, {"now": FIXTURE_NOW + timedelta(minutes=5, seconds=1)}),
    "too far ahead": (BODY, HEADERS, {"now": FIXTURE_NOW - timedelta(minutes=5, seconds=1)}),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_every_refusal_raises_the_same_error_and_logs_why(
    case: str, caplog: pytest.LogCaptureFixture
) -> None:
    body, headers, options = REFUSALS[case]
    caplog.set_level(logging.WARNING, logger="unimailtrack.webhooks")

    error = refusal(body, headers, **options)

    assert str(error) == str(SignatureError(provider="sendgrid"))
    assert error.provider == "sendgrid"
    (record,) = caplog.records
    assert record.getMessage().startswith("sendgrid webhook refused: ")


def test_the_tolerance_is_configurable_and_inclusive() -> None:
    lenient = SendGridAdapter(webhook_keys=SIGNER.public_key, tolerance=timedelta(hours=1))

    lenient.verify_webhook(BODY, HEADERS, now=FIXTURE_NOW + timedelta(minutes=59))
    ADAPTER.verify_webhook(BODY, HEADERS, now=FIXTURE_NOW + timedelta(minutes=5))
    refusal(BODY, HEADERS, adapter=lenient, now=FIXTURE_NOW + timedelta(minutes=61))


def test_header_names_are_case_insensitive() -> None:
    lowered = {k.lower(): v for k, v in HEADERS.items()}

    ADAPTER.verify_webhook(BODY, lowered, now=FIXTURE_NOW)


def test_verification_turned_off_explicitly_accepts_anything() -> None:
    trusting = SendGridAdapter(verify_webhooks=False)

    trusting.verify_webhook(b"anything", {}, now=FIXTURE_NOW)


def test_a_fresh_request_is_accepted_on_the_real_clock() -> None:
    body = b'[{"event":"processed"}]\r\n'

    ADAPTER.verify_webhook(body, SIGNER.sign(body))
    refusal(body, SIGNER.sign(body, timestamp=datetime.now(UTC) - timedelta(hours=1)), now=None)


# --------------------------------------------------------------------------- keys


def test_key_rotation_accepts_every_configured_key() -> None:
    new = SendGridWebhookSigner()
    rotating = SendGridAdapter(webhook_keys=[SIGNER.public_key, new.public_key])
    new_only = SendGridAdapter(webhook_keys=[new.public_key])

    for signer in (SIGNER, new):
        rotating.verify_webhook(
            BODY, signed_fixture("sendgrid_batch_lifecycle.json", signer)[1], now=FIXTURE_NOW
        )
    new_only.verify_webhook(
        BODY, signed_fixture("sendgrid_batch_lifecycle.json", new)[1], now=FIXTURE_NOW
    )
    refusal(BODY, HEADERS, adapter=new_only)


def test_keys_are_accepted_as_base64_der_pem_bytes_or_objects() -> None:
    public = serialization.load_der_public_key(base64.b64decode(SIGNER.public_key))
    assert isinstance(public, ec.EllipticCurvePublicKey)
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    wrapped = "\n".join(SIGNER.public_key[i : i + 64] for i in range(0, 124, 64))

    for key in (SIGNER.public_key, pem, pem.encode(), public, f"  {wrapped}\n"):
        SendGridAdapter(webhook_keys=key).verify_webhook(BODY, HEADERS, now=FIXTURE_NOW)


def der_text(key: Any) -> str:
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


@pytest.mark.parametrize(
    "key",
    [
        "not base64 at all!",
        base64.b64encode(b"not a DER key").decode(),
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
        der_text(ed25519.Ed25519PrivateKey.generate().public_key()),
        der_text(ec.generate_private_key(ec.SECP384R1()).public_key()),
        "clé".encode("latin-1"),
    ],
)
def test_an_undecodable_or_foreign_key_is_a_configuration_error(key: str | bytes) -> None:
    with pytest.raises(ConfigurationError):
        SendGridAdapter(webhook_keys=[SIGNER.public_key, key])
    with pytest.raises(ConfigurationError):
        load_webhook_key(key)


def test_the_signer_keeps_its_key_across_runs() -> None:
    again = SendGridWebhookSigner(SIGNER.private_key_pem)

    assert again.public_key == SIGNER.public_key
    ADAPTER.verify_webhook(b"[]", again.sign(b"[]", timestamp=FIXTURE_TIME), now=FIXTURE_NOW)
    with pytest.raises(ConfigurationError):
        SendGridWebhookSigner("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----")
    with pytest.raises(ConfigurationError):
        SendGridWebhookSigner(
            ec.generate_private_key(ec.SECP384R1()).private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


# Published test vectors of SendGrid's own helper libraries.
SENDGRID_VECTORS = [
    (
        "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcwHBcepxo7"
        "yAQGhHPTnlvFYPAZFceEu/1FwCM/QmGUhA==",
        '{"category":"example_payload","event":"test_event","message_id":"message_id"}',
        "MEUCIQCtIHJeH93Y+qpYeWrySphQgpNGNr/U+UyUlBkU6n7RAwIgJTz2C+8a8xonZGi6BpSzoQsbVRamr2nlxFDW"
        "YNH2j/0=",
        "1588788367",
    ),
    (
        "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe6"
        "2gw+2fNNRaINXvVpiglSI8eNEc6wEA3F+g==",
        '[{"email":"hello@world.com","event":"dropped","reason":"Bounced Address","sg_event_id":'
        '"ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA","sg_message_id":"LRzXl_NHStOGhQ4'
        'kofSm_A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0","smtp-id":"<LRzXl_NHStOGhQ4'
        'kofSm_A@ismtpd0039p1iad1.sendgrid.net>","timestamp":1600112492}]\r\n',
        "MEUCIGHQVtGj+Y3LkG9fLcxf3qfI10QysgDWmMOVmxG0u6ZUAiEAyBiXDWzM+uOe5W0JuG+luQAbPIqHh89M15Tl"
        "uLtEZtM=",
        "1600112502",
    ),
]


@pytest.mark.parametrize(("key", "payload", "signature", "stamp"), SENDGRID_VECTORS)
def test_sendgrids_published_vectors_verify(
    key: str, payload: str, signature: str, stamp: str
) -> None:
    adapter = SendGridAdapter(webhook_keys=key)
    headers = {SIGNATURE_HEADER: signature, TIMESTAMP_HEADER: stamp}
    now = datetime.fromtimestamp(int(stamp), UTC)

    adapter.verify_webhook(payload.encode(), headers, now=now)
    refusal(payload.encode() + b" ", headers, adapter=adapter, now=now)


def test_the_published_dropped_event_maps() -> None:
    (event,) = parse_events(SENDGRID_VECTORS[1][1].encode())

    assert (event.type, event.reason, event.bounce) == (EventType.DROPPED, "Bounced Address", None)
    assert SendGridAdapter.message_key(event.message_id or "") == "LRzXl_NHStOGhQ4kofSm_A"


# --------------------------------------------------------------------------- interop

OFFICIAL = EventWebhook()
OFFICIAL_KEY = OFFICIAL.convert_public_key_to_ecdsa(SIGNER.public_key)
TAMPERINGS = ["none", "body", "timestamp", "other key", "other body"]


def tamper(how: str, text: str, stamp: int) -> tuple[str, str, str]:
    """(payload, signature, timestamp) as a request that was altered ``how``."""
    body = text.encode()
    if how == "other key":
        return text, OTHER_SIGNER.signature(body, str(stamp)), str(stamp)
    signature = SIGNER.signature(body, str(stamp))
    if how == "body":
        return text + "x", signature, str(stamp)
    if how == "timestamp":
        return text, signature, str(stamp + 1)
    if how == "other body":
        return text, SIGNER.signature(body + b"\r\n", str(stamp)), str(stamp)
    return text, signature, str(stamp)


@settings(max_examples=150, deadline=None)
@given(
    text=st.text(max_size=300),
    stamp=st.integers(min_value=0, max_value=99_999_999_999),
    how=st.sampled_from(TAMPERINGS),
)
def test_our_verifier_agrees_with_the_official_sendgrid_package(
    text: str, stamp: int, how: str
) -> None:
    payload, signature, timestamp = tamper(how, text, stamp)

    theirs = OFFICIAL.verify_signature(payload, signature, timestamp, OFFICIAL_KEY)
    try:
        ADAPTER.verify_webhook(
            payload.encode(),
            {SIGNATURE_HEADER: signature, TIMESTAMP_HEADER: timestamp},
            now=datetime.fromtimestamp(int(timestamp), UTC),
        )
        ours = True
    except SignatureError:
        ours = False

    assert ours is theirs
    assert ours is (how == "none")


# --------------------------------------------------------------------------- mapping


def sg_event(event: str, **fields: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "email": "alice@example.com",
        "timestamp": 1705310001,
        "smtp-id": "<Qk3tF9xjRJm4bX1WzYc7aQ@geopod-ismtpd-4>",
        "event": event,
        "category": "transactional",
        "sg_event_id": f"id-{event}",
        "sg_message_id": "Qk3tF9xjRJm4bX1WzYc7aQ.filterdrecv-5bd4d5c8b8-x2h7k-1-65A4F3D0-2F.0",
        TRACKING_KEY: "0190f0c1a2b3c4d5e6f708192a3b4c5d",
    }
    item.update(fields)
    return item


def parse_one(item: Any) -> EmailEvent:
    (event,) = parse_events(json.dumps([item]).encode())
    return event


@pytest.mark.parametrize(
    ("name", "fields", "expected", "bounce", "reason"),
    [
        ("processed", {}, EventType.PROCESSED, None, None),
        (
            "delivered",
            {"response": "250 OK", "ip": "1.2.3.4", "tls": 1},
            EventType.DELIVERED,
            None,
            "250 OK",
        ),
        (
            "deferred",
            {"response": "421 try later", "attempt": "5"},
            EventType.DEFERRED,
            None,
            "421 try later",
        ),
        (
            "bounce",
            {
                "type": "bounce",
                "reason": "550 5.1.1 unknown",
                "status": "5.1.1",
                "bounce_classification": "Invalid Address",
            },
            EventType.BOUNCED,
            BounceKind.HARD,
            "550 5.1.1 unknown",
        ),
        (
            "bounce",
            {
                "type": "blocked",
                "reason": "554 listed on a blocklist",
                "status": "5.7.1",
                "bounce_classification": "Reputation",
            },
            EventType.BOUNCED,
            BounceKind.BLOCK,
            "554 listed on a blocklist",
        ),
        (
            "bounce",
            {"reason": "550 no type"},
            EventType.BOUNCED,
            BounceKind.UNDETERMINED,
            "550 no type",
        ),
        (
            "bounce",
            {
                "type": "bounce",
                "reason": "552 5.2.2 mailbox full",
                "status": "5.2.2",
                "bounce_classification": "Mailbox Unavailable",
            },
            EventType.BOUNCED,
            BounceKind.SOFT,
            "552 5.2.2 mailbox full",
        ),
        (
            "bounce",
            {"type": "bounce", "reason": "450 4.2.0 later", "status": "4.2.0"},
            EventType.BOUNCED,
            BounceKind.SOFT,
            "450 4.2.0 later",
        ),
        (
            "bounce",
            {
                "type": "bounce",
                "reason": "550 5.7.1 message refused as spam",
                "status": "5.7.1",
                "bounce_classification": "Content",
            },
            EventType.BOUNCED,
            BounceKind.BLOCK,
            "550 5.7.1 message refused as spam",
        ),
        (
            "bounce",
            {
                "type": "bounce",
                "reason": "550 5.4.0 DNS loop",
                "status": "5.4.0",
                "bounce_classification": "Technical",
            },
            EventType.BOUNCED,
            BounceKind.UNDETERMINED,
            "550 5.4.0 DNS loop",
        ),
        ("dropped", {"reason": "Bounced Address"}, EventType.DROPPED, None, "Bounced Address"),
        (
            "dropped",
            {"reason": "Unsubscribed Address"},
            EventType.DROPPED,
            None,
            "Unsubscribed Address",
        ),
        (
            "dropped",
            {"reason": "Spam Reporting Address"},
            EventType.DROPPED,
            None,
            "Spam Reporting Address",
        ),
        ("dropped", {"reason": "Invalid"}, EventType.DROPPED, None, "Invalid"),
        ("dropped", {"reason": "Expired"}, EventType.DROPPED, None, "Expired"),
        ("spamreport", {}, EventType.COMPLAINED, None, None),
        ("unsubscribe", {}, EventType.UNSUBSCRIBED, None, None),
        (
            "group_unsubscribe",
            {"asm_group_id": 42},
            EventType.UNSUBSCRIBED,
            None,
            "unsubscribe group 42",
        ),
        (
            "group_resubscribe",
            {"asm_group_id": "42"},
            EventType.RESUBSCRIBED,
            None,
            "unsubscribe group 42",
        ),
        (
            "open",
            {"useragent": "Mozilla/5.0", "sg_machine_open": False},
            EventType.OPENED,
            None,
            None,
        ),
        (
            "click",
            {"url": "https://example.com/", "url_offset": {"index": 0, "type": "html"}},
            EventType.CLICKED,
            None,
            None,
        ),
    ],
)
def test_every_documented_event_maps(
    name: str,
    fields: dict[str, Any],
    expected: EventType,
    bounce: BounceKind | None,
    reason: str | None,
) -> None:
    event = parse_one(sg_event(name, **fields))

    assert (event.type, event.provider_event, event.bounce, event.reason) == (
        expected,
        name,
        bounce,
        reason,
    )
    assert event.recipient == "alice@example.com"
    assert event.event_id == f"id-{name}"
    assert event.tracking_id == "0190f0c1a2b3c4d5e6f708192a3b4c5d"
    assert event.tags == ["transactional"]
    assert event.metadata == {}
    assert event.timestamp == datetime(2024, 1, 15, 9, 13, 21, tzinfo=UTC)


def test_engagement_details() -> None:
    machine = parse_one(
        sg_event("open", sg_machine_open=True, useragent="Mozilla/5.0", sg_content_type="html")
    )
    human = parse_one(sg_event("open", sg_machine_open="false"))
    unknown = parse_one(sg_event("open"))
    click = parse_one(sg_event("click", url="https://example.com/a", useragent="UA"))

    assert (machine.machine, machine.user_agent) == (True, "Mozilla/5.0")
    assert (human.machine, unknown.machine) == (False, None)
    assert (click.url, click.user_agent, click.machine) == ("https://example.com/a", "UA", None)


def test_numeric_strings_and_numbers_are_both_accepted() -> None:
    event = parse_one(
        sg_event("bounce", timestamp="1705310001", attempt=3, status=550, type="bounce")
    )
    float_time = parse_one(sg_event("processed", timestamp=1705310001.5))

    assert event.timestamp == datetime(2024, 1, 15, 9, 13, 21, tzinfo=UTC)
    assert (event.attempt, event.smtp_status) == (3, "550")
    assert float_time.timestamp == datetime(2024, 1, 15, 9, 13, 21, 500000, tzinfo=UTC)
    assert parse_one(sg_event("deferred", attempt="soon")).attempt is None


def test_custom_args_become_metadata_and_sendgrid_keys_never_do() -> None:
    own = {key: "x" for key in SENDGRID_KEYS if key not in ("event", "email", "timestamp")}
    event = parse_one(sg_event("open", order_ref="ORD-1", count=3, flags={"a": True}, **own))

    assert event.metadata == {"order_ref": "ORD-1", "count": "3", "flags": '{"a": true}'}
    assert {"sg_machine_open", "sg_content_type", "sg_user_id", "asm_group_id"} <= SENDGRID_KEYS


def test_categories_may_be_one_string_or_a_list() -> None:
    assert parse_one(sg_event("processed", category=["a", "b", 7])).tags == ["a", "b", "7"]
    assert parse_one(sg_event("processed", category="a")).tags == ["a"]
    assert parse_one(sg_event("processed", category=None)).tags == []


def test_an_event_without_an_id_gets_a_stable_digest_per_recipient() -> None:
    item = sg_event("delivered")
    del item["sg_event_id"]
    other = {**item, "email": "bob@example.com"}

    first, second = parse_one(item), parse_one(dict(reversed(item.items())))

    assert first.event_id == second.event_id
    assert len(first.event_id) == 32
    assert parse_one(other).event_id != first.event_id


def test_an_event_this_version_does_not_know_is_kept_whole() -> None:
    event = parse_one(sg_event("machine_learning_insight", extra="value"))

    assert (event.type, event.provider_event, event.recipient) == (
        EventType.UNKNOWN,
        "machine_learning_insight",
        "alice@example.com",
    )
    assert event.reason == "SendGrid event 'machine_learning_insight' is not mapped"
    assert event.message_id is not None
    assert event.metadata == {"extra": "value"}


def test_an_account_status_change_concerns_no_recipient() -> None:
    event = parse_one(
        {
            "event": "account_status_change",
            "sg_event_id": "acct-1",
            "timestamp": 1709142428,
            "type": "compliance_suspend",
        }
    )

    assert (event.type, event.recipient, event.message_id) == (EventType.UNKNOWN, "", None)
    assert event.event_id == "acct-1"
    assert event.reason == "the SendGrid account status changed"


@pytest.mark.parametrize(
    ("item", "why"),
    [
        ("a string", "not a JSON object"),
        ([1, 2], "not a JSON object"),
        ({"email": "a@example.com", "event": "delivered"}, "no valid unix 'timestamp'"),
        ({"email": "a@example.com", "event": "delivered", "timestamp": "yesterday"}, "timestamp"),
        ({"email": "a@example.com", "event": "delivered", "timestamp": True}, "timestamp"),
        ({"email": "a@example.com", "event": "delivered", "timestamp": 10**15}, "timestamp"),
        ({"email": "a@example.com", "timestamp": 1705310001}, "no 'event' name"),
        ({"event": "delivered", "timestamp": 1705310001, "sg_event_id": "x"}, "names no recipient"),
    ],
)
def test_an_item_that_cannot_be_mapped_becomes_unknown_and_spares_the_batch(
    item: Any, why: str
) -> None:
    good = sg_event("delivered")

    before, bad, after = parse_events(json.dumps([good, item, good]).encode())

    assert before.type is after.type is EventType.DELIVERED
    assert bad.type is EventType.UNKNOWN
    assert bad.reason is not None and why in bad.reason
    assert bad.raw == (item if isinstance(item, dict) else {"value": item})
    assert parse_events(json.dumps([item]).encode())[0].event_id == bad.event_id


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b'{"event": "delivered"}', b"null", b"[" * 100_000, "[]".encode("utf-16")],
)
def test_only_an_unreadable_body_raises(body: bytes) -> None:
    with pytest.raises(PayloadError):
        parse_webhook("sendgrid", body)


def test_an_empty_batch_is_no_events() -> None:
    assert parse_webhook("sendgrid", b"[]\r\n") == []


def test_parsed_events_are_ordinary_frozen_email_events() -> None:
    event = parse_one(sg_event("open", sg_machine_open=True))
    built = EmailEvent(**{f.name: getattr(event, f.name) for f in dataclasses.fields(EmailEvent)})

    assert type(event) is EmailEvent
    assert event == built
    assert EmailEvent.from_json(event.to_json()) == event
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.recipient = "mallory@example.com"  # type: ignore[misc]


def test_the_standard_library_decoder_gives_the_same_events() -> None:
    body = signed_fixture("sendgrid_batch_lifecycle.json")[0]

    assert parse_events(body, loads=json.loads) == parse_events(body)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)
sendgrid_like = st.fixed_dictionaries(
    {},
    optional={
        "event": st.sampled_from(["open", "click", "bounce", "dropped", "odd"]) | json_values,
        "email": st.emails() | json_values,
        "timestamp": st.integers(min_value=-(10**12), max_value=10**12) | json_values,
        "sg_event_id": json_values,
        "sg_message_id": json_values,
        "category": json_values,
        "type": json_values,
        "attempt": json_values,
        "status": json_values,
        "sg_machine_open": json_values,
        TRACKING_KEY: json_values,
        "custom": json_values,
    },
)


@settings(max_examples=200, deadline=None)
@given(items=st.lists(sendgrid_like | json_values, max_size=5))
def test_any_json_array_parses_without_raising(items: list[Any]) -> None:
    events = parse_events(json.dumps(items).encode())

    assert len(events) == len(items)
    for event in events:
        assert type(event) is EmailEvent
        assert event.timestamp.tzinfo is not None
        assert all(isinstance(v, str) for v in event.metadata.values())
        assert all(isinstance(t, str) for t in event.tags)
        event.to_json()


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=200))
def test_arbitrary_bytes_raise_nothing_but_payload_error(body: bytes) -> None:
    with contextlib.suppress(PayloadError):
        parse_webhook("sendgrid", body)
