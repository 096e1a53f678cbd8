"""Resend sending: batch and single requests, tags, idempotency keys, errors, configuration."""

from __future__ import annotations

import asyncio
import json
import logging
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
from unimailtrack.adapters import ResendAdapter
from unimailtrack.adapters.resend import SECRET_ENV
from unimailtrack.adapters.resend.send import MAX_BATCH, sanitize_tag
from unimailtrack.config import parse_dsn
from unimailtrack.mailer import Mailer
from unimailtrack.model import TRACKING_KEY

API = "https://api.resend.com"
KEY = "re_test_do_not_leak"
NO_RETRY = RetryPolicy.none()


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False, base_url=API) as router:
        yield router


def batch_ok(request: httpx.Request) -> httpx.Response:
    sent = json.loads(request.content)
    return httpx.Response(200, json={"data": [{"id": f"id-{i}"} for i in range(len(sent))]})


def email(**fields: Any) -> Email:
    fields.setdefault("sender", "Acme <orders@acme.example>")
    fields.setdefault("to", ["ann@example.com", "Bob B <bob@example.com>"])
    fields.setdefault("subject", "Your order")
    fields.setdefault("text", "Thanks.")
    return Email(**fields)


def adapter(**options: Any) -> ResendAdapter:
    options.setdefault("retry", NO_RETRY)
    return ResendAdapter(KEY, **options)


def tags_of(item: dict[str, Any]) -> dict[str, str]:
    return {t["name"]: t["value"] for t in item["tags"]}


def test_a_bulk_send_is_one_batch_request_of_one_copy_per_recipient(
    api: respx.MockRouter,
) -> None:
    route = api.post("/emails/batch").mock(side_effect=batch_ok)
    message = email(
        cc=["cy@example.com"],
        html="<p>Thanks.</p>",
        reply_to="help@acme.example",
        headers={"X-Campaign": "spring"},
        tags=["orders", "vip customer"],
        category="receipt",
        metadata={"order ref": "ORD/17", "unimailtrack_x": "reserved"},
    )
    result = adapter().send(message)
    assert route.call_count == 1
    request = route.calls[0].request
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["user-agent"].startswith("unimailtrack/")
    items = json.loads(request.content)
    assert [i["to"] for i in items] == [
        ["ann@example.com"],
        ["Bob B <bob@example.com>"],
        ["cy@example.com"],
    ]
    for item, recipient in zip(items, result.recipients, strict=True):
        assert item["from"] == "Acme <orders@acme.example>"
        assert item["html"] == "<p>Thanks.</p>" and item["text"] == "Thanks."
        assert item["reply_to"] == ["help@acme.example"]
        assert item["headers"] == {"X-Campaign": "spring"}
        assert tags_of(item) == {
            TRACKING_KEY: recipient.tracking_id,
            "unimailtrack_category": "receipt",
            "unimailtrack_tag_orders": "1",
            "unimailtrack_tag_vip_customer": "1",
            "order_ref": "ORD_17",
        }
        assert "attachments" not in item and "scheduled_at" not in item
    assert [r.message_id for r in result.recipients] == ["id-0", "id-1", "id-2"]
    assert all(r.status is DeliveryStatus.ACCEPTED for r in result.recipients)


def test_batches_hold_at_most_a_hundred(api: respx.MockRouter) -> None:
    route = api.post("/emails/batch").mock(side_effect=batch_ok)
    result = adapter().send(email(to=[f"u{i}@example.com" for i in range(MAX_BATCH + 50)]))
    sizes = [len(json.loads(c.request.content)) for c in route.calls]
    assert sizes == [MAX_BATCH, 50]
    assert len(result.accepted) == MAX_BATCH + 50
    keys = {c.request.headers["idempotency-key"] for c in route.calls}
    assert len(keys) == 2


