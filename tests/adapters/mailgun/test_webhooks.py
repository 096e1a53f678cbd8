"""Mailgun webhooks: signatures verified (every refusal), every event and severity mapped.

Expected signatures are computed here with ``hmac`` and ``hashlib`` straight from Mailgun's
documented algorithm, hex(HMAC-SHA256(signing key, timestamp + token)), independently of the
adapter's own code.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest

import unimailtrack
from unimailtrack import BounceKind, EventType, PayloadError, SignatureError
from unimailtrack.adapters import MailgunAdapter
from unimailtrack.adapters.base import InMemoryNonceStore
from unimailtrack.adapters.mailgun import MailgunWebhookSigner
from unimailtrack.config import Dsn, parse_dsn
from webhook_fixtures import fixtures_for, load_fixture

KEY = "8d2f7a0c4b1e9f3a6d5c8b7e0f1a2d3c"
OTHER_KEY = "f00dfeedf00dfeedf00dfeedf00dfeed"
JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
STAMP = 1705311060
TOKEN = "4280b32afaded09f96780ebc8e68c5501fb5efa189d4cedcde"


def sign(key: str, timestamp: str, token: str) -> str:
    return hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()


def at(stamp: float) -> datetime:
    return datetime.fromtimestamp(stamp, UTC)


def json_body(
    event_data: dict[str, Any],
    *,
    key: str = KEY,
    timestamp: str = str(STAMP),
    token: str = TOKEN,
    **extra: str,
) -> bytes:
    block = {"timestamp": timestamp, "token": token, "signature": sign(key, timestamp, token)}
    return json.dumps({"signature": {**block, **extra}, "event-data": event_data}).encode()


def form_body(fields: dict[str, str], *, key: str = KEY, timestamp: str = str(STAMP)) -> bytes:
    block = {"timestamp": timestamp, "token": TOKEN, "signature": sign(key, timestamp, TOKEN)}
    return urlencode({**fields, **block}).encode()


def signed_fixture(name: str, key: str = KEY) -> tuple[bytes, dict[str, str], float]:
    """A fixture's body with its placeholder replaced by a real signature."""
    case = load_fixture(name)
    body: str = case["body"]
    if case["headers"]["Content-Type"] == "application/json":
        block = json.loads(body)["signature"]
    else:
        block = dict(parse_qsl(body))
    signature = sign(key, block["timestamp"], block["token"])
    signed = body.replace(case["signing"]["placeholder"], signature).encode()
    return signed, case["headers"], float(block["timestamp"])


def mailgun(*keys: str, **kwargs: Any) -> MailgunAdapter:
    return MailgunAdapter(webhook_keys=keys or (KEY,), **kwargs)


def event(name: str, **fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "event": name,
        "id": "G9Bn5sl1TC6nu79C8C0bwg",
        "timestamp": 1705311003.626182,
        "recipient": "alice@example.com",
        "message": {"headers": {"message-id": "20240115093001.abc@mg.example.com"}},
    }
    data.update(fields)
    return data


def parse(data: dict[str, Any]) -> unimailtrack.EmailEvent:
    (parsed,) = unimailtrack.parse_webhook("mailgun", json_body(data), JSON)
    return parsed


# --------------------------------------------------------------------------- fixtures


@pytest.mark.parametrize("name", fixtures_for("mailgun"))
def test_every_fixture_verifies_and_maps_as_expected(name: str) -> None:
    body, headers, stamp = signed_fixture(name)
    events = mailgun().unwrap(body, headers, now=at(stamp + 30))

    assert events == unimailtrack.parse_webhook("mailgun", body, headers)
    expected = load_fixture(name)["expected"]
    assert len(events) == len(expected)
    for got, want in zip(events, expected, strict=True):
        assert got.provider == "mailgun"
        assert got.type == EventType(want["type"])
        assert got.provider_event == want["provider_event"]
        assert got.recipient == want["recipient"]
        assert got.message_id == want["message_id"]
        assert got.timestamp.tzinfo is UTC
        assert got.metadata == {"order_ref": "ORD-2024-00017", "tenant": "acme"}
        for field in ("severity", "reason"):
            if field in want:
                assert got.raw[field] == want[field]
        if "bot" in want:
            assert got.machine is want["bot"]
        if want.get("legacy"):
            assert got.raw["token"] == "5321adcbef227a24742e714e9144370fffa75d69b79925ebd4"


