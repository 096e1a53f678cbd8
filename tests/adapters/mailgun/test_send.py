"""Sending through Mailgun: the request every Email field becomes, batches, errors, regions."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from datetime import UTC, datetime, timedelta, timezone
from email import policy
from email.parser import BytesParser
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import respx

from unimailtrack import (
    AsyncMailer,
    Attachment,
    AuthenticationError,
    ConfigurationError,
    DeliveryStatus,
    Email,
    InvalidRequest,
    Mailer,
    NotPermitted,
    PayloadTooLarge,
    ProviderUnavailable,
    RateLimited,
    SendError,
)
from unimailtrack._http import RetryPolicy
from unimailtrack.adapters import MailgunAdapter, get_adapter_class
from unimailtrack.adapters.base import Recipient
from unimailtrack.adapters.mailgun import BATCH_LIMIT, batches
from unimailtrack.config import Dsn, parse_dsn
from unimailtrack.model import Address

API_KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"
DOMAIN = "mg.example.com"
US_URL = f"https://api.mailgun.net/v3/{DOMAIN}/messages"
EU_URL = f"https://api.eu.mailgun.net/v3/{DOMAIN}/messages"
QUEUED = {"id": "<20240115093001.a1b2c3d4e5f60718@mg.example.com>", "message": "Queued."}


def dsn(text: str) -> Dsn:
    parsed = parse_dsn(text)
    assert isinstance(parsed, Dsn)
    return parsed


def adapter(**kwargs: Any) -> MailgunAdapter:
    kwargs.setdefault("retry", RetryPolicy.none())
    return MailgunAdapter(API_KEY, DOMAIN, **kwargs)


def form(request: httpx.Request) -> tuple[dict[str, list[str]], list[tuple[str, str, str, bytes]]]:
    """The fields and files of a form request, read with the standard library."""
    content_type = request.headers["content-type"]
    body = request.read()
    fields: dict[str, list[str]] = {}
    files: list[tuple[str, str, str, bytes]] = []
    if content_type.startswith("application/x-www-form-urlencoded"):
        for name, value in parse_qsl(body.decode(), keep_blank_values=True):
            fields.setdefault(name, []).append(value)
        return fields, files
    assert content_type.startswith("multipart/form-data")
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        assert isinstance(name, str)
        assert isinstance(payload, bytes)
        filename = part.get_filename()
        if filename is None:
            fields.setdefault(name, []).append(payload.decode())
        else:
            files.append((name, filename, part.get_content_type(), payload))
    return fields, files


def recipient_variables(fields: dict[str, list[str]]) -> dict[str, dict[str, str]]:
    (raw,) = fields["recipient-variables"]
    variables: dict[str, dict[str, str]] = json.loads(raw)
    return variables


def full_email() -> Email:
    return Email(
        sender="Acme Shop <orders@mg.example.com>",
        to=["Alice Example <alice@example.com>", "bob@example.org"],
        cc=["Carol <carol@example.net>"],
        bcc=["dave@example.com"],
        reply_to="Support Team <support@example.com>",
        subject="Your order ORD-17 ✓",
        text="Thanks for your order.",
        html='<p>Thanks!</p><img src="cid:logo">',
        attachments=[
            Attachment(filename="invoice.pdf", content=b"%PDF-1.7", content_type="application/pdf"),
            Attachment(
                filename="logo.png",
                content=b"\x89PNG\r\n",
                content_type="image/png",
                inline=True,
                content_id="logo",
            ),
        ],
        headers={"X-Campaign": "spring", "List-Unsubscribe": "<mailto:u@example.com>"},
        tags=["orders", "transactional"],
        metadata={"order_ref": "ORD-17", "tenant": "acme"},
        category="order_confirmation",
        track_opens=True,
        track_clicks=False,
        send_at=datetime(2024, 1, 15, 11, 0, tzinfo=timezone(timedelta(hours=1))),
    )


@respx.mock(assert_all_called=True)
def test_every_email_field_reaches_mailgun(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post(US_URL).respond(200, json=QUEUED)
    with adapter() as mailgun:
        result = mailgun.send(full_email())

    request = route.calls.last.request
    auth = base64.b64encode(f"api:{API_KEY}".encode()).decode()
    assert request.headers["authorization"] == f"Basic {auth}"
    fields, files = form(request)
    assert fields["from"] == ["Acme Shop <orders@mg.example.com>"]
    assert fields["to"] == [
        "Alice Example <alice@example.com>",
        "bob@example.org",
        "Carol <carol@example.net>",
        "dave@example.com",
    ]
    assert "cc" not in fields
    assert "bcc" not in fields
    assert fields["h:Reply-To"] == ["Support Team <support@example.com>"]
    assert fields["subject"] == ["Your order ORD-17 ✓"]
    assert fields["text"] == ["Thanks for your order."]
    assert fields["html"] == ['<p>Thanks!</p><img src="cid:logo">']
    assert fields["h:X-Campaign"] == ["spring"]
    assert fields["h:List-Unsubscribe"] == ["<mailto:u@example.com>"]
    assert fields["o:tag"] == ["order_confirmation", "orders", "transactional"]
    assert fields["v:order_ref"] == ["ORD-17"]
    assert fields["v:tenant"] == ["acme"]
    assert fields["v:unimailtrack_id"] == ["%recipient.unimailtrack_id%"]
    assert fields["o:tracking-opens"] == ["yes"]
    assert fields["o:tracking-clicks"] == ["no"]
    assert fields["o:deliverytime"] == ["Mon, 15 Jan 2024 10:00:00 GMT"]
    assert files == [
        ("attachment", "invoice.pdf", "application/pdf", b"%PDF-1.7"),
        ("inline", "logo", "image/png", b"\x89PNG\r\n"),
    ]

    assert recipient_variables(fields) == {
        r.recipient: {"unimailtrack_id": r.tracking_id} for r in result.recipients
    }
    assert [r.recipient for r in result.recipients] == [
        "alice@example.com",
        "bob@example.org",
        "carol@example.net",
        "dave@example.com",
    ]
    assert len({r.tracking_id for r in result.recipients}) == 4
    for r in result.recipients:
        assert r.status is DeliveryStatus.ACCEPTED
        assert r.message_id == "20240115093001.a1b2c3d4e5f60718@mg.example.com"
        assert r.provider == "mailgun"


@respx.mock(assert_all_called=True)
def test_tracking_is_off_and_optional_fields_absent_unless_asked(
    respx_mock: respx.MockRouter,
) -> None:
    route = respx_mock.post(US_URL).respond(200, json=QUEUED)
    email = Email(sender="events@mg.example.com", to=["a@example.com"], subject="Hi", text="x")
    with adapter() as mailgun:
        mailgun.send(email)

    fields, files = form(route.calls.last.request)
    assert files == []
    assert fields["o:tracking-opens"] == ["no"]
    assert fields["o:tracking-clicks"] == ["no"]
    for absent in ("html", "h:Reply-To", "o:tag", "o:deliverytime"):
        assert absent not in fields
    assert [k for k in fields if k.startswith("v:")] == ["v:unimailtrack_id"]


@respx.mock(assert_all_called=True)
def test_a_bulk_send_is_split_at_the_batch_limit(respx_mock: respx.MockRouter) -> None:
    ids = iter(f"<batch-{n}@mg.example.com>" for n in range(3))
    route = respx_mock.post(US_URL).mock(
        side_effect=lambda request: httpx.Response(200, json={"id": next(ids)})
    )
    addresses = [f"user{n}@example.com" for n in range(2 * BATCH_LIMIT + 1)]
    with adapter() as mailgun:
        result = mailgun.send(Email(sender="e@mg.example.com", to=addresses, text="x"))

    assert route.call_count == 3
    sizes = []
    for call in route.calls:
        fields, _ = form(call.request)
        variables = recipient_variables(fields)
        assert list(variables) == fields["to"]
        sizes.append(len(fields["to"]))
    assert sizes == [BATCH_LIMIT, BATCH_LIMIT, 1]
    assert [r.recipient for r in result.recipients] == addresses
    assert {r.message_id for r in result.recipients[:BATCH_LIMIT]} == {"batch-0@mg.example.com"}
    assert result.recipients[-1].message_id == "batch-2@mg.example.com"


def test_batches_respect_the_limit_and_never_repeat_an_address() -> None:
    def rcpt(email: str) -> Recipient:
        return Recipient(Address(email), email.upper())

    people = [rcpt(e) for e in ("a@x.com", "b@x.com", "c@x.com", "A@x.com", "d@x.com")]
    chunks = batches(people, 2)
    assert [[r.address.email for r in c] for c in chunks] == [
        ["a@x.com", "b@x.com"],
        ["c@x.com", "A@x.com"],
        ["d@x.com"],
    ]
    repeated = batches([rcpt("a@x.com"), rcpt("b@x.com"), rcpt("a@x.com")], 10)
    assert [len(c) for c in repeated] == [2, 1]
    assert batches([], 10) == []


ERRORS = [
    (400, {"message": "'to' parameter is not a valid address"}, InvalidRequest),
    (401, "Forbidden", AuthenticationError),
    (402, {"message": "Payment required"}, NotPermitted),
    (403, {"message": "Domain mg.example.com is not allowed to send"}, NotPermitted),
    (413, {"message": "request too large"}, PayloadTooLarge),
    (429, {"message": "Too many requests"}, RateLimited),
    (500, "Internal Server Error", ProviderUnavailable),
    (503, {"message": "Service unavailable"}, ProviderUnavailable),
]


@pytest.mark.parametrize(("status", "body", "error"), ERRORS)
def test_each_error_status_raises_its_error(
    status: int, body: Any, error: type[SendError], caplog: pytest.LogCaptureFixture
) -> None:
    response = (
        httpx.Response(status, json=body)
        if isinstance(body, dict)
        else httpx.Response(status, text=body)
    )
    caplog.set_level(logging.DEBUG)
    with respx.mock(assert_all_called=True) as mock, adapter() as mailgun:
        mock.post(US_URL).mock(return_value=response)
        with pytest.raises(error) as raised:
            mailgun.send(Email(sender="e@mg.example.com", to=["a@example.com"], text="x"))

    assert type(raised.value) is error
    assert raised.value.status == status
    assert raised.value.provider == "mailgun"
    assert raised.value.detail == (body["message"] if isinstance(body, dict) else body)
    assert API_KEY not in str(raised.value)
    assert API_KEY not in repr(raised.value)
    assert API_KEY not in caplog.text


def test_the_key_never_shows_in_the_adapter_repr() -> None:
    assert API_KEY not in repr(adapter())
    assert repr(adapter()) == "<MailgunAdapter domain='mg.example.com' region='us'>"


@respx.mock(assert_all_called=True)
def test_unavailable_and_timed_out_requests_are_retried(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post(US_URL).mock(
        side_effect=[
            httpx.Response(503, json={"message": "try later"}),
            httpx.ConnectTimeout("timed out"),
            httpx.Response(200, json=QUEUED),
        ]
    )
    retry = RetryPolicy(max_retries=2, initial_delay=0.0)
    with adapter(retry=retry) as mailgun:
        result = mailgun.send(Email(sender="e@mg.example.com", to=["a@example.com"], text="x"))
    assert route.call_count == 3
    assert result.recipients[0].status is DeliveryStatus.ACCEPTED


@respx.mock(assert_all_called=True)
def test_a_success_without_an_id_is_still_accepted(respx_mock: respx.MockRouter) -> None:
    respx_mock.post(US_URL).respond(200, text="Queued. Thank you.")
    with adapter() as mailgun:
        result = mailgun.send(Email(sender="e@mg.example.com", to=["a@example.com"], text="x"))
    assert result.recipients[0].status is DeliveryStatus.ACCEPTED
    assert result.recipients[0].message_id is None


@respx.mock(assert_all_called=True)
def test_the_eu_region_sends_to_the_eu_endpoint(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post(EU_URL).respond(200, json=QUEUED)
    with MailgunAdapter.from_dsn(dsn(f"mailgun://{API_KEY}:{DOMAIN}@default?region=eu")) as mailgun:
        assert mailgun.region == "eu"
        mailgun.send(Email(sender="e@mg.example.com", to=["a@example.com"], text="x"))
    assert route.called


def test_an_unknown_region_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="region"):
        MailgunAdapter(API_KEY, DOMAIN, region="ap")


def test_sending_without_key_or_domain_fails_on_first_send() -> None:
    webhook_only = MailgunAdapter.from_dsn(dsn("mailgun://default?webhook_key=whsec"))
    email = Email(sender="e@mg.example.com", to=["a@example.com"], text="x")
    with pytest.raises(ConfigurationError, match="API key and a sending domain"):
        webhook_only.send(email)
    with pytest.raises(ConfigurationError):
        MailgunAdapter(API_KEY).send(email)


def test_the_registry_and_dsn_build_a_mailgun_adapter() -> None:
    assert get_adapter_class("mailgun") is MailgunAdapter
    built = MailgunAdapter.from_dsn(
        dsn(f"mailgun://{API_KEY}:{DOMAIN}@api.example.net:8443?timeout=3")
    )
    assert built.domain == DOMAIN
    assert built.base_url == "https://api.example.net:8443"
    assert built.timeout == 3.0


def test_async_send_runs_every_batch() -> None:
    addresses = [f"user{n}@example.com" for n in range(BATCH_LIMIT + 5)]

    async def main() -> list[str]:
        async with adapter() as mailgun:
            result = await mailgun.asend(Email(sender="e@mg.example.com", to=addresses, text="x"))
        return [r.recipient for r in result.recipients if r.status is DeliveryStatus.ACCEPTED]

    with respx.mock(assert_all_called=True) as mock:
        route = mock.post(US_URL).respond(200, json=QUEUED)
        accepted = asyncio.run(main())
    assert route.call_count == 2
    assert accepted == addresses


def test_async_errors_are_the_same_errors() -> None:
    async def main() -> None:
        async with adapter() as mailgun:
            await mailgun.asend(Email(sender="e@mg.example.com", to=["a@example.com"], text="x"))

    with respx.mock(assert_all_called=True) as mock:
        mock.post(US_URL).respond(401, text="Forbidden")
        with pytest.raises(AuthenticationError):
            asyncio.run(main())


def test_a_mailer_sends_through_a_mailgun_dsn() -> None:
    env = {"UNIMAILTRACK_DSN": f"mailgun://{API_KEY}:{DOMAIN}@default?region=eu&webhook_key=k"}
    email = Email(sender="e@mg.example.com", to=["a@example.com", "b@example.com"], text="x")
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post(EU_URL).respond(200, json=QUEUED)
        with Mailer.from_env(env=env) as mailer:
            assert isinstance(mailer.adapters["mailgun"], MailgunAdapter)
            result = mailer.send(email)
    fields, _ = form(route.calls.last.request)
    assert recipient_variables(fields) == {
        r.recipient: {"unimailtrack_id": r.tracking_id} for r in result.recipients
    }
    assert [r.status for r in result.recipients] == [DeliveryStatus.ACCEPTED] * 2


def test_an_async_mailer_sends_through_a_mailgun_dsn() -> None:
    async def main() -> list[DeliveryStatus]:
        async with AsyncMailer(f"mailgun://{API_KEY}:{DOMAIN}@default") as mailer:
            result = await mailer.send(
                Email(sender="e@mg.example.com", to=["a@example.com"], text="x")
            )
        return [r.status for r in result.recipients]

    with respx.mock(assert_all_called=True) as mock:
        mock.post(US_URL).respond(200, json=QUEUED)
        assert asyncio.run(main()) == [DeliveryStatus.ACCEPTED]


def test_send_at_is_rfc_2822_in_utc() -> None:
    email = Email(
        sender="e@mg.example.com",
        to=["a@example.com"],
        text="x",
        send_at=datetime(2024, 2, 29, 23, 30, 5, tzinfo=UTC),
    )
    (call,) = adapter().build_calls(email, adapter().plan(email))
    fields, _ = form(call.request)
    assert fields["o:deliverytime"] == ["Thu, 29 Feb 2024 23:30:05 GMT"]
