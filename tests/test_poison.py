"""Poison batches, attacked one finding at a time on SQLite and on the real PostgreSQL.

Parsers used to trust provider values that the store then refused every time, so the batch
was answered 503 (or 500) until the provider gave up: a NUL character in any text field, an
attempt count of 2**63 or more, an SES user agent, link or SMTP response given as an object or
a list, a 100 KB ``sg_event_id``. Now every event is storable as built, a batch the store
refuses for its content is kept as a dead letter and answered 400, and whatever else a store
raises is a 503, never a 500.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import secrets
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fuzz_webhooks as F
import webhook_kits
from unimailtrack import DeliveryStatus, EmailEvent, EventType, StoreContentError, StoreError
from unimailtrack._json import UntrustedJSONError, load_untrusted, nesting_exceeds, openings
from unimailtrack.lifecycle import fold
from unimailtrack.model import ATTEMPT_MAX, ID_MAX_BYTES, REASON_MAX, make_event
from unimailtrack.tracking import Tracker
from unimailtrack.tracking._store import ProgramFactory, Query, Store
from unimailtrack.tracking._tracker import open_store
from unimailtrack.webhooks import WebhookReceiver

TID = "0190a1b2c3d4e5f60718293a4b5c6d7e"
NOW = datetime(2026, 1, 15, 9, 30, tzinfo=UTC)


@dataclass
class Backend:
    kind: str
    url: str
    path: Path | None = None
    schema: str | None = None

    def execute(self, sql: str) -> None:
        """Run DDL straight on the database (a test's own constraint or trigger)."""
        if self.path is not None:
            with sqlite3.connect(self.path) as conn:
                conn.executescript(sql)
            return
        import psycopg

        from tracking.tracking_support import POSTGRES_URL

        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f"SET search_path = {self.schema}")
            conn.execute(sql)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        path = tmp_path / "poison.sqlite3"
        yield Backend("sqlite", f"sqlite:///{path}", path=path)
        return
    from tracking.tracking_support import POSTGRES_URL, drop_schema, require_postgres, with_schema

    require_postgres()
    schema = f"poison_{secrets.token_hex(6)}"
    try:
        yield Backend("postgres", with_schema(POSTGRES_URL, schema), schema=schema)
    finally:
        drop_schema(schema)


@pytest.fixture
def tracker(backend: Backend) -> Iterator[Tracker]:
    with Tracker.open(backend.url) as opened:
        yield opened


def _sendgrid_item(**fields: Any) -> dict[str, Any]:
    return {
        "email": "ann@example.com",
        "timestamp": int(time.time()),
        "event": "deferred",
        "sg_event_id": uuid.uuid4().hex,
        "sg_message_id": "u8Pz0LmQTgyw1c2dE5fG-h.filter0001.1.0",
        "unimailtrack_id": TID,
        "response": "450 4.2.1 mailbox busy",
        **fields,
    }


def _post_sendgrid(
    receiver: WebhookReceiver, kit: webhook_kits.Kit, items: list[Any]
) -> tuple[int, Any, bytes]:
    assert kit.sign is not None
    body = json.dumps(items).encode()
    response = receiver.handle("sendgrid", kit.sign(body), body)
    return response.status, response.json(), body


# --------------------------------------------------------------------------- NUL characters

NUL = "a\x00b"


