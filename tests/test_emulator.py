"""The emulator on its own: scenarios, answers like each provider's, rate limits, timing.

End-to-end runs of every scenario through the real adapters and the tracker are in
test_emulator_e2e.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from live_server import running
from unimailtrack import (
    AuthenticationError,
    ConfigurationError,
    Email,
    EmailEvent,
    EventType,
    Mailer,
    RateLimited,
)
from unimailtrack._http import RetryPolicy
from unimailtrack.adapters import MailgunAdapter, SendGridAdapter
from unimailtrack.adapters.memory import SCENARIOS as MEMORY_SCENARIOS
from unimailtrack.cli import Exit, main
from unimailtrack.emulator import (
    PROVIDERS,
    SCENARIOS,
    Emulator,
    RateLimit,
    emulator_fixture,
    scenario_for,
)
from unimailtrack.emulator.ses import SIGNATURE_WINDOW
from unimailtrack.mailer import build_adapters

emulator = emulator_fixture()


def invite(*to: str, **fields: object) -> Email:
    return Email(
        sender="Events <events@example.com>",
        to=list(to),
        subject="You're invited",
        text="Join us.",
        **fields,  # type: ignore[arg-type]
    )


def unwrapped(emu: Emulator, provider: str) -> list[EmailEvent]:
    """Every event the emulator produced for ``provider``, verified and parsed by the real
    adapter."""
    adapter = emu.adapter(provider)
    try:
        return [e for d in emu.deliveries for e in adapter.unwrap(d.body, d.headers)]
    finally:
        adapter.close()


# --------------------------------------------------------------------------- scenarios


@pytest.mark.parametrize(
    ("address", "name"),
    [
        ("bounce@example.com", "bounce"),
        ("Bounce+cyd@Example.com", "bounce"),
        ("soft-bounce+1@example.org", "soft-bounce"),
        ("deferred-then-delivered@example.net", "deferred-then-delivered"),
        ("ann@example.com", "delivered"),
        ("bounces@example.com", "delivered"),
        ("ann+bounce@example.com", "delivered"),
    ],
)
def test_the_local_part_up_to_a_label_picks_the_scenario(address: str, name: str) -> None:
    assert scenario_for(address).name == name


def test_scenario_names_are_the_memory_adapters() -> None:
    assert set(SCENARIOS) == set(MEMORY_SCENARIOS)


def test_open_and_click_steps_play_only_when_tracked() -> None:
    story = SCENARIOS["opens-and-clicks"]
    kinds = [s.kind.value for s in story.played(opens=False, clicks=False)]
    assert kinds == ["queued", "delivered"]
    assert len(story.played(opens=True, clicks=True)) == 4


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    "webhooks",
    [
        "http://example.com/webhooks/{provider}",
        "http://10.0.0.1/webhooks/{provider}",
        "http://127.0.0.1:8000/webhooks",
        {"sparkpost": "http://127.0.0.1:8000/"},
        {"sendgrid": "ftp://127.0.0.1/"},
    ],
)
def test_webhooks_go_only_to_this_machine(webhooks: str | dict[str, str]) -> None:
    with pytest.raises(ConfigurationError):
        Emulator(webhooks=webhooks)


@pytest.mark.parametrize(
    "webhooks", ["http://localhost:1/{provider}", {"ses": "http://[::1]:1/ses"}]
)
def test_loopback_webhook_urls_are_taken(webhooks: str | dict[str, str]) -> None:
    Emulator(webhooks=webhooks)


def test_a_stopped_emulator_has_no_address() -> None:
    emu = Emulator()
    with pytest.raises(RuntimeError):
        _ = emu.url
    with emu:
        assert emu.url.startswith("http://127.0.0.1:")
    with pytest.raises(RuntimeError):
        emu.drain()


# --------------------------------------------------------------------------- answers


def test_sendgrid_answers_like_sendgrid(emulator: Emulator) -> None:
    url = emulator.url + "/v3/mail/send"
    with httpx.Client() as client:
        unauthorized = client.post(url, json={})
        assert unauthorized.status_code == 401
        assert unauthorized.json()["errors"][0]["message"].startswith("The provided authorization")
        auth = {"Authorization": "Bearer any-key"}
        refused = client.post(url, headers=auth, json={"from": {"email": "events@example.com"}})
        assert refused.status_code == 400
        fields = {e["field"] for e in refused.json()["errors"]}
        assert fields == {"personalizations", "content"}
        body = {
            "personalizations": [{"to": [{"email": "not an address"}]}],
            "from": {"email": "events@example.com"},
            "subject": "Hi",
            "content": [{"type": "text/plain", "value": "Hello"}],
        }
        bad_address = client.post(url, headers=auth, json=body)
        assert bad_address.json()["errors"][0]["field"] == "personalizations.0.to.0"
        body["personalizations"] = [{"to": [{"email": "ann@example.com"}]}]
        taken = client.post(url, headers=auth, json=body)
    assert taken.status_code == 202
    assert taken.content == b""
    assert "." not in taken.headers["x-message-id"]
    assert [c.recipient for c in emulator.sent] == ["ann@example.com"]


def test_mailgun_answers_like_mailgun(emulator: Emulator) -> None:
    url = emulator.url + "/v3/example.com/messages"
    fields = {"from": "events@example.com", "to": "ann@example.com", "subject": "Hi"}
    with httpx.Client() as client:
        forbidden = client.post(url, data=fields)
        assert (forbidden.status_code, forbidden.text) == (401, "Forbidden")
        auth = ("api", "key-1")
        missing = client.post(url, auth=auth, data=fields)
        assert missing.status_code == 400
        assert missing.json() == {
            "message": "Need at least one of 'text', 'html' or 'template' parameters specified"
        }
        no_from = client.post(url, auth=auth, data={**fields, "from": "", "text": "x"})
        assert no_from.json() == {"message": "from parameter is missing"}
        taken = client.post(url, auth=auth, data={**fields, "text": "Hello"})
    assert taken.status_code == 200
    assert taken.json()["message"] == "Queued. Thank you."
    assert taken.json()["id"] == f"<{emulator.sent[0].message_id}>"


def _sigv4_headers(key: str = "AKIDEXAMPLE", when: datetime | None = None) -> dict[str, str]:
    stamp = (when or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return {
        "X-Amz-Date": stamp,
        "Authorization": f"AWS4-HMAC-SHA256 Credential={key}/{stamp[:8]}/us-east-1/ses/"
        f"aws4_request, SignedHeaders=host;x-amz-date, Signature={'0' * 64}",
    }


def test_ses_answers_like_aws(emulator: Emulator) -> None:
    url = emulator.url + "/v2/email/outbound-emails"
    message = {
        "FromEmailAddress": "events@example.com",
        "Destination": {"ToAddresses": ["ann@example.com"]},
        "Content": {"Simple": {"Subject": {"Data": "Hi"}, "Body": {"Text": {"Data": "x"}}}},
        "EmailTags": [{"Name": "event id", "Value": "gala"}],
    }
    with httpx.Client() as client:
        anonymous = client.post(url, json=message)
        assert anonymous.status_code == 403
        assert anonymous.headers["x-amzn-errortype"].startswith("MissingAuthenticationToken")
        stale = datetime.now(UTC) - 2 * SIGNATURE_WINDOW
        expired = client.post(url, json=message, headers=_sigv4_headers(when=stale))
        assert expired.headers["x-amzn-errortype"].startswith("InvalidSignatureException")
        bad_tag = client.post(url, json=message, headers=_sigv4_headers())
        assert bad_tag.status_code == 400
        assert bad_tag.headers["x-amzn-errortype"].startswith("BadRequestException")
        assert "event id" in bad_tag.json()["message"]
        message["EmailTags"] = [{"Name": "event_id", "Value": "gala"}]
        taken = client.post(url, json=message, headers=_sigv4_headers())
    assert taken.status_code == 200
    assert taken.json()["MessageId"] == emulator.sent[0].message_id


def test_ses_checks_signatures_against_configured_credentials() -> None:
    with Emulator(aws_credentials={"AKIDEMULATOR": "right-secret"}) as emu:
        good = Mailer(emu.adapter("ses"))
        assert good.send(invite("ann@example.com")).recipients[0].message_id
        wrong = Mailer(
            emu.adapter("ses", access_key_id="AKIDEMULATOR", secret_access_key="wrong-secret")
        )
        unknown = Mailer(emu.adapter("ses", access_key_id="AKIDOTHER", secret_access_key="x"))
        with good, wrong, unknown:
            with pytest.raises(AuthenticationError) as refused:
                wrong.send(invite("ann@example.com"))
            assert (refused.value.detail or "").startswith("InvalidSignatureException")
            with pytest.raises(AuthenticationError) as stranger:
                unknown.send(invite("ann@example.com"))
            assert (stranger.value.detail or "").startswith("UnrecognizedClientException")
        assert len(emu.sent) == 1


def test_a_configured_api_key_is_the_only_one_taken() -> None:
    with Emulator(api_key="the-key") as emu:
        impostors = [
            SendGridAdapter("other-key", base_url=emu.url),
            MailgunAdapter("other-key", "example.com", base_url=emu.url),
        ]
        for impostor in impostors:
            with Mailer(emu.dsn(impostor.name)) as mailer:
                assert mailer.send(invite("ann@example.com")).accepted
            with Mailer(impostor) as mailer, pytest.raises(AuthenticationError):
                mailer.send(invite("bob@example.com"))
    assert [c.recipient for c in emu.sent] == ["ann@example.com"] * 2


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_rate_limit_answers_429_with_retry_after(provider: str) -> None:
    with (
        Emulator(rate_limit=RateLimit(1, per=60)) as emu,
        Mailer(emu.adapter(provider, retry=RetryPolicy.none())) as mailer,
    ):
        mailer.send(invite("ann@example.com"))
        with pytest.raises(RateLimited) as limited:
            mailer.send(invite("bob@example.com"))
    assert limited.value.status == 429
    assert limited.value.retry_after is not None
    assert 0 < limited.value.retry_after <= 60
    assert [c.recipient for c in emu.sent] == ["ann@example.com"]


def test_the_certificate_and_a_description_are_served(emulator: Emulator) -> None:
    with httpx.Client() as client:
        certificate = client.get(emulator.ses.certificate_url)
        about = client.get(emulator.url + "/")
        nothing = client.post(emulator.url + "/v3/elsewhere", content=b"{}")
    assert certificate.content == emulator.ses.certificate_pem
    assert set(about.json()["scenarios"]) == set(SCENARIOS)
    assert about.json()["providers"]["sendgrid"] == emulator.dsn("sendgrid")
    assert nothing.status_code == 404


# --------------------------------------------------------------------------- webhooks


@pytest.mark.parametrize("provider", PROVIDERS)
def test_untracked_sends_report_no_opens_or_clicks(provider: str, emulator: Emulator) -> None:
    with Mailer(emulator.dsn(provider)) as mailer:
        mailer.send(invite("opens-and-clicks@example.com"))
    emulator.drain()
    kinds = {e.type for e in unwrapped(emulator, provider)}
    assert EventType.DELIVERED in kinds
    engaged = kinds & {EventType.OPENED, EventType.CLICKED}
    # SES tracks per configuration set, Resend per domain and Brevo per account, whatever the
    # message says.
    per_account = provider in ("ses", "resend", "brevo")
    assert engaged == ({EventType.OPENED, EventType.CLICKED} if per_account else set())


@pytest.mark.parametrize("provider", PROVIDERS)
def test_duplicates_are_true_duplicates(provider: str) -> None:
    with Emulator(duplicate=1.0, sendgrid_batch_size=1) as emu:
        with Mailer(emu.dsn(provider)) as mailer:
            mailer.send(invite("complaint@example.com"))
        emu.drain()
        events = unwrapped(emu, provider)
    steps = sum(len(copy.steps) for copy in emu.sent)  # Postmark does not report queueing
    assert steps >= len(SCENARIOS["complaint"].steps) - 1
    assert len(events) == 2 * steps
    assert len({e.event_id for e in events}) == steps


def test_reordering_posts_later_events_first() -> None:
    to = [f"opens-and-clicks+{n}@example.com" for n in range(6)]
    with Emulator(reorder=True, seed=7) as emu:
        with Mailer(emu.dsn("mailgun")) as mailer:
            mailer.send(invite(*to, track_opens=True, track_clicks=True))
        emu.drain()
        events = unwrapped(emu, "mailgun")
    rank = {"accepted": 0, "delivered": 1, "opened": 2, "clicked": 3}
    overtaken = 0
    for address in to:
        seen = [rank[e.provider_event] for e in events if e.recipient == address]
        assert sorted(seen) == [0, 1, 2, 3]
        overtaken += seen != sorted(seen)
    assert overtaken > 0


def test_events_carry_scenario_time_in_order_whatever_the_post_order() -> None:
    to = [f"deferred-then-delivered+{n}@example.com" for n in range(6)]
    with Emulator(reorder=True, seed=3, delay=0.001) as emu:
        with Mailer(emu.dsn("mailgun")) as mailer:
            mailer.send(invite(*to))
        emu.drain()
        posted = unwrapped(emu, "mailgun")
    overtaken = 0
    for address in to:
        mine = [e for e in posted if e.recipient == address]
        in_time = sorted(mine, key=lambda e: e.timestamp)
        assert [e.type.value for e in in_time] == ["accepted", "deferred", "deferred", "delivered"]
        assert [e.attempt for e in in_time[1:]] == [1, 2, 3]
        overtaken += mine != in_time
    assert overtaken > 0


def test_drain_gives_up_and_close_drops_what_is_pending() -> None:
    with Emulator(delay=60) as emu:
        with Mailer(emu.dsn("sendgrid")) as mailer:
            mailer.send(invite("ann@example.com"))
        with pytest.raises(TimeoutError):
            emu.drain(timeout=0.05)
        assert emu.deliveries == []
    assert len(emu.sent) == 1


def _status_app(status: int) -> Any:
    """An ASGI app that answers every request with ``status``."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return app


