"""Amazon SES sending: SES v2 requests over SigV4, content, tags, errors, DSN, and a real
round trip through moto's server."""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
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
    Mailer,
    NotPermitted,
    ProviderUnavailable,
    RateLimited,
    SendError,
)
from unimailtrack._http import RetryPolicy
from unimailtrack.adapters.ses import SESAdapter
from unimailtrack.adapters.ses.send import Pacer, sanitize_tag, stale
from unimailtrack.config import parse_dsn

ENDPOINT = "https://email.eu-west-1.amazonaws.com/v2/email/outbound-emails"


@pytest.fixture(autouse=True)
def isolated_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No AWS configuration from the machine running the tests leaks in."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_USE_FIPS_ENDPOINT",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_SESV2",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@functools.cache
def shared_session() -> Any:
    """One boto3 session for most tests: a new session loads botocore's data files again."""
    import boto3

    return boto3.Session(
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    )


def adapter(**options: Any) -> SESAdapter:
    options.setdefault("region", "eu-west-1")
    if not {"access_key_id", "profile", "boto3_session"} & set(options):
        options["boto3_session"] = shared_session()
    options.setdefault("retry", RetryPolicy.none())
    return SESAdapter(**options)


def email(**fields: Any) -> Email:
    fields.setdefault("sender", "Acme Shop <orders@acme.example>")
    fields.setdefault("to", ["alice@example.com"])
    fields.setdefault("subject", "Your order")
    fields.setdefault("text", "Thanks for your order.")
    return Email(**fields)


def accepted(message_id: str = "0100018d-msg") -> httpx.Response:
    return httpx.Response(200, json={"MessageId": message_id})


def sent_json(route: respx.Route, index: int = 0) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(route.calls[index].request.content)
    return body


def raw_message(payload: dict[str, Any]) -> EmailMessage:
    data = base64.b64decode(payload["Content"]["Raw"]["Data"])
    message = message_from_bytes(data, policy=default_policy)
    assert isinstance(message, EmailMessage)
    return message


def tags_of(payload: dict[str, Any]) -> dict[str, str]:
    return {t["Name"]: t["Value"] for t in payload["EmailTags"]}


@pytest.fixture
def ses() -> Iterator[respx.Route]:
    with respx.mock(assert_all_called=False) as router:
        yield router.post(ENDPOINT).mock(return_value=accepted())


# --------------------------------------------------------------------------- requests


def test_simple_content_one_request_per_recipient(ses: respx.Route) -> None:
    message = email(
        to=["alice@example.com"],
        cc=["Bob <bob@example.com>"],
        bcc=["carol@example.com"],
        reply_to="Support <support@acme.example>",
        html="<p>Thanks</p>",
    )
    result = adapter(configuration_set="unimailtrack-events").send(message)
    assert [r.recipient for r in result.recipients] == [
        "alice@example.com",
        "bob@example.com",
        "carol@example.com",
    ]
    assert all(r.status is DeliveryStatus.ACCEPTED for r in result.recipients)
    assert all(r.message_id == "0100018d-msg" and r.provider == "ses" for r in result.recipients)
    assert ses.call_count == 3
    first = sent_json(ses)
    assert first["FromEmailAddress"] == "Acme Shop <orders@acme.example>"
    assert first["Destination"] == {"ToAddresses": ["alice@example.com"]}
    assert first["ReplyToAddresses"] == ["Support <support@acme.example>"]
    assert first["ConfigurationSetName"] == "unimailtrack-events"
    assert first["Content"] == {
        "Simple": {
            "Subject": {"Data": "Your order", "Charset": "UTF-8"},
            "Body": {
                "Text": {"Data": "Thanks for your order.", "Charset": "UTF-8"},
                "Html": {"Data": "<p>Thanks</p>", "Charset": "UTF-8"},
            },
        }
    }
    assert sent_json(ses, 1)["Destination"] == {"ToAddresses": ["Bob <bob@example.com>"]}
    for index, recipient in enumerate(result.recipients):
        assert tags_of(sent_json(ses, index))["unimailtrack_id"] == recipient.tracking_id


def test_requests_are_signed_with_sigv4(ses: respx.Route) -> None:
    adapter(
        access_key_id="AKIDEXAMPLE", secret_access_key="secret", session_token="FwoGZXIvYXdzEXAMPLE"
    ).send(email())
    request = ses.calls[0].request
    authorization = request.headers["authorization"]
    day = request.headers["x-amz-date"][:8]
    assert authorization.startswith(
        f"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/{day}/eu-west-1/ses/aws4_request, "
    )
    assert "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token" in authorization
    assert request.headers["x-amz-security-token"] == "FwoGZXIvYXdzEXAMPLE"
    assert request.headers["content-type"] == "application/json"


