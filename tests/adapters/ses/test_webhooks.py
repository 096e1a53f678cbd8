"""Amazon SES webhooks: SNS signatures (every refusal), subscription confirmation, event mapping."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import respx
from hypothesis import given, settings
from hypothesis import strategies as st

import unimailtrack
from unimailtrack import (
    BounceKind,
    ConfigurationError,
    EventType,
    InvalidRequest,
    PayloadError,
    ProviderUnavailable,
    SignatureError,
)
from unimailtrack.adapters.ses import SESAdapter, SnsSigner, bounce_kind
from unimailtrack.adapters.ses.signing import (
    CertificateCache,
    canonical_string,
    certificate_url_ok,
    subscribe_url_ok,
)
from webhook_fixtures import fixtures_for, load_fixture

TOPIC = "arn:aws:sns:us-east-1:111122223333:ses-events"
OTHER_TOPIC = "arn:aws:sns:us-east-1:444455556666:someone-elses"
NOW = datetime(2024, 1, 15, 9, 32, tzinfo=UTC)
MESSAGE_ID = "0100018d0b7c2f31-8e2a6c44-1f0b-4d7e-b5a9-3c2d1e0f9a8b-000000"


@pytest.fixture(scope="module")
def signer() -> SnsSigner:
    return SnsSigner()


class Loader:
    """A certificate loader that serves a signer's certificate and remembers every URL."""

    def __init__(self, signer: SnsSigner) -> None:
        self.signer = signer
        self.urls: list[str] = []

    def __call__(self, url: str) -> bytes:
        self.urls.append(url)
        return self.signer.certificate_pem


@pytest.fixture
def loader(signer: SnsSigner) -> Loader:
    return Loader(signer)


@pytest.fixture
def make_adapter(loader: Loader) -> Callable[..., SESAdapter]:
    def make(**options: Any) -> SESAdapter:
        options.setdefault("certificate_loader", loader)
        return SESAdapter(region="us-east-1", **options)

    return make


def ses_event(kind: str, detail: dict[str, Any] | None = None, **mail: Any) -> dict[str, Any]:
    """An SES event-publishing record of type ``kind`` about one message."""
    event: dict[str, Any] = {
        "eventType": kind,
        "mail": {
            "timestamp": "2024-01-15T09:30:01.000Z",
            "source": "orders@mail.acme.example",
            "messageId": MESSAGE_ID,
            "destination": ["alice@example.com"],
            "tags": {
                "ses:operation": ["SendEmail"],
                "ses:configuration-set": ["unimailtrack-events"],
                "unimailtrack_id": ["01a2b3c4d5e6f708192a3b4c5d6e7f80"],
                "unimailtrack_category": ["receipts"],
                "unimailtrack_tag_vip": ["1"],
                "order_ref": ["ORD-17"],
            },
            **mail,
        },
    }
    if detail is not None:
        event[kind[0].lower() + kind[1:].replace(" ", "")] = detail
    return event


def notify(signer: SnsSigner, message: Any, **options: Any) -> tuple[bytes, dict[str, str]]:
    options.setdefault("timestamp", NOW - timedelta(minutes=1))
    return signer.notification(message, topic_arn=options.pop("topic_arn", TOPIC), **options)


def parse(signer: SnsSigner, event: dict[str, Any]) -> list[unimailtrack.EmailEvent]:
    body, headers = notify(signer, event)
    return unimailtrack.parse_webhook("ses", body, headers)


def signed_fixture(signer: SnsSigner, name: str) -> tuple[bytes, dict[str, str], dict[str, Any]]:
    case = load_fixture(name)
    envelope = json.loads(case["body"])
    signature = signer.signature(envelope, case["signing"]["signature_version"])
    body = case["body"].replace(case["signing"]["placeholder"], signature).encode()
    return body, case["headers"], case


def fixture_clock(case: dict[str, Any]) -> datetime:
    sent = datetime.fromisoformat(json.loads(case["body"])["Timestamp"])
    return sent + timedelta(minutes=1)


# --------------------------------------------------------------------------- fixtures


@pytest.mark.parametrize("name", fixtures_for("ses"))
def test_every_fixture_verifies_and_parses_as_expected(
    name: str, signer: SnsSigner, make_adapter: Callable[..., SESAdapter], loader: Loader
) -> None:
    body, headers, case = signed_fixture(signer, name)
    adapter = make_adapter(allowed_topic_arns=[TOPIC])
    events = adapter.unwrap(body, headers, now=fixture_clock(case))
    assert loader.urls == [json.loads(case["body"])["SigningCertURL"]]
    assert len(events) == len(case["expected"])
    for event, expected in zip(events, case["expected"], strict=True):
        assert event.provider == "ses"
        assert event.type == EventType(expected["type"])
        assert event.provider_event == expected["provider_event"]
        assert event.recipient == expected["recipient"]
        assert event.message_id == expected["message_id"]
        assert event.timestamp.tzinfo is not None
        assert event.raw["mail"]["messageId"] == expected["message_id"]
        if expected.get("severity") == "permanent":
            assert event.bounce is BounceKind.HARD
        if "feedback_type" in expected:
            assert event.reason == expected["feedback_type"]


def test_fixture_details_carry_over(signer: SnsSigner) -> None:
    body, headers, _ = signed_fixture(signer, "ses_sns_bounce_permanent_general.json")
    (bounce,) = unimailtrack.parse_webhook("ses", body, headers)
    assert bounce.smtp_status == "5.1.1"
    assert bounce.reason == "550 5.1.1 <gone@example.org>: Recipient address rejected: User unknown"
    assert bounce.timestamp == datetime(2024, 1, 15, 9, 30, 4, 901000, tzinfo=UTC)
    assert bounce.metadata == {"order_ref": "ORD-2024-00017", "tenant": "acme"}

    body, headers, _ = signed_fixture(signer, "ses_sns_delivery.json")
    (delivered,) = unimailtrack.parse_webhook("ses", body, headers)
    assert delivered.smtp_status == "2.0.0"
    assert delivered.timestamp == datetime(2024, 1, 15, 9, 30, 3, 412000, tzinfo=UTC)


