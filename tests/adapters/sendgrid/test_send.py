"""SendGrid sending: the Mail Send payload, chunking, errors, regions and configuration."""

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
    PayloadTooLarge,
    ProviderUnavailable,
    RateLimited,
    SendError,
)
from unimailtrack._http import RetryPolicy
from unimailtrack.adapters import get_adapter_class
from unimailtrack.adapters.base import Recipient
from unimailtrack.adapters.sendgrid import (
    MAX_PERSONALIZATIONS,
    WEBHOOK_KEY_ENV,
    SendGridAdapter,
    SendGridWebhookSigner,
)
from unimailtrack.config import Dsn, parse_dsn
from unimailtrack.mailer import AsyncMailer, Mailer
from unimailtrack.model import TRACKING_KEY, Address

API_KEY = "SG.test-key.do-not-leak"
SEND_URL = "https://api.sendgrid.com/v3/mail/send"
EU_SEND_URL = "https://api.eu.sendgrid.com/v3/mail/send"
NO_RETRY = RetryPolicy.none()


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


def accepted(message_id: str = "Qk3tF9xjRJm4bX1WzYc7aQ") -> httpx.Response:
    return httpx.Response(202, headers={"X-Message-Id": message_id})


def sent_bodies(route: respx.Route) -> list[dict[str, Any]]:
    return [json.loads(call.request.content) for call in route.calls]


def full_email(**changes: Any) -> Email:
    fields: dict[str, Any] = {
        "sender": "Events Team <events@example.com>",
        "to": ["Alice Doe <alice@example.com>", "bob@example.net"],
        "cc": ["carol@example.org"],
        "bcc": ["Dan <dan@example.org>"],
        "reply_to": "Help Desk <help@example.com>",
        "subject": "Your order",
        "text": "Thanks for your order.",
        "html": "<p>Thanks for your order.</p><img src='cid:logo'>",
        "attachments": [
            Attachment(filename="order.pdf", content=b"%PDF-1.4", content_type="application/pdf"),
            Attachment(
                filename="logo.png",
                content=b"\x89PNG",
                content_type="image/png",
                inline=True,
                content_id="logo",
            ),
        ],
        "headers": {"X-Campaign": "spring", "List-Unsubscribe": "<mailto:u@example.com>"},
        "tags": ["transactional", "orders"],
        "metadata": {"order_ref": "ORD-17", "tenant": "acme"},
        "category": "order_confirmation",
        "send_at": datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
    }
    fields.update(changes)
    return Email(**fields)


def adapter(**options: Any) -> SendGridAdapter:
    options.setdefault("retry", NO_RETRY)
    return SendGridAdapter(API_KEY, **options)


# --------------------------------------------------------------------------- the payload


def test_every_email_field_reaches_the_mail_send_payload(api: respx.MockRouter) -> None:
    route = api.post(SEND_URL).mock(return_value=accepted())
    email = full_email()

    result = adapter().send(email)

    (body,) = sent_bodies(route)
    assert body["from"] == {"email": "events@example.com", "name": "Events Team"}
    assert body["reply_to"] == {"email": "help@example.com", "name": "Help Desk"}
    assert body["subject"] == "Your order"
    assert body["content"] == [
        {"type": "text/plain", "value": "Thanks for your order."},
        {"type": "text/html", "value": "<p>Thanks for your order.</p><img src='cid:logo'>"},
    ]
    assert body["attachments"] == [
        {
            "content": "JVBERi0xLjQ=",
            "type": "application/pdf",
            "filename": "order.pdf",
            "disposition": "attachment",
        },
        {
            "content": "iVBORw==",
            "type": "image/png",
            "filename": "logo.png",
            "disposition": "inline",
            "content_id": "logo",
        },
    ]
    assert body["headers"] == {
        "X-Campaign": "spring",
        "List-Unsubscribe": "<mailto:u@example.com>",
    }
    assert body["categories"] == ["transactional", "orders", "order_confirmation"]
    assert body["custom_args"] == {"order_ref": "ORD-17", "tenant": "acme"}
    assert body["send_at"] == 1893553445
    assert body["tracking_settings"] == {
        "open_tracking": {"enable": False},
        "click_tracking": {"enable": False, "enable_text": False},
    }
    # One personalization per recipient (to, cc and bcc alike), each with its tracking id.
    by_tracking_id = {r.tracking_id: r.recipient for r in result.recipients}
    assert [p["to"] for p in body["personalizations"]] == [
        [{"email": "alice@example.com", "name": "Alice Doe"}],
        [{"email": "bob@example.net"}],
        [{"email": "carol@example.org"}],
        [{"email": "dan@example.org", "name": "Dan"}],
    ]
    for personalization in body["personalizations"]:
        (tracking_id,) = personalization["custom_args"].values()
        assert set(personalization["custom_args"]) == {TRACKING_KEY}
        assert by_tracking_id[tracking_id] == personalization["to"][0]["email"]


