"""Resend webhook verification: Standard Webhooks under svix-* names, through the adapter."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from unimailtrack import SignatureError
from unimailtrack.adapters import ResendAdapter
from unimailtrack.adapters.resend import ResendWebhookSigner
from unimailtrack.config import parse_dsn
from unimailtrack.webhooks import WebhookReceiver

BODY = json.dumps(
    {
        "type": "email.delivered",
        "created_at": "2024-11-22T23:41:12.126Z",
        "data": {"email_id": "e1", "to": ["ann@example.com"], "tags": {"unimailtrack_id": "t"}},
    }
).encode()


def test_a_request_signed_by_resend_is_accepted() -> None:
    signer = ResendWebhookSigner()
    ResendAdapter(webhook_secrets=signer.secret).verify_webhook(BODY, signer.sign(BODY))


def test_svix_and_webhook_header_names_both_verify() -> None:
    signer = ResendWebhookSigner()
    adapter = ResendAdapter(webhook_secrets=[signer.secret])
    headers = signer.sign(BODY)
    adapter.verify_webhook(BODY, {k.replace("svix-", "webhook-"): v for k, v in headers.items()})


def test_no_secret_refuses_everything() -> None:
    signer = ResendWebhookSigner()
    with pytest.raises(SignatureError):
        ResendAdapter().verify_webhook(BODY, signer.sign(BODY))


def test_rotation_old_and_new_secrets_both_verify() -> None:
    old, new = ResendWebhookSigner(), ResendWebhookSigner()
    adapter = ResendAdapter(webhook_secrets=[new.secret, old.secret])
    for signer in (old, new):
        adapter.verify_webhook(BODY, signer.sign(BODY))


@pytest.mark.parametrize("shift", [timedelta(minutes=-6), timedelta(minutes=6)])
def test_stale_and_future_requests_are_refused(shift: timedelta) -> None:
    signer = ResendWebhookSigner()
    adapter = ResendAdapter(webhook_secrets=signer.secret)
    headers = signer.sign(BODY)
    with pytest.raises(SignatureError):
        adapter.verify_webhook(BODY, headers, now=datetime.now(UTC) + shift)


def test_the_tolerance_is_the_adapters() -> None:
    signer = ResendWebhookSigner()
    adapter = ResendAdapter(webhook_secrets=signer.secret, tolerance=timedelta(hours=1))
    adapter.verify_webhook(BODY, signer.sign(BODY), now=datetime.now(UTC) + timedelta(minutes=30))


def test_a_forged_body_is_refused() -> None:
    signer = ResendWebhookSigner()
    adapter = ResendAdapter(webhook_secrets=signer.secret)
    headers = signer.sign(BODY)
    with pytest.raises(SignatureError):
        adapter.verify_webhook(BODY.replace(b"delivered", b"bounced"), headers)


def test_the_retry_of_an_event_keeps_its_message_id() -> None:
    signer = ResendWebhookSigner()
    assert signer.sign(BODY)["svix-id"] == signer.sign(BODY)["svix-id"]


def test_secrets_from_the_dsn_verify_through_the_receiver() -> None:
    signer = ResendWebhookSigner()
    adapter = ResendAdapter.from_dsn(parse_dsn(f"resend://default?webhook_secret={signer.secret}"))  # type: ignore[arg-type]
    receiver = WebhookReceiver({"resend": adapter})
    assert receiver.handle("resend", signer.sign(BODY), BODY).status == 200
    assert receiver.handle("resend", {}, BODY).status == 401


def test_events_for_mail_never_sent_are_answered_200() -> None:
    signer = ResendWebhookSigner()
    receiver = WebhookReceiver({"resend": ResendAdapter(webhook_secrets=signer.secret)})
    stranger = BODY.replace(b'"tags": {"unimailtrack_id": "t"}', b'"tags": {}')
    answer = receiver.handle("resend", signer.sign(stranger), stranger)
    assert answer.status == 200
    assert answer.json()["events"] == 1


def test_events_for_mail_never_sent_are_stored_by_the_tracker(tmp_path: Path) -> None:
    from unimailtrack.tracking import Tracker

    signer = ResendWebhookSigner()
    stranger = BODY.replace(b'"tags": {"unimailtrack_id": "t"}', b'"tags": {}')
    with Tracker.open(f"sqlite:///{tmp_path / 't.db'}") as tracker:
        receiver = WebhookReceiver(
            {"resend": ResendAdapter(webhook_secrets=signer.secret)}, tracker
        )
        assert receiver.handle("resend", signer.sign(stranger), stranger).status == 200
        assert receiver.handle("resend", signer.sign(stranger), stranger).json()["duplicates"] == 1
        assert tracker.count_events() == 1