@pytest.mark.parametrize("version", ["1", "2"])
def test_both_signature_versions_verify(
    version: str, signer: SnsSigner, make_adapter: Callable[..., SESAdapter]
) -> None:
    body, headers = notify(signer, ses_event("Send", {}), version=version)
    make_adapter().verify_webhook(body, headers, now=NOW)
    body, headers = signer.subscription_confirmation(
        topic_arn=TOPIC, version=version, timestamp=NOW
    )
    make_adapter().verify_webhook(body, headers, now=NOW)


def test_a_subject_is_signed_when_present(
    signer: SnsSigner, make_adapter: Callable[..., SESAdapter]
) -> None:
    body, headers = notify(signer, ses_event("Send", {}), subject="Amazon SES Email Event")
    assert b"Subject" in body
    make_adapter().verify_webhook(body, headers, now=NOW)
    tampered = body.replace(b"Amazon SES Email Event", b"Something else")
    with pytest.raises(SignatureError):
        make_adapter().verify_webhook(tampered, headers, now=NOW)


def test_canonical_string_follows_the_documented_order() -> None:
    envelope = {
        "Type": "Notification",
        "TopicArn": TOPIC,
        "Timestamp": "t",
        "MessageId": "m",
        "Message": "hello",
        "Signature": "ignored",
    }
    expected = (
        f"Message\nhello\nMessageId\nm\nTimestamp\nt\nTopicArn\n{TOPIC}\nType\nNotification\n"
    )
    assert canonical_string(envelope) == expected.encode()
    confirmation = {
        **envelope,
        "Type": "SubscriptionConfirmation",
        "SubscribeURL": "u",
        "Token": "k",
    }
    assert canonical_string(confirmation).decode().splitlines()[::2] == [
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ]
    with pytest.raises(ValueError, match="Token"):
        canonical_string({**confirmation, "Token": None})


# --------------------------------------------------------------------------- refusals


def resigned(signer: SnsSigner, body: bytes, **changes: Any) -> bytes:
    """``body`` with fields changed and signed again, so only the change can cause a refusal."""
    envelope = {**json.loads(body), **changes}
    envelope["Signature"] = signer.signature(envelope, envelope["SignatureVersion"])
    return json.dumps(envelope).encode()


@pytest.mark.parametrize(
    "url",
    [
        "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://sns.us-east-1.amazonaws.com.evil.example/SimpleNotificationService-abc.pem",
        "https://evil.example/sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://sns.us-east-1.amazonaws.com@evil.example/SimpleNotificationService-abc.pem",
        "https://user:pw@sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://evil.example\\@sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://sns.us-east-1.amazonaws.com:8443/SimpleNotificationService-abc.pem",
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem?x=1",
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem#frag",
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.txt",
        "https://xsns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://sns.us-east-1.amazonaws.co/SimpleNotificationService-abc.pem",
        "https://sqs.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://sns.us-east-1.evil.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://SNS.US-EAST-1.AMAZONAWS.COM/SimpleNotificationService-abc.pem",
        "https://sns.us-east-1.amazonaws.com%2F@evil.example/x.pem",
        "https://sns.us-east-1.amazonaws.com./SimpleNotificationService-abc.pem",
        " https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem\n",
        "//sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
        "",
        # the path: SNS's own shape only, nothing around it, nothing encoded
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem/../evil.pem",
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-x.pem/../evil.pem",
        "https://sns.us-east-1.amazonaws.com/evil/../SimpleNotificationService-abc.pem",
        "https://sns.us-east-1.amazonaws.com/./SimpleNotificationService-abc.pem",
        "https://sns.us-east-1.amazonaws.com//SimpleNotificationService-abc.pem",
        "https://sns.us-east-1.amazonaws.com/x/SimpleNotificationService-abc.pem",
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService.pem",
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-.pem",
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-xyz.pem",
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem.pem",
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem?.pem",
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem?a=b.pem",
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem#.pem",
        "https://sns.us-east-1.amazonaws.com/?x=/SimpleNotificationService-abc.pem",
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem;x.pem",
        "https://sns.us-east-1.amazonaws.com/x%2F..%2FSimpleNotificationService-abc.pem",
        "https://sns.us-east-1.amazonaws.com/%2FSimpleNotificationService-abc.pem",
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc%2Epem",
        "https://sns.us-east-1.amazonaws.com/%53impleNotificationService-abc.pem",
        "https://sns.us-east-1.amazonaws.com/simplenotificationservice-abc.pem",
        "https://sns.us-east-1.amazonaws.com\\SimpleNotificationService-abc.pem",
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-" + "a" * 65 + ".pem",
        # the region and partition: the TopicArn's own (arn:aws:sns:us-east-1:...)
        "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://sns.us-east-2.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://sns.us-east-1.amazonaws.com.cn/SimpleNotificationService-abc.pem",
        "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem",
        "https://sns.us-gov-west-1.amazonaws.com/SimpleNotificationService-abc.pem",
    ],
)
def test_certificates_are_only_fetched_from_sns_hosts(
    url: str, signer: SnsSigner, make_adapter: Callable[..., SESAdapter], loader: Loader
) -> None:
    body, headers = notify(signer, ses_event("Send", {}))
    body = resigned(signer, body, SigningCertURL=url)
    assert not certificate_url_ok(url, TOPIC)
    with pytest.raises(SignatureError):
        make_adapter().verify_webhook(body, headers, now=NOW)
    assert loader.urls == []