def test_the_fixtures_cover_every_kind_of_body() -> None:
    kinds = {load_fixture(n)["headers"]["Content-Type"] for n in fixtures_for("mailgun")}
    assert kinds == {"application/json", "application/x-www-form-urlencoded"}


def test_fixture_details_are_mapped() -> None:
    bounce = parse(
        json.loads(signed_fixture("mailgun_failed_permanent_bounce.json")[0])["event-data"]
    )
    assert bounce.bounce is BounceKind.HARD
    assert bounce.smtp_status == "5.1.1"
    assert bounce.reason is not None
    assert bounce.reason.startswith("550 5.1.1 <gone@example.org>: Recipient address rejected")
    assert bounce.attempt == 1
    assert bounce.tags == ["order-confirmation"]

    body, headers, _ = signed_fixture("mailgun_failed_temporary.json")
    (deferred,) = unimailtrack.parse_webhook("mailgun", body, headers)
    assert deferred.type is EventType.DEFERRED
    assert deferred.smtp_status == "4.7.652"
    assert deferred.attempt == 1

    body, headers, _ = signed_fixture("mailgun_delivered.json")
    (delivered,) = unimailtrack.parse_webhook("mailgun", body, headers)
    assert delivered.reason == "250 OK"
    assert delivered.smtp_status == "250"
    assert delivered.timestamp == datetime(2024, 1, 15, 9, 30, 3, 626182, tzinfo=UTC)


# --------------------------------------------------------------------------- verification


def test_a_spent_token_admits_only_the_request_that_spent_it() -> None:
    adapter = mailgun()
    body = json_body(event("delivered"))
    adapter.verify_webhook(body, JSON, now=at(STAMP))
    adapter.verify_webhook(body, JSON, now=at(STAMP + 1))  # Mailgun's retry: same request
    forged = json_body(event("failed", severity="permanent", reason="bounce"))
    with pytest.raises(SignatureError):
        adapter.verify_webhook(forged, JSON, now=at(STAMP + 1))
    adapter.verify_webhook(body, JSON, now=at(STAMP + 2))  # the refusal left no trace


def refusals() -> dict[str, tuple[bytes, dict[str, str], float]]:
    data = event("delivered")
    genuine = json.loads(json_body(data))
    no_block = {k: v for k, v in genuine.items() if k != "signature"}
    no_token = {**genuine, "signature": {**genuine["signature"], "token": None}}
    no_signature = {**genuine, "signature": {**genuine["signature"], "signature": ""}}
    bad_stamp = json_body(data, timestamp="soon")
    tampered = {**genuine, "signature": {**genuine["signature"], "timestamp": str(STAMP + 1)}}
    return {
        "wrong key": (json_body(data, key=OTHER_KEY), JSON, STAMP),
        "stale": (json_body(data), JSON, STAMP + 301),
        "future": (json_body(data), JSON, STAMP - 301),
        "tampered timestamp": (json.dumps(tampered).encode(), JSON, STAMP),
        "no signature block": (json.dumps(no_block).encode(), JSON, STAMP),
        "no token": (json.dumps(no_token).encode(), JSON, STAMP),
        "empty signature": (json.dumps(no_signature).encode(), JSON, STAMP),
        "timestamp not a number": (bad_stamp, JSON, STAMP),
        "not json": (b"{not json", JSON, STAMP),
        "legacy wrong key": (form_body({"event": "opened"}, key=OTHER_KEY), FORM, STAMP),
        "legacy without signature": (b"event=opened&recipient=a%40example.com", FORM, STAMP),
    }


@pytest.mark.parametrize("case", sorted(refusals()))
def test_every_refusal_raises_the_same_signature_error(
    case: str, caplog: pytest.LogCaptureFixture
) -> None:
    body, headers, now = refusals()[case]
    adapter = mailgun()
    caplog.set_level(logging.WARNING, logger="unimailtrack.webhooks")
    with pytest.raises(SignatureError) as raised:
        adapter.verify_webhook(body, headers, now=at(now))
    assert str(raised.value) == str(SignatureError(provider="mailgun"))
    assert "mailgun webhook refused" in caplog.text
    with pytest.raises(SignatureError):
        adapter.unwrap(body, headers, now=at(now))


