"""The emulator's Resend, Postmark and Brevo: their refusals, idempotency and webhook auth."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from unimailtrack import (
    AuthenticationError,
    DeliveryStatus,
    Email,
    InvalidRequest,
    Mailer,
    SignatureError,
)
from unimailtrack._http import RetryPolicy
from unimailtrack.adapters import BrevoAdapter, PostmarkAdapter, ResendAdapter
from unimailtrack.emulator import Emulator


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(api_key="right-key") as running:
        yield running


def invite(*to: str) -> Email:
    return Email(sender="Events <events@example.com>", to=list(to), subject="Hi", text="Hello")


def test_a_wrong_key_is_refused_in_each_providers_words(emu: Emulator) -> None:
    with httpx.Client(base_url=emu.url) as client:
        resend = client.post("/emails", headers={"Authorization": "Bearer wrong"}, json={})
        postmark = client.post("/email", headers={"X-Postmark-Server-Token": "wrong"}, json={})
        brevo = client.post("/v3/smtp/email", headers={"api-key": "wrong"}, json={})
    assert (resend.status_code, resend.json()["name"]) == (403, "invalid_api_key")
    assert (postmark.status_code, postmark.json()["ErrorCode"]) == (401, 10)
    assert (brevo.status_code, brevo.json()["code"]) == (401, "unauthorized")
    for cls, key in ((ResendAdapter, "wrong"), (PostmarkAdapter, "wrong"), (BrevoAdapter, "wrong")):
        adapter = cls(key, base_url=emu.url, retry=RetryPolicy.none())
        with Mailer(adapter) as mailer, pytest.raises(AuthenticationError):
            mailer.send(invite("ann@example.com"))


def test_resend_refuses_what_resend_refuses(emu: Emulator) -> None:
    auth = {"Authorization": "Bearer right-key"}
    base = {"from": "a@example.com", "to": ["b@example.com"], "subject": "s", "text": "t"}
    with httpx.Client(base_url=emu.url, headers=auth) as client:
        missing = client.post("/emails", json={**base, "subject": ""})
        too_many = client.post("/emails/batch", json=[base] * 101)
        attached = client.post("/emails/batch", json=[{**base, "attachments": []}])
        first = client.post("/emails", json=base, headers={"Idempotency-Key": "k1"})
        again = client.post("/emails", json=base, headers={"Idempotency-Key": "k1"})
        other = client.post(
            "/emails", json={**base, "text": "x"}, headers={"Idempotency-Key": "k1"}
        )
    assert (missing.status_code, missing.json()["name"]) == (422, "missing_required_field")
    assert "`subject`" in missing.json()["message"]
    assert too_many.status_code == 422 and attached.status_code == 422
    assert first.json() == again.json()
    assert (other.status_code, other.json()["name"]) == (409, "invalid_idempotent_request")
    assert len(emu.sent) == 1  # the repeated request sent nothing again


def test_a_resend_validation_error_names_the_field(emu: Emulator) -> None:
    adapter = ResendAdapter("right-key", base_url=emu.url, retry=RetryPolicy.none())
    with httpx.Client(base_url=emu.url, headers={"Authorization": "Bearer right-key"}) as client:
        bad = client.post(
            "/emails", json={"from": "nope", "to": ["b@example.com"], "subject": "s", "text": "t"}
        )
    assert bad.json()["name"] == "invalid_from_address"
    del adapter


def test_postmark_refuses_an_inactive_address_at_once(emu: Emulator) -> None:
    with Mailer(emu.adapter("postmark")) as mailer:
        result = mailer.send(invite("dropped@example.com", "ann@example.com"))
    emu.drain()
    assert [r.status for r in result.recipients] == [
        DeliveryStatus.SUPPRESSED,
        DeliveryStatus.ACCEPTED,
    ]
    assert [c.recipient for c in emu.sent] == ["ann@example.com"]


def test_postmark_answers_a_bad_message_with_error_300(emu: Emulator) -> None:
    with httpx.Client(base_url=emu.url, headers={"X-Postmark-Server-Token": "right-key"}) as client:
        single = client.post("/email", json={"From": "a@example.com", "To": "b@example.com"})
        batch = client.post(
            "/email/batch", json=[{"From": "x", "To": "b@example.com", "TextBody": "t"}]
        )
    assert (single.status_code, single.json()["ErrorCode"]) == (422, 300)
    assert batch.status_code == 200 and batch.json()[0]["ErrorCode"] == 300
    adapter = PostmarkAdapter("right-key", base_url=emu.url, retry=RetryPolicy.none())
    with Mailer(adapter) as mailer, pytest.raises(InvalidRequest):
        mailer.send(Email(sender="events@example.com", to=["b@example.com"], subject="", html=""))


def test_brevo_answers_a_repeated_idempotency_key_without_sending_again(emu: Emulator) -> None:
    adapter = emu.adapter("brevo")
    assert isinstance(adapter, BrevoAdapter)
    email = invite("ann@example.com", "bob@example.com")
    calls = adapter.build_calls(email, adapter.plan(email))
    with httpx.Client() as client:
        first = client.send(calls[0].request)
        again = client.send(calls[0].request)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert len(emu.sent) == 2


@pytest.mark.parametrize("provider", ["resend", "postmark", "brevo"])
def test_webhooks_are_authenticated_as_the_provider_does(emu: Emulator, provider: str) -> None:
    with Mailer(emu.dsn(provider)) as mailer:
        mailer.send(invite("ann@example.com"))
    emu.drain()
    delivery = emu.deliveries[0]
    assert delivery.provider == provider
    emu.adapter(provider).verify_webhook(delivery.body, delivery.headers)
    stranger = {
        "resend": ResendAdapter(webhook_secrets="whsec_" + "A" * 32),
        "postmark": PostmarkAdapter(webhook_secrets="x:y"),
        "brevo": BrevoAdapter(webhook_secrets="other"),
    }[provider]
    with pytest.raises(SignatureError):
        stranger.verify_webhook(delivery.body, delivery.headers)
    if provider == "resend":
        assert {"svix-id", "svix-timestamp", "svix-signature"} <= set(delivery.headers)
    else:
        assert "Authorization" in delivery.headers
        assert json.loads(delivery.body)


def test_the_settings_show_every_webhook_secret(emu: Emulator) -> None:
    settings = emu.settings()
    assert settings["resend_webhook_secret"].startswith("whsec_")
    assert settings["postmark_webhook_secret"] and settings["brevo_webhook_secret"]
    for name in ("resend", "postmark", "brevo"):
        assert settings[f"{name}_dsn"].startswith(f"{name}://right-key@default")
    assert "brevo://" in settings["receiver_dsn"]