@pytest.mark.parametrize(
    ("url", "topic"),
    [
        (
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-6aad65c2f9911b05cd53efda11f913f9.pem",
            TOPIC,
        ),
        (
            "https://sns.eu-central-1.amazonaws.com/SimpleNotificationService-01d088a6f77103d0fe307c0069e40ed6.pem",
            "arn:aws:sns:eu-central-1:111122223333:events",
        ),
        (
            "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-53041e288642ce580860ab2866a6e8a9.pem",
            "arn:aws-cn:sns:cn-north-1:111122223333:events",
        ),
        (
            "https://sns.us-gov-west-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "arn:aws-us-gov:sns:us-gov-west-1:111122223333:events",
        ),
        (
            "https://sns.ap-southeast-2.amazonaws.com:443/SimpleNotificationService-ABC123.pem",
            "arn:aws:sns:ap-southeast-2:111122223333:events",
        ),
    ],
)
def test_sns_certificate_urls_in_every_partition_are_accepted(url: str, topic: str) -> None:
    assert certificate_url_ok(url, topic)


@pytest.mark.parametrize(
    ("url", "topic"),
    [
        # China: a .cn host for an aws-cn topic only, and the other way round
        (
            "https://sns.cn-north-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "arn:aws-cn:sns:cn-north-1:111122223333:events",
        ),
        (
            "https://sns.cn-northwest-1.amazonaws.com.cn/SimpleNotificationService-abc.pem",
            "arn:aws-cn:sns:cn-north-1:111122223333:events",
        ),
        # GovCloud: the topic's own GovCloud region
        (
            "https://sns.us-gov-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "arn:aws-us-gov:sns:us-gov-west-1:111122223333:events",
        ),
        (
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "arn:aws-us-gov:sns:us-gov-west-1:111122223333:events",
        ),
        # a region named under the wrong partition is no topic at all
        (
            "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem",
            "arn:aws:sns:cn-north-1:111122223333:events",
        ),
        (
            "https://sns.us-gov-west-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "arn:aws:sns:us-gov-west-1:111122223333:events",
        ),
        (
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "arn:aws-cn:sns:us-east-1:111122223333:events",
        ),
    ],
)
def test_the_certificate_host_is_in_the_topic_s_region_and_partition(url: str, topic: str) -> None:
    assert not certificate_url_ok(url, topic)


def test_an_expired_certificate_is_refused(make_adapter: Callable[..., SESAdapter]) -> None:
    expired = SnsSigner(not_after=NOW - timedelta(days=1), key_size=1024)
    body, headers = notify(expired, ses_event("Send", {}))
    with pytest.raises(SignatureError):
        make_adapter(certificate_loader=expired.load_certificate).verify_webhook(
            body, headers, now=NOW
        )


def test_a_certificate_not_yet_valid_is_refused(make_adapter: Callable[..., SESAdapter]) -> None:
    early = SnsSigner(not_before=NOW + timedelta(days=1), key_size=1024)
    body, headers = notify(early, ses_event("Send", {}))
    with pytest.raises(SignatureError):
        make_adapter(certificate_loader=early.load_certificate).verify_webhook(
            body, headers, now=NOW
        )


def test_another_key_is_refused(signer: SnsSigner, make_adapter: Callable[..., SESAdapter]) -> None:
    impostor = SnsSigner(key_size=1024)
    body, headers = notify(impostor, ses_event("Send", {}))
    with pytest.raises(SignatureError):
        make_adapter().verify_webhook(body, headers, now=NOW)  # serves the real signer's cert


def test_topics_outside_the_allow_list_are_refused(
    signer: SnsSigner, make_adapter: Callable[..., SESAdapter], loader: Loader
) -> None:
    body, headers = notify(signer, ses_event("Send", {}), topic_arn=OTHER_TOPIC)
    with pytest.raises(SignatureError):
        make_adapter(allowed_topic_arns=[TOPIC]).verify_webhook(body, headers, now=NOW)
    assert loader.urls == []  # refused before any certificate is fetched
    make_adapter(allowed_topic_arns=[TOPIC, OTHER_TOPIC]).verify_webhook(body, headers, now=NOW)
    make_adapter().verify_webhook(body, headers, now=NOW)  # no allow-list: any topic


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("x-amz-sns-message-type", "SubscriptionConfirmation"),
        ("x-amz-sns-message-type", None),
        ("x-amz-sns-topic-arn", OTHER_TOPIC),
        ("x-amz-sns-topic-arn", None),
        ("x-amz-sns-message-id", "another-id"),
        ("x-amz-sns-message-id", None),
    ],
)
def test_headers_must_agree_with_the_body(
    header: str,
    value: str | None,
    signer: SnsSigner,
    make_adapter: Callable[..., SESAdapter],
) -> None:
    body, headers = notify(signer, ses_event("Send", {}))
    headers = {k: v for k, v in headers.items() if k != header}
    if value is not None:
        headers[header.upper()] = value  # header names are case-insensitive
    with pytest.raises(SignatureError):
        make_adapter().verify_webhook(body, headers, now=NOW)


