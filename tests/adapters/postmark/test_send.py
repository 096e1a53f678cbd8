"""Postmark sending: single and batch requests, metadata, per-message error codes, DSN."""

from __future__ import annotations

import json
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
from unimailtrack.adapters import PostmarkAdapter
from unimailtrack.adapters.postmark import SECRET_ENV
from unimailtrack.adapters.postmark.send import MAX_BATCH
from unimailtrack.config import parse_dsn
from unimailtrack.mailer import Mailer
from unimailtrack.model import TRACKING_KEY

API = "https://api.postmarkapp.com"
TOKEN = "pm-server-token-do-not-leak"


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False, base_url=API) as router:
        yield router


def ok(message: dict[str, Any], n: int = 0) -> dict[str, Any]:
    return {
        "To": message["To"],
        "SubmittedAt": "2024-01-01T00:00:00Z",
        "MessageID": f"pm-{n}",
        "ErrorCode": 0,
        "Message": "OK",
    }


def batch_ok(request: httpx.Request) -> httpx.Response:
    sent = json.loads(request.content)
    return httpx.Response(200, json=[ok(m, i) for i, m in enumerate(sent)])


def email(**fields: Any) -> Email:
    fields.setdefault("sender", "Acme <orders@acme.example>")
    fields.setdefault("to", ["ann@example.com", "bob@example.com"])
    fields.setdefault("subject", "Your order")
    fields.setdefault("text", "Thanks.")
    return Email(**fields)


def adapter(**options: Any) -> PostmarkAdapter:
    options.setdefault("retry", RetryPolicy.none())
    return PostmarkAdapter(TOKEN, **options)


def test_a_bulk_send_is_one_batch_of_one_message_per_recipient(api: respx.MockRouter) -> None:
    route = api.post("/email/batch").mock(side_effect=batch_ok)
    message = email(
        html="<p>Thanks.</p>",
        reply_to="Help <help@acme.example>",
        headers={"X-Campaign": "spring"},
        category="receipt",
        tags=["orders", "vip"],
        metadata={"order_ref": "ORD-17"},
        track_opens=True,
    )
    result = adapter(message_stream="broadcast").send(message)
    request = route.calls[0].request
    assert request.headers["x-postmark-server-token"] == TOKEN
    items = json.loads(request.content)
    assert [i["To"] for i in items] == ["ann@example.com", "bob@example.com"]
    for item, recipient in zip(items, result.recipients, strict=True):
        assert item["From"] == "Acme <orders@acme.example>"
        assert item["HtmlBody"] == "<p>Thanks.</p>" and item["TextBody"] == "Thanks."
        assert item["ReplyTo"] == "Help <help@acme.example>"
        assert item["Headers"] == [{"Name": "X-Campaign", "Value": "spring"}]
        assert item["Tag"] == "receipt"
        assert item["MessageStream"] == "broadcast"
        assert item["TrackOpens"] is True and item["TrackLinks"] == "None"
        assert item["Metadata"] == {
            TRACKING_KEY: recipient.tracking_id,
            "order_ref": "ORD-17",
            "unimailtrack_tags": "orders,vip",
        }
    assert [r.message_id for r in result.recipients] == ["pm-0", "pm-1"]


def test_tracking_is_off_unless_asked(api: respx.MockRouter) -> None:
    route = api.post("/email").mock(
        side_effect=lambda r: httpx.Response(200, json=ok(json.loads(r.content)))
    )
    adapter().send(email(to=["ann@example.com"]))
    sent = json.loads(route.calls[0].request.content)
    assert sent["TrackOpens"] is False and sent["TrackLinks"] == "None"
    adapter().send(email(to=["ann@example.com"], track_clicks=True))
    assert json.loads(route.calls[1].request.content)["TrackLinks"] == "HtmlAndText"


def test_batches_hold_at_most_five_hundred(api: respx.MockRouter) -> None:
    route = api.post("/email/batch").mock(side_effect=batch_ok)
    adapter().send(email(to=[f"u{i}@example.com" for i in range(MAX_BATCH + 1)]))
    assert [len(json.loads(c.request.content)) for c in route.calls] == [MAX_BATCH, 1]


def test_attachments_travel_with_inline_content_ids(api: respx.MockRouter) -> None:
    route = api.post("/email").mock(
        side_effect=lambda r: httpx.Response(200, json=ok(json.loads(r.content)))
    )
    logo = Attachment(
        filename="logo.png",
        content=b"\x89PNG",
        content_type="image/png",
        inline=True,
        content_id="logo",
    )
    adapter().send(email(to=["ann@example.com"], attachments=[logo]))
    sent = json.loads(route.calls[0].request.content)
    assert sent["Attachments"] == [
        {
            "Name": "logo.png",
            "Content": "iVBORw==",
            "ContentType": "image/png",
            "ContentID": "cid:logo",
        }
    ]