def test_non_ascii_names_and_domains_are_encoded_for_ses(ses: respx.Route) -> None:
    adapter().send(email(sender="Événements <events@acme.example>", to=["zoë@exämple.com"]))
    payload = sent_json(ses)
    assert payload["FromEmailAddress"] == "=?utf-8?b?w4l2w6luZW1lbnRz?= <events@acme.example>"
    assert payload["Destination"]["ToAddresses"] == ["zoë@xn--exmple-cua.com"]


def test_attachments_headers_and_inline_images_go_as_raw_mime(ses: respx.Route) -> None:
    message = email(
        to=["alice@example.com", "bob@example.com"],
        html='<p>Order</p><img src="cid:logo">',
        headers={"X-Order": "ORD-17", "X-SES-CONFIGURATION-SET": "receipts"},
        attachments=[
            Attachment(filename="invoice.pdf", content=b"%PDF-1.7", content_type="application/pdf"),
            Attachment(
                filename="logo.png",
                content=b"\x89PNG",
                content_type="image/png",
                inline=True,
                content_id="logo",
            ),
        ],
    )
    adapter(configuration_set="default-set").send(message)
    payload = sent_json(ses, 1)
    assert "Simple" not in payload["Content"]
    assert payload["ConfigurationSetName"] == "receipts"
    mime = raw_message(payload)
    assert mime["To"] == "bob@example.com"  # each copy is addressed to its recipient alone
    assert mime["From"] == "Acme Shop <orders@acme.example>"
    assert mime["X-Order"] == "ORD-17"
    assert mime["X-SES-CONFIGURATION-SET"] is None
    assert mime.get_content_type() == "multipart/mixed"
    assert mime.get_body(("plain",)).get_content().strip() == "Thanks for your order."  # type: ignore[union-attr]
    related = next(p for p in mime.walk() if p.get_content_type() == "multipart/related")
    image = next(p for p in related.iter_parts() if p.get_content_type() == "image/png")
    assert image["Content-ID"] == "<logo>"
    assert image.get_content() == b"\x89PNG"
    (invoice,) = (p for p in mime.iter_attachments() if p.get_filename() == "invoice.pdf")
    assert invoice.get_content() == b"%PDF-1.7"
    assert raw_message(sent_json(ses, 0))["To"] == "alice@example.com"


def test_ses_option_headers_alone_keep_simple_content(ses: respx.Route) -> None:
    message = email(
        headers={
            "X-SES-CONFIGURATION-SET": "marketing",
            "X-SES-LIST-MANAGEMENT-OPTIONS": "Customers; topic=news",
        }
    )
    adapter().send(message)
    payload = sent_json(ses)
    assert "Simple" in payload["Content"]
    assert payload["ConfigurationSetName"] == "marketing"
    assert payload["ListManagementOptions"] == {"ContactListName": "Customers", "TopicName": "news"}


def test_html_only_with_an_inline_image(ses: respx.Route) -> None:
    message = email(
        text=None,
        html='<img src="cid:a">',
        attachments=[
            Attachment(
                filename="a.gif",
                content=b"GIF",
                content_type="image/gif",
                inline=True,
                content_id="a",
            )
        ],
    )
    adapter().send(message)
    mime = raw_message(sent_json(ses))
    assert mime.get_content_type() == "multipart/related"
    assert [p.get_content_type() for p in mime.iter_parts()] == ["text/html", "image/gif"]


def test_tags_category_and_metadata_become_sanitised_message_tags(ses: respx.Route) -> None:
    message = email(
        category="RSVP invite",
        tags=["vip", "spring sale!", "vip"],
        metadata={
            "order ref": "ORD/2024/17",
            "ten ant": "acme",
            "ten_ant": "shadowed",
            "unimailtrack_id": "not allowed to override",
            "empty": "",
        },
    )
    result = adapter().send(message)
    assert tags_of(sent_json(ses)) == {
        "unimailtrack_id": result.recipients[0].tracking_id,
        "unimailtrack_category": "RSVP_invite",
        "unimailtrack_tag_vip": "1",
        "unimailtrack_tag_spring_sale_": "1",
        "order_ref": "ORD_2024_17",
        "ten_ant": "acme",
        "empty": "_",
    }


def test_sanitize_tag() -> None:
    assert sanitize_tag("ok_Name-1") == "ok_Name-1"
    assert sanitize_tag("a.b c/d:é") == "a_b_c_d__"
    assert sanitize_tag("") == "_"
    assert sanitize_tag("x" * 300) == "x" * 256