def test_header_names_are_case_insensitive(
    signer: SnsSigner, make_adapter: Callable[..., SESAdapter]
) -> None:
    body, headers = notify(signer, ses_event("Send", {}))
    make_adapter().verify_webhook(body, {k.upper(): v for k, v in headers.items()}, now=NOW)
    make_adapter().verify_webhook(body, httpx.Headers(headers), now=NOW)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda e: {**e, "Message": e["Message"].replace("alice@example.com", "eve@example.com")},
        lambda e: {**e, "MessageId": "0" * 36},
        lambda e: {**e, "Timestamp": "2024-01-15T09:31:30.000Z"},
        lambda e: {**e, "Subject": "added"},
        lambda e: {**e, "Signature": e["Signature"][:-8] + "AAAAAAA="},
        lambda e: {**e, "Signature": "not base64!"},
        lambda e: {**e, "SignatureVersion": "3"},
        lambda e: {**e, "SignatureVersion": "1"},
        lambda e: {k: v for k, v in e.items() if k != "Signature"},
        lambda e: {k: v for k, v in e.items() if k != "Message"},
        lambda e: {**e, "Type": "Surprise"},
    ],
)
def test_a_tampered_body_is_refused(
    tamper: Callable[[dict[str, Any]], dict[str, Any]],
    signer: SnsSigner,
    make_adapter: Callable[..., SESAdapter],
) -> None:
    body, headers = notify(signer, ses_event("Send", {}))
    changed = tamper(json.loads(body))
    headers = {**headers, "x-amz-sns-message-id": changed["MessageId"]}
    headers["x-amz-sns-message-type"] = changed["Type"]
    with pytest.raises(SignatureError):
        make_adapter().verify_webhook(json.dumps(changed).encode(), headers, now=NOW)


@pytest.mark.parametrize("body", [b"not json", b"[]", b'"text"', b"\xff\xfe"])
def test_unreadable_bodies_are_refused(
    body: bytes, make_adapter: Callable[..., SESAdapter]
) -> None:
    with pytest.raises(SignatureError):
        make_adapter().verify_webhook(body, {}, now=NOW)


def test_stale_and_future_messages_are_refused(
    signer: SnsSigner, make_adapter: Callable[..., SESAdapter]
) -> None:
    body, headers = notify(signer, ses_event("Send", {}), timestamp=NOW - timedelta(hours=2))
    with pytest.raises(SignatureError):
        make_adapter().verify_webhook(body, headers, now=NOW)
    make_adapter(max_message_age=None).verify_webhook(body, headers, now=NOW)
    body, headers = notify(signer, ses_event("Send", {}), timestamp=NOW + timedelta(minutes=30))
    with pytest.raises(SignatureError):
        make_adapter().verify_webhook(body, headers, now=NOW)


def test_raw_delivery_is_refused_unless_allowed(make_adapter: Callable[..., SESAdapter]) -> None:
    raw = json.dumps(ses_event("Send", {})).encode()
    headers = {"x-amz-sns-message-id": "raw-1", "x-amz-sns-rawdelivery": "true"}
    with pytest.raises(SignatureError):
        make_adapter().verify_webhook(raw, headers, now=NOW)
    with pytest.raises(SignatureError):
        make_adapter().verify_webhook(raw, {}, now=NOW)  # detected without the header too
    make_adapter(allow_raw_delivery=True).verify_webhook(raw, headers, now=NOW)
    (event,) = unimailtrack.parse_webhook("ses", raw, headers)
    assert event.type is EventType.ACCEPTED
    assert event.event_id == unimailtrack.parse_webhook("ses", raw, headers)[0].event_id


def test_a_failing_loader_refuses_and_logs_why(
    signer: SnsSigner, make_adapter: Callable[..., SESAdapter], caplog: pytest.LogCaptureFixture
) -> None:
    def broken(url: str) -> bytes:
        raise OSError("network down")

    body, headers = notify(signer, ses_event("Send", {}))
    with (
        caplog.at_level(logging.WARNING, "unimailtrack.webhooks"),
        pytest.raises(SignatureError) as raised,
    ):
        make_adapter(certificate_loader=broken).verify_webhook(body, headers, now=NOW)
    assert "network down" in caplog.text
    assert "network down" not in str(raised.value)  # the caller learns nothing of the cause
    with pytest.raises(SignatureError):
        make_adapter(certificate_loader=lambda url: b"not a certificate").verify_webhook(
            body, headers, now=NOW
        )


def test_trusted_certificate_urls_are_exact(
    signer: SnsSigner, make_adapter: Callable[..., SESAdapter], loader: Loader
) -> None:
    local = "http://127.0.0.1:4566/sns-cert.pem"
    body, headers = notify(signer, ses_event("Send", {}))
    body = resigned(signer, body, SigningCertURL=local)
    make_adapter(trusted_certificate_urls=[local]).verify_webhook(body, headers, now=NOW)
    assert loader.urls == [local]
    with pytest.raises(SignatureError):
        make_adapter(trusted_certificate_urls=[local + "x"]).verify_webhook(body, headers, now=NOW)


def test_verification_can_be_turned_off_explicitly(make_adapter: Callable[..., SESAdapter]) -> None:
    make_adapter(verify_webhooks=False).verify_webhook(b"anything", {}, now=NOW)


# --------------------------------------------------------------------------- certificate cache


def test_certificates_are_cached_bounded_and_expire(signer: SnsSigner, loader: Loader) -> None:
    clock = [0.0]
    cache = CertificateCache(loader, max_entries=2, ttl=60.0, clock=lambda: clock[0])
    a, b, c = (f"https://sns.us-east-1.amazonaws.com/{n}.pem" for n in "abc")
    cache.get(a)
    cache.get(a)
    assert loader.urls == [a]
    cache.get(b)
    cache.get(a)  # a is now the most recently used
    cache.get(c)  # so b is the one evicted
    assert len(cache) == 2
    cache.get(a)
    cache.get(b)
    assert loader.urls == [a, b, c, b]
    clock[0] = 61.0
    cache.get(b)
    assert loader.urls == [a, b, c, b, b]


def test_one_fetch_serves_many_messages(
    signer: SnsSigner, make_adapter: Callable[..., SESAdapter], loader: Loader
) -> None:
    adapter = make_adapter()
    for _ in range(3):
        body, headers = notify(signer, ses_event("Send", {}))
        adapter.verify_webhook(body, headers, now=NOW)
    assert len(loader.urls) == 1


# --------------------------------------------------------------------------- subscriptions