def test_failed_posts_are_retried_a_bounded_number_of_times() -> None:
    with (
        running(_status_app(503)) as url,
        Emulator(webhooks=url + "/{provider}", webhook_attempts=2) as emu,
    ):
        with Mailer(emu.dsn("mailgun")) as mailer:
            mailer.send(invite("ann@example.com"))
        emu.drain()
        deliveries = emu.deliveries
    assert [(d.status, d.attempts, d.url) for d in deliveries] == [(503, 2, url + "/mailgun")] * 2


def test_an_unreachable_receiver_is_recorded_not_fatal() -> None:
    with running(_status_app(200)) as url:
        pass  # the port is free again
    with Emulator(webhooks=url + "/{provider}", webhook_attempts=1) as emu:
        with Mailer(emu.dsn("ses")) as mailer:
            mailer.send(invite("ann@example.com"))
        emu.drain()
        (first, second) = emu.deliveries
    assert first.status is None and first.error and first.attempts == 1
    assert second.error


# --------------------------------------------------------------------------- the command


def test_emulate_prints_what_to_use_and_stops_by_itself(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["emulate", "--port", "0", "--for", "0", "--json"]) == 0
    settings = json.loads(capsys.readouterr().out)
    adapters, _ = build_adapters(settings["receiver_dsn"])
    assert [a.name for a in adapters] == list(PROVIDERS)
    for adapter in adapters:
        adapter.close()
    assert settings["url"].startswith("http://127.0.0.1:")


def test_emulate_describes_every_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "emulate",
            "--port",
            "0",
            "--for",
            "0",
            "--rate-limit",
            "5",
            "--webhooks",
            "http://127.0.0.1:9/webhooks/{provider}",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert all(name in out for name in SCENARIOS)
    assert "http://127.0.0.1:9/webhooks/ses" in out


def test_emulate_refuses_a_remote_webhook_url(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["emulate", "--for", "0", "--webhooks", "https://hooks.example.com/{provider}"])
    assert code == Exit.CONFIG
    assert "only to this machine" in capsys.readouterr().err
