"""Credentials for unsigned webhooks and the client address: every check, and its attack."""

from __future__ import annotations

import base64
import json
import logging

import pytest

from unimailtrack import ConfigurationError, SignatureError
from unimailtrack.adapters import PostmarkAdapter
from unimailtrack.webhook_auth import (
    PEER_HEADER,
    WebhookCredentials,
    authorization_header,
    with_peer,
)
from unimailtrack.webhooks import WebhookReceiver


def basic(secret: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(secret.encode()).decode()}


def test_authorization_header_is_basic_for_a_pair_and_bearer_for_a_token() -> None:
    assert authorization_header("u:p")["Authorization"] == basic("u:p")["authorization"]
    assert authorization_header("tok") == {"Authorization": "Bearer tok"}


def test_a_password_with_a_colon_is_kept_whole() -> None:
    check = WebhookCredentials("user:pa:ss")
    check.verify(basic("user:pa:ss"))
    with pytest.raises(SignatureError):
        check.verify(basic("user:pa"))


def test_a_basic_secret_never_matches_as_a_bearer_token_and_back() -> None:
    check = WebhookCredentials(["user:pw", "token"])
    with pytest.raises(SignatureError):
        check.verify({"authorization": "Bearer user:pw"})
    with pytest.raises(SignatureError):
        check.verify(basic("token"))


@pytest.mark.parametrize("secret", ["", " tok", "tok ", ":pw", "x" * 3000])
def test_a_malformed_secret_is_a_configuration_error(secret: str) -> None:
    with pytest.raises(ConfigurationError):
        WebhookCredentials(secret)


def test_refusals_say_nothing_and_log_the_cause_without_the_secret(
    caplog: pytest.LogCaptureFixture,
) -> None:
    check = WebhookCredentials("hook:s3cret", provider="postmark")
    with caplog.at_level(logging.WARNING, logger="unimailtrack.webhooks"):
        for headers in ({}, basic("hook:guess"), {"authorization": "Token x"}):
            with pytest.raises(SignatureError) as caught:
                check.verify(headers)
            assert "s3cret" not in str(caught.value)
    assert len(caplog.records) == 3
    assert "s3cret" not in caplog.text and "guess" not in caplog.text


def test_with_peer_drops_a_client_sent_peer_header_in_any_case() -> None:
    headers = with_peer({"X-Unimailtrack-Peer": "3.3.3.3", "a": "b"}, "10.0.0.1")
    assert headers == {"a": "b", PEER_HEADER: "10.0.0.1"}
    assert with_peer({"x-unimailtrack-peer": "3.3.3.3"}, None) == {}


@pytest.mark.parametrize(
    ("peer", "allowed"),
    [
        ("192.0.2.7", True),
        ("192.0.2.7:44321", True),
        ("::ffff:192.0.2.7", True),
        ("[2001:db8::5]:443", True),
        ("2001:db8::5", True),
        ("192.0.3.1", False),
        ("2001:db9::1", False),
        ("192.0.2.7, 192.0.2.8", False),
        ("localhost", False),
    ],
)
def test_peer_addresses_are_read_strictly(peer: str, allowed: bool) -> None:
    check = WebhookCredentials("t", allowed_networks=["192.0.2.0/24", "2001:db8::/32"])
    headers = {"authorization": "Bearer t", PEER_HEADER: peer}
    if allowed:
        check.verify(headers)
    else:
        with pytest.raises(SignatureError):
            check.verify(headers)


def test_forwarded_hops_are_walked_right_to_left_past_trusted_proxies_only() -> None:
    check = WebhookCredentials(
        "t", allowed_networks=["198.51.100.0/24"], trusted_proxies=["10.0.0.0/8", "172.16.0.1"]
    )
    auth = {"authorization": "Bearer t", PEER_HEADER: "10.0.0.2"}
    check.verify({**auth, "x-forwarded-for": "198.51.100.4, 172.16.0.1"})
    for forwarded in (
        "198.51.100.4, 203.0.113.1",  # an untrusted hop nearer than the claimed client
        "198.51.100.4, garbage",
        ",".join(["10.0.0.9"] * 40),  # too many hops
        "9" * 5000,
    ):
        with pytest.raises(SignatureError):
            check.verify({**auth, "x-forwarded-for": forwarded})


def test_a_named_forwarded_header_is_the_only_one_read() -> None:
    check = WebhookCredentials(
        "t",
        allowed_networks=["198.51.100.4"],
        trusted_proxies=["10.0.0.2"],
        forwarded_header="X-Real-IP",
    )
    auth = {"authorization": "Bearer t", PEER_HEADER: "10.0.0.2"}
    check.verify({**auth, "x-real-ip": "198.51.100.4"})
    with pytest.raises(SignatureError):
        check.verify({**auth, "x-forwarded-for": "198.51.100.4"})


def test_the_web_app_reports_the_connection_peer_and_drops_a_forged_one() -> None:
    from starlette.testclient import TestClient

    from unimailtrack.web import create_app

    adapter = PostmarkAdapter(webhook_secrets="hook:pw", allowed_networks=["198.51.100.0/24"])
    app = create_app(WebhookReceiver({"postmark": adapter}), api=False)
    body = json.dumps(
        {
            "RecordType": "Delivery",
            "Recipient": "a@example.com",
            "MessageID": "m",
            "DeliveredAt": "2024-01-01T00:00:00Z",
        }
    ).encode()
    allowed = TestClient(app, client=("198.51.100.9", 5000))
    assert (
        allowed.post("/webhooks/postmark", content=body, headers=basic("hook:pw")).status_code
        == 200
    )
    outsider = TestClient(app, client=("203.0.113.9", 5000))
    forged = {**basic("hook:pw"), PEER_HEADER: "198.51.100.9"}
    assert outsider.post("/webhooks/postmark", content=body, headers=forged).status_code == 401