def test_ses_cannot_schedule(ses: respx.Route) -> None:
    with pytest.raises(InvalidRequest, match="schedule"):
        adapter().send(email(send_at=datetime(2030, 1, 1, tzinfo=UTC)))
    assert ses.call_count == 0


@pytest.mark.parametrize(
    ("region", "options", "url"),
    [
        ("cn-north-1", {}, "https://email.cn-north-1.amazonaws.com.cn/v2/email/outbound-emails"),
        ("us-east-1", {}, "https://email.us-east-1.amazonaws.com/v2/email/outbound-emails"),
        (
            "us-east-1",
            {"endpoint_url": "http://127.0.0.1:4579"},
            "http://127.0.0.1:4579/v2/email/outbound-emails",
        ),
    ],
)
def test_endpoints_come_from_botocore(region: str, options: dict[str, Any], url: str) -> None:
    ses = adapter(region=region, **options)
    (call,) = ses.build_calls(email(), ses.plan(email()))
    assert str(call.request.url) == url


def test_fips_endpoints_follow_the_aws_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_USE_FIPS_ENDPOINT", "true")
    ses = adapter(region="us-gov-west-1")
    (call,) = ses.build_calls(email(), ses.plan(email()))
    assert call.request.url.host == "email-fips.us-gov-west-1.amazonaws.com"


# --------------------------------------------------------------------------- errors


def error(code: str, status: int, message: str = "details", **headers: str) -> httpx.Response:
    return httpx.Response(
        status,
        headers={"x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/", **headers},
        json={"message": message},
    )


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (error("MessageRejected", 400, "Email contains a virus"), InvalidRequest),
        (error("MessageRejected", 400, "Email address is not verified."), NotPermitted),
        (error("MailFromDomainNotVerifiedException", 400), NotPermitted),
        (error("AccountSuspendedException", 400), NotPermitted),
        (error("SendingPausedException", 400), NotPermitted),
        (error("AccessDeniedException", 403), NotPermitted),
        (error("BadRequestException", 400), InvalidRequest),
        (error("NotFoundException", 404), InvalidRequest),
        (error("TooManyRequestsException", 429), RateLimited),
        (error("ThrottlingException", 400), RateLimited),
        (error("LimitExceededException", 400), RateLimited),
        (error("UnrecognizedClientException", 403), AuthenticationError),
        (error("InvalidSignatureException", 403), AuthenticationError),
        (error("SignatureDoesNotMatch", 403), AuthenticationError),
        (error("ExpiredTokenException", 403), AuthenticationError),
        (error("InternalFailure", 500), ProviderUnavailable),
        (error("SomethingNew", 503), ProviderUnavailable),
        (error("SomethingNew", 400), InvalidRequest),
        (
            httpx.Response(400, json={"__type": "com.amazon#MessageRejected", "message": "x"}),
            InvalidRequest,
        ),
        (
            httpx.Response(403, json={"code": "AccessDeniedException", "Message": "no"}),
            NotPermitted,
        ),
        (httpx.Response(502, text="<html>Bad gateway</html>"), ProviderUnavailable),
    ],
)
def test_errors_map_to_the_right_send_error(
    response: httpx.Response, expected: type[SendError]
) -> None:
    with respx.mock() as router:
        router.post(ENDPOINT).mock(return_value=response)
        with pytest.raises(SendError) as raised:
            adapter().send(email())
    assert type(raised.value) is expected
    assert raised.value.provider == "ses"
    assert raised.value.status == response.status_code


def test_error_detail_names_the_ses_code() -> None:
    with respx.mock() as router:
        router.post(ENDPOINT).mock(return_value=error("AccountSuspendedException", 400, "Paused"))
        with pytest.raises(NotPermitted) as raised:
            adapter().send(email())
    assert raised.value.detail == "AccountSuspendedException: Paused"


def test_throttling_is_retried(ses: respx.Route) -> None:
    ses.side_effect = [error("TooManyRequestsException", 429, **{"Retry-After": "0"}), accepted()]
    result = adapter(retry=RetryPolicy(max_retries=1)).send(email())
    assert result.recipients[0].status is DeliveryStatus.ACCEPTED
    assert ses.call_count == 2


def test_one_failed_recipient_does_not_fail_the_others(ses: respx.Route) -> None:
    ses.side_effect = [accepted("m1"), error("MessageRejected", 400), accepted("m3")]
    result = adapter().send(email(to=["a@example.com", "b@example.com", "c@example.com"]))
    assert [r.status for r in result.recipients] == [
        DeliveryStatus.ACCEPTED,
        DeliveryStatus.FAILED,
        DeliveryStatus.ACCEPTED,
    ]
    assert "MessageRejected" in (result.recipients[1].error or "")