def test_attachments_and_send_at_go_one_request_per_recipient(api: respx.MockRouter) -> None:
    route = api.post("/emails").mock(side_effect=lambda r: httpx.Response(200, json={"id": "x"}))
    when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    message = email(
        attachments=[
            Attachment(filename="a.pdf", content=b"%PDF", content_type="application/pdf"),
            Attachment(
                filename="logo.png",
                content=b"\x89PNG",
                content_type="image/png",
                inline=True,
                content_id="logo",
            ),
        ],
        send_at=when,
    )
    result = adapter().send(message)
    assert route.call_count == 2
    body = json.loads(route.calls[0].request.content)
    assert body["to"] == ["ann@example.com"]
    assert body["scheduled_at"] == "2030-01-02T03:04:05+00:00"
    assert body["attachments"] == [
        {"filename": "a.pdf", "content": "JVBERg==", "content_type": "application/pdf"},
        {
            "filename": "logo.png",
            "content": "iVBORw==",
            "content_type": "image/png",
            "content_id": "logo",
        },
    ]
    assert [c.request.headers["idempotency-key"] for c in route.calls] == [
        f"unimailtrack-{r.tracking_id}" for r in result.recipients
    ]


def test_one_recipient_is_one_plain_request(api: respx.MockRouter) -> None:
    route = api.post("/emails").mock(return_value=httpx.Response(200, json={"id": "em_1"}))
    result = adapter().send(email(to=["ann@example.com"]))
    assert route.call_count == 1
    assert result.recipients[0].message_id == "em_1"


def test_a_retried_request_keeps_its_idempotency_key(api: respx.MockRouter) -> None:
    route = api.post("/emails").mock(
        side_effect=[
            httpx.Response(500, json={"name": "application_error", "message": "x"}),
            httpx.Response(200, json={"id": "em_2"}),
        ]
    )
    result = adapter(retry=RetryPolicy(max_retries=1, initial_delay=0)).send(
        email(to=["ann@example.com"])
    )
    assert result.recipients[0].status is DeliveryStatus.ACCEPTED
    first, second = (c.request for c in route.calls)
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
    assert first.content == second.content


@pytest.mark.parametrize(
    ("status", "body", "headers", "error", "retryable"),
    [
        (
            422,
            {
                "statusCode": 422,
                "name": "validation_error",
                "message": "Invalid `to` field. The email address needs to follow the format.",
            },
            {},
            InvalidRequest,
            False,
        ),
        (
            422,
            {"statusCode": 422, "name": "invalid_from_address", "message": "Invalid `from` field."},
            {},
            InvalidRequest,
            False,
        ),
        (
            401,
            {"statusCode": 401, "name": "missing_api_key", "message": "Missing API key"},
            {},
            AuthenticationError,
            False,
        ),
        (
            401,
            {"statusCode": 401, "name": "validation_error", "message": "API key is invalid"},
            {},
            AuthenticationError,
            False,
        ),
        (
            403,
            {"statusCode": 403, "name": "invalid_api_key", "message": "API key is invalid"},
            {},
            AuthenticationError,
            False,
        ),
        (
            403,
            {
                "statusCode": 403,
                "name": "validation_error",
                "message": "The acme.example domain is not verified.",
            },
            {},
            NotPermitted,
            False,
        ),
        (
            429,
            {"statusCode": 429, "name": "daily_quota_exceeded", "message": "quota"},
            {},
            NotPermitted,
            False,
        ),
        (
            429,
            {"statusCode": 429, "name": "rate_limit_exceeded", "message": "Too many requests"},
            {"ratelimit-reset": "2"},
            RateLimited,
            True,
        ),
        (
            409,
            {"statusCode": 409, "name": "concurrent_idempotent_requests", "message": "wait"},
            {},
            ProviderUnavailable,
            True,
        ),
        (
            500,
            {"statusCode": 500, "name": "internal_server_error", "message": "oops"},
            {},
            ProviderUnavailable,
            True,
        ),
        (502, "<html>bad gateway</html>", {}, ProviderUnavailable, True),
        (
            451,
            {"statusCode": 451, "name": "security_error", "message": "no"},
            {},
            NotPermitted,
            False,
        ),
    ],
)
def test_resend_errors_map_onto_the_error_tree(
    api: respx.MockRouter,
    status: int,
    body: Any,
    headers: dict[str, str],
    error: type[Exception],
    retryable: bool,
) -> None:
    answer = (
        httpx.Response(status, json=body, headers=headers)
        if isinstance(body, dict)
        else httpx.Response(status, text=body, headers=headers)
    )
    api.post("/emails").mock(return_value=answer)
    with pytest.raises(error) as caught:
        adapter().send(email(to=["ann@example.com"]))
    raised = caught.value
    assert type(raised) is error
    assert raised.retryable is retryable  # type: ignore[attr-defined]
    assert raised.status == status  # type: ignore[attr-defined]
    assert KEY not in str(raised)
    if isinstance(raised, RateLimited):
        assert raised.retry_after == 2.0
    if isinstance(raised, InvalidRequest) and "`" in body["message"]:
        assert raised.field_errors[0].field in ("to", "from")


