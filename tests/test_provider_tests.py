"""Never make a provider switch the endpoint off: each provider's "test your webhook" post is
answered 2xx and shows in the request log, events about mail this application never sent
(account-wide webhooks) are stored and answered 200, and early events join their send."""

from __future__ import annotations

import json
import logging
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

import webhook_kits
from unimailtrack import DeliveryStatus, Email, RecipientResult, SendResult
from unimailtrack._http import HttpxTransport
from unimailtrack.adapters import MailgunAdapter, SendGridAdapter, SESAdapter
from unimailtrack.adapters.mailgun import MailgunWebhookSigner
from unimailtrack.adapters.sendgrid import SendGridWebhookSigner
from unimailtrack.adapters.ses.signing import SnsSigner
from unimailtrack.tracking import Tracker
from unimailtrack.webhooks import WebhookReceiver

_TEST_MESSAGE = "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0"


def _sendgrid_test_batch() -> bytes:
    """What "Test Your Integration" in SendGrid's console posts: one of each event kind about
    example@test.com, a message this application never sent, no custom args."""
    now = int(time.time())
    kinds = [
        {"event": "processed"},
        {"event": "deferred", "response": "400 try again later", "attempt": "5"},
        {"event": "delivered", "response": "250 OK"},
        {"event": "open", "useragent": "Mozilla/4.0", "ip": "255.255.255.255"},
        {"event": "click", "url": "http://www.sendgrid.com/", "useragent": "Mozilla/4.0"},
        {"event": "bounce", "reason": "500 unknown recipient", "status": "5.0.0", "type": "bounce"},
        {"event": "dropped", "reason": "Bounced Address", "status": "5.0.0"},
        {"event": "spamreport"},
        {"event": "unsubscribe"},
        {"event": "group_unsubscribe", "asm_group_id": 10},
        {"event": "group_resubscribe", "asm_group_id": 10},
    ]
    return json.dumps(
        [
            {
                "email": "example@test.com",
                "timestamp": now,
                "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
                "category": "cat facts",
                "sg_event_id": f"sg_event_id_{number}",
                "sg_message_id": _TEST_MESSAGE,
                **kind,
            }
            for number, kind in enumerate(kinds)
        ]
    ).encode()


@pytest.fixture
def tracker(tmp_path: Path) -> Tracker:
    return Tracker.open(f"sqlite:///{tmp_path / 't.sqlite3'}")


def _request_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "unimailtrack.requests"]


def test_sendgrid_s_test_event_is_stored_answered_200_and_logged(
    tracker: Tracker, caplog: pytest.LogCaptureFixture
) -> None:
    signer = SendGridWebhookSigner()
    receiver = WebhookReceiver(
        {"sendgrid": SendGridAdapter(webhook_keys=signer.public_key)}, tracker
    )
    body = _sendgrid_test_batch()
    headers = {"Content-Type": "application/json", **signer.sign(body)}
    with caplog.at_level(logging.INFO, logger="unimailtrack.requests"):
        answer = receiver.handle("sendgrid", headers, body)
        again = receiver.handle("sendgrid", headers, body)  # "Test" pressed twice
    assert answer.status == 200 and answer.json()["new"] == 11
    assert again.status == 200 and again.json()["duplicates"] == 11
    assert _request_lines(caplog)[0].startswith("webhook provider=sendgrid status=200 new=11")
    assert tracker.count_events() == 11
    with tracker:
        assert len(tracker.orphans(older_than=timedelta(0))) == 11


def test_mailgun_s_test_webhook_is_answered_200_and_logged(
    tracker: Tracker, caplog: pytest.LogCaptureFixture
) -> None:
    key = "key-test-signing"
    receiver = WebhookReceiver({"mailgun": MailgunAdapter(webhook_keys=key)}, tracker)
    body = MailgunWebhookSigner(key).json_body(
        {
            "id": "CPgfbmQMTCKtHW6uIWtuVe",
            "timestamp": time.time(),
            "log-level": "info",
            "event": "delivered",
            "delivery-status": {"code": 250, "message": "OK", "description": ""},
            "recipient": "alice@example.com",
            "recipient-domain": "example.com",
            "message": {
                "headers": {
                    "to": "Alice <alice@example.com>",
                    "message-id": "20130503182626.18666.16540@sandbox.mailgun.org",
                    "from": "Bob <bob@sandbox.mailgun.org>",
                    "subject": "Test delivered webhook",
                },
                "attachments": [],
                "size": 111,
            },
            "user-variables": {"my_var_1": "Mailgun Variable #1", "my-var-2": "awesome"},
            "tags": ["my_tag_1", "my_tag_2"],
        }
    )
    headers = {"Content-Type": "application/json"}
    with tracker, caplog.at_level(logging.INFO, logger="unimailtrack.requests"):
        assert receiver.handle("mailgun", headers, body).status == 200
        # Pressed again: Mailgun signs a new request; the same one again is a retry (200).
        assert receiver.handle("mailgun", headers, body).status == 200
        assert tracker.count_events() == 1
    assert _request_lines(caplog)[0].startswith("webhook provider=mailgun status=200 new=1")


def test_the_sns_subscription_handshake_is_confirmed_answered_200_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    signer = SnsSigner(key_size=1024)
    confirmations: list[str] = []

    def sns(request: httpx.Request) -> httpx.Response:
        confirmations.append(str(request.url))
        arn = f"{webhook_kits.TOPIC}:6d7c0f5e"
        return httpx.Response(
            200,
            text="<ConfirmSubscriptionResponse><ConfirmSubscriptionResult>"
            f"<SubscriptionArn>{arn}</SubscriptionArn>"
            "</ConfirmSubscriptionResult></ConfirmSubscriptionResponse>",
        )

    adapter = SESAdapter(
        region="eu-west-1",
        allowed_topic_arns=[webhook_kits.TOPIC],
        certificate_loader=signer.load_certificate,
        transport=HttpxTransport(httpx.Client(transport=httpx.MockTransport(sns))),
    )
    receiver = WebhookReceiver({"ses": adapter})
    body, headers = signer.subscription_confirmation(topic_arn=webhook_kits.TOPIC)
    with caplog.at_level(logging.INFO):
        answer = receiver.handle("ses", headers, body)
    assert answer.status == 200 and answer.json()["confirmed"].startswith(webhook_kits.TOPIC)
    assert len(confirmations) == 1
    assert any(
        line.startswith("webhook provider=ses status=200") for line in _request_lines(caplog)
    )
    assert "subscription confirmed" in caplog.text


def test_an_early_event_joins_its_send_when_it_is_recorded(tracker: Tracker) -> None:
    kit = webhook_kits.mailgun()
    receiver = WebhookReceiver({"mailgun": kit.adapter}, tracker)
    body, headers = kit.request("t-early", "ann@example.com", "delivered")
    with tracker:
        assert receiver.handle("mailgun", headers, body).status == 200  # before the send
        assert tracker.state("t-early").status is DeliveryStatus.DELIVERED
        assert tracker.send("t-early") is None
        tracker.record_send(
            Email(sender="e@example.com", to=["ann@example.com"], text="x"),
            SendResult(
                bulk_id="b",
                recipients=[
                    RecipientResult(
                        recipient="ann@example.com",
                        tracking_id="t-early",
                        status=DeliveryStatus.ACCEPTED,
                        provider="mailgun",
                        message_id="t-early@mg.example.com",
                    )
                ],
            ),
        )
        record = tracker.send("t-early")
        assert record is not None and record.status is DeliveryStatus.DELIVERED