def test_the_request_is_authenticated_json_for_the_v3_api(api: respx.MockRouter) -> None:
    route = api.post(SEND_URL).mock(return_value=accepted())

    adapter().send(full_email())

    request = route.calls.last.request
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"].startswith("unimailtrack/")


def test_the_body_is_the_compact_utf8_json_the_standard_library_writes() -> None:
    email = full_email(subject='Zo\u00eb\'s "order" \u2028 \U0001f4e6', text="a\tb\x00c")
    sendgrid = adapter()
    (call,) = sendgrid.build_calls(email, sendgrid.plan(email))

    body = json.loads(call.request.content)
    expected = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    assert call.request.content == expected
    assert call.request.headers["Content-Length"] == str(len(expected))


def test_a_body_that_is_not_utf8_fails_as_the_standard_library_fails() -> None:
    email = full_email(subject="half a surrogate pair \ud800")
    sendgrid = adapter()

    with pytest.raises(UnicodeEncodeError):
        sendgrid.build_calls(email, sendgrid.plan(email))


def test_tracking_is_on_only_when_the_email_asks(api: respx.MockRouter) -> None:
    route = api.post(SEND_URL).mock(return_value=accepted())

    adapter().send(full_email(track_opens=True, track_clicks=True))

    (body,) = sent_bodies(route)
    assert body["tracking_settings"] == {
        "open_tracking": {"enable": True},
        "click_tracking": {"enable": True, "enable_text": True},
    }


def test_a_minimal_email_sends_only_what_it_has(api: respx.MockRouter) -> None:
    route = api.post(SEND_URL).mock(return_value=accepted())

    adapter().send(
        Email(sender="a@example.com", to=["b@example.com"], subject="Hi", html="<b>hi</b>")
    )

    (body,) = sent_bodies(route)
    assert set(body) == {"personalizations", "from", "subject", "content", "tracking_settings"}
    assert body["from"] == {"email": "a@example.com"}
    assert body["content"] == [{"type": "text/html", "value": "<b>hi</b>"}]


def test_a_category_that_repeats_a_tag_is_sent_once(api: respx.MockRouter) -> None:
    route = api.post(SEND_URL).mock(return_value=accepted())

    adapter().send(full_email(tags=["a", "b", "a"], category="b"))

    assert sent_bodies(route)[0]["categories"] == ["a", "b"]


@pytest.mark.parametrize("key", ["event", "email", "sg_machine_open", TRACKING_KEY])
def test_metadata_that_would_overwrite_sendgrid_fields_is_refused(
    api: respx.MockRouter, key: str
) -> None:
    route = api.post(SEND_URL).mock(return_value=accepted())

    with pytest.raises(InvalidRequest) as caught:
        adapter().send(full_email(metadata={key: "x", "fine": "y"}))

    assert [f.field for f in caught.value.field_errors] == [f"metadata.{key}"]
    assert not route.called


# --------------------------------------------------------------------------- results


def test_202_accepts_every_recipient_with_the_x_message_id(api: respx.MockRouter) -> None:
    api.post(SEND_URL).mock(return_value=accepted("u8Pz0LmQTgyw1c2dE5fG-h"))

    result = adapter().send(full_email())

    assert [r.recipient for r in result.recipients] == [
        "alice@example.com",
        "bob@example.net",
        "carol@example.org",
        "dan@example.org",
    ]
    assert {r.status for r in result.recipients} == {DeliveryStatus.ACCEPTED}
    assert {r.message_id for r in result.recipients} == {"u8Pz0LmQTgyw1c2dE5fG-h"}
    assert {r.provider for r in result.recipients} == {"sendgrid"}
    assert len({r.tracking_id for r in result.recipients}) == 4


def test_interpret_is_pure() -> None:
    email = full_email()
    (call,) = adapter().build_calls(email, SendGridAdapter.plan(email))
    response = accepted("abc")

    assert call.interpret(response) == call.interpret(response)
    assert [r.tracking_id for r in call.interpret(response)] == [
        r.tracking_id for r in call.recipients
    ]


def many_recipients(count: int) -> list[Recipient]:
    return [Recipient(Address(f"user{i}@example.com"), f"{i:032x}") for i in range(count)]


def test_ten_thousand_recipients_go_out_in_ten_requests() -> None:
    recipients = many_recipients(10 * MAX_PERSONALIZATIONS)

    calls = adapter().build_calls(full_email(), recipients)

    assert len(calls) == 10
    assert [len(c.recipients) for c in calls] == [MAX_PERSONALIZATIONS] * 10
    bodies = [json.loads(c.request.content) for c in calls]
    assert all(len(b["personalizations"]) == MAX_PERSONALIZATIONS for b in bodies)
    sent = [p["to"][0]["email"] for b in bodies for p in b["personalizations"]]
    assert sent == [r.address.email for r in recipients]