def test_a_replayed_token_with_another_event_is_refused() -> None:
    adapter = mailgun()
    adapter.unwrap(json_body(event("opened")), JSON, now=at(STAMP))
    with pytest.raises(SignatureError):
        adapter.unwrap(json_body(event("clicked")), JSON, now=at(STAMP + 10))


def test_a_token_is_remembered_only_once_the_request_checks_out() -> None:
    adapter = mailgun()
    forged = json_body(event("opened"), key=OTHER_KEY)
    with pytest.raises(SignatureError):
        adapter.verify_webhook(forged, JSON, now=at(STAMP))
    genuine = json_body(event("opened"))
    with pytest.raises(SignatureError):
        adapter.verify_webhook(genuine, JSON, now=at(STAMP + 3600))
    adapter.verify_webhook(genuine, JSON, now=at(STAMP))


def test_no_key_configured_fails_closed() -> None:
    with pytest.raises(SignatureError):
        MailgunAdapter().verify_webhook(json_body(event("opened")), JSON, now=at(STAMP))
    with pytest.raises(SignatureError):
        MailgunAdapter(webhook_keys=["", "  "]).unwrap(
            json_body(event("opened")), JSON, now=at(STAMP)
        )


def test_verification_can_be_turned_off_explicitly() -> None:
    adapter = MailgunAdapter(verify_webhooks=False)
    unsigned = json.dumps({"event-data": event("opened")}).encode()
    adapter.verify_webhook(unsigned, JSON)
    assert adapter.unwrap(unsigned, JSON)[0].type is EventType.OPENED
    with pytest.raises(PayloadError):
        adapter.unwrap(b"[]", JSON)


def test_key_rotation_accepts_every_configured_key() -> None:
    adapter = mailgun(OTHER_KEY, KEY)
    adapter.verify_webhook(json_body(event("opened"), key=KEY), JSON, now=at(STAMP))
    rotated = json_body(event("opened"), key=OTHER_KEY, token="b" * 50)
    adapter.verify_webhook(rotated, JSON, now=at(STAMP))
    with pytest.raises(SignatureError):
        mailgun(KEY).verify_webhook(
            json_body(event("opened"), key="retired", token="c" * 50), JSON, now=at(STAMP)
        )


def test_keys_come_from_the_dsn_and_the_environment() -> None:
    dsn = parse_dsn(f"mailgun://default?webhook_key={OTHER_KEY},spare")
    assert isinstance(dsn, Dsn)
    env = {"UNIMAILTRACK_MAILGUN_WEBHOOK_KEY": f" {KEY} , "}
    adapter = MailgunAdapter.from_dsn(dsn, env=env)
    adapter.verify_webhook(json_body(event("opened"), key=KEY), JSON, now=at(STAMP))
    adapter.verify_webhook(
        json_body(event("opened"), key=OTHER_KEY, token="d" * 50), JSON, now=at(STAMP)
    )
    with pytest.raises(SignatureError):
        MailgunAdapter.from_dsn(dsn).verify_webhook(
            json_body(event("opened"), key=KEY, token="e" * 50), JSON, now=at(STAMP)
        )


def test_one_key_may_be_given_as_a_string() -> None:
    MailgunAdapter(webhook_keys=KEY).verify_webhook(json_body(event("opened")), JSON, now=at(STAMP))


def test_a_subaccount_event_verifies_with_the_parent_signature() -> None:
    parent = sign(OTHER_KEY, str(STAMP), TOKEN)
    body = json_body(event("opened"), key="subaccount-key", **{"parent-signature": parent})
    mailgun(OTHER_KEY).verify_webhook(body, JSON, now=at(STAMP))


def test_the_tolerance_is_configurable() -> None:
    body = json_body(event("opened"))
    with pytest.raises(SignatureError):
        mailgun(tolerance=timedelta(minutes=1)).verify_webhook(body, JSON, now=at(STAMP + 90))
    mailgun().verify_webhook(body, JSON, now=at(STAMP + 90))


