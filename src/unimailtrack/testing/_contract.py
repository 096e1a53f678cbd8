"""The adapter contract suite (see :mod:`unimailtrack.testing`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, ClassVar

import httpx

from unimailtrack.errors import MissingDependency

try:
    import pytest
except ImportError:  # pragma: no cover - the kit runs inside a pytest suite
    raise MissingDependency("pytest", "dev", purpose="unimailtrack.testing") from None

import unimailtrack
from unimailtrack._http import HttpxAsyncTransport, HttpxTransport, RetryPolicy
from unimailtrack.adapters import get_adapter_class
from unimailtrack.adapters.base import Adapter
from unimailtrack.config import Dsn, parse_dsn
from unimailtrack.errors import (
    ConfigurationError,
    PayloadError,
    SendError,
    SignatureError,
)
from unimailtrack.model import DeliveryStatus, Email, EmailEvent, EventType, new_tracking_id

__all__ = ["GARBAGE_BODIES", "AdapterContract", "Keyed"]

Request = tuple[bytes, dict[str, str]]
Handler = Callable[[httpx.Request], httpx.Response]

GARBAGE_BODIES: tuple[bytes, ...] = (
    b"",
    b" ",
    b"not json",
    b"{",
    b"[",
    b'{"a":',
    b"\xff\xfe\x00",
    b"null",
    b"true",
    b"0",
    b"1e999",
    b'"text"',
    b"[]",
    b"{}",
    b"[null]",
    b"[1, 2, 3]",
    b'[[], {}, ""]',
    b'{"event": 1, "type": 2, "RecordType": 3, "eventType": 4}',
    b'{"event": [], "type": {}, "RecordType": null, "data": "x", "email": 5}',
    b'[{"event": "delivered", "timestamp": "yesterday", "email": 7}]',
    b'{"type": "email.delivered", "created_at": 12, "data": {"to": [1, null]}}',
    b'{"Type": "Notification", "Message": "{not json"}',
    b'{"Type": "Notification", "Message": 17}',
    b'{"signature": "x", "event-data": []}',
    b"[" * 5000 + b"]" * 5000,
    b'{"a":' * 3000 + b"1" + b"}" * 3000,
    b'{"n": ' + b"9" * 5000 + b"}",
    json.dumps({"x" * 10: "y" * 100_000}).encode(),
)
"""Bodies no provider sends: parsing each returns events or raises ``PayloadError``, nothing
else (deep nesting, huge numbers, wrong types in every field an adapter may read)."""


@dataclass
class Keyed:
    """An adapter that holds its webhook secret, and whatever signs requests for it."""

    adapter: Adapter
    signer: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def _email() -> Email:
    return Email(
        sender="Contract Suite <sender@example.com>",
        to=["Ann <ann@example.com>", "bob@example.com"],
        cc=["cy@example.com"],
        subject="The adapter contract",
        text="Hello from the contract suite.",
        metadata={"case": "contract"},
        tags=["contract"],
    )


class _Recorder:
    """A provider stand-in: answers every request with the suite's ``send_response`` and
    keeps what it was sent; ``fail_first`` answers that many requests 503 first."""

    def __init__(self, respond: Handler, fail_first: int = 0) -> None:
        self.requests: list[httpx.Request] = []
        self._respond = respond
        self._fail = fail_first

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        if self._fail > 0:
            self._fail -= 1
            return httpx.Response(503, json={"message": "try again"})
        return self._respond(request)


def _shape(request: httpx.Request) -> tuple[str, str, bytes]:
    return request.method, str(request.url), request.content


class AdapterContract:
    """The rules every adapter keeps. Subclass as ``TestSomething(AdapterContract)`` and set
    :attr:`adapter_class`, :attr:`dsn` and the hooks below."""

    adapter_class: ClassVar[type[Adapter]]
    dsn: ClassVar[str]
    """A DSN that builds the adapter (with made-up credentials)."""
    env: ClassVar[Mapping[str, str]] = {}
    """The environment ``from_dsn`` reads besides the DSN."""
    signs_body: ClassVar[bool] = True
    """False for providers whose proof does not cover the body (credentials, or a signed
    token beside it)."""
    dated: ClassVar[bool] = True
    """False for providers whose requests carry no signed time to check freshness against."""
    needs_credentials_to_send: ClassVar[bool] = True
    """False for adapters that find credentials elsewhere (a credential chain) or need none."""

    # ------------------------------------------------------------------ hooks

    def keyed(self, **options: Any) -> Keyed:
        """An adapter able to send (made-up credentials) and to verify webhooks signed by the
        returned signer; ``options`` go to its constructor (transports, retry policy). Each call
        makes a fresh secret."""
        raise NotImplementedError

    def unkeyed(self) -> Adapter:
        """An adapter with no webhook secret of its own configured (the default constructor)."""
        return self.adapter_class()

    def webhook(self, keyed: Keyed, tracking_id: str, recipient: str) -> Request:
        """A request the provider sends when ``recipient``'s copy (tracking id ``tracking_id``)
        was delivered, signed for ``keyed``."""
        raise NotImplementedError

    def unknown_webhook(self, keyed: Keyed) -> Request:
        """A request with an event type the adapter does not know, signed for ``keyed``."""
        raise NotImplementedError

    def send_response(self, request: httpx.Request) -> httpx.Response:
        """The provider's answer accepting ``request`` (a send)."""
        raise NotImplementedError

    def transport_options(self, handler: Handler) -> dict[str, Any]:
        """Constructor options that send every request to ``handler``, sync and async."""
        return {
            "transport": HttpxTransport(httpx.Client(transport=httpx.MockTransport(handler))),
            "async_transport": HttpxAsyncTransport(
                httpx.AsyncClient(transport=httpx.MockTransport(handler))
            ),
        }

    # ------------------------------------------------------------------ helpers

    def _sending(self, recorder: _Recorder, **options: Any) -> Adapter:
        options.setdefault("retry", RetryPolicy(max_retries=0))
        return self.keyed(**self.transport_options(recorder), **options).adapter

    # ------------------------------------------------------------------ registry and DSN

    def test_registered_under_its_name(self) -> None:
        assert get_adapter_class(self.adapter_class.name) is self.adapter_class
        assert unimailtrack.adapters.available().count(self.adapter_class.name) == 1

    def test_dsn_builds_the_adapter_and_hides_its_secrets(self) -> None:
        parsed = parse_dsn(self.dsn)
        assert isinstance(parsed, Dsn)
        assert parsed.scheme == self.adapter_class.name
        built = self.adapter_class.from_dsn(parsed, env=dict(self.env))
        assert type(built) is self.adapter_class
        shown = parsed.redacted()
        for secret in (parsed.user, parsed.password):
            if secret:
                assert secret not in shown
        if parsed.user:  # the API key (the password may be a plain name, a Mailgun domain)
            assert parsed.user not in repr(built)

    def test_an_unknown_dsn_option_is_refused(self) -> None:
        from unimailtrack.mailer import build_adapters

        joiner = "&" if "?" in self.dsn else "?"
        with pytest.raises(ConfigurationError):
            build_adapters(self.dsn + joiner + "no_such_option=1", env=dict(self.env))

    # ------------------------------------------------------------------ verifying

    def test_a_signed_request_is_accepted(self) -> None:
        keyed = self.keyed()
        body, headers = self.webhook(keyed, new_tracking_id(), "ann@example.com")
        keyed.adapter.verify_webhook(body, headers)

    def test_verification_fails_closed_without_a_secret(self) -> None:
        body, headers = self.webhook(self.keyed(), new_tracking_id(), "ann@example.com")
        with pytest.raises(SignatureError):
            self.unkeyed().verify_webhook(body, headers)

    def test_a_request_for_another_secret_is_refused(self) -> None:
        mine, theirs = self.keyed(), self.keyed()
        body, headers = self.webhook(theirs, new_tracking_id(), "ann@example.com")
        with pytest.raises(SignatureError):
            mine.adapter.verify_webhook(body, headers)

    def test_a_request_without_its_headers_is_refused(self) -> None:
        keyed = self.keyed()
        body, headers = self.webhook(keyed, new_tracking_id(), "ann@example.com")
        bare = {k: v for k, v in headers.items() if k.lower() == "content-type"}
        if bare == headers:  # the proof travels in the body (SNS): strip nothing, tamper
            body = body.replace(b'"', b"'", 1)
        with pytest.raises(SignatureError):
            keyed.adapter.verify_webhook(body, bare)

    def test_a_tampered_body_is_refused_when_the_body_is_signed(self) -> None:
        keyed = self.keyed()
        body, headers = self.webhook(keyed, new_tracking_id(), "ann@example.com")
        tampered = body.replace(b"ann@example.com", b"eve@example.com")
        assert tampered != body
        if self.signs_body:
            with pytest.raises(SignatureError):
                keyed.adapter.verify_webhook(tampered, headers)
        else:  # nothing is signed: the credentials alone decide
            keyed.adapter.verify_webhook(tampered, headers)

    def test_garbage_is_refused_as_a_signature_error_or_read_as_a_payload_error(self) -> None:
        keyed = self.keyed()
        for body in GARBAGE_BODIES:
            try:
                keyed.adapter.verify_webhook(body, {"content-type": "application/json"})
            except SignatureError:
                continue
            raise AssertionError(f"an unsigned body was accepted: {body[:40]!r}")

    def test_verification_turned_off_explicitly_accepts_an_unsigned_request(self) -> None:
        keyed = self.keyed(verify_webhooks=False)
        body, _ = self.webhook(self.keyed(), new_tracking_id(), "ann@example.com")
        keyed.adapter.verify_webhook(body, {})

    # ------------------------------------------------------------------ parsing

    def test_parse_raises_only_payload_error_on_garbage(self) -> None:
        adapter = self.unkeyed()
        for body in GARBAGE_BODIES:
            try:
                events = adapter.parse_webhook(body, {"content-type": "application/json"})
            except PayloadError:
                continue
            assert isinstance(events, list), body[:40]
            for event in events:
                assert isinstance(event, EmailEvent)
                assert event.provider == self.adapter_class.name

    def test_a_delivered_event_is_read_with_its_tracking_id(self) -> None:
        keyed = self.keyed()
        tracking_id = new_tracking_id()
        body, headers = self.webhook(keyed, tracking_id, "ann@example.com")
        events = keyed.adapter.unwrap(body, headers)
        mine = [e for e in events if e.recipient == "ann@example.com"]
        assert mine, events
        for event in mine:
            assert event.provider == self.adapter_class.name
            assert event.type is EventType.DELIVERED
            assert event.tracking_id == tracking_id
            assert event.timestamp.tzinfo is not None
            assert event.raw
            assert EmailEvent.from_json(event.to_json()) == event

    def test_an_unknown_event_is_kept_not_dropped(self) -> None:
        keyed = self.keyed()
        body, headers = self.unknown_webhook(keyed)
        events = keyed.adapter.unwrap(body, headers)
        assert events
        assert any(e.type is EventType.UNKNOWN and e.raw for e in events)
        for event in events:
            assert event.reason or event.type is not EventType.UNKNOWN

    def test_event_ids_are_stable_across_retries_and_unique_within_a_body(self) -> None:
        keyed = self.keyed()
        body, headers = self.webhook(keyed, new_tracking_id(), "ann@example.com")
        first = [e.event_id for e in keyed.adapter.parse_webhook(body, headers)]
        again = [e.event_id for e in keyed.adapter.parse_webhook(body, headers)]
        assert first == again
        assert len(set(first)) == len(first)
        assert all(first)
        other, other_headers = self.webhook(keyed, new_tracking_id(), "bob@example.com")
        assert not set(first) & {
            e.event_id for e in keyed.adapter.parse_webhook(other, other_headers)
        }

    def test_the_module_helper_parses_without_credentials(self) -> None:
        keyed = self.keyed()
        body, headers = self.webhook(keyed, new_tracking_id(), "ann@example.com")
        helper = unimailtrack.parse_webhook(self.adapter_class.name, body, headers)
        assert helper == keyed.adapter.parse_webhook(body, headers)

    # ------------------------------------------------------------------ sending

    def test_every_recipient_gets_a_tracked_copy(self) -> None:
        recorder = _Recorder(self.send_response)
        adapter = self._sending(recorder)
        result = adapter.send(_email())
        assert [r.recipient for r in result.recipients] == [
            "ann@example.com",
            "bob@example.com",
            "cy@example.com",
        ]
        assert all(r.status is DeliveryStatus.ACCEPTED for r in result.recipients)
        assert len({r.tracking_id for r in result.recipients}) == 3
        sent = b"".join(request.content for request in recorder.requests)
        for r in result.recipients:
            if recorder.requests:
                assert r.tracking_id.encode() in sent, "the tracking id never reached the provider"

    def test_sync_and_async_send_alike(self) -> None:
        email = _email()
        sync_recorder, async_recorder = _Recorder(self.send_response), _Recorder(self.send_response)
        plan = Adapter.plan(email)
        sync_delivery = self._sending(sync_recorder).deliver(email, plan)

        async def run() -> Any:
            adapter = self._sending(async_recorder)
            try:
                return await adapter.adeliver(email, plan)
            finally:
                await adapter.aclose()

        async_delivery = asyncio.run(run())
        assert sorted(map(_shape, sync_recorder.requests)) == sorted(
            map(_shape, async_recorder.requests)
        )
        assert [(r.recipient, r.tracking_id, r.status) for r in sync_delivery.results] == [
            (r.recipient, r.tracking_id, r.status) for r in async_delivery.results
        ]

    def test_a_retried_request_is_the_same_request(self) -> None:
        recorder = _Recorder(self.send_response, fail_first=1)
        retry = RetryPolicy(max_retries=1, initial_delay=0.0, max_delay=0.0)
        adapter = self._sending(recorder, retry=retry)
        result = adapter.send(_email())
        assert all(r.status is DeliveryStatus.ACCEPTED for r in result.recipients)
        if recorder.requests:
            first, second = recorder.requests[0], recorder.requests[1]
            assert _shape(first) == _shape(second)
            assert dict(first.headers) == dict(second.headers)

    def test_a_failed_send_raises_a_retryable_send_error(self) -> None:
        recorder = _Recorder(self.send_response, fail_first=10)
        adapter = self._sending(recorder)
        failure: SendError | None = None
        try:
            adapter.send(_email())
        except SendError as exc:
            failure = exc
        if not recorder.requests:  # an adapter that is its own provider never saw the 503s
            assert failure is None
            return
        assert failure is not None, "every request was answered 503, yet the send succeeded"
        assert failure.retryable
        assert failure.provider == self.adapter_class.name

    def test_an_answer_nested_too_deeply_is_a_send_error_or_a_result(self) -> None:
        """However deep the provider's answer nests, reading it raises a ``SendError`` (or the
        send counts as done): never a ``RecursionError`` from inside the JSON decoder."""
        deep = b"[" * 100_000 + b"]" * 100_000
        for status in (200, 202, 400, 500):

            def respond(request: httpx.Request, status: int = status) -> httpx.Response:
                return httpx.Response(
                    status, content=deep, headers={"Content-Type": "application/json"}
                )

            adapter = self._sending(_Recorder(respond))
            failure: SendError | None = None
            try:
                adapter.send(_email())
            except SendError as exc:
                failure = exc
            assert failure is None or failure.provider == self.adapter_class.name

    def test_sending_without_credentials_is_a_configuration_error(self) -> None:
        if not self.needs_credentials_to_send:
            assert self.unkeyed().name == self.adapter_class.name
            return
        with pytest.raises(ConfigurationError):
            self.unkeyed().send(_email())

    def test_a_stale_request_is_refused_when_requests_are_dated(self) -> None:
        keyed = self.keyed()
        body, headers = self.webhook(keyed, new_tracking_id(), "ann@example.com")
        from datetime import UTC, datetime

        later = datetime.now(UTC) + timedelta(days=3)
        if not self.dated:  # nothing dated: the clock does not matter
            keyed.adapter.verify_webhook(body, headers, now=later)
            return
        try:
            keyed.adapter.verify_webhook(body, headers, now=later)
        except SignatureError:
            return
        raise AssertionError("a request three days old was accepted")