def test_a_bulk_send_is_chunked_and_every_chunk_gets_its_own_message_id(
    api: respx.MockRouter,
) -> None:
    ids = iter(["first", "second", "third"])
    route = api.post(SEND_URL).mock(side_effect=lambda request: accepted(next(ids)))
    to = [f"user{i}@example.com" for i in range(2 * MAX_PERSONALIZATIONS + 1)]

    result = adapter().send(Email(sender="a@example.com", to=to, subject="s", text="t"))

    assert [len(body["personalizations"]) for body in sent_bodies(route)] == [1000, 1000, 1]
    assert [r.message_id for r in result.recipients[999:1001]] == ["first", "second"]
    assert result.recipients[-1].message_id == "third"


# --------------------------------------------------------------------------- errors


def error_body(*errors: tuple[str, str | None]) -> dict[str, Any]:
    return {"errors": [{"message": m, "field": f, "help": None} for m, f in errors]}


def test_400_carries_every_field_message(api: respx.MockRouter) -> None:
    api.post(SEND_URL).mock(
        return_value=httpx.Response(
            400,
            json=error_body(
                ("The subject is required.", "subject"),
                ("Does not contain a valid address.", "personalizations.0.to.0.email"),
            ),
        )
    )

    with pytest.raises(InvalidRequest) as caught:
        adapter().send(full_email())

    error = caught.value
    assert type(error) is InvalidRequest
    assert error.status == 400
    assert error.provider == "sendgrid"
    assert [(f.field, f.message) for f in error.field_errors] == [
        ("subject", "The subject is required."),
        ("personalizations.0.to.0.email", "Does not contain a valid address."),
    ]
    assert "The subject is required." in str(error)


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            401,
            error_body(("The provided authorization grant is invalid", None)),
            AuthenticationError,
        ),
        (403, error_body(("access forbidden", None)), AuthenticationError),
        (
            403,
            error_body(("The from address does not match a verified Sender Identity.", "from")),
            NotPermitted,
        ),
        (413, error_body(("Payload too large", None)), PayloadTooLarge),
        (500, {"errors": [{"message": "internal error"}]}, ProviderUnavailable),
        (503, "upstream unavailable", ProviderUnavailable),
    ],
)
def test_error_statuses_map_onto_the_error_tree(
    api: respx.MockRouter, status: int, body: Any, expected: type[SendError]
) -> None:
    response = (
        httpx.Response(status, json=body)
        if isinstance(body, dict)
        else httpx.Response(status, text=body)
    )
    api.post(SEND_URL).mock(return_value=response)

    with pytest.raises(expected) as caught:
        adapter().send(full_email())

    assert type(caught.value) is expected
    assert caught.value.status == status


def test_429_is_rate_limited_until_the_reset_time(api: respx.MockRouter) -> None:
    reset = int(datetime.now(UTC).timestamp()) + 30
    api.post(SEND_URL).mock(
        return_value=httpx.Response(
            429, headers={"X-RateLimit-Reset": str(reset)}, json=error_body(("too many", None))
        )
    )

    with pytest.raises(RateLimited) as caught:
        adapter().send(full_email())

    assert caught.value.retry_after is not None
    assert 20 < caught.value.retry_after <= 30


def test_5xx_and_timeouts_are_retried(api: respx.MockRouter) -> None:
    outcomes: list[httpx.Response | Exception] = [
        httpx.Response(502),
        httpx.ReadTimeout("slow"),
        accepted("after-retries"),
    ]

    def respond(request: httpx.Request) -> httpx.Response:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    route = api.post(SEND_URL).mock(side_effect=respond)

    result = adapter(retry=RetryPolicy(max_retries=2, initial_delay=0.0)).send(full_email())

    assert route.call_count == 3
    assert {r.message_id for r in result.recipients} == {"after-retries"}


def test_the_api_key_appears_in_no_error_and_no_log(
    api: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    api.post(SEND_URL).mock(return_value=httpx.Response(401, json=error_body(("bad key", None))))
    caplog.set_level(logging.DEBUG)

    with pytest.raises(AuthenticationError) as caught:
        adapter().send(full_email())

    assert API_KEY not in str(caught.value)
    assert API_KEY not in repr(caught.value)
    assert API_KEY not in caplog.text
    assert API_KEY not in repr(adapter())


def test_sending_without_an_api_key_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="API key"):
        SendGridAdapter().send(full_email())


# --------------------------------------------------------------------------- regions, async


def test_the_eu_region_uses_the_eu_host(api: respx.MockRouter) -> None:
    route = api.post(EU_SEND_URL).mock(return_value=accepted())

    adapter(region="eu").send(full_email())

    assert route.call_count == 1


