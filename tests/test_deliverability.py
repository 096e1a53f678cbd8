"""The provider-agnostic classifications: sender authentication, mailbox providers, engagement."""

from __future__ import annotations

from datetime import timedelta

import pytest

from unimailtrack.deliverability import (
    AuthCheck,
    Engagement,
    MxLookup,
    classify_click,
    classify_open,
    dns_mx_resolver,
    enhanced_status,
    mailbox_provider,
    sender_auth_failure,
)
from unimailtrack.errors import MissingDependency

# Replies as the receivers word them (the servers' own documentation of these codes).
GMAIL_UNAUTHENTICATED = (
    "550-5.7.26 This mail has been blocked because the sender is unauthenticated. Gmail "
    "requires all senders to authenticate with either SPF or DKIM."
)
GMAIL_DMARC = (
    "550-5.7.26 Unauthenticated email from example.com is not accepted due to domain's "
    "DMARC policy. Please contact the administrator of example.com domain."
)
GMAIL_PTR = (
    "550-5.7.25 The IP address sending this message does not have a PTR record setup, or "
    "the corresponding forward DNS entry does not point to the sending IP."
)
OUTLOOK_515 = (
    "550 5.7.515 Access denied, sending domain [EXAMPLE.COM] does not meet the required "
    "authentication level."
)
OUTLOOK_509 = (
    "550 5.7.509 Access denied, sending domain example.com does not pass DMARC verification"
)


@pytest.mark.parametrize(
    ("status", "reply", "check"),
    [
        ("5.7.26", GMAIL_UNAUTHENTICATED, "spf+dkim"),
        (None, GMAIL_DMARC, "dmarc"),
        ("5.7.25", GMAIL_PTR, "reverse_dns"),
        ("5.7.515", OUTLOOK_515, "authentication"),
        (None, OUTLOOK_509, "dmarc"),
        ("5.7.1", "554 5.7.1 Rejected: SPF check failed for example.com", "spf"),
        (None, "550 5.7.1 Email rejected per DMARC policy for example.com", "dmarc"),
        ("5.7.20", "550 5.7.20 No passing DKIM signature found", "dkim"),
        ("5.7.23", "550 5.7.23 SPF validation failed", "spf"),
        (None, "Message rejected: DKIM signature verification failed", "dkim"),
        ("4.7.26", "421-4.7.26 Unauthenticated email from example.com", "authentication"),
    ],
)
def test_sender_authentication_refusals_are_recognised(
    status: str | None, reply: str, check: str
) -> None:
    found = sender_auth_failure(status, reply)
    assert found is not None
    assert found.check == check
    assert found.reply == reply


@pytest.mark.parametrize(
    ("status", "reply"),
    [
        ("5.1.1", "550 5.1.1 The email account that you tried to reach does not exist"),
        ("5.2.2", "552 5.2.2 mailbox full; see our SPF and DKIM guide"),  # a mailbox problem
        ("5.7.1", "554 5.7.1 Message rejected as spam"),
        (None, "550 Spamhaus listed"),
        ("2.0.0", "250 2.0.0 OK DKIM pass"),
        (None, None),
        (None, "see http://example.com/spf for our policy"),  # no failure worded
    ],
)
def test_other_refusals_are_not_sender_authentication(
    status: str | None, reply: str | None
) -> None:
    assert sender_auth_failure(status, reply) is None


def test_enhanced_status_codes_are_read_from_the_status_or_the_reply() -> None:
    assert enhanced_status("5.7.26") == "5.7.26"
    assert enhanced_status(None, "550-5.7.26 blocked") == "5.7.26"
    assert enhanced_status(None, "version 1.2.3.4 of the filter") is None
    assert enhanced_status(None, "no code") is None
    assert AuthCheck("dmarc") is AuthCheck.DMARC