def test_a_garbled_success_is_still_accepted(ses: respx.Route) -> None:
    ses.return_value = httpx.Response(200, text="not json")
    result = adapter().send(email())
    assert result.recipients[0].status is DeliveryStatus.ACCEPTED
    assert result.recipients[0].message_id is None


# --------------------------------------------------------------------------- async


def test_async_send_is_the_same_request(ses: respx.Route) -> None:
    message = email(to=[f"user{i}@example.com" for i in range(5)])

    async def send() -> Any:
        async with adapter(max_concurrency=2) as ses_adapter:
            return await ses_adapter.asend(message)

    result = asyncio.run(send())
    assert ses.call_count == 5
    assert sorted(
        json.loads(c.request.content)["Destination"]["ToAddresses"][0] for c in ses.calls
    ) == [r.recipient for r in result.recipients]
    assert all(c.request.headers["authorization"].startswith("AWS4-HMAC-SHA256") for c in ses.calls)


def test_async_errors_are_mapped_too(ses: respx.Route) -> None:
    ses.return_value = error("SendingPausedException", 400)
    with pytest.raises(NotPermitted):
        asyncio.run(adapter().asend(email()))


# --------------------------------------------------------------------------- pacing and signing


def test_the_pacer_spaces_requests_evenly() -> None:
    now = [100.0]
    pacer = Pacer(10.0, clock=lambda: now[0])
    assert [pacer.reserve() for _ in range(3)] == pytest.approx([0.0, 0.1, 0.2])
    now[0] = 101.0  # idle for a while: no backlog builds up
    assert pacer.reserve() == 0.0
    assert Pacer(None).reserve() == 0.0
    with pytest.raises(ConfigurationError):
        Pacer(0)