def test_an_integer_timestamp_is_signed_as_written() -> None:
    genuine = json.loads(json_body(event("opened")))
    genuine["signature"]["timestamp"] = STAMP
    mailgun().verify_webhook(json.dumps(genuine).encode(), JSON, now=at(STAMP))


def test_a_shared_nonce_store_refuses_replays_across_adapters() -> None:
    shared = InMemoryNonceStore()
    mailgun(nonce_store=shared).verify_webhook(json_body(event("opened")), JSON, now=at(STAMP))
    with pytest.raises(SignatureError):
        mailgun(nonce_store=shared).verify_webhook(json_body(event("clicked")), JSON, now=at(STAMP))


def test_the_nonce_store_remembers_the_token_past_the_tolerance() -> None:
    class Recording:
        def __init__(self) -> None:
            self.calls: list[tuple[str, datetime]] = []

        def add_if_absent(self, key: str, expires_at: datetime) -> bool:
            self.calls.append((key, expires_at))
            return True

    store = Recording()
    now = datetime.now(UTC)
    stamp = str(int(now.timestamp()))
    mailgun(nonce_store=store).verify_webhook(
        json_body(event("opened"), timestamp=stamp), JSON, now=now
    )
    (seen, seen_until), (key, expires_at) = store.calls
    assert key == f"mailgun:{stamp}{TOKEN}"  # exactly what was signed
    assert seen.startswith(f"{key}#") and seen_until == expires_at
    assert expires_at >= at(int(stamp)) + timedelta(minutes=5)


# --------------------------------------------------------------------------- legacy bodies


def multipart(fields: list[tuple[str, str]], boundary: str = "xYzZY") -> bytes:
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields
    ]
    attachment = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="attachment-1"; '
        f'filename="message.eml"\r\nContent-Type: message/rfc822\r\n\r\nSubject: hi\r\n\r\n'
    )
    return ("".join(parts) + attachment + f"--{boundary}--\r\n").encode()


LEGACY_BOUNCE = [
    ("event", "bounced"),
    ("recipient", "gone@example.org"),
    ("domain", "mg.example.com"),
    ("Message-Id", "<20240115093002.9f8e@mg.example.com>"),
    ("code", "550"),
    ("error", "5.1.1 The email account that you tried to reach does not exist"),
    ("notification", ""),
    ("unimailtrack_id", "0190f1e2a3b4c5d6e7f8091a2b3c4d5e"),
    ("tenant", "acme"),
    ("attachment-count", "1"),
    ("timestamp", str(STAMP)),
    ("token", TOKEN),
    ("signature", sign(KEY, str(STAMP), TOKEN)),
]


@pytest.mark.parametrize("with_content_type", [True, False])
def test_a_legacy_multipart_bounce_is_verified_and_parsed(with_content_type: bool) -> None:
    body = multipart(LEGACY_BOUNCE)
    headers = {"Content-Type": "multipart/form-data; boundary=xYzZY"} if with_content_type else {}
    (bounced,) = mailgun().unwrap(body, headers, now=at(STAMP))
    assert bounced.type is EventType.BOUNCED
    assert bounced.bounce is BounceKind.HARD
    assert bounced.recipient == "gone@example.org"
    assert bounced.message_id == "20240115093002.9f8e@mg.example.com"
    assert bounced.smtp_status == "5.1.1"
    assert bounced.reason == "550 5.1.1 The email account that you tried to reach does not exist"
    assert bounced.tracking_id == "0190f1e2a3b4c5d6e7f8091a2b3c4d5e"
    assert bounced.metadata == {"tenant": "acme"}


def test_bodies_without_a_content_type_are_recognised() -> None:
    adapter = mailgun()
    (as_json,) = adapter.unwrap(json_body(event("opened")), {}, now=at(STAMP))
    assert as_json.type is EventType.OPENED
    legacy = form_body({"event": "clicked", "recipient": "a@example.com", "url": "https://x.io"})
    (as_form,) = mailgun().unwrap(legacy, {}, now=at(STAMP))
    assert as_form.type is EventType.CLICKED
    assert as_form.url == "https://x.io"