@pytest.mark.parametrize(
    ("domain", "provider"),
    [
        ("gmail.com", "google"),
        ("GoogleMail.com", "google"),
        ("outlook.com", "microsoft"),
        ("hotmail.co.uk", "microsoft"),
        ("live.de", "microsoft"),
        ("msn.com", "microsoft"),
        ("yahoo.fr", "yahoo"),
        ("aol.com", "yahoo"),
        ("icloud.com", "apple"),
        ("web.de", "united-internet"),
        ("example.org", "example.org"),
        ("live.example.org", "live.example.org"),
    ],
)
def test_recipient_domains_group_by_mailbox_provider(domain: str, provider: str) -> None:
    assert mailbox_provider(domain) == provider


def test_an_mx_lookup_is_optional_cached_and_never_fatal() -> None:
    calls: list[str] = []
    now = [0.0]

    def resolve(domain: str) -> list[str]:
        calls.append(domain)
        if domain == "broken.example":
            raise TimeoutError("no answer")
        return {"corp.example": ["mx1.corp-example.mail.protection.outlook.com."]}.get(
            domain, ["mx.self-hosted.example"]
        )

    mx = MxLookup(resolve, ttl=timedelta(seconds=60), clock=lambda: now[0])
    assert mailbox_provider("corp.example", mx=mx) == "microsoft"
    assert mailbox_provider("own.example", mx=mx) == "own.example"
    assert mailbox_provider("broken.example", mx=mx) == "broken.example"
    assert mailbox_provider("gmail.com", mx=mx) == "google"  # the table needs no lookup
    assert mailbox_provider("corp.example", mx=mx) == "microsoft"
    assert calls == ["corp.example", "own.example", "broken.example"]
    now[0] = 61.0
    mailbox_provider("corp.example", mx=mx)
    assert calls[-1] == "corp.example"


def test_the_dns_resolver_names_its_extra_when_dnspython_is_missing() -> None:
    try:
        import dns.resolver  # noqa: F401
    except ImportError:
        with pytest.raises(MissingDependency, match="dnspython"):
            dns_mx_resolver()
    else:
        assert callable(dns_mx_resolver())


SECONDS = timedelta(seconds=1)


@pytest.mark.parametrize(
    ("machine", "agent", "after", "expected"),
    [
        (True, None, None, Engagement.MACHINE),  # the provider says so (sg_machine_open, ...)
        (None, "Mozilla/5.0", 3 * SECONDS, Engagement.MACHINE),  # Apple privacy prefetch
        (None, "Mozilla/5.0", 3600 * SECONDS, Engagement.UNKNOWN),  # a proxy, later
        (None, "Mozilla/5.0 (via ggpht.com GoogleImageProxy)", 2 * SECONDS, Engagement.MACHINE),
        (None, "Mozilla/5.0 (via ggpht.com GoogleImageProxy)", None, Engagement.UNKNOWN),
        (False, "Mozilla/5.0", 2 * SECONDS, Engagement.MACHINE),
        (False, None, None, Engagement.HUMAN),
        (None, "Mozilla/5.0 (Windows NT 10.0) Thunderbird/115.0", 5 * SECONDS, Engagement.HUMAN),
        (None, "python-requests/2.31", 600 * SECONDS, Engagement.MACHINE),
        (None, None, None, Engagement.UNKNOWN),
    ],
)
def test_opens_are_human_machine_or_unknown(
    machine: bool | None, agent: str | None, after: timedelta | None, expected: Engagement
) -> None:
    assert classify_open(machine, agent, after) is expected


@pytest.mark.parametrize(
    ("machine", "agent", "after", "expected"),
    [
        (None, "Mozilla/5.0 (Windows NT 10.0) Chrome/120", 2 * SECONDS, Engagement.MACHINE),
        (None, "Mozilla/5.0 (Windows NT 10.0) Chrome/120", 300 * SECONDS, Engagement.HUMAN),
        (None, "Mimecast URL protect", 600 * SECONDS, Engagement.MACHINE),
        (True, None, 600 * SECONDS, Engagement.MACHINE),
        (None, None, None, Engagement.UNKNOWN),
        (False, None, None, Engagement.HUMAN),
    ],
)
def test_clicks_within_seconds_of_delivery_are_a_scanner(
    machine: bool | None, agent: str | None, after: timedelta | None, expected: Engagement
) -> None:
    assert classify_click(machine, agent, after) is expected