def test_nul_in_every_text_field_is_stored_on_both_backends(tracker: Tracker) -> None:
    event = EmailEvent(
        provider="sendgrid",
        type=EventType.BOUNCED,
        provider_event=f"bounce{NUL}",
        recipient=f"ann{NUL}@example.com",
        event_id=f"id{NUL}",
        timestamp=NOW,
        message_id=f"msg{NUL}",
        tracking_id=TID,
        reason=f"550 5.1.1 {NUL}",
        smtp_status=f"5.1.1{NUL}",
        attempt=1,
        url=f"https://example.com/{NUL}",
        user_agent=f"Mozilla{NUL}",
        tags=[f"tag{NUL}"],
        metadata={f"key{NUL}": f"value{NUL}"},
        raw={"reason": f"550 5.1.1 {NUL}", NUL: [NUL]},
    )
    assert tracker.ingest([event]).new == 1
    [stored] = tracker.timeline(TID)
    assert stored == event
    assert "\x00" not in stored.reason + stored.url + stored.recipient + stored.event_id
    assert stored.reason == "550 5.1.1 a\ufffdb"
    assert stored.metadata == {"key" + "a\ufffdb": "value" + "a\ufffdb"}
    assert stored.raw == {"reason": f"550 5.1.1 {NUL}", NUL: [NUL]}  # raw is kept unaltered
    assert tracker.state(TID).status.value == "bounced"


def test_nul_in_every_string_of_a_signed_sendgrid_batch_is_answered_200(
    tracker: Tracker,
) -> None:
    kit = webhook_kits.sendgrid()
    receiver = WebhookReceiver({"sendgrid": kit.adapter}, tracker)
    item = _sendgrid_item()
    poisoned = {
        k: (f"{v}\x00" if isinstance(v, str) and k != "unimailtrack_id" else v)
        for k, v in item.items()
    }
    poisoned |= {"event": "deferred", "attempt": "3\x00", "url": "\x00", "useragent": "\x00"}
    status, answer, _ = _post_sendgrid(receiver, kit, [poisoned])
    assert (status, answer["new"]) == (200, 1)
    [stored] = tracker.timeline(TID)
    assert stored.recipient == "ann@example.com\ufffd"
    assert stored.reason == "450 4.2.1 mailbox busy\ufffd"
    assert stored.raw == poisoned


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("attempt", [2**31, 2**63, 2**64, -1, "18446744073709551616"])
def test_an_attempt_count_out_of_range_is_none_and_kept_in_raw(
    tracker: Tracker, attempt: Any
) -> None:
    kit = webhook_kits.sendgrid()
    receiver = WebhookReceiver({"sendgrid": kit.adapter}, tracker)
    status, answer, _ = _post_sendgrid(receiver, kit, [_sendgrid_item(attempt=attempt)])
    assert (status, answer["new"]) == (200, 1)
    [stored] = tracker.timeline(TID)
    assert stored.attempt is None
    assert stored.raw["attempt"] == attempt or float(stored.raw["attempt"]) == float(attempt)
    assert tracker.state(TID).status.value == "deferred"


def test_attempt_bounds_are_the_store_s() -> None:
    def build(attempt: Any) -> EmailEvent:
        return make_event("x", EventType.DEFERRED, "d", "a@example.com", "i", NOW, attempt=attempt)

    assert build(ATTEMPT_MAX).attempt == ATTEMPT_MAX
    assert build(ATTEMPT_MAX + 1).attempt is None
    assert build(True).attempt is None
    assert build("7").attempt == 7


# --------------------------------------------------------------------------- SES objects


@pytest.mark.parametrize(
    ("event_type", "detail"),
    [
        ("Open", {"open": {"timestamp": "2026-01-15T09:30:00.000Z", "userAgent": {"a": 1}}}),
        ("Click", {"click": {"link": ["https://a.example"], "userAgent": [1, 2]}}),
        (
            "Delivery",
            {"delivery": {"recipients": ["ann@example.com"], "smtpResponse": {"code": 250}}},
        ),
        (
            "Complaint",
            {
                "complaint": {
                    "complainedRecipients": [{"emailAddress": "ann@example.com"}],
                    "userAgent": {"x": [1]},
                }
            },
        ),
    ],
)
def test_ses_objects_and_lists_where_strings_belong_are_stored(
    tracker: Tracker, event_type: str, detail: dict[str, Any]
) -> None:
    target = F.ses()
    receiver = WebhookReceiver({"ses": target.adapter}, tracker)
    event = {
        "eventType": event_type,
        "mail": {
            "messageId": "0102018d-abc",
            "timestamp": "2026-01-15T09:29:00.000Z",
            "destination": ["ann@example.com"],
            "tags": {"unimailtrack_id": [TID]},
        },
        **detail,
    }
    body, headers = target.sign(event)
    response = receiver.handle("ses", headers, body)
    assert response.status == 200, response.body
    [stored] = tracker.timeline(TID)
    assert stored.type is not EventType.UNKNOWN
    assert stored.user_agent is None and stored.url is None
    assert stored.reason is None or isinstance(stored.reason, str)
    assert stored.raw == event