def test_a_legacy_signature_field_is_read_after_a_variable_of_the_same_name() -> None:
    genuine = form_body({"event": "opened", "recipient": "a@example.com"})
    body = b"token=mine&timestamp=1&" + genuine
    (opened,) = mailgun().unwrap(body, FORM, now=at(STAMP))
    assert opened.type is EventType.OPENED


LEGACY_CASES: list[tuple[dict[str, str], EventType, BounceKind | None]] = [
    ({"event": "delivered"}, EventType.DELIVERED, None),
    (
        {"event": "bounced", "code": "552", "error": "5.2.2 mailbox full"},
        EventType.BOUNCED,
        BounceKind.SOFT,
    ),
    (
        {"event": "bounced", "code": "550", "error": "no such user"},
        EventType.BOUNCED,
        BounceKind.HARD,
    ),
    ({"event": "dropped", "reason": "hardfail", "code": "605"}, EventType.DROPPED, None),
    ({"event": "dropped", "reason": "old"}, EventType.FAILED, None),
    ({"event": "dropped", "reason": "maxfails"}, EventType.FAILED, None),
    ({"event": "complained"}, EventType.COMPLAINED, None),
    ({"event": "unsubscribed"}, EventType.UNSUBSCRIBED, None),
    ({"event": "opened", "user-agent": "Mozilla/5.0"}, EventType.OPENED, None),
    ({"event": "clicked", "url": "https://example.com/a"}, EventType.CLICKED, None),
    ({"event": "list_member_uploaded"}, EventType.UNKNOWN, None),
]


@pytest.mark.parametrize(("fields", "kind", "bounce"), LEGACY_CASES)
def test_legacy_events_are_mapped(
    fields: dict[str, str], kind: EventType, bounce: BounceKind | None
) -> None:
    body = form_body({"recipient": "a@example.com", "tag": "t1", **fields})
    (parsed,) = unimailtrack.parse_webhook("mailgun", body, FORM)
    assert parsed.type is kind
    assert parsed.bounce is bounce
    assert parsed.provider_event == fields["event"]
    if kind is not EventType.UNKNOWN:
        assert parsed.tags == ["t1"]
    if kind is EventType.OPENED:
        assert parsed.machine is True
    if kind is EventType.DROPPED:
        assert parsed.reason == "605"


def test_legacy_variables_come_from_the_message_headers() -> None:
    headers = [["X-Mailgun-Variables", json.dumps({"unimailtrack_id": "abc", "n": 7})]]
    body = form_body(
        {"event": "delivered", "recipient": "a@example.com", "message-headers": json.dumps(headers)}
    )
    (parsed,) = unimailtrack.parse_webhook("mailgun", body, FORM)
    assert parsed.tracking_id == "abc"
    assert parsed.metadata == {"n": "7"}


def test_a_legacy_event_id_ignores_the_signature_but_not_the_event() -> None:
    fields = {"event": "opened", "recipient": "a@example.com"}
    first = unimailtrack.parse_webhook("mailgun", form_body(fields, key=KEY), FORM)[0]
    resigned = unimailtrack.parse_webhook("mailgun", form_body(fields, key=OTHER_KEY), FORM)[0]
    later = unimailtrack.parse_webhook("mailgun", form_body(fields, timestamp="1705311999"), FORM)[
        0
    ]
    assert first.event_id == resigned.event_id
    assert first.event_id != later.event_id


# --------------------------------------------------------------------------- mapping


def failed(severity: str, reason: str, **status: Any) -> dict[str, Any]:
    return event("failed", severity=severity, reason=reason, **{"delivery-status": status})