def test_a_request_that_waited_too_long_is_signed_again(ses: respx.Route) -> None:
    ses_adapter = adapter()
    (call,) = ses_adapter.build_calls(email(), ses_adapter.plan(email()))
    signed = datetime.strptime(call.request.headers["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(
        tzinfo=UTC
    )
    assert not stale(call.request, signed + timedelta(seconds=59))
    assert stale(call.request, signed + timedelta(minutes=1))
    call.request.headers["x-amz-date"] = "20200101T000000Z"  # as if it had waited for years
    fresh = ses_adapter._run(call)  # the step the base adapter runs for every attempt
    assert asyncio.run(ses_adapter._arun(call)) == fresh
    for sent in ses.calls:
        assert sent.request.headers["x-amz-date"] != "20200101T000000Z"
        assert sent.request.content == call.request.content
    assert ses.call_count == 2


# --------------------------------------------------------------------------- configuration


def test_mailer_with_an_ses_dsn(ses: respx.Route) -> None:
    dsn = (
        "ses://AKIDEXAMPLE:wJalrXUtnFEMI%2FK7MDENG%2BbPxRfiCYEXAMPLEKEY@default"
        "?region=eu-west-1&configuration_set=unimailtrack-events"
        "&topic_arns=arn:aws:sns:eu-west-1:111122223333:a,arn:aws:sns:eu-west-1:111122223333:b"
        "&send_rate=14&max_retries=0"
    )
    with Mailer.from_env(env={"UNIMAILTRACK_DSN": dsn}) as mailer:
        result = mailer.send(email())
        ses_adapter = mailer.adapters["ses"]
    assert isinstance(ses_adapter, SESAdapter)
    assert ses_adapter.allowed_topic_arns == {
        "arn:aws:sns:eu-west-1:111122223333:a",
        "arn:aws:sns:eu-west-1:111122223333:b",
    }
    assert result.recipients[0].status is DeliveryStatus.ACCEPTED
    assert sent_json(ses)["ConfigurationSetName"] == "unimailtrack-events"
    assert "Credential=AKIDEXAMPLE/" in ses.calls[0].request.headers["authorization"]


def test_the_aws_credential_chain(ses: respx.Route, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFROMENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-from-env")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    Mailer("ses://default").send(email())
    assert "Credential=AKIDFROMENV/" in ses.calls[0].request.headers["authorization"]


def test_a_profile_from_the_shared_files(
    ses: respx.Route, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "credentials").write_text(
        "[mail]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = s\n"
    )
    (tmp_path / "config").write_text("[profile mail]\nregion = eu-west-1\n")
    Mailer("ses://default?profile=mail").send(email())
    assert "Credential=AKIDPROFILE/" in ses.calls[0].request.headers["authorization"]


def test_missing_credentials_or_region_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="credentials"):
        SESAdapter(region="eu-west-1").send(email())
    with pytest.raises(ConfigurationError, match="region"):
        SESAdapter(access_key_id="a", secret_access_key="b").send(email())


@pytest.mark.parametrize(
    ("dsn", "problem"),
    [
        ("ses://AKID@default?region=eu-west-1", "ACCESS_KEY:SECRET"),
        ("ses://a:b@smtp.example?region=eu-west-1", "host"),
        ("ses://a:b@default?topic_arns=not-an-arn", "topic"),
        ("ses://a:b@default?send_rate=0", "send_rate"),
        ("ses://a:b@default?colour=blue", "colour"),
    ],
)
def test_bad_dsns_say_what_is_wrong(dsn: str, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        Mailer(dsn)


def test_dsn_webhook_options_and_environment() -> None:
    parsed = parse_dsn(
        "ses://default?region=eu-west-1&allow_raw_delivery=true"
        "&trusted_certificate_urls=http://127.0.0.1:4566/cert.pem"
    )
    assert not isinstance(parsed, tuple)
    env = {"UNIMAILTRACK_SES_TOPIC_ARNS": "arn:aws:sns:eu-west-1:111122223333:events"}
    ses_adapter = SESAdapter.from_dsn(parsed, env=env)  # type: ignore[arg-type]
    assert ses_adapter.allowed_topic_arns == {"arn:aws:sns:eu-west-1:111122223333:events"}
    assert ses_adapter.region == "eu-west-1"


def test_conflicting_credentials_are_refused() -> None:
    with pytest.raises(ConfigurationError):
        SESAdapter(access_key_id="only-half")
    with pytest.raises(ConfigurationError):
        SESAdapter(profile="p", boto3_session=object())  # type: ignore[arg-type]


def run_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_importing_the_adapter_does_not_import_boto3() -> None:
    code = (
        "import sys, unimailtrack, unimailtrack.adapters.ses\n"
        "unimailtrack.parse_webhook('ses', b'{\"Type\": \"SubscriptionConfirmation\"}')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore')))"
    )
    assert run_python(code) == "[]"


def test_a_missing_boto3_names_the_extra_to_install() -> None:
    code = (
        "import sys\n"
        "sys.modules['boto3'] = None\n"
        "from unimailtrack import Email, MissingDependency\n"
        "from unimailtrack.adapters.ses import SESAdapter\n"
        "try:\n"
        "    message = Email(sender='a@example.com', to=['b@example.com'], text='t')\n"
        "    SESAdapter(region='eu-west-1').send(message)\n"
        "except MissingDependency as exc:\n"
        "    print(exc)\n"
    )
    assert "pip install 'unimailtrack[ses]'" in run_python(code)


# --------------------------------------------------------------------------- moto, over real HTTP


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def moto_messages(endpoint: str) -> list[dict[str, Any]]:
    data = httpx.get(f"{endpoint}/moto-api/data.json").json()
    return [message for kind in ("Message", "RawMessage") for message in data["ses"][kind]]


@pytest.mark.slow
def test_a_round_trip_through_moto(moto_endpoint: str) -> None:
    import boto3

    ses_adapter = adapter(region="us-east-1", endpoint_url=moto_endpoint)
    unverified = email(sender="nobody@unverified.example")
    with pytest.raises(NotPermitted, match="not verified"):
        ses_adapter.send(unverified)

    client = boto3.client(
        "sesv2",
        region_name="us-east-1",
        endpoint_url=moto_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_email_identity(EmailIdentity="acme.example")
    simple = ses_adapter.send(email(to=["alice@example.com", "bob@example.com"]))
    raw = ses_adapter.send(
        email(
            attachments=[Attachment(filename="a.txt", content=b"hello")], to=["carol@example.com"]
        )
    )

    async def send_async() -> Any:
        async with adapter(region="us-east-1", endpoint_url=moto_endpoint) as async_adapter:
            return await async_adapter.asend(email(to=["dave@example.com"]))

    async_result = asyncio.run(send_async())
    results = [*simple.recipients, *raw.recipients, *async_result.recipients]
    assert all(r.status is DeliveryStatus.ACCEPTED and r.message_id for r in results)
    assert len({r.message_id for r in results}) == 4
    stored = {m["id"]: m for m in moto_messages(moto_endpoint)}
    assert {r.message_id for r in results} <= set(stored)
    raw_stored = stored[raw.recipients[0].message_id or ""]
    assert "To: carol@example.com" in raw_stored["raw_data"]
    assert 'filename="a.txt"' in raw_stored["raw_data"]