# --------------------------------------------------------------------------- long ids


def test_a_100_kb_sg_event_id_is_stored_under_its_digest_and_a_retry_is_a_duplicate(
    tracker: Tracker,
) -> None:
    kit = webhook_kits.sendgrid()
    receiver = WebhookReceiver({"sendgrid": kit.adapter}, tracker)
    huge = secrets.token_hex(50_000)  # random, so that no index compresses it
    items = [_sendgrid_item(sg_event_id=huge, sg_message_id=secrets.token_hex(5000))]
    status, answer, body = _post_sendgrid(receiver, kit, items)
    assert (status, answer["new"]) == (200, 1)
    [stored] = tracker.timeline(TID)
    assert stored.event_id.startswith("blake2b:") and len(stored.event_id) <= ID_MAX_BYTES
    assert stored.raw["sg_event_id"] == huge
    assert kit.sign is not None
    again = receiver.handle("sendgrid", kit.sign(body), body)
    assert again.json()["duplicates"] == 1


def test_a_long_reason_is_kept_whole_up_to_its_bound(tracker: Tracker) -> None:
    smtp = "550-5.1.1 " + "x" * 4000  # a long multi-line reply: kept whole
    huge = "y" * (REASON_MAX * 4)
    events = [
        make_event(
            "x", EventType.BOUNCED, "b", "a@example.com", "1", NOW, tracking_id=TID, reason=smtp
        ),
        make_event(
            "x", EventType.BOUNCED, "b", "a@example.com", "2", NOW, tracking_id=TID, reason=huge
        ),
    ]
    tracker.ingest(events)
    first, second = tracker.timeline(TID)
    assert first.reason == smtp
    assert second.reason is not None and len(second.reason) == REASON_MAX
    assert second.reason.endswith("\u2026")


def test_an_overlong_recipient_makes_the_event_unknown_with_the_reason(tracker: Tracker) -> None:
    event = make_event("x", EventType.BOUNCED, "b", "a" * 400 + "@example.com", "1", NOW, TID)
    assert (event.type, event.recipient) == (EventType.UNKNOWN, "")
    assert event.reason is not None and "recipient" in event.reason
    assert tracker.ingest([event]).new == 1


def test_a_type_given_as_text_is_taken_or_refused_at_construction() -> None:
    fields: dict[str, Any] = {
        "provider": "x",
        "provider_event": "b",
        "recipient": "a@example.com",
        "event_id": "1",
        "timestamp": NOW,
    }
    assert EmailEvent(type="bounced", **fields).type is EventType.BOUNCED  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a valid EventType"):
        EmailEvent(type="exploded", **fields)  # type: ignore[arg-type]


