"""Brevo sending: one request or message versions, the custom header, errors, DSN."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import respx

from unimailtrack import (
    Attachment,
    AuthenticationError,
    ConfigurationError,
    DeliveryStatus,
    Email,
    InvalidRequest,
    NotPermitted,
    ProviderUnavailable,
    RateLimited,
)
from unimailtrack._http import RetryPolicy
from unimailtrack.adapters import BrevoAdapter
from unimailtrack.adapters.brevo import SECRET_ENV
from unimailtrack.adapters.brevo.send import MAX_VERSIONS
from unimailtrack.config import parse_dsn

API = "https://api.brevo.com"
KEY = "xkeysib-do-not-leak"


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False, base_url=API) as router:
        yield router


def accepted(request: httpx.Request) -> httpx.Response:
    sent = json.loads(request.content)
    if "messageVersions" in sent:
        ids = [f"<v{i}@smtp-relay.mailin.fr>" for i in range(len(sent["messageVersions"]))]
        return httpx.Response(201, json={"messageIds": ids})
    return httpx.Response(201, json={"messageId": "<one@smtp-relay.mailin.fr>"})


def email(**fields: Any) -> Email:
    fields.setdefault("sender", "Acme <orders@acme.example>")
    fields.setdefault("to", ["ann@example.com", "Bob <bob@example.com>"])
    fields.setdefault("subject", "Your order")
    fields.setdefault("text", "Thanks.")
    return Email(**fields)


def adapter(**options: Any) -> BrevoAdapter:
    options.setdefault("retry", RetryPolicy.none())
    return BrevoAdapter(KEY, **options)


def test_a_bulk_send_has_one_version_per_recipient_each_with_its_tracking_id(
    api: respx.MockRouter,
) -> None:
    route = api.post("/v3/smtp/email").mock(side_effect=accepted)
    message = email(
        html="<p>Thanks.</p>",
        reply_to="help@acme.example",
        headers={"X-Campaign": "spring"},
        category="receipt",
        tags=["orders"],
        metadata={"order": "Ü-17"},
        send_at=datetime(2030, 1, 1, 12, tzinfo=UTC),
    )
    result = adapter().send(message)
    request = route.calls[0].request
    assert request.headers["api-key"] == KEY
    sent = json.loads(request.content)
    assert sent["sender"] == {"email": "orders@acme.example", "name": "Acme"}
    assert sent["replyTo"] == {"email": "help@acme.example"}
    assert sent["htmlContent"] == "<p>Thanks.</p>" and sent["textContent"] == "Thanks."
    assert sent["tags"] == ["receipt", "orders"]
    assert sent["scheduledAt"] == "2030-01-01T12:00:00+00:00"
    assert "to" not in sent
    assert sent["headers"]["X-Campaign"] == "spring"
    uuid.UUID(sent["headers"]["idempotencyKey"])
    versions = sent["messageVersions"]
    assert [v["to"] for v in versions] == [
        [{"email": "ann@example.com"}],
        [{"email": "bob@example.com", "name": "Bob"}],
    ]
    for version, recipient in zip(versions, result.recipients, strict=True):
        custom = version["headers"]["X-Mailin-custom"]
        assert custom.isascii()
        assert json.loads(custom) == {"unimailtrack_id": recipient.tracking_id, "order": "Ü-17"}
    assert [r.message_id for r in result.recipients] == [
        "<v0@smtp-relay.mailin.fr>",
        "<v1@smtp-relay.mailin.fr>",
    ]


def test_one_recipient_is_a_plain_request(api: respx.MockRouter) -> None:
    route = api.post("/v3/smtp/email").mock(side_effect=accepted)
    attachment = Attachment(filename="a.pdf", content=b"%PDF", content_type="application/pdf")
    result = adapter().send(email(to=["ann@example.com"], attachments=[attachment]))
    sent = json.loads(route.calls[0].request.content)
    assert sent["to"] == [{"email": "ann@example.com"}]
    assert "messageVersions" not in sent
    assert sent["attachment"] == [{"name": "a.pdf", "content": "JVBERg=="}]
    assert json.loads(sent["headers"]["X-Mailin-custom"])["unimailtrack_id"] == (
        result.recipients[0].tracking_id
    )
    assert result.recipients[0].message_id == "<one@smtp-relay.mailin.fr>"


def test_requests_hold_at_most_a_thousand_versions(api: respx.MockRouter) -> None:
    route = api.post("/v3/smtp/email").mock(side_effect=accepted)
    result = adapter().send(email(to=[f"u{i}@example.com" for i in range(MAX_VERSIONS + 2)]))
    counts = [len(json.loads(c.request.content)["messageVersions"]) for c in route.calls]
    assert counts == [MAX_VERSIONS, 2]
    assert all(r.status is DeliveryStatus.ACCEPTED for r in result.recipients)
    keys = {json.loads(c.request.content)["headers"]["idempotencyKey"] for c in route.calls}
    assert len(keys) == 2


@pytest.mark.parametrize(
    ("status", "code", "error", "retryable"),
    [
        (400, "invalid_parameter", InvalidRequest, False),
        (400, "missing_parameter", InvalidRequest, False),
        (401, "unauthorized", AuthenticationError, False),
        (402, "not_enough_credits", NotPermitted, False),
        (403, "permission_denied", NotPermitted, False),
        (403, None, NotPermitted, False),
        (429, "too_many_requests", RateLimited, True),
        (500, None, ProviderUnavailable, True),
    ],
)
def test_brevo_errors_map_onto_the_error_tree(
    api: respx.MockRouter, status: int, code: str | None, error: type[Exception], retryable: bool
) -> None:
    body = {"code": code, "message": "refused"} if code else {"message": "refused"}
    headers = {"x-sib-ratelimit-reset": "3"} if status == 429 else {}
    api.post("/v3/smtp/email").mock(return_value=httpx.Response(status, json=body, headers=headers))
    with pytest.raises(error) as caught:
        adapter().send(email(to=["ann@example.com"]))
    assert type(caught.value) is error
    assert caught.value.retryable is retryable  # type: ignore[attr-defined]
    assert KEY not in str(caught.value)
    if isinstance(caught.value, RateLimited):
        assert caught.value.retry_after == 3.0


def test_sending_needs_an_api_key() -> None:
    with pytest.raises(ConfigurationError, match="API key"):
        BrevoAdapter().send(email())


def test_the_dsn_reads_key_secrets_and_networks() -> None:
    dsn = parse_dsn(
        "brevo://xkeysib-abc@default?webhook_secret=tok1&allowed_networks=1.179.112.0/20"
    )
    built = BrevoAdapter.from_dsn(dsn, env={SECRET_ENV: "user:pw"})  # type: ignore[arg-type]
    text = repr(built)
    assert "bearer=1" in text and "basic=1" in text and "networks=1" in text
    assert "xkeysib-abc" not in text


@pytest.mark.parametrize("text", ["brevo://k@api.brevo.com", "brevo://k:x@default"])
def test_a_malformed_dsn_is_refused(text: str) -> None:
    with pytest.raises(ConfigurationError):
        BrevoAdapter.from_dsn(parse_dsn(text))  # type: ignore[arg-type]