SUBSCRIPTION_ARN = f"{TOPIC}:6f1b0c2e-4c1d-4a5e-9f0a-2b7d3c9e8a11"
CONFIRMED = (
    "<ConfirmSubscriptionResponse><ConfirmSubscriptionResult>"
    f"<SubscriptionArn>{SUBSCRIPTION_ARN}</SubscriptionArn>"
    "</ConfirmSubscriptionResult></ConfirmSubscriptionResponse>"
)


def test_the_fixture_confirmation_is_verified_then_confirmed(
    signer: SnsSigner, make_adapter: Callable[..., SESAdapter]
) -> None:
    body, headers, case = signed_fixture(signer, "ses_sns_subscription_confirmation.json")
    url = json.loads(case["body"])["SubscribeURL"]
    adapter = make_adapter(allowed_topic_arns=[TOPIC])
    assert adapter.parse_webhook(body, headers) == []
    with respx.mock(assert_all_called=True) as router:
        route = router.get(url).mock(return_value=httpx.Response(200, text=CONFIRMED))
        assert adapter.confirm_subscription(body, headers, now=fixture_clock(case)) == (
            SUBSCRIPTION_ARN
        )
    assert route.call_count == 1
    assert str(route.calls[0].request.url) == url


def test_confirmation_async(signer: SnsSigner, make_adapter: Callable[..., SESAdapter]) -> None:
    body, headers = signer.subscription_confirmation(topic_arn=TOPIC, timestamp=NOW)
    adapter = make_adapter(allowed_topic_arns=[TOPIC])

    async def confirm() -> str:
        async with adapter:
            return await adapter.aconfirm_subscription(body, headers, now=NOW)

    with respx.mock(assert_all_called=True) as router:
        router.get(url__startswith="https://sns.us-east-1.amazonaws.com/").mock(
            return_value=httpx.Response(200, text=CONFIRMED)
        )
        assert asyncio.run(confirm()) == SUBSCRIPTION_ARN


def test_confirmation_needs_an_allow_list(
    signer: SnsSigner, make_adapter: Callable[..., SESAdapter]
) -> None:
    body, headers = signer.subscription_confirmation(topic_arn=TOPIC, timestamp=NOW)
    with respx.mock(assert_all_mocked=True) as router:
        with pytest.raises(ConfigurationError, match="allowed_topic_arns"):
            make_adapter().confirm_subscription(body, headers, now=NOW)
        with pytest.raises(SignatureError):
            make_adapter(allowed_topic_arns=[OTHER_TOPIC]).confirm_subscription(
                body, headers, now=NOW
            )
    assert router.calls.call_count == 0


def test_confirmation_is_verified_even_with_verification_off(
    signer: SnsSigner, make_adapter: Callable[..., SESAdapter]
) -> None:
    body, headers = signer.subscription_confirmation(topic_arn=TOPIC, timestamp=NOW)
    forged = body.replace(b"ConfirmSubscription&", b"ConfirmSubscription&x=1&")
    adapter = make_adapter(allowed_topic_arns=[TOPIC], verify_webhooks=False)
    with respx.mock(assert_all_mocked=True) as router, pytest.raises(SignatureError):
        adapter.confirm_subscription(forged, headers, now=NOW)
    assert router.calls.call_count == 0


@pytest.mark.parametrize(
    "subscribe_url",
    [
        f"https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=T",
        f"https://sns.us-east-1.amazonaws.com.cn/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=T",
        f"https://evil.example/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=T",
        f"http://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=T",
        f"https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&TopicArn={TOPIC}&Token=T",
        f"https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn={OTHER_TOPIC}&Token=T",
        f"https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=U",
        f"https://sns.us-east-1.amazonaws.com@evil.example/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=T",
        f"https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&Action=ConfirmSubscription&TopicArn={TOPIC}&Token=T",
    ],
)
def test_a_subscribe_url_elsewhere_is_never_fetched(
    subscribe_url: str, signer: SnsSigner, make_adapter: Callable[..., SESAdapter]
) -> None:
    body, headers = signer.subscription_confirmation(topic_arn=TOPIC, token="T", timestamp=NOW)
    body = resigned(signer, body, SubscribeURL=subscribe_url)
    envelope = json.loads(body)
    assert not subscribe_url_ok(subscribe_url, envelope)
    make_adapter().verify_webhook(body, headers, now=NOW)  # the signature itself is fine
    with respx.mock(assert_all_mocked=True) as router, pytest.raises(SignatureError):
        make_adapter(allowed_topic_arns=[TOPIC]).confirm_subscription(body, headers, now=NOW)
    assert router.calls.call_count == 0


def test_china_topics_confirm_on_the_china_host(signer: SnsSigner) -> None:
    topic = "arn:aws-cn:sns:cn-north-1:111122223333:ses-events"
    body, _ = signer.subscription_confirmation(topic_arn=topic, token="T", timestamp=NOW)
    envelope = json.loads(body)
    assert envelope["SubscribeURL"].startswith("https://sns.cn-north-1.amazonaws.com.cn/?")
    assert subscribe_url_ok(envelope["SubscribeURL"], envelope)


def test_only_a_subscription_confirmation_confirms(
    signer: SnsSigner, make_adapter: Callable[..., SESAdapter]
) -> None:
    body, headers = notify(signer, ses_event("Send", {}))
    with pytest.raises(PayloadError):
        make_adapter(allowed_topic_arns=[TOPIC]).confirm_subscription(body, headers, now=NOW)
    body, headers = signer.subscription_confirmation(
        topic_arn=TOPIC, timestamp=NOW, kind="UnsubscribeConfirmation"
    )
    make_adapter().verify_webhook(body, headers, now=NOW)
    assert make_adapter().parse_webhook(body, headers) == []
    with pytest.raises(PayloadError):
        make_adapter(allowed_topic_arns=[TOPIC]).confirm_subscription(body, headers, now=NOW)


