"""One-click unsubscribe (RFC 8058): tokens, the headers on every adapter, and ``/u/{token}``
over real HTTP; every attack on the token answered 400 with nothing changed."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import httpx
import pytest
import respx
from pydantic import Field

from live_server import running
from unimailtrack import ConfigurationError, Email, EventType, Mailer
from unimailtrack.adapters import MailgunAdapter, MemoryAdapter, SendGridAdapter, SESAdapter
from unimailtrack.adapters.base import RetryPolicy
from unimailtrack.errors import UnsubscribeTokenError
from unimailtrack.tracking import Tracker
from unimailtrack.unsubscribe import ONE_CLICK_BODY, OneClickUnsubscribe
from unimailtrack.web import create_app
from unimailtrack.webhooks import WebhookReceiver

SECRET = "s3cret-for-one-click-tests"
OLD_SECRET = "an-older-secret-still-valid"
PUBLIC = "https://app.example.com"
NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


class StreamEmail(Email):
    """An e-mail with a stream, as ``Email.stream`` gives it (kept out of the provider
    payload, like any other library-side field)."""

    stream: str | None = Field(default=None, exclude=True)


def signer(**kwargs: Any) -> OneClickUnsubscribe:
    kwargs.setdefault("public_url", PUBLIC)
    return OneClickUnsubscribe(kwargs.pop("secrets", SECRET), **kwargs)


# --------------------------------------------------------------------------- tokens


def test_a_token_says_who_from_what_and_until_when() -> None:
    token = signer().token("ann@example.com", "marketing", "t1", now=NOW)
    found = signer().verify(token, now=NOW + timedelta(days=89))
    assert (found.address, found.stream, found.tracking_id) == (
        "ann@example.com",
        "marketing",
        "t1",
    )
    assert found.expires_at == NOW + timedelta(days=90)
    assert len(token) < 200


def test_rotation_the_first_secret_signs_every_one_verifies() -> None:
    old = signer(secrets=OLD_SECRET).token("ann@example.com", "marketing", now=NOW)
    rotated = signer(secrets=f"{SECRET},{OLD_SECRET}")
    assert rotated.verify(old, now=NOW).address == "ann@example.com"
    new = rotated.token("ann@example.com", "marketing", now=NOW)
    assert signer().verify(new, now=NOW).address == "ann@example.com"
    with pytest.raises(UnsubscribeTokenError):
        signer(secrets=OLD_SECRET).verify(new, now=NOW)


def _recut(token: str) -> list[str]:
    version, body, mac = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=="))
    payload[0] = "mallory@example.com"
    forged_body = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    flipped = mac[:-2] + ("A" if mac[-2] != "A" else "B") + mac[-1]
    return [
        f"{version}.{forged_body}.{mac}",  # another address under the same signature
        f"{version}.{body}.{flipped}",  # a changed signature
        f"{version}.{body}",  # no signature
        f"{version}.{body}.{mac}.",  # an extra part
        f"u2.{body}.{mac}",  # another version
        f"{version}.{body}.{mac}=",  # padding: another spelling of the same bytes
        f"{version}.{body}..{mac}",
        f"{version}.{body}.{mac[:-1]}",  # truncated
        "",
        "x" * 5000,  # oversized: refused before decoding
        f"{version}.{body}.{mac}".replace(".", "%2E"),
    ]


def test_forged_re_cut_and_oversized_tokens_are_refused() -> None:
    token = signer().token("ann@example.com", "marketing", now=NOW)
    for bad in _recut(token):
        with pytest.raises(UnsubscribeTokenError):
            signer().verify(bad, now=NOW)
    with pytest.raises(UnsubscribeTokenError, match="signature"):
        signer(secrets="a-different-secret-entirely").verify(token, now=NOW)


def test_an_expired_token_is_refused() -> None:
    token = signer(expiry=timedelta(days=1)).token("ann@example.com", "marketing", now=NOW)
    with pytest.raises(UnsubscribeTokenError, match="expired"):
        signer().verify(token, now=NOW + timedelta(days=1))


def test_configuration_is_checked() -> None:
    with pytest.raises(ConfigurationError, match="at least 16"):
        signer(secrets="short")
    with pytest.raises(ConfigurationError, match="https"):
        signer(public_url="http://app.example.com")
    assert signer(public_url="http://127.0.0.1:8000").public_url == "http://127.0.0.1:8000"
    with pytest.raises(ConfigurationError, match="UNIMAILTRACK_PUBLIC_URL"):
        OneClickUnsubscribe.configured({"UNIMAILTRACK_UNSUBSCRIBE_SECRET": SECRET})
    assert OneClickUnsubscribe.configured({}) is None
    env = {
        "UNIMAILTRACK_UNSUBSCRIBE_SECRET": f"{SECRET}, {OLD_SECRET}",
        "UNIMAILTRACK_PUBLIC_URL": PUBLIC + "/",
        "UNIMAILTRACK_UNSUBSCRIBE_STREAMS": "marketing, digest",
    }
    configured = OneClickUnsubscribe.configured(env)
    assert configured is not None
    assert configured.streams == {"marketing", "digest"}
    assert configured.public_url == PUBLIC


# --------------------------------------------------------------------------- the headers


def bulk(stream: str | None, count: int = 3, **fields: Any) -> StreamEmail:
    return StreamEmail(
        sender="News <news@example.com>",
        to=[f"reader{i}@example.org" for i in range(count)],
        subject="This week",
        text="Hello",
        stream=stream,
        **fields,
    )


def test_every_copy_of_a_bulk_send_in_a_configured_stream_carries_both_headers() -> None:
    adapter = MemoryAdapter()
    mailer = Mailer(adapter, unsubscribe_secret=SECRET, public_url=PUBLIC)
    result = mailer.send(bulk("marketing", count=20))
    assert len(adapter.outbox) == 20
    carrying = 0
    for sent, recipient in zip(adapter.outbox, result.recipients, strict=True):
        headers = sent.email.headers
        if headers.get("List-Unsubscribe-Post") == ONE_CLICK_BODY and headers.get(
            "List-Unsubscribe", ""
        ).startswith(f"<{PUBLIC}/u/"):
            carrying += 1
        token = headers["List-Unsubscribe"][len(PUBLIC) + 4 : -1]
        found = mailer.one_click.verify(token)  # type: ignore[union-attr]
        assert (found.address, found.tracking_id) == (sent.recipient, recipient.tracking_id)
        assert found.stream == "marketing"
    assert carrying == 20  # the share of bulk sends carrying both headers: 100 %


def test_no_headers_outside_the_streams_without_a_secret_or_when_the_app_set_its_own() -> None:
    adapter = MemoryAdapter()
    Mailer(adapter, unsubscribe_secret=SECRET, public_url=PUBLIC).send(bulk("transactional"))
    Mailer(adapter, unsubscribe_secret=SECRET, public_url=PUBLIC).send(bulk(None))
    Mailer(adapter).send(bulk("marketing"))
    own = {"List-Unsubscribe": "<mailto:leave@example.com>"}
    Mailer(adapter, unsubscribe_secret=SECRET, public_url=PUBLIC).send(
        bulk("marketing", headers=own)
    )
    assert len(adapter.outbox) == 12
    assert all("List-Unsubscribe-Post" not in sent.email.headers for sent in adapter.outbox)


def test_the_environment_configures_from_env() -> None:
    env = {
        "UNIMAILTRACK_DSN": "memory://",
        "UNIMAILTRACK_UNSUBSCRIBE_SECRET": SECRET,
        "UNIMAILTRACK_PUBLIC_URL": PUBLIC,
        "UNIMAILTRACK_UNSUBSCRIBE_STREAMS": "digest",
    }
    mailer = Mailer.from_env(env=env)
    mailer.send(bulk("digest", count=2))
    mailer.send(bulk("marketing", count=1))
    [adapter] = mailer.adapters.values()
    assert isinstance(adapter, MemoryAdapter)
    assert ["List-Unsubscribe-Post" in m.email.headers for m in adapter.outbox] == [
        True,
        True,
        False,
    ]


def test_the_async_mailer_adds_them_too() -> None:
    import asyncio

    from unimailtrack import AsyncMailer

    adapter = MemoryAdapter()

    async def go() -> None:
        mailer = AsyncMailer(adapter, unsubscribe_secret=SECRET, public_url=PUBLIC)
        await mailer.send(bulk("marketing", count=5))
        await mailer.aclose()

    asyncio.run(go())
    assert len({m.email.headers["List-Unsubscribe"] for m in adapter.outbox}) == 5


@pytest.fixture
def isolated_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def _ses() -> SESAdapter:
    import boto3

    session = boto3.Session(
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    )
    return SESAdapter(region="eu-west-1", boto3_session=session, retry=RetryPolicy.none())


@pytest.mark.usefixtures("isolated_aws")
def test_sendgrid_mailgun_and_ses_carry_the_headers_to_the_provider() -> None:
    with respx.mock(assert_all_called=True) as router:
        sendgrid = router.post("https://api.sendgrid.com/v3/mail/send").respond(
            202, headers={"X-Message-Id": "sg-1"}
        )
        mailgun = router.post("https://api.mailgun.net/v3/mg.example.com/messages").respond(
            200, json={"id": "<1@mg.example.com>", "message": "Queued."}
        )
        ses = router.post("https://email.eu-west-1.amazonaws.com/v2/email/outbound-emails")
        ses.respond(200, json={"MessageId": "ses-1"})
        adapters = [
            SendGridAdapter("SG.key", retry=RetryPolicy.none()),
            MailgunAdapter("key-1", "mg.example.com", retry=RetryPolicy.none()),
            _ses(),
        ]
        for adapter in adapters:
            Mailer(adapter, unsubscribe_secret=SECRET, public_url=PUBLIC).send(
                bulk("marketing", count=2)
            )
        for route in (sendgrid, mailgun, ses):
            assert len(route.calls) == 2  # one request per recipient: each has its own link
            for call in route.calls:
                content = call.request.content
                if route is ses:
                    raw = json.loads(content)["Content"]["Raw"]["Data"]
                    message = message_from_bytes(base64.b64decode(raw), policy=default_policy)
                    # The raw MIME message carries the header (folded as its policy decides).
                    content = "\n".join(f"{k}: {v}" for k, v in message.items()).encode()
                if route is mailgun:
                    content = unquote_plus(content.decode()).encode()
                assert b"List-Unsubscribe-Post" in content
                assert b"List-Unsubscribe=One-Click" in content
                assert f"{PUBLIC}/u/u1.".encode() in content


# --------------------------------------------------------------------------- /u/{token}


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[httpx.Client, Tracker]]:
    tracker = Tracker.open(f"sqlite:///{tmp_path / 'u.sqlite3'}")
    app = create_app(
        WebhookReceiver({"memory": MemoryAdapter()}, tracker),
        unsubscribe_secret=SECRET,
        public_url=PUBLIC,
        env={},
    )
    with running(app) as url, httpx.Client(base_url=url) as client:
        yield client, tracker
    tracker.close()


def test_a_one_click_post_suppresses_at_once(site: tuple[httpx.Client, Tracker]) -> None:
    client, tracker = site
    token = signer().token("ann@example.com", "marketing", "t-ann")
    started = time.perf_counter()
    answer = client.post(
        f"/u/{token}",
        content=ONE_CLICK_BODY,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    found = tracker.suppression("ann@example.com")
    elapsed = time.perf_counter() - started
    assert answer.status_code == 200
    assert found is not None and found.cause == EventType.UNSUBSCRIBED
    assert found.reason == "one-click unsubscribe from marketing"
    assert elapsed < 1.0  # immediate: suppressed before the answer, within the request
    [stored] = tracker.timeline("t-ann")
    assert stored.metadata == {"stream": "marketing"}
    again = client.post(f"/u/{token}", content=ONE_CLICK_BODY)
    assert again.status_code == 200
    assert tracker.count_events() == 1  # the same post twice is one event


def test_get_shows_a_page_that_posts_and_changes_nothing(
    site: tuple[httpx.Client, Tracker],
) -> None:
    client, tracker = site
    token = signer().token("ann@example.com", "marketing")
    page = client.get(f"/u/{token}")
    assert page.status_code == 200
    assert '<form method="post"' in page.text and 'name="List-Unsubscribe"' in page.text
    assert tracker.suppression("ann@example.com") is None
    # The page's form posts exactly the one-click body.
    posted = client.post(f"/u/{token}", data={"List-Unsubscribe": "One-Click"})
    assert posted.status_code == 200
    assert tracker.suppression("ann@example.com") is not None


def test_forged_expired_and_bodiless_posts_answer_400_and_change_nothing(
    site: tuple[httpx.Client, Tracker],
) -> None:
    client, tracker = site
    token = signer().token("ann@example.com", "marketing")
    expired = signer(expiry=timedelta(seconds=1)).token(
        "ann@example.com", "marketing", now=datetime.now(UTC) - timedelta(seconds=5)
    )
    for bad in [*_recut(token)[:8], expired]:
        for method in ("GET", "POST"):
            answer = client.request(method, f"/u/{bad}", content=ONE_CLICK_BODY)
            assert answer.status_code in (400, 404), (method, bad)
    assert client.post(f"/u/{token}").status_code == 400
    assert client.post(f"/u/{token}", content=b"List-Unsubscribe=Maybe").status_code == 400
    assert client.post(f"/u/{token}", content=b"x" * 5000).status_code == 400
    assert tracker.count_events() == 0
    assert tracker.suppression("ann@example.com") is None


def test_without_a_secret_u_answers_404(tmp_path: Path) -> None:
    with Tracker.open(f"sqlite:///{tmp_path / 'n.sqlite3'}") as tracker:
        app = create_app(WebhookReceiver({"memory": MemoryAdapter()}, tracker), env={})
        with running(app) as url, httpx.Client(base_url=url) as client:
            token = signer().token("ann@example.com", "marketing")
            assert client.post(f"/u/{token}", content=ONE_CLICK_BODY).status_code == 404
        assert tracker.count_events() == 0


def test_a_mailto_is_offered_beside_the_link_when_configured() -> None:
    headers = signer(mailto="leave@example.com").headers("ann@example.com", "marketing", "t1")
    link, mailto = headers["List-Unsubscribe"].split(", ")
    assert link.startswith(f"<{PUBLIC}/u/u1.") and link.endswith(">")
    assert mailto == "<mailto:leave@example.com?subject=unsubscribe>"
    with pytest.raises(ConfigurationError):
        signer(mailto="a@example.com>, <https://evil.example")


@pytest.mark.usefixtures("isolated_aws")
def test_ses_puts_the_link_on_the_wire_unencoded() -> None:
    with respx.mock(assert_all_called=True) as router:
        route = router.post("https://email.eu-west-1.amazonaws.com/v2/email/outbound-emails")
        route.respond(200, json={"MessageId": "ses-1"})
        Mailer(_ses(), unsubscribe_secret=SECRET, public_url=PUBLIC).send(bulk("marketing", 1))
    raw = base64.b64decode(json.loads(route.calls[0].request.content)["Content"]["Raw"]["Data"])
    assert f"List-Unsubscribe: <{PUBLIC}/u/u1.".encode() in raw