def test_events_hand_built_with_text_types_are_stored_and_folded(tracker: Tracker) -> None:
    """Every way of building an event by hand turns a text ``type`` into its member before the
    tracker sees it, so that the lifecycle fold never meets a plain string."""
    base = EmailEvent(
        provider="x",
        type="delivered",  # type: ignore[arg-type]
        provider_event="d",
        recipient="a@example.com",
        event_id="1",
        timestamp=NOW,
        tracking_id=TID,
    )
    opened = dataclasses.replace(base, type="opened", event_id="2")
    bounced = make_event("x", "bounced", "b", "a@example.com", "3", NOW, None, TID)  # type: ignore[arg-type]
    clicked = EmailEvent.from_dict({**base.to_dict(), "type": "clicked", "event_id": "4"})
    events = [base, opened, bounced, clicked]
    assert [e.type.__class__ for e in events] == [EventType] * 4
    assert tracker.ingest(events).new == 4
    # The same events built from the members fold to the same state.
    members = [dataclasses.replace(e, type=EventType(e.type.value)) for e in events]
    assert tracker.state(TID).status is fold(members).status is DeliveryStatus.CLICKED
    assert {e.type for e in tracker.timeline(TID)} == {
        EventType.DELIVERED,
        EventType.OPENED,
        EventType.BOUNCED,
        EventType.CLICKED,
    }
    with pytest.raises(ValueError, match="not a valid EventType"):
        dataclasses.replace(base, type="exploded")
    with pytest.raises(ValueError, match="not a valid EventType"):
        make_event("x", "exploded", "b", "a@example.com", "5", NOW)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the store


class FailingStore(Store):
    """A real store whose programs fail at their ``fail_at``-th statement with an exception
    no store should raise: the transaction is rolled back, whatever the exception."""

    def __init__(self, inner: Store, error: BaseException, fail_at: int) -> None:
        self.inner, self.error, self.fail_at = inner, error, fail_at
        self.dialect = inner.dialect
        self.armed = False

    def _wrap(self, program: ProgramFactory[Any]) -> ProgramFactory[Any]:
        if not self.armed:
            return program

        def wrapped() -> Any:
            inner = program()
            reply: Any = None
            for number in range(1_000_000):
                try:
                    step = inner.send(reply)
                except StopIteration as done:
                    return done.value
                if number == self.fail_at:
                    raise self.error
                reply = yield step
            raise AssertionError("unreachable")

        return wrapped

    def run(self, program: ProgramFactory[Any], *, write: bool) -> Any:
        return self.inner.run(self._wrap(program), write=write)

    async def arun(self, program: ProgramFactory[Any], *, write: bool) -> Any:
        return await self.inner.arun(self._wrap(program), write=write)

    def close(self) -> None:
        self.inner.close()

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.parametrize("error", [RuntimeError("bug"), KeyError("x"), ZeroDivisionError("zero")])
def test_a_store_raising_an_unexpected_exception_mid_ingest_answers_503(
    backend: Backend, error: BaseException, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL)
    store = FailingStore(open_store(backend.url, NOW), error, fail_at=1)
    kit = webhook_kits.sendgrid()
    with Tracker(store) as tracker:
        receiver = WebhookReceiver({"sendgrid": kit.adapter}, tracker)
        assert kit.batch is not None
        body, headers = kit.batch([(TID, "ann@example.com", "bounced")] * 3)
        store.armed = True
        assert receiver.handle("sendgrid", headers, body).status == 503
        assert asyncio.run(receiver.ahandle("sendgrid", headers, body)).status == 503
        store.armed = False
        assert tracker.count_events() == 0  # nothing half-written
        assert tracker.dead_letters() == []
        assert receiver.handle("sendgrid", headers, body).status == 200
        assert tracker.count_events() == 3


def _refuse_poison(backend: Backend) -> None:
    """The store's own rule refusing one recipient, as a database refuses content."""
    if backend.kind == "sqlite":
        backend.execute(
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON events "
            "WHEN NEW.recipient = 'poison@example.com' "
            "BEGIN SELECT RAISE(ABORT, 'poison refused'); END;"
        )
    else:
        backend.execute(
            "ALTER TABLE events ADD CONSTRAINT refuse_poison "
            "CHECK (recipient <> 'poison@example.com')"
        )


