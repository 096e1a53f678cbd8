"""Brevo webhooks carry a bearer token or Basic credentials; the same rules as Postmark."""

from __future__ import annotations

import json

import pytest

from unimailtrack import SignatureError
from unimailtrack.adapters import BrevoAdapter
from unimailtrack.adapters.brevo import BrevoWebhookSigner
from unimailtrack.webhook_auth import PEER_HEADER
from unimailtrack.webhooks import WebhookReceiver

BODY = json.dumps([{"event": "delivered", "email": "a@example.com", "ts_event": 1}]).encode()


def test_the_configured_bearer_token_is_accepted_and_others_refused() -> None:
    signer = BrevoWebhookSigner()
    adapter = BrevoAdapter(webhook_secrets=signer.secret)
    adapter.verify_webhook(BODY, signer.sign(BODY))
    for headers in ({}, BrevoWebhookSigner().sign(BODY), {"Authorization": "Bearer"}):
        with pytest.raises(SignatureError):
            adapter.verify_webhook(BODY, headers)


def test_basic_credentials_work_too() -> None:
    signer = BrevoWebhookSigner("brevo:pw")
    BrevoAdapter(webhook_secrets=["brevo:pw"]).verify_webhook(BODY, signer.sign())


def test_nothing_configured_refuses() -> None:
    with pytest.raises(SignatureError):
        BrevoAdapter().verify_webhook(BODY, BrevoWebhookSigner().sign())


def test_brevo_networks_can_be_required() -> None:
    signer = BrevoWebhookSigner()
    adapter = BrevoAdapter(webhook_secrets=signer.secret, allowed_networks="1.179.112.0/20")
    adapter.verify_webhook(BODY, {**signer.sign(), PEER_HEADER: "1.179.115.1"})
    with pytest.raises(SignatureError):
        adapter.verify_webhook(BODY, {**signer.sign(), PEER_HEADER: "8.8.8.8"})


def test_a_batch_through_the_receiver() -> None:
    signer = BrevoWebhookSigner()
    receiver = WebhookReceiver({"brevo": BrevoAdapter(webhook_secrets=signer.secret)})
    answer = receiver.handle("brevo", signer.sign(), BODY)
    assert answer.status == 200 and answer.json()["events"] == 1