MAPPING: list[tuple[str, dict[str, Any], EventType, BounceKind | None]] = [
    ("accepted", event("accepted", method="HTTP"), EventType.ACCEPTED, None),
    (
        "delivered",
        event("delivered", **{"delivery-status": {"code": 250}}),
        EventType.DELIVERED,
        None,
    ),
    (
        "temporary",
        failed("temporary", "generic", code=452, message="4.2.2 full"),
        EventType.DEFERRED,
        BounceKind.SOFT,
    ),
    ("temporary without code", failed("temporary", "generic"), EventType.DEFERRED, BounceKind.SOFT),
    (
        "temporary despite 5.1.1",
        failed("temporary", "generic", code=550, message="5.1.1 unknown"),
        EventType.DEFERRED,
        BounceKind.SOFT,
    ),
    (
        "temporary policy",
        failed("temporary", "espblock", code=421, message="4.7.0 try later"),
        EventType.DEFERRED,
        BounceKind.BLOCK,
    ),
    (
        "hard bounce",
        failed("permanent", "bounce", code=550, **{"enhanced-code": "5.1.1"}),
        EventType.BOUNCED,
        BounceKind.HARD,
    ),
    (
        "mailbox full",
        failed("permanent", "bounce", code=552, message="5.2.2 mailbox full"),
        EventType.BOUNCED,
        BounceKind.SOFT,
    ),
    (
        "policy block",
        failed("permanent", "bounce", code=554, message="5.7.1 rejected by policy"),
        EventType.BOUNCED,
        BounceKind.BLOCK,
    ),
    (
        "generic",
        failed("permanent", "generic", code=550, message="no"),
        EventType.BOUNCED,
        BounceKind.HARD,
    ),
    (
        "generic other status",
        failed("permanent", "generic", code=550, message="5.0.0 no"),
        EventType.BOUNCED,
        BounceKind.HARD,
    ),
    (
        "delayed bounce",
        failed("permanent", "delayed-bounce", **{"bounce-code": "5.1.1"}),
        EventType.BOUNCED,
        BounceKind.HARD,
    ),
    ("espblock", failed("permanent", "espblock", code=550), EventType.BOUNCED, BounceKind.BLOCK),
    ("unlisted reason", failed("permanent", "virus"), EventType.BOUNCED, BounceKind.UNDETERMINED),
    ("suppress-bounce", failed("permanent", "suppress-bounce", code=605), EventType.DROPPED, None),
    ("suppress-unsubscribe", failed("permanent", "suppress-unsubscribe"), EventType.DROPPED, None),
    ("suppress-complaint", failed("permanent", "suppress-complaint"), EventType.DROPPED, None),
    (
        "gave up",
        failed("permanent", "old", code=452, message="4.2.2 over quota"),
        EventType.FAILED,
        None,
    ),
    ("unknown severity", failed("sometimes", "bounce"), EventType.UNKNOWN, None),
    (
        "rejected",
        event("rejected", reject={"reason": "Sandbox subdomains are for test purposes only"}),
        EventType.REJECTED,
        None,
    ),
    ("opened", event("opened"), EventType.OPENED, None),
    ("clicked", event("clicked", url="https://example.com/a?b=1"), EventType.CLICKED, None),
    ("unsubscribed", event("unsubscribed"), EventType.UNSUBSCRIBED, None),
    ("complained", event("complained"), EventType.COMPLAINED, None),
    ("stored", event("stored", storage={"key": "k"}), EventType.UNKNOWN, None),
    ("list member uploaded", event("list_member_uploaded"), EventType.UNKNOWN, None),
]


@pytest.mark.parametrize(("case", "data", "kind", "bounce"), MAPPING, ids=[m[0] for m in MAPPING])
def test_every_event_and_severity_is_mapped(
    case: str, data: dict[str, Any], kind: EventType, bounce: BounceKind | None
) -> None:
    parsed = parse(data)
    assert parsed.type is kind
    assert parsed.bounce is bounce
    assert parsed.provider_event == data["event"]
    assert parsed.raw == data


def test_dropped_events_carry_mailguns_reason() -> None:
    for reason in ("suppress-bounce", "suppress-unsubscribe", "suppress-complaint"):
        dropped = parse(
            failed("permanent", reason, message="Not delivering to a suppressed address")
        )
        assert dropped.reason == reason


def test_failure_details_are_kept() -> None:
    parsed = parse(
        failed("temporary", "generic", code="451", message="4.3.0 busy", **{"attempt-no": "3"})
    )
    assert parsed.reason == "451 4.3.0 busy"
    assert parsed.smtp_status == "4.3.0"
    assert parsed.attempt == 3
    described = parse(failed("permanent", "bounce", code=550, description="5.1.1 user unknown"))
    assert described.reason == "550 5.1.1 user unknown"
    bare = parse(failed("permanent", "old"))
    assert bare.reason == "old"
    assert bare.smtp_status is None