@pytest.mark.parametrize(
    ("status", "error"),
    [(500, ProviderUnavailable), (429, ProviderUnavailable), (403, InvalidRequest)],
)
def test_a_refused_confirmation_raises(
    status: int,
    error: type[Exception],
    signer: SnsSigner,
    make_adapter: Callable[..., SESAdapter],
) -> None:
    body, headers = signer.subscription_confirmation(topic_arn=TOPIC, timestamp=NOW)
    with respx.mock() as router:
        router.get(url__startswith="https://sns.us-east-1.amazonaws.com/").mock(
            return_value=httpx.Response(status, text="<ErrorResponse/>")
        )
        with pytest.raises(error):
            make_adapter(allowed_topic_arns=[TOPIC]).confirm_subscription(body, headers, now=NOW)


# --------------------------------------------------------------------------- event mapping


def test_send_is_accepted_with_tracking_tags_and_metadata(signer: SnsSigner) -> None:
    (event,) = parse(signer, ses_event("Send", {}))
    assert event.type is EventType.ACCEPTED
    assert event.recipient == "alice@example.com"
    assert event.message_id == MESSAGE_ID
    assert event.tracking_id == "01a2b3c4d5e6f708192a3b4c5d6e7f80"
    assert event.tags == ["receipts", "vip"]
    assert event.metadata == {"order_ref": "ORD-17"}
    assert event.timestamp == datetime(2024, 1, 15, 9, 30, 1, tzinfo=UTC)


def test_delivery_per_recipient(signer: SnsSigner) -> None:
    delivery = {
        "timestamp": "2024-01-15T09:30:03.412Z",
        "processingTimeMillis": 2412,
        "recipients": ["alice@example.com", "bob@example.com"],
        "smtpResponse": "250 2.6.0 Message received",
        "reportingMTA": "a8-30.smtp-out.amazonses.com",
    }
    events = parse(signer, ses_event("Delivery", delivery))
    assert [e.recipient for e in events] == ["alice@example.com", "bob@example.com"]
    assert all(e.type is EventType.DELIVERED and e.smtp_status == "2.6.0" for e in events)
    assert events[0].reason == "250 2.6.0 Message received"
    assert events[0].raw["delivery"]["processingTimeMillis"] == 2412


def bounce(bounce_type: str, subtype: str, **recipient: Any) -> dict[str, Any]:
    return {
        "bounceType": bounce_type,
        "bounceSubType": subtype,
        "bouncedRecipients": [{"emailAddress": "alice@example.com", **recipient}],
        "timestamp": "2024-01-15T09:30:04.901Z",
        "feedbackId": "0100018d0b7d2c01-5c6d7e8f-000000",
    }


@pytest.mark.parametrize(
    ("detail", "kind", "bounce_as"),
    [
        (bounce("Permanent", "General", status="5.1.1"), EventType.BOUNCED, BounceKind.HARD),
        (bounce("Permanent", "NoEmail"), EventType.BOUNCED, BounceKind.HARD),
        (bounce("Transient", "MailboxFull", status="5.2.2"), EventType.BOUNCED, BounceKind.SOFT),
        (bounce("Transient", "General", status="4.2.2"), EventType.BOUNCED, BounceKind.SOFT),
        (bounce("Transient", "General", status="5.1.1"), EventType.BOUNCED, BounceKind.HARD),
        (
            bounce("Transient", "General", diagnosticCode="smtp; 550 5.1.1 no such user"),
            EventType.BOUNCED,
            BounceKind.HARD,
        ),
        (bounce("Undetermined", "Undetermined"), EventType.BOUNCED, BounceKind.UNDETERMINED),
        (
            bounce("Undetermined", "Undetermined", status="5.1.2"),
            EventType.BOUNCED,
            BounceKind.HARD,
        ),
        (bounce("Transient", "ContentRejected"), EventType.BOUNCED, BounceKind.BLOCK),
        (bounce("Transient", "AttachmentRejected"), EventType.BOUNCED, BounceKind.BLOCK),
        (bounce("Transient", "General", status="5.7.1"), EventType.BOUNCED, BounceKind.BLOCK),
        (
            bounce("Transient", "MessageTooLarge", status="5.3.4"),
            EventType.BOUNCED,
            BounceKind.SOFT,
        ),
        (bounce("Permanent", "Suppressed"), EventType.DROPPED, BounceKind.HARD),
        (bounce("Permanent", "OnAccountSuppressionList"), EventType.DROPPED, None),
    ],
)
def test_bounce_mapping_and_refinement(
    detail: dict[str, Any], kind: EventType, bounce_as: BounceKind | None, signer: SnsSigner
) -> None:
    (event,) = parse(signer, ses_event("Bounce", detail))
    assert event.type is kind
    assert event.bounce is bounce_as
    assert event.timestamp == datetime(2024, 1, 15, 9, 30, 4, 901000, tzinfo=UTC)
    assert event.reason


def test_bounce_kind_refinement_rules() -> None:
    assert bounce_kind("Permanent", "General", None) is BounceKind.HARD
    assert bounce_kind("Permanent", "General", "5.7.1") is BounceKind.HARD
    assert bounce_kind("Permanent", "General", "5.2.2") is BounceKind.SOFT
    assert bounce_kind("Undetermined", "Undetermined", "4.4.7") is BounceKind.UNDETERMINED
    assert bounce_kind("Something new", "", None) is BounceKind.UNDETERMINED


