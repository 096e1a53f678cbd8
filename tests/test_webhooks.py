"""The webhook receiver: each answer, the callbacks, SNS subscription confirmations.

Requests are real: the memory adapter signs its bodies with HMAC and the SES adapter checks
RSA signatures made by ``SnsSigner``. Store behaviour lives in test_webhooks_store.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from unimailtrack import ConfigurationError, Email, EmailEvent, EventType, Mailer
from unimailtrack._http import HttpxAsyncTransport, HttpxTransport
from unimailtrack.adapters import MemoryAdapter, SESAdapter
from unimailtrack.adapters.ses.signing import UNSUBSCRIBE_CONFIRMATION, SnsSigner
from unimailtrack.webhooks import WebhookReceiver, WebhookResponse

TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-events"
OTHER_TOPIC = "arn:aws:sns:eu-west-1:123456789012:someone-else"

INVITE = Email(
    sender="Events <events@example.com>",
    to=["ann@example.com", "bob@example.org"],
    subject="Invite",
    text="Come",
)


def signed(memory: MemoryAdapter, body: bytes) -> dict[str, str]:
    """Headers that sign an arbitrary ``body`` as the memory provider does."""
    stamp = str(int(datetime.now(UTC).timestamp()))
    mac = hmac.new(memory.webhook_secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256)
    return {"X-Unimailtrack-Signature": f"t={stamp},v1={mac.hexdigest()}"}


def sent(memory: MemoryAdapter) -> list[str]:
    return [r.tracking_id for r in memory.send(INVITE).recipients]


def both(
    receiver: WebhookReceiver, provider: str, headers: dict[str, str], body: bytes
) -> tuple[WebhookResponse, WebhookResponse]:
    """The sync and the async answer to the same request."""
    return (
        receiver.handle(provider, headers, body),
        asyncio.run(receiver.ahandle(provider, headers, body)),
    )


# --------------------------------------------------------------------------- answers


def test_a_signed_batch_is_answered_200_and_every_event_reaches_on_event() -> None:
    memory = MemoryAdapter()
    ann, bob = sent(memory)
    seen: list[EmailEvent] = []
    receiver = WebhookReceiver({"memory": memory}, on_event=seen.append)
    body, headers = memory.webhook(
        memory.scenario(ann, "bounce") + memory.scenario(bob, "delivered")
    )

    sync, asynchronous = both(receiver, "memory", headers, body)

    for answer in (sync, asynchronous):
        assert answer.status == 200
        assert answer.json() == {"ok": True, "events": 4}
        assert answer.headers["content-type"] == "application/json"
    kinds = [EventType.PROCESSED, EventType.BOUNCED, EventType.PROCESSED, EventType.DELIVERED]
    assert [e.type for e in seen] == kinds * 2
    assert {e.tracking_id for e in seen} == {ann, bob}


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda b, h: (b, {"Content-Type": "application/json"}), id="no-signature"),
        pytest.param(lambda b, h: (b.replace(b"bounced", b"opened"), h), id="body-changed"),
        pytest.param(lambda b, h: (b, {**h, "X-Unimailtrack-Signature": "t=1,v1=00"}), id="forged"),
    ],
)
def test_a_request_that_fails_verification_is_answered_401_and_reaches_nobody(
    tamper: Callable[[bytes, dict[str, str]], tuple[bytes, dict[str, str]]],
) -> None:
    memory = MemoryAdapter()
    ann, _ = sent(memory)
    seen: list[EmailEvent] = []
    receiver = WebhookReceiver({"memory": memory}, on_event=seen.append)
    body, headers = tamper(*memory.webhook(memory.scenario(ann, "bounce")))

    for answer in both(receiver, "memory", headers, body):
        assert answer.status == 401
        assert answer.json()["error"] == "signature"
        assert memory.webhook_secret not in answer.body.decode()
    assert seen == []


def test_a_stale_request_is_refused_unless_the_clock_is_set_to_its_time() -> None:
    memory = MemoryAdapter()
    ann, _ = sent(memory)
    receiver = WebhookReceiver({"memory": memory})
    then = datetime(2024, 1, 15, 9, 30, tzinfo=UTC)
    body, headers = memory.webhook(memory.scenario(ann, "delivered"), timestamp=then)

    assert receiver.handle("memory", headers, body).status == 401
    replayed = receiver.handle("memory", headers, body, now=then + timedelta(seconds=30))
    assert replayed.status == 200


@pytest.mark.parametrize(
    "body",
    [b"{not json", b'{"events": {}}', b"[1, 2", b"", b"\xff\xfe"],
    ids=["truncated", "wrong-shape", "cut-array", "empty", "not-utf8"],
)
def test_a_signed_body_that_cannot_be_read_is_answered_400(body: bytes) -> None:
    memory = MemoryAdapter()
    receiver = WebhookReceiver({"memory": memory})
    headers = signed(memory, body)

    for answer in both(receiver, "memory", headers, body):
        assert answer.status == 400
        assert answer.json()["error"] == "payload"


def test_an_empty_batch_is_answered_200() -> None:
    memory = MemoryAdapter()
    body, headers = memory.webhook([])
    for answer in both(WebhookReceiver({"memory": memory}), "memory", headers, body):
        assert answer.status == 200
        assert answer.json()["events"] == 0


def test_an_unknown_provider_is_answered_404() -> None:
    memory = MemoryAdapter()
    body, headers = memory.webhook([])
    receiver = WebhookReceiver({"memory": memory})
    for answer in both(receiver, "sendgridd", headers, body):
        assert answer.status == 404
    assert receiver.probe("sendgridd").status == 404
    assert receiver.probe("memory").status == 200


def test_a_body_over_the_limit_is_answered_413_before_it_is_verified() -> None:
    memory = MemoryAdapter()
    ann, _ = sent(memory)
    body, headers = memory.webhook(memory.scenario(ann, "delivered"))
    receiver = WebhookReceiver({"memory": memory}, max_body_size=len(body) - 1)

    for answer in both(receiver, "memory", {}, body):
        assert answer.status == 413
        assert answer.headers["connection"] == "close"
    assert (
        WebhookReceiver({"memory": memory}, max_body_size=len(body))
        .handle("memory", headers, body)
        .ok
    )


def test_the_content_type_is_not_trusted_the_signed_body_is() -> None:
    memory = MemoryAdapter()
    ann, _ = sent(memory)
    body, headers = memory.webhook(memory.scenario(ann, "delivered"))
    headers["Content-Type"] = "text/plain"
    assert WebhookReceiver({"memory": memory}).handle("memory", headers, body).status == 200


def test_a_mailer_supplies_its_adapters() -> None:
    memory = MemoryAdapter()
    receiver = WebhookReceiver(Mailer(memory))
    assert receiver.providers == ["memory"]
    assert receiver.adapters["memory"] is memory


def test_a_receiver_needs_an_adapter_and_a_positive_limit() -> None:
    with pytest.raises(ConfigurationError):
        WebhookReceiver({})
    with pytest.raises(ConfigurationError):
        WebhookReceiver({"memory": MemoryAdapter()}, max_body_size=0)


# --------------------------------------------------------------------------- callbacks


def test_without_a_tracker_a_failing_callback_answers_500_so_the_provider_retries() -> None:
    memory = MemoryAdapter()
    ann, _ = sent(memory)
    body, headers = memory.webhook(memory.scenario(ann, "delivered"))

    def broken(event: EmailEvent) -> None:
        raise RuntimeError("the application's database is down")

    receiver = WebhookReceiver({"memory": memory}, on_event=broken)
    for answer in both(receiver, "memory", headers, body):
        assert answer.status == 500
        assert answer.json()["error"] == "callback"


def test_ahandle_awaits_coroutine_callbacks_and_handle_refuses_them() -> None:
    memory = MemoryAdapter()
    ann, _ = sent(memory)
    body, headers = memory.webhook(memory.scenario(ann, "delivered"))
    seen: list[str] = []

    async def record(event: EmailEvent) -> None:
        await asyncio.sleep(0)
        seen.append(event.event_id)

    receiver = WebhookReceiver({"memory": memory}, on_event=record)
    assert asyncio.run(receiver.ahandle("memory", headers, body)).status == 200
    assert len(seen) == 2
    assert receiver.handle("memory", headers, body).status == 500
    assert len(seen) == 2


# --------------------------------------------------------------------------- SNS control messages


class SnsEndpoint:
    """Plays the SNS API that a SubscribeURL points at, and remembers every call."""

    def __init__(self) -> None:
        self.calls: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request)
        arn = f"{TOPIC}:6d7c0f5e"
        xml = (
            "<ConfirmSubscriptionResponse><ConfirmSubscriptionResult>"
            f"<SubscriptionArn>{arn}</SubscriptionArn>"
            "</ConfirmSubscriptionResult></ConfirmSubscriptionResponse>"
        )
        return httpx.Response(200, text=xml)


def ses(signer: SnsSigner, sns: SnsEndpoint, **options: Any) -> SESAdapter:
    return SESAdapter(
        region="eu-west-1",
        certificate_loader=signer.load_certificate,
        transport=HttpxTransport(httpx.Client(transport=httpx.MockTransport(sns))),
        async_transport=HttpxAsyncTransport(httpx.AsyncClient(transport=httpx.MockTransport(sns))),
        **options,
    )


@pytest.fixture(scope="module")
def signer() -> SnsSigner:
    return SnsSigner()


def test_a_verified_subscription_confirmation_is_confirmed_by_a_get(signer: SnsSigner) -> None:
    sns = SnsEndpoint()
    receiver = WebhookReceiver({"ses": ses(signer, sns, allowed_topic_arns=[TOPIC])})
    body, headers = signer.subscription_confirmation(topic_arn=TOPIC)

    for answer in both(receiver, "ses", headers, body):
        assert answer.status == 200
        assert answer.json()["confirmed"] == f"{TOPIC}:6d7c0f5e"
    assert [c.method for c in sns.calls] == ["GET", "GET"]
    assert sns.calls[0].url.host == "sns.eu-west-1.amazonaws.com"
    assert sns.calls[0].url.params["Action"] == "ConfirmSubscription"


def test_a_confirmation_for_a_topic_not_allowed_is_refused_without_a_get(
    signer: SnsSigner,
) -> None:
    sns = SnsEndpoint()
    receiver = WebhookReceiver({"ses": ses(signer, sns, allowed_topic_arns=[TOPIC])})
    body, headers = signer.subscription_confirmation(topic_arn=OTHER_TOPIC)
    for answer in both(receiver, "ses", headers, body):
        assert answer.status == 401
    assert sns.calls == []


def test_a_forged_confirmation_is_refused_without_a_get(signer: SnsSigner) -> None:
    sns = SnsEndpoint()
    receiver = WebhookReceiver({"ses": ses(signer, sns, allowed_topic_arns=[TOPIC])})
    body, headers = SnsSigner().subscription_confirmation(topic_arn=TOPIC)  # another key
    for answer in both(receiver, "ses", headers, body):
        assert answer.status == 401
    assert sns.calls == []


def test_without_allowed_topics_no_subscription_is_confirmed(signer: SnsSigner) -> None:
    sns = SnsEndpoint()
    receiver = WebhookReceiver({"ses": ses(signer, sns)})
    body, headers = signer.subscription_confirmation(topic_arn=TOPIC)
    for answer in both(receiver, "ses", headers, body):
        assert answer.status == 403
    assert sns.calls == []


def test_an_unsubscribe_confirmation_is_logged_and_never_acted_on(
    signer: SnsSigner, caplog: pytest.LogCaptureFixture
) -> None:
    sns = SnsEndpoint()
    receiver = WebhookReceiver({"ses": ses(signer, sns, allowed_topic_arns=[TOPIC])})
    body, headers = signer.subscription_confirmation(topic_arn=TOPIC, kind=UNSUBSCRIBE_CONFIRMATION)
    caplog.set_level("INFO", logger="unimailtrack.webhooks")
    for answer in both(receiver, "ses", headers, body):
        assert answer.status == 200
        assert "confirmed" not in answer.json()
    assert sns.calls == []
    assert "UnsubscribeConfirmation" in caplog.text


def test_confirmations_can_be_turned_off(signer: SnsSigner) -> None:
    sns = SnsEndpoint()
    adapter = ses(signer, sns, allowed_topic_arns=[TOPIC])
    receiver = WebhookReceiver({"ses": adapter}, confirm_subscriptions=False)
    body, headers = signer.subscription_confirmation(topic_arn=TOPIC)
    assert receiver.handle("ses", headers, body).json() == {"ok": True, "events": 0}
    assert sns.calls == []


def test_an_ses_notification_is_verified_and_parsed(signer: SnsSigner) -> None:
    sns = SnsEndpoint()
    receiver = WebhookReceiver({"ses": ses(signer, sns, allowed_topic_arns=[TOPIC])})
    event = {
        "eventType": "Delivery",
        "mail": {
            "messageId": "0102018d-ses-1",
            "timestamp": "2024-01-15T09:30:00.000Z",
            "destination": ["ann@example.com"],
            "tags": {},
        },
        "delivery": {
            "timestamp": "2024-01-15T09:30:02.000Z",
            "recipients": ["ann@example.com"],
            "smtpResponse": "250 2.0.0 OK",
        },
    }
    body, headers = signer.notification(json.dumps(event), topic_arn=TOPIC)
    for answer in both(receiver, "ses", headers, body):
        assert answer.status == 200
        assert answer.json()["events"] == 1
    assert sns.calls == []