def test_a_batch_refused_for_its_content_is_a_dead_letter_with_400_and_others_are_stored(
    backend: Backend, tracker: Tracker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL)
    _refuse_poison(backend)
    kit = webhook_kits.sendgrid()
    receiver = WebhookReceiver({"sendgrid": kit.adapter}, tracker)
    assert kit.batch is not None
    good = kit.batch([(TID, "ann@example.com", "delivered")])
    poisoned = kit.batch(
        [(TID, "bob@example.com", "delivered"), (TID, "poison@example.com", "bounced")]
    )
    later = kit.batch([(TID, "cy@example.com", "delivered")])

    assert receiver.handle("sendgrid", good[1], good[0]).status == 200
    refused = receiver.handle("sendgrid", poisoned[1], poisoned[0])
    assert refused.status == 400
    assert refused.json()["error"] == "refused"
    again = asyncio.run(receiver.ahandle("sendgrid", poisoned[1], poisoned[0]))
    assert again.status == 400  # a retry is refused alike: never a 503 to retry forever
    assert receiver.handle("sendgrid", later[1], later[0]).status == 200

    assert tracker.count_events() == 2  # the good requests, and nothing of the refused one
    letters = tracker.dead_letters(provider="sendgrid")
    assert len(letters) == 2
    assert all(letter.body == poisoned[0] for letter in letters)
    assert all("refused" in letter.reason for letter in letters)


def test_content_refusals_and_outages_are_told_apart(backend: Backend) -> None:
    store = open_store(backend.url, NOW)
    try:

        def insert(value: Any) -> Any:
            yield Query("CREATE TEMPORARY TABLE IF NOT EXISTS t (a INTEGER, b TEXT)")
            yield Query("INSERT INTO t (a, b) VALUES (?, ?)", value)

        for value in ((2**63, "x"), (1, "\ud800")) + (
            ((1, "a\x00b"),) if backend.kind == "postgres" else ()
        ):
            with pytest.raises(StoreContentError):
                store.run(lambda value=value: insert(value), write=True)
        if backend.kind == "postgres":

            def cut() -> Any:
                yield Query("SELECT pg_terminate_backend(pg_backend_pid())")

            with pytest.raises(StoreError) as raised:
                store.run(cut, write=True)
            assert not isinstance(raised.value, StoreContentError)
            assert raised.value.retryable
    finally:
        store.close()


def test_a_locked_sqlite_store_is_an_outage_not_a_refusal(tmp_path: Path) -> None:
    path = tmp_path / "locked.sqlite3"
    with Tracker.open(f"sqlite:///{path}"):
        pass
    store = open_store(f"sqlite:///{path}", NOW)
    store._timeout = 0.05  # type: ignore[attr-defined]
    store._local.conn = None  # type: ignore[attr-defined]
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreError) as raised:
            store.run(lambda: iter([Query("SELECT 1")]), write=True)  # type: ignore[arg-type]
        assert not isinstance(raised.value, StoreContentError)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        store.close()


# --------------------------------------------------------------------------- nesting


@pytest.mark.parametrize("depth", [65, 1000, 100_000])
def test_deep_nesting_is_refused_before_decoding(depth: int) -> None:
    body = b"[" * depth + b"]" * depth
    assert nesting_exceeds(body)
    with pytest.raises(UntrustedJSONError):
        load_untrusted(body)
    with pytest.raises(UntrustedJSONError):
        load_untrusted(b'{"a": ' + b'{"b": ' * depth + b"1" + b"}" * depth + b"}")


def test_brackets_in_strings_and_escapes_do_not_count() -> None:
    assert load_untrusted(b'["' + b"[" * 500 + b'"]') == ["[" * 500]
    assert load_untrusted(rb'["\\", "\"[[[[", {"a": "]]]"}]') == ["\\", '"[[[[', {"a": "]]]"}]
    hidden = b'["]",' + b"[" * 70 + b"]" * 70 + b"]"  # depth hidden behind a string's bracket
    assert nesting_exceeds(hidden)
    assert not nesting_exceeds(b"[" * 64 + b"]" * 64)
    with pytest.raises(
        ValueError, match=r"(?i)unexpected|expecting"
    ):  # a truncated body is the decoder's to refuse
        load_untrusted(b'[{"a": 1}, {"b": ')