def test_send_at_is_refused_before_anything_is_sent(api: respx.MockRouter) -> None:
    route = api.post("/email").mock(return_value=httpx.Response(200))
    with pytest.raises(InvalidRequest, match="schedule"):
        adapter().send(email(to=["ann@example.com"], send_at=datetime(2030, 1, 1, tzinfo=UTC)))
    assert route.call_count == 0


def test_an_inactive_recipient_in_a_batch_is_suppressed_with_the_reason(
    api: respx.MockRouter,
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        sent = json.loads(request.content)
        return httpx.Response(
            200,
            json=[
                ok(sent[0]),
                {
                    "ErrorCode": 406,
                    "Message": "You tried to send to recipient(s) that have been "
                    "marked as inactive. Found inactive addresses: bob@example.com.",
                },
                {"ErrorCode": 300, "Message": "Invalid 'To' address: 'x'."},
            ],
        )

    api.post("/email/batch").mock(side_effect=answer)
    result = adapter().send(email(to=["ann@example.com", "bob@example.com", "cy@example.com"]))
    assert [r.status for r in result.recipients] == [
        DeliveryStatus.ACCEPTED,
        DeliveryStatus.SUPPRESSED,
        DeliveryStatus.FAILED,
    ]
    assert "inactive" in (result.recipients[1].error or "")


def test_an_inactive_single_recipient_is_suppressed_not_raised(api: respx.MockRouter) -> None:
    api.post("/email").mock(
        return_value=httpx.Response(422, json={"ErrorCode": 406, "Message": "inactive"})
    )
    result = adapter().send(email(to=["ann@example.com"]))
    assert result.recipients[0].status is DeliveryStatus.SUPPRESSED


def test_a_batch_refused_for_one_reason_raises_it(api: respx.MockRouter) -> None:
    api.post("/email/batch").mock(
        return_value=httpx.Response(
            200, json=[{"ErrorCode": 400, "Message": "Sender signature not found"}] * 2
        )
    )
    with pytest.raises(NotPermitted):
        Mailer(adapter()).send(email())


@pytest.mark.parametrize(
    ("status", "code", "error", "retryable"),
    [
        (401, 10, AuthenticationError, False),
        (422, 300, InvalidRequest, False),
        (422, 400, NotPermitted, False),
        (422, 401, NotPermitted, False),
        (422, 405, NotPermitted, False),
        (422, 412, NotPermitted, False),
        (422, 411, InvalidRequest, False),
        (429, 429, RateLimited, True),
        (500, None, ProviderUnavailable, True),
        (503, 100, ProviderUnavailable, True),
    ],
)
def test_postmark_error_codes_map_onto_the_error_tree(
    api: respx.MockRouter, status: int, code: int | None, error: type[Exception], retryable: bool
) -> None:
    body = {"ErrorCode": code, "Message": "refused"} if code is not None else {"Message": "boom"}
    api.post("/email").mock(return_value=httpx.Response(status, json=body))
    with pytest.raises(error) as caught:
        adapter().send(email(to=["ann@example.com"]))
    assert type(caught.value) is error
    assert caught.value.retryable is retryable  # type: ignore[attr-defined]
    assert TOKEN not in str(caught.value)


def test_sending_needs_a_server_token() -> None:
    with pytest.raises(ConfigurationError, match="server token"):
        PostmarkAdapter().send(email())


def test_the_dsn_reads_token_secrets_stream_and_networks() -> None:
    dsn = parse_dsn(
        "postmark://pm-abc@default?webhook_secret=hook:pw,tok2&message_stream=broadcast"
        "&allowed_networks=3.134.147.250/32,50.31.156.6&trusted_proxies=10.0.0.0/8"
        "&forwarded_header=x-real-ip"
    )
    built = PostmarkAdapter.from_dsn(dsn, env={SECRET_ENV: "other:pw"})  # type: ignore[arg-type]
    assert built.message_stream == "broadcast"
    text = repr(built)
    assert "basic=2" in text and "bearer=1" in text and "networks=2" in text
    assert "pm-abc" not in text and "pw" not in text


@pytest.mark.parametrize("text", ["postmark://t@api.postmarkapp.com", "postmark://t:x@default"])
def test_a_malformed_dsn_is_refused(text: str) -> None:
    with pytest.raises(ConfigurationError):
        PostmarkAdapter.from_dsn(parse_dsn(text))  # type: ignore[arg-type]


def test_a_bad_network_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="allowed_networks"):
        PostmarkAdapter(allowed_networks=["not-an-ip"])