def test_an_unknown_region_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="region"):
        SendGridAdapter(API_KEY, region="mars")


def test_sync_and_async_send_the_same_request(api: respx.MockRouter) -> None:
    route = api.post(SEND_URL).mock(return_value=accepted("same"))
    email = full_email()

    sync = adapter().send(email)
    asynchronous = asyncio.run(adapter().asend(email))

    first, second = sent_bodies(route)
    for body in (first, second):
        for personalization in body["personalizations"]:
            personalization.pop("custom_args")
    assert first == second
    assert [r.recipient for r in sync.recipients] == [r.recipient for r in asynchronous.recipients]
    assert {r.message_id for r in asynchronous.recipients} == {"same"}


def test_async_bulk_requests_run_concurrently_and_all_settle(api: respx.MockRouter) -> None:
    ids = iter(f"id{i}" for i in range(3))
    route = api.post(SEND_URL).mock(side_effect=lambda request: accepted(next(ids)))
    to = [f"user{i}@example.com" for i in range(2 * MAX_PERSONALIZATIONS + 5)]

    result = asyncio.run(
        adapter().asend(Email(sender="a@example.com", to=to, subject="s", text="t"))
    )

    assert route.call_count == 3
    assert len(result.recipients) == len(to)
    assert {r.status for r in result.recipients} == {DeliveryStatus.ACCEPTED}


# --------------------------------------------------------------------------- configuration


def test_the_registry_names_this_adapter() -> None:
    assert get_adapter_class("sendgrid") is SendGridAdapter


def from_dsn(text: str, env: dict[str, str] | None = None) -> SendGridAdapter:
    dsn = parse_dsn(text)
    assert isinstance(dsn, Dsn)
    return SendGridAdapter.from_dsn(dsn, env=env)


def test_the_dsn_carries_key_region_and_webhook_keys() -> None:
    old, new = SendGridWebhookSigner(), SendGridWebhookSigner()
    # A '+' left unescaped in a query string arrives as a space; both forms work.
    text = f"sendgrid://{API_KEY}@default?region=eu&webhook_key={old.public_key},{new.public_key}"

    built = from_dsn(text)

    assert built.base_url == "https://api.eu.sendgrid.com"
    body = b"[]\r\n"
    for signer in (old, new):
        built.verify_webhook(body, signer.sign(body))


def test_webhook_keys_also_come_from_the_environment() -> None:
    signer = SendGridWebhookSigner()
    built = from_dsn("sendgrid://default", env={WEBHOOK_KEY_ENV: f" {signer.public_key} ,"})

    built.verify_webhook(b"[]", signer.sign(b"[]"))
    with pytest.raises(ConfigurationError, match="API key"):
        built.send(full_email())


def test_dsn_options_tolerance_and_base_url() -> None:
    built = from_dsn("sendgrid://KEY@default?tolerance=60&base_url=http://127.0.0.1:8025/")

    assert built.tolerance.total_seconds() == 60
    assert built.base_url == "http://127.0.0.1:8025"


@pytest.mark.parametrize(
    "text",
    [
        "sendgrid://KEY@api.example.com",
        "sendgrid://KEY:SECRET@default",
        "sendgrid://KEY@default?webhook_key=not-a-key",
        "sendgrid://KEY@default?region=moon",
        "sendgrid://KEY@default?tolerance=0",
    ],
)
def test_bad_dsns_are_configuration_errors(text: str) -> None:
    with pytest.raises(ConfigurationError):
        from_dsn(text)


def test_mailer_sends_through_a_sendgrid_dsn(api: respx.MockRouter) -> None:
    route = api.post(SEND_URL).mock(return_value=accepted("via-mailer"))

    with Mailer.from_env(env={"UNIMAILTRACK_DSN": f"sendgrid://{API_KEY}@default"}) as mailer:
        result = mailer.send(full_email(to=["a@example.com", "A@example.com"], cc=[], bcc=[]))

    (body,) = sent_bodies(route)
    assert [p["to"][0]["email"] for p in body["personalizations"]] == ["a@example.com"]
    assert [r.status for r in result.recipients] == [
        DeliveryStatus.ACCEPTED,
        DeliveryStatus.DUPLICATE,
    ]
    assert result.recipients[0].message_id == "via-mailer"


def test_async_mailer_sends_through_a_sendgrid_dsn(api: respx.MockRouter) -> None:
    api.post(EU_SEND_URL).mock(return_value=accepted("async-mailer"))

    async def send() -> list[str | None]:
        async with AsyncMailer(f"sendgrid://{API_KEY}@default?region=eu") as mailer:
            result = await mailer.send(full_email())
        return [r.message_id for r in result.recipients]

    assert asyncio.run(send()) == ["async-mailer"] * 4
