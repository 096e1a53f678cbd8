"""Postmark webhooks carry credentials, not signatures: Basic or Bearer, networks, proxies."""

from __future__ import annotations

import base64
import json

import pytest

from unimailtrack import SignatureError
from unimailtrack.adapters import PostmarkAdapter
from unimailtrack.adapters.postmark import PostmarkWebhookSigner
from unimailtrack.webhook_auth import PEER_HEADER
from unimailtrack.webhooks import WebhookReceiver

BODY = json.dumps(
    {
        "RecordType": "Delivery",
        "MessageID": "m",
        "Recipient": "a@example.com",
        "DeliveredAt": "2020-01-01T00:00:00Z",
        "Metadata": {"unimailtrack_id": "t"},
    }
).encode()


def basic(secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(secret.encode()).decode()}


def test_basic_credentials_in_the_url_are_accepted() -> None:
    PostmarkAdapter(webhook_secrets="hook:s3cret").verify_webhook(BODY, basic("hook:s3cret"))


def test_a_bearer_token_is_accepted() -> None:
    adapter = PostmarkAdapter(webhook_secrets=["tok-123"])
    adapter.verify_webhook(BODY, {"authorization": "bearer tok-123"})


@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic("hook:wrong"),
        basic("hook:s3cret "),
        {"Authorization": "Bearer hook:s3cret"},
        {"Authorization": "Basic not-base64!"},
        {"Authorization": "Digest hook:s3cret"},
        {"Authorization": "Basic " + "A" * 5000},
    ],
)
def test_anything_else_is_refused(headers: dict[str, str]) -> None:
    with pytest.raises(SignatureError):
        PostmarkAdapter(webhook_secrets="hook:s3cret").verify_webhook(BODY, headers)


def test_no_credential_configured_refuses_even_a_plausible_request() -> None:
    with pytest.raises(SignatureError):
        PostmarkAdapter().verify_webhook(BODY, PostmarkWebhookSigner().sign(BODY))


def test_several_credentials_rotate() -> None:
    adapter = PostmarkAdapter(webhook_secrets=["old:pw", "new:pw", "tok"])
    for secret in ("old:pw", "new:pw"):
        adapter.verify_webhook(BODY, basic(secret))
    adapter.verify_webhook(BODY, {"Authorization": "Bearer tok"})


def test_the_network_allow_list_uses_the_peer_the_web_app_reports() -> None:
    adapter = PostmarkAdapter(webhook_secrets="hook:pw", allowed_networks=["3.134.147.0/24"])
    headers = basic("hook:pw")
    adapter.verify_webhook(BODY, {**headers, PEER_HEADER: "3.134.147.250"})
    for peer in ("203.0.113.9", "", "not-an-address"):
        with pytest.raises(SignatureError):
            adapter.verify_webhook(BODY, {**headers, PEER_HEADER: peer})
    with pytest.raises(SignatureError):  # the web app said nothing: fail closed
        adapter.verify_webhook(BODY, headers)


def test_forwarded_headers_count_only_from_trusted_proxies() -> None:
    adapter = PostmarkAdapter(
        webhook_secrets="hook:pw",
        allowed_networks=["3.134.147.250"],
        trusted_proxies=["10.0.0.0/8"],
    )
    auth = basic("hook:pw")
    via_proxy = {**auth, PEER_HEADER: "10.1.2.3", "X-Forwarded-For": "3.134.147.250"}
    adapter.verify_webhook(BODY, via_proxy)
    spoofed = {**auth, PEER_HEADER: "203.0.113.9", "X-Forwarded-For": "3.134.147.250"}
    with pytest.raises(SignatureError):
        adapter.verify_webhook(BODY, spoofed)
    prepended = {**auth, PEER_HEADER: "10.1.2.3", "X-Forwarded-For": "3.134.147.250, 203.0.113.9"}
    with pytest.raises(SignatureError):  # the proxy saw 203.0.113.9; the first entry is a claim
        adapter.verify_webhook(BODY, prepended)


def test_the_receiver_answers_401_to_a_wrong_credential() -> None:
    receiver = WebhookReceiver({"postmark": PostmarkAdapter(webhook_secrets="hook:pw")})
    assert receiver.handle("postmark", basic("hook:pw"), BODY).status == 200
    assert receiver.handle("postmark", basic("hook:no"), BODY).status == 401
