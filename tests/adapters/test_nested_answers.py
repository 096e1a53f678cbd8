"""A provider's API answer nested deeper than any real one is a typed error, never a crash.

The standard library's JSON decoder recurses: an answer of 100,000 opening brackets raises
``RecursionError`` from inside it. Every adapter reads API answers through the bounded reader
that webhook bodies go through, so such an answer is a ``PayloadError`` or a ``SendError``
like any other answer that is not what the provider documents. (Sending is covered for every
adapter by the contract suite.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from unimailtrack import DeliveryStatus, Email
from unimailtrack._http import HttpxAsyncTransport, HttpxTransport, RetryPolicy
from unimailtrack.adapters import MailgunAdapter, SendGridAdapter
from unimailtrack.adapters.base import Call, Recipient
from unimailtrack.adapters.brevo import suppressions as brevo
from unimailtrack.adapters.mailgun import suppressions as mailgun
from unimailtrack.adapters.postmark import suppressions as postmark
from unimailtrack.adapters.sendgrid import suppressions as sendgrid
from unimailtrack.adapters.ses import suppressions as ses
from unimailtrack.errors import AuthenticationError, PayloadError, ProviderUnavailable, SendError
from unimailtrack.model import RecipientResult

DEEP = b"[" * 100_000 + b"]" * 100_000


def _answer(status: int = 200) -> httpx.Response:
    return httpx.Response(status, content=DEEP, headers={"Content-Type": "application/json"})


READERS: dict[str, Callable[[httpx.Response], Any]] = {
    "sendgrid": lambda response: sendgrid.read_page(None, response),
    "mailgun": lambda response: mailgun.read_page(None, response),
    "ses": lambda response: ses.read_page(None, response),
    "postmark": lambda response: postmark.read_page("outbound", None, response),
    "brevo": lambda response: brevo.read_page(None, response),
}


@pytest.mark.parametrize("provider", sorted(READERS))
def test_a_deep_suppression_page_is_a_payload_error(provider: str) -> None:
    with pytest.raises(PayloadError):
        READERS[provider](_answer())


@pytest.mark.parametrize("provider", sorted(READERS))
def test_a_deep_error_answer_is_still_the_provider_s_error(provider: str) -> None:
    """An error status with a deep body keeps its status's meaning (here: authentication)."""
    with pytest.raises(AuthenticationError):
        READERS[provider](_answer(401))


def _mock(answer: httpx.Response) -> HttpxTransport:
    return HttpxTransport(httpx.Client(transport=httpx.MockTransport(lambda request: answer)))


def test_a_deep_email_activity_answer_is_a_send_error() -> None:
    adapter = SendGridAdapter("SG.key", transport=_mock(_answer()))
    start = datetime(2026, 3, 1, tzinfo=UTC)
    with pytest.raises(SendError, match="not JSON"):
        list(adapter.backfill(start, start + timedelta(hours=1)))


def test_a_deep_events_api_answer_is_a_send_error() -> None:
    adapter = MailgunAdapter("key-x", "mg.example.com", transport=_mock(_answer()))
    start = datetime(2026, 3, 1, tzinfo=UTC)
    with pytest.raises(SendError, match="not JSON"):
        list(adapter.backfill(start, start + timedelta(hours=1)))


class _NaiveAdapter(SendGridAdapter):
    """An adapter that reads its answers with ``response.json()``, as a hand-written one may."""

    def build_calls(self, email: Email, recipients: Sequence[Recipient]) -> list[Call]:
        def interpret(response: httpx.Response) -> list[RecipientResult]:
            found = response.json()
            return [
                RecipientResult(
                    recipient=r.address.email,
                    tracking_id=r.tracking_id,
                    status=DeliveryStatus.ACCEPTED,
                    message_id=str(found),
                    provider=self.name,
                )
                for r in recipients
            ]

        request = httpx.Request("POST", "https://api.sendgrid.com/v3/mail/send")
        return [Call(request, tuple(recipients), interpret)]


_EMAIL = Email(sender="a@example.com", to=["b@example.com"], subject="s", text="t")


@pytest.mark.parametrize(
    ("body", "status", "cause", "error"),
    [
        (DEEP, 200, "RecursionError", SendError),
        (b"<html>busy</html>", 502, "JSONDecodeError", ProviderUnavailable),
        (b"\xff\xfe{", 200, "UnicodeDecodeError", SendError),
    ],
)
def test_an_answer_a_naive_adapter_cannot_read_is_a_typed_failure(
    body: bytes, status: int, cause: str, error: type[SendError]
) -> None:
    answer = httpx.Response(status, content=body)
    adapter = _NaiveAdapter("SG.key", transport=_mock(answer), retry=RetryPolicy(max_retries=0))
    delivery = adapter.deliver(_EMAIL, adapter.plan(_EMAIL))
    (failure,) = delivery.errors
    assert type(failure) is error
    assert (failure.provider, failure.status, failure.detail) == ("sendgrid", status, cause)
    assert [r.status for r in delivery.results] == [DeliveryStatus.FAILED]


def test_the_async_path_reads_a_naive_adapter_s_deep_answer_as_a_send_error() -> None:
    answer = httpx.Response(200, content=DEEP)
    transport = HttpxAsyncTransport(
        httpx.AsyncClient(transport=httpx.MockTransport(lambda request: answer))
    )
    adapter = _NaiveAdapter("SG.key", async_transport=transport, retry=RetryPolicy(max_retries=0))
    delivery = asyncio.run(adapter.adeliver(_EMAIL, adapter.plan(_EMAIL)))
    (failure,) = delivery.errors
    assert type(failure) is SendError and failure.detail == "RecursionError"
