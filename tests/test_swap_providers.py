"""Swapping UNIMAILTRACK_DSN between providers changes nothing in application code."""

from __future__ import annotations

import json

import httpx
import pytest
import respx

from unimailtrack import DeliveryStatus, Email, Mailer, SendResult

SENDGRID = "https://api.sendgrid.com/v3/mail/send"
MAILGUN = "https://api.mailgun.net/v3/mg.example.com/messages"
SES = "https://email.eu-west-1.amazonaws.com/v2/email/outbound-emails"
RESEND = "https://api.resend.com/emails/batch"
POSTMARK = "https://api.postmarkapp.com/email/batch"
BREVO = "https://api.brevo.com/v3/smtp/email"

DSNS = {
    "sendgrid": "sendgrid://SG.test-key@default",
    "mailgun": "mailgun://key-test:mg.example.com@default",
    "ses": "ses://AKIDEXAMPLE:wJalrXUtnFEMI%2FK7MDENG@default?region=eu-west-1",
    "resend": "resend://re_test@default",
    "postmark": "postmark://pm-test-token@default",
    "brevo": "brevo://xkeysib-test@default",
    "memory": "memory://",
}


def send_invites(mailer: Mailer) -> SendResult:
    """The application code under test: the same for every provider."""
    return mailer.send(
        Email(
            sender="Events <events@example.com>",
            to=["ann@example.com", "bob@example.org"],
            subject="You're invited",
            text="Join us.",
            html="<p>Join us.</p>",
            tags=["invite"],
            metadata={"event_id": "gala"},
            category="rsvp_invite",
        )
    )


@pytest.fixture
def providers() -> respx.MockRouter:
    with respx.mock(assert_all_called=False) as router:
        router.post(SENDGRID).mock(
            return_value=httpx.Response(202, headers={"X-Message-Id": "sg-msg-1"})
        )
        router.post(MAILGUN).mock(
            return_value=httpx.Response(
                200, json={"id": "<20240115.1@mg.example.com>", "message": "Queued. Thank you."}
            )
        )
        counter = iter(range(1, 100))
        router.post(SES).mock(
            side_effect=lambda request: httpx.Response(
                200, json={"MessageId": f"ses-msg-{next(counter)}"}
            )
        )
        router.post(RESEND).mock(
            side_effect=lambda request: httpx.Response(
                200,
                json={"data": [{"id": f"re-{i}"} for i in range(len(json.loads(request.content)))]},
            )
        )
        router.post(POSTMARK).mock(
            side_effect=lambda request: httpx.Response(
                200,
                json=[
                    {"ErrorCode": 0, "Message": "OK", "MessageID": f"pm-{i}", "To": m["To"]}
                    for i, m in enumerate(json.loads(request.content))
                ],
            )
        )
        router.post(BREVO).mock(
            side_effect=lambda request: httpx.Response(
                201,
                json={
                    "messageIds": [
                        f"<br-{i}@smtp-relay.mailin.fr>"
                        for i in range(len(json.loads(request.content)["messageVersions"]))
                    ]
                },
            )
        )
        yield router


@pytest.mark.parametrize("provider", sorted(DSNS))
def test_the_same_code_sends_through_every_provider(
    provider: str, providers: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UNIMAILTRACK_DSN", DSNS[provider])
    with Mailer.from_env() as mailer:
        result = send_invites(mailer)
    assert [r.recipient for r in result.recipients] == ["ann@example.com", "bob@example.org"]
    assert all(r.status is DeliveryStatus.ACCEPTED for r in result.recipients)
    assert all(r.provider == provider and r.message_id for r in result.recipients)
    assert len({r.tracking_id for r in result.recipients}) == 2
    sent = [call.request for call in providers.calls]
    if provider == "memory":
        assert sent == []
        return
    assert sent, "the provider's API was called"
    # every tracking id travelled to the provider with its copy
    wire = b"".join(request.content for request in sent)
    for r in result.recipients:
        assert r.tracking_id.encode() in wire
    if provider == "sendgrid":
        payload = json.loads(sent[0].content)
        assert payload["tracking_settings"]["open_tracking"]["enable"] is False


def test_failover_moves_every_recipient_to_the_next_provider(providers: respx.MockRouter) -> None:
    providers.post(RESEND).mock(
        return_value=httpx.Response(500, json={"name": "application_error"})
    )
    dsn = f"failover({DSNS['resend']}?max_retries=0 {DSNS['postmark']} {DSNS['brevo']})"
    with Mailer(dsn) as mailer:
        result = send_invites(mailer)
    assert {r.provider for r in result.recipients} == {"postmark"}
    assert all(r.status is DeliveryStatus.ACCEPTED for r in result.recipients)


def test_roundrobin_takes_turns_across_all_six_providers(providers: respx.MockRouter) -> None:
    six = [DSNS[name] for name in ("sendgrid", "mailgun", "ses", "resend", "postmark", "brevo")]
    with Mailer(f"roundrobin({' '.join(six)})") as mailer:
        used = [send_invites(mailer).recipients[0].provider for _ in range(6)]
    assert used == ["sendgrid", "mailgun", "ses", "resend", "postmark", "brevo"]