def test_rejected_without_a_recipient_reads_the_to_header() -> None:
    data = event("rejected", reject={"reason": "", "description": "too big"})
    del data["recipient"]
    data["message"]["headers"]["to"] = "Alice <alice@example.com>"
    parsed = parse(data)
    assert parsed.recipient == "alice@example.com"
    assert parsed.reason == "too big"


MACHINES: list[tuple[dict[str, Any], bool | None]] = [
    ({"bot": "apple", "user-agent": "Mozilla/5.0"}, True),
    ({"bot": "gmail"}, True),
    ({"bot": "generic", "user-agent": "Scanner/1.0"}, True),
    ({"bot": "", "user-agent": "Mozilla/5.0 (iPhone)"}, False),
    (
        {
            "user-agent": "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 "
            "(via ggpht.com GoogleImageProxy)"
        },
        True,
    ),
    (
        {"user-agent": "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html"},
        True,
    ),
    ({"user-agent": "Mozilla/5.0"}, True),
    ({"user-agent": "Mozilla/5.0 (Macintosh) Thunderbird/115.0"}, None),
    ({}, None),
]


@pytest.mark.parametrize(("client_info", "machine"), MACHINES)
def test_machine_opens_are_flagged(client_info: dict[str, Any], machine: bool | None) -> None:
    opened = parse(event("opened", **{"client-info": client_info}))
    assert opened.machine is machine
    assert opened.user_agent == client_info.get("user-agent")


def test_a_click_carries_its_url_and_bot_verdict() -> None:
    clicked = parse(
        event("clicked", url="https://example.com/x", **{"client-info": {"bot": "generic"}})
    )
    assert clicked.url == "https://example.com/x"
    assert clicked.machine is True
    assert parse(event("delivered", url="https://example.com/x")).url is None


def test_tracking_id_and_metadata_come_from_user_variables() -> None:
    variables = {"unimailtrack_id": "0190f1e2a3b4c5d6", "tenant": "acme", "n": 7, "flag": True}
    parsed = parse(event("delivered", **{"user-variables": variables}))
    assert parsed.tracking_id == "0190f1e2a3b4c5d6"
    assert parsed.metadata == {"tenant": "acme", "n": "7", "flag": "true"}
    empty = parse(event("accepted", **{"user-variables": []}))
    assert empty.metadata == {}
    assert empty.tracking_id is None


def test_message_ids_lose_their_angle_brackets() -> None:
    data = event("delivered")
    data["message"]["headers"]["message-id"] = " <20240115.abc@mg.example.com> "
    assert parse(data).message_id == "20240115.abc@mg.example.com"
    del data["message"]
    assert parse(data).message_id is None


def test_numeric_strings_are_accepted() -> None:
    parsed = parse(
        event(
            "delivered",
            timestamp="1705311003.5",
            **{"delivery-status": {"code": "250", "attempt-no": "2"}},
        )
    )
    assert parsed.timestamp == datetime(2024, 1, 15, 9, 30, 3, 500000, tzinfo=UTC)
    assert parsed.smtp_status == "250"
    assert parsed.attempt == 2


def test_event_ids_are_stable_and_distinct() -> None:
    data = event("opened")
    assert parse(data).event_id == parse(json.loads(json.dumps(data))).event_id
    assert parse(data).event_id != parse({**data, "recipient": "bob@example.com"}).event_id
    next_day = {**data, "timestamp": data["timestamp"] + 86400}
    assert parse(data).event_id != parse(next_day).event_id
    unknown = event("stored")
    assert parse(unknown).event_id == parse(unknown).event_id


def test_an_unknown_event_is_kept_whole() -> None:
    data = event("stored", storage={"url": "https://storage.example/k"})
    del data["recipient"]
    parsed = parse(data)
    assert parsed.type is EventType.UNKNOWN
    assert parsed.recipient == ""
    assert parsed.raw == data
    assert parsed.reason is not None
    assert "stored" in parsed.reason


def broken(**changes: Any) -> bytes:
    data = event("delivered")
    for key, value in changes.items():
        if value is None:
            del data[key.replace("_", "-")]
        else:
            data[key.replace("_", "-")] = value
    return json.dumps({"event-data": data}).encode()