def test_a_bounce_fans_out_with_distinct_stable_ids(signer: SnsSigner) -> None:
    detail = bounce("Permanent", "General", status="5.1.1")
    detail["bouncedRecipients"].append({"emailAddress": "bob@example.com", "status": "5.1.1"})
    body, headers = notify(signer, ses_event("Bounce", detail))
    first = unimailtrack.parse_webhook("ses", body, headers)
    again = unimailtrack.parse_webhook("ses", body, headers)
    assert [e.recipient for e in first] == ["alice@example.com", "bob@example.com"]
    assert len({e.event_id for e in first}) == 2
    assert [e.event_id for e in first] == [e.event_id for e in again]
    # The same SES event under another SNS message id is the same event: a duplicate.
    resent, _ = notify(signer, ses_event("Bounce", detail))
    assert [e.event_id for e in unimailtrack.parse_webhook("ses", resent)] == [
        e.event_id for e in first
    ]
    # Another bounce of the same message (SES gives each its own feedback id) is not.
    other, _ = notify(signer, ses_event("Bounce", {**detail, "feedbackId": "0100-other"}))
    assert unimailtrack.parse_webhook("ses", other)[0].event_id != first[0].event_id


def test_event_ids_differ_by_event_type(signer: SnsSigner) -> None:
    body, _ = notify(signer, ses_event("Send", {}), message_id="same-sns-id")
    send = unimailtrack.parse_webhook("ses", body)[0]
    body, _ = notify(
        signer, ses_event("Reject", {"reason": "Bad content"}), message_id="same-sns-id"
    )
    reject = unimailtrack.parse_webhook("ses", body)[0]
    assert send.event_id != reject.event_id


def test_complaints(signer: SnsSigner) -> None:
    complaint = {
        "complainedRecipients": [{"emailAddress": "alice@example.com"}],
        "timestamp": "2024-01-16T08:00:00.000Z",
        "feedbackId": "0100018d10aa0001-000000",
        "complaintSubType": None,
        "userAgent": "ISP-FBL/2.1",
        "complaintFeedbackType": "abuse",
    }
    (event,) = parse(signer, ses_event("Complaint", complaint))
    assert (event.type, event.reason, event.user_agent) == (
        EventType.COMPLAINED,
        "abuse",
        "ISP-FBL/2.1",
    )
    assert event.timestamp == datetime(2024, 1, 16, 8, tzinfo=UTC)
    (suppressed,) = parse(
        signer,
        ses_event("Complaint", {**complaint, "complaintSubType": "OnAccountSuppressionList"}),
    )
    assert suppressed.type is EventType.DROPPED
    (withdrawn,) = parse(
        signer, ses_event("Complaint", {**complaint, "complaintFeedbackType": "not-spam"})
    )
    assert withdrawn.type is EventType.UNKNOWN
    assert withdrawn.raw["complaint"]["complaintFeedbackType"] == "not-spam"


def test_reject_and_rendering_failure(signer: SnsSigner) -> None:
    (reject,) = parse(signer, ses_event("Reject", {"reason": "Bad content"}))
    assert (reject.type, reject.reason) == (EventType.REJECTED, "Bad content")
    failure = {"templateName": "Welcome", "errorMessage": "Attribute 'name' is not present"}
    event = ses_event("Rendering Failure")
    event["failure"] = failure
    (failed,) = parse(signer, event)
    assert failed.type is EventType.FAILED
    assert failed.reason == "template Welcome: Attribute 'name' is not present"


def test_delivery_delay_is_deferred_per_delayed_recipient(signer: SnsSigner) -> None:
    delay = {
        "delayType": "MailboxFull",
        "expirationTime": "2024-01-16T09:30:00.000Z",
        "delayedRecipients": [
            {
                "emailAddress": "alice@example.com",
                "status": "4.2.2",
                "diagnosticCode": "smtp; 452 4.2.2 Mailbox full",
            }
        ],
        "reportingMTA": "a8-70.smtp-out.amazonses.com",
        "timestamp": "2024-01-15T10:00:00.000Z",
    }
    event = ses_event("DeliveryDelay")
    event["deliveryDelay"] = delay
    (deferred,) = parse(signer, event)
    assert deferred.type is EventType.DEFERRED
    assert deferred.bounce is BounceKind.SOFT
    assert deferred.smtp_status == "4.2.2"
    assert deferred.reason == (
        "MailboxFull: 452 4.2.2 Mailbox full (reported by a8-70.smtp-out.amazonses.com)"
    )
    assert deferred.timestamp == datetime(2024, 1, 15, 10, tzinfo=UTC)
    event["deliveryDelay"] = {**delay, "delayType": "IPFailure"}
    assert parse(signer, event)[0].bounce is BounceKind.BLOCK
    event["deliveryDelay"] = {**delay, "delayType": "SendingDeferral"}
    assert parse(signer, event)[0].bounce is None


def test_open_and_click(signer: SnsSigner) -> None:
    opened = {"ipAddress": "192.0.2.1", "timestamp": "2024-01-15T11:00:00.000Z", "userAgent": "UA"}
    (event,) = parse(signer, ses_event("Open", opened))
    assert (event.type, event.user_agent) == (EventType.OPENED, "UA")
    assert event.timestamp == datetime(2024, 1, 15, 11, tzinfo=UTC)
    click = {**opened, "link": "https://acme.example/order/17", "linkTags": {"id": ["a"]}}
    (event,) = parse(signer, ses_event("Click", click))
    assert (event.type, event.url) == (EventType.CLICKED, "https://acme.example/order/17")


def test_opens_of_multi_recipient_mail_reach_every_destination(signer: SnsSigner) -> None:
    opened = {"timestamp": "2024-01-15T11:00:00.000Z", "userAgent": "UA"}
    event = ses_event("Open", opened, destination=["a@example.com", "b@example.com"])
    assert [e.recipient for e in parse(signer, event)] == ["a@example.com", "b@example.com"]


def preferences(unsubscribe_all: bool, **topics: str) -> dict[str, Any]:
    return {
        "unsubscribeAll": unsubscribe_all,
        "topicSubscriptionStatus": [
            {"topicName": t, "subscriptionStatus": s} for t, s in topics.items()
        ],
    }