def test_a_failed_batch_fails_every_recipient_and_the_mailer_raises(api: respx.MockRouter) -> None:
    api.post("/emails/batch").mock(
        return_value=httpx.Response(422, json={"name": "validation_error", "message": "bad"})
    )
    with pytest.raises(InvalidRequest):
        Mailer(adapter()).send(email())


def test_async_sends_the_same_requests(api: respx.MockRouter) -> None:
    route = api.post("/emails/batch").mock(side_effect=batch_ok)

    async def go() -> Any:
        async with adapter() as resend:
            return await resend.asend(email())

    result = asyncio.run(go())
    assert route.call_count == 1
    assert len(result.accepted) == 2


def test_sending_needs_an_api_key() -> None:
    with pytest.raises(ConfigurationError, match="API key"):
        ResendAdapter().send(email())


def test_asking_for_tracking_warns_once(
    api: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    api.post("/emails/batch").mock(side_effect=batch_ok)
    resend = adapter()
    with caplog.at_level(logging.WARNING, logger="unimailtrack.send"):
        resend.send(email(track_opens=True))
        resend.send(email(track_clicks=True))
    assert sum("domain" in r.getMessage() for r in caplog.records) == 1


def test_tags_are_sanitised_the_way_resend_accepts_them() -> None:
    assert sanitize_tag("order ref/17") == "order_ref_17"
    assert sanitize_tag("") == "_"
    assert len(sanitize_tag("x" * 300)) == 256


def test_the_dsn_reads_the_key_secrets_and_options() -> None:
    dsn = parse_dsn(
        "resend://re_abc@default?webhook_secret=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        "&tolerance=60&base_url=http://127.0.0.1:9/&max_retries=0"
    )
    assert not isinstance(dsn, type(None))
    built = ResendAdapter.from_dsn(dsn, env={SECRET_ENV: "whsec_" + "A" * 32})  # type: ignore[arg-type]
    assert built.base_url == "http://127.0.0.1:9"
    assert built.tolerance.total_seconds() == 60
    assert "webhook_secrets=2" in repr(built)
    assert "re_abc" not in repr(built)


@pytest.mark.parametrize(
    "text",
    ["resend://re_abc@api.resend.com", "resend://re_abc:extra@default"],
)
def test_a_malformed_dsn_is_refused(text: str) -> None:
    with pytest.raises(ConfigurationError):
        ResendAdapter.from_dsn(parse_dsn(text))  # type: ignore[arg-type]


def test_a_query_plus_read_as_a_space_is_restored() -> None:
    secret = "whsec_ab+cdefghijklmnopqrstuvwxyz01234"
    built = ResendAdapter.from_dsn(parse_dsn(f"resend://re_abc@default?webhook_secret={secret}"))  # type: ignore[arg-type]
    assert "webhook_secrets=1" in repr(built)