PAYLOAD_ERRORS: list[tuple[str, bytes, str]] = [
    ("not json", b"<html>", "not valid JSON"),
    ("too deep", b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
    ("a list", b"[]", "not a JSON object"),
    ("no event-data", b'{"signature": {}}', "event-data"),
    ("event-data a string", b'{"event-data": "x"}', "event-data"),
    ("no event", broken(event=None), "event-data.event"),
    ("event a number", broken(event=3), "event-data.event"),
    ("no timestamp", broken(timestamp=None), "event-data.timestamp"),
    ("timestamp a word", broken(timestamp="soon"), "event-data.timestamp"),
    ("timestamp not finite", broken(timestamp="NaN"), "event-data.timestamp"),
    ("timestamp out of range", broken(timestamp=1e300), "event-data.timestamp"),
    ("timestamp a bool", broken(timestamp=True), "event-data.timestamp"),
    ("no recipient", broken(recipient=None), "event-data.recipient"),
    ("recipient a number", broken(recipient=5), "event-data.recipient"),
    ("message a list", broken(message=["x"]), "event-data.message"),
    ("tags a string", broken(tags="a,b"), "event-data.tags"),
    ("user-variables a string", broken(user_variables="x"), "event-data.user-variables"),
    ("delivery-status a list", broken(delivery_status=[1]), "event-data.delivery-status"),
    ("attempt-no a word", broken(delivery_status={"attempt-no": "two"}), "attempt-no"),
    ("attempt-no a fraction", broken(delivery_status={"attempt-no": 1.5}), "attempt-no"),
    ("failed without severity", broken(event="failed"), "event-data.severity"),
    ("form without event", b"recipient=a%40example.com&timestamp=1", "event"),
    ("form without timestamp", b"event=opened&recipient=a%40example.com", "timestamp"),
    ("form without recipient", b"event=opened&timestamp=1", "recipient"),
    ("form not utf-8", b"event=opened&x=\xff", "UTF-8"),
    (
        "form bad message-headers",
        b"event=delivered&recipient=a&timestamp=1&message-headers=%5B",
        "message-headers",
    ),
]


@pytest.mark.parametrize(
    ("case", "body", "names"), PAYLOAD_ERRORS, ids=[p[0] for p in PAYLOAD_ERRORS]
)
def test_an_unreadable_body_raises_a_payload_error_naming_the_field(
    case: str, body: bytes, names: str
) -> None:
    headers = FORM if case.startswith("form") else JSON
    with pytest.raises(PayloadError) as raised:
        unimailtrack.parse_webhook("mailgun", body, headers)
    assert names in str(raised.value)
    assert raised.value.provider == "mailgun"


def test_an_empty_multipart_body_is_a_payload_error() -> None:
    headers = {"Content-Type": "multipart/form-data; boundary=b"}
    with pytest.raises(PayloadError):
        unimailtrack.parse_webhook("mailgun", b"--b--\r\n", headers)
    with pytest.raises(PayloadError):
        unimailtrack.parse_webhook("mailgun", b"no parts here", headers)


# --------------------------------------------------------------------------- the signer


def test_the_signer_matches_the_documented_algorithm() -> None:
    signer = MailgunWebhookSigner(KEY)
    assert signer.signature(STAMP, TOKEN) == sign(KEY, str(STAMP), TOKEN)
    block = signer.signature_block()
    assert len(block["token"]) == 50
    assert block["signature"] == sign(KEY, block["timestamp"], block["token"])


def test_signed_bodies_verify() -> None:
    signer = MailgunWebhookSigner(KEY)
    adapter = mailgun()
    (parsed,) = adapter.unwrap(signer.json_body(event("opened")), JSON)
    assert parsed.type is EventType.OPENED
    form = signer.form_body({"event": "clicked", "recipient": "a@example.com"}, timestamp=STAMP)
    assert adapter.unwrap(form, FORM, now=at(STAMP))[0].type is EventType.CLICKED


def test_the_signer_needs_a_key() -> None:
    with pytest.raises(unimailtrack.ConfigurationError):
        MailgunWebhookSigner("")