@pytest.mark.parametrize(
    ("old", "new", "kind"),
    [
        (preferences(False, news="OptIn"), preferences(True, news="OptIn"), EventType.UNSUBSCRIBED),
        (
            preferences(False, news="OptIn"),
            preferences(False, news="OptOut"),
            EventType.UNSUBSCRIBED,
        ),
        (preferences(True), preferences(False), EventType.RESUBSCRIBED),
        (
            preferences(False, news="OptOut"),
            preferences(False, news="OptIn"),
            EventType.RESUBSCRIBED,
        ),
        (
            {**preferences(False), "topicDefaultSubscriptionStatus": "OptOut"},
            preferences(False, news="OptIn"),
            EventType.RESUBSCRIBED,
        ),
        (preferences(False, news="OptIn"), preferences(False, news="OptIn"), EventType.UNKNOWN),
    ],
)
def test_subscription_changes(
    old: dict[str, Any], new: dict[str, Any], kind: EventType, signer: SnsSigner
) -> None:
    subscription = {
        "contactList": "Customers",
        "timestamp": "2024-01-15T12:00:00.000Z",
        "source": "UnsubscribeHeader",
        "newTopicPreferences": new,
        "oldTopicPreferences": old,
    }
    (event,) = parse(signer, ses_event("Subscription", subscription))
    assert event.type is kind
    if kind is not EventType.UNKNOWN:
        assert event.recipient == "alice@example.com"
        assert "Customers" in (event.reason or "")
        assert event.timestamp == datetime(2024, 1, 15, 12, tzinfo=UTC)


def test_unmapped_and_unreadable_events_are_kept_as_unknown(signer: SnsSigner) -> None:
    received = ses_event("Received")
    (event,) = parse(signer, received)
    assert event.type is EventType.UNKNOWN
    assert event.provider_event == "Received"
    assert event.recipient == "alice@example.com"
    assert event.raw == received
    (broken,) = parse(signer, ses_event("Bounce", {"bounceType": "Permanent"}))
    assert broken.type is EventType.UNKNOWN
    assert "bouncedRecipients" in (broken.reason or "")
    (untyped,) = parse(signer, {"mail": {"messageId": MESSAGE_ID}})
    assert untyped.type is EventType.UNKNOWN


def test_an_event_type_ses_adds_later_is_unknown_for_each_destination(signer: SnsSigner) -> None:
    later = ses_event("Quarantine", destination=["alice@example.com", "bob@example.com"])
    events = parse(signer, later)
    assert [e.recipient for e in events] == ["alice@example.com", "bob@example.com"]
    for event in events:
        assert event.type is EventType.UNKNOWN
        assert event.provider_event == "Quarantine"
        assert "not mapped" in (event.reason or "")
        # The mail's ids come along, so each reaches its message's timeline.
        assert event.message_id == MESSAGE_ID
        assert event.tracking_id == "01a2b3c4d5e6f708192a3b4c5d6e7f80"
        assert event.raw == later
    assert len({e.event_id for e in events}) == 2
    assert [e.event_id for e in parse(signer, later)] == [e.event_id for e in events]


def test_an_unknown_type_whose_mail_names_no_destination_is_kept_once(signer: SnsSigner) -> None:
    (event,) = parse(signer, ses_event("Quarantine", destination=[]))
    assert event.type is EventType.UNKNOWN
    assert event.recipient == ""


def test_legacy_notifications_use_notification_type(signer: SnsSigner) -> None:
    event = ses_event("Bounce", bounce("Permanent", "General"))
    event["notificationType"] = event.pop("eventType")
    (bounced,) = parse(signer, event)
    assert bounced.type is EventType.BOUNCED
    assert bounced.provider_event == "Bounce"


@pytest.mark.parametrize(
    "message",
    [
        "Successfully validated SNS topic for Amazon SES event publishing.",
        {"notificationType": "AmazonSnsSubscriptionSucceeded", "message": "You have subscribed"},
    ],
)
def test_ses_control_notifications_parse_to_nothing(message: Any, signer: SnsSigner) -> None:
    body, headers = notify(signer, message)
    assert unimailtrack.parse_webhook("ses", body, headers) == []


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b"\xff",
        b'{"Type": "Notification"}',
        b'{"Type": "Notification", "Message": "not json"}',
        b'{"Type": "Notification", "Message": "[1]"}',
        b'{"Type": "Notification", "Message": "{\\"eventType\\": \\"Send\\"}"}',
        b'{"Type": "Notification", "Message": "{\\"eventType\\": \\"Send\\", \\"mail\\": {}}"}',
        b'{"Type": "Surprise"}',
        b"{}",
    ],
)
def test_unreadable_bodies_raise_payload_error(body: bytes) -> None:
    with pytest.raises(PayloadError):
        unimailtrack.parse_webhook("ses", body)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                ["Type", "Message", "mail", "messageId", "eventType", "bounce", "destination", "x"]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(envelope=JSON, message=JSON)
def test_parsing_never_raises_anything_but_payload_error(envelope: Any, message: Any) -> None:
    if isinstance(envelope, dict) and envelope.get("Type") == "Notification":
        envelope["Message"] = json.dumps(message)
    try:
        events = unimailtrack.parse_webhook("ses", json.dumps(envelope).encode())
    except PayloadError:
        return
    assert all(e.timestamp.tzinfo is not None for e in events)


@settings(max_examples=200, deadline=None)
@given(envelope=JSON)
def test_verification_never_raises_anything_but_signature_error(envelope: Any) -> None:
    adapter = SESAdapter(region="us-east-1", certificate_loader=lambda url: b"")
    headers = {"x-amz-sns-message-type": "Notification", "x-amz-sns-topic-arn": TOPIC}
    with pytest.raises(SignatureError):
        adapter.verify_webhook(json.dumps(envelope).encode(), headers, now=NOW)