def test_a_body_with_no_more_brackets_than_the_limit_is_left_to_the_decoder() -> None:
    """Fewer brackets than the limit cannot nest deeper than it, balanced or not: such a body
    skips the scan, and what is not JSON is the decoder's to refuse."""
    assert not nesting_exceeds(b"[" * 64)
    assert not nesting_exceeds(b"]" * 40 + b"{" * 24)
    assert nesting_exceeds(b"[" * 65)
    with pytest.raises(ValueError, match=r"(?i)unexpected|expecting") as refused:
        load_untrusted(b"[" * 64)
    assert not isinstance(refused.value, UntrustedJSONError)


def test_a_deep_body_through_every_signed_path_is_never_a_500(
    tracker: Tracker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL)
    deep = F.Deep(1000)
    for provider in F.PROVIDERS:
        target = F.TARGETS[provider]()
        receiver = WebhookReceiver({provider: target.adapter}, tracker)
        body, headers = target.sign(deep)
        status = receiver.handle(provider, headers, body).status
        # Mailgun's signature is inside the body: a body it cannot read is not authentic.
        assert status == (401 if provider == "mailgun" else 400), provider
    ses = F.ses()
    body, headers = ses.sign({"eventType": "Send"})
    envelope = json.loads(body)
    envelope["Extra"] = "@@"
    text = json.dumps(envelope).replace('"@@"', "[" * 1000 + "]" * 1000).encode()
    receiver = WebhookReceiver({"ses": ses.adapter}, tracker)
    assert receiver.handle("ses", headers, text).status == 401  # unreadable: not verified


# --------------------------------------------------------------------------- the bounds

_ANY = st.one_of(
    st.none(),
    st.text(max_size=40),
    st.text(alphabet=st.sampled_from("a\x00\ud800é"), min_size=200, max_size=700),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(
    texts=st.lists(_ANY, min_size=9, max_size=9),
    attempt=st.one_of(st.none(), st.integers(), st.text(max_size=12), st.floats()),
    tags=st.one_of(st.lists(_ANY, max_size=120), _ANY),
    metadata=st.one_of(st.dictionaries(st.text(max_size=300), _ANY, max_size=5), _ANY),
)
def test_whatever_a_parser_passes_the_event_is_within_the_bounds(
    texts: list[Any], attempt: Any, tags: Any, metadata: Any
) -> None:
    name, recipient, event_id, message_id, tracking_id, reason, status, url, agent = texts
    event = make_event(
        "x",
        EventType.DELIVERED,
        name,
        recipient,
        event_id,
        NOW,
        message_id,
        tracking_id,
        reason,
        None,
        status,
        attempt,
        url,
        agent,
        None,
        tags,
        metadata,
        {"raw": texts},
    )
    fields = event.to_dict()
    for key in ("provider_event", "recipient", "event_id"):
        assert isinstance(fields[key], str)
    for key in ("message_id", "tracking_id", "reason", "smtp_status", "url", "user_agent"):
        assert fields[key] is None or isinstance(fields[key], str)
    every = [v for v in fields.values() if isinstance(v, str)]
    every += [*event.tags, *event.metadata, *event.metadata.values()]
    for text in every:
        assert "\x00" not in text
        text.encode("utf-8")  # no lone surrogate
    for key in ("event_id", "message_id", "tracking_id"):
        assert fields[key] is None or len(fields[key].encode()) <= ID_MAX_BYTES
    assert len(event.recipient.encode()) <= 320
    assert event.reason is None or len(event.reason) <= REASON_MAX
    assert event.attempt is None or 0 <= event.attempt <= ATTEMPT_MAX
    assert len(event.tags) <= 100 and len(event.metadata) <= 256
    assert dataclasses.replace(event) == event  # settled: settling again changes nothing


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300) | st.text(alphabet='[]{}"a\\', max_size=300).map(str.encode))
def test_openings_counts_what_bytes_count_counts(data: bytes) -> None:
    assert openings(data) == data.count(b"[") + data.count(b"{")
