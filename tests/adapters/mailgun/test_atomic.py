"""A Mailgun request is stored with its token or not at all, on both backends.

The receiver runs in its default configuration (the tracker is the replay store). A store
that dies at every step of the write, on its commit, or after its commit (the answer lost)
answers 503; Mailgun's retry of the same request is then stored once, and a different body
under the same token is refused. Without a tracker, and with a replay store of its own, the
same holds through ``spend_token``'s two keys.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

import webhook_kits
from unimailtrack import DeliveryStatus, EmailEvent, StoreError
from unimailtrack.tracking import Tracker
from unimailtrack.tracking._store import Program, ProgramFactory, Store
from unimailtrack.webhooks import WebhookReceiver

POSTGRES_URL = os.environ.get(
    "UNIMAILTRACK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
ANN = "0190a1b2c3d4e5f60718293a4b5c6d7e"


def _postgres_schema() -> Iterator[str]:
    psycopg = pytest.importorskip("psycopg")
    from psycopg import sql

    try:
        psycopg.connect(POSTGRES_URL, connect_timeout=3).close()
    except psycopg.Error as exc:
        if os.environ.get("UNIMAILTRACK_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL is required but {POSTGRES_URL} does not answer: {exc}")
        pytest.skip(f"SKIPPED POSTGRESQL TESTS: no server at {POSTGRES_URL} ({exc})")
    schema = f"mga_{secrets.token_hex(6)}"
    try:
        yield f"{POSTGRES_URL}{'&' if '?' in POSTGRES_URL else '?'}schema={schema}"
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'track.sqlite3'}"
    else:
        yield from _postgres_schema()


# --------------------------------------------------------------------------- a dying store


@dataclass
class Dying(Store):
    """A real store whose next write dies at step ``at`` (0: before its first statement;
    the number of steps: on its commit), or, with ``after_commit``, once it has committed."""

    inner: Store
    at: int | None = None
    after_commit: bool = False
    steps: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.dialect = self.inner.dialect

    def _factory(self, program: ProgramFactory[Any]) -> ProgramFactory[Any]:
        at, self.at = self.at, None

        def counted() -> Program[Any]:
            inner = program()
            done = 0
            try:
                step = next(inner)
                while True:
                    if done == at:
                        raise StoreError("the connection to the store died")
                    rows = yield step
                    done += 1
                    step = inner.send(rows)
            except StopIteration as stop:
                self.steps.append(done)
                if done == at:  # every statement ran: die on the commit
                    raise StoreError("the store died on commit") from None
                return stop.value

        return counted

    def run(self, program: ProgramFactory[Any], *, write: bool) -> Any:
        if not write:
            return self.inner.run(program, write=False)
        after, self.after_commit = self.after_commit, False
        outcome = self.inner.run(self._factory(program), write=True)
        if after:
            raise StoreError("the connection died before the commit was acknowledged")
        return outcome

    async def arun(self, program: ProgramFactory[Any], *, write: bool) -> Any:
        if not write:
            return await self.inner.arun(program, write=False)
        after, self.after_commit = self.after_commit, False
        outcome = await self.inner.arun(self._factory(program), write=True)
        if after:
            raise StoreError("the connection died before the commit was acknowledged")
        return outcome

    def close(self) -> None:
        self.inner.close()

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture
def dying(url: str) -> Iterator[tuple[Tracker, Dying]]:
    with Tracker.open(url) as opened:
        store = Dying(opened._store)
        yield Tracker(store), store


def _post(receiver: WebhookReceiver, body: bytes, headers: dict[str, str], sync: bool) -> Any:
    if sync:
        return receiver.handle("mailgun", headers, body)
    return asyncio.run(receiver.ahandle("mailgun", headers, body))


def _forged(body: bytes) -> bytes:
    """The same signature block over a forged permanent bounce."""
    forged = body.replace(
        b'"event": "delivered"', b'"event": "failed", "severity": "permanent", "reason": "bounce"'
    )
    assert forged != body
    return forged


def test_the_token_is_spent_in_the_transaction_that_stores_the_events(
    dying: tuple[Tracker, Dying],
) -> None:
    tracker, store = dying
    kit = webhook_kits.mailgun()
    receiver = WebhookReceiver({"mailgun": kit.adapter}, tracker)
    body, headers = kit.request(ANN, "ann@example.com", "delivered")
    assert receiver.handle("mailgun", headers, body).json()["new"] == 1
    assert len(store.steps) == 1  # one write transaction: the token and the events together


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
def test_a_store_dying_at_any_step_or_on_commit_loses_nothing(
    dying: tuple[Tracker, Dying], sync: bool
) -> None:
    tracker, store = dying
    kit = webhook_kits.mailgun()
    receiver = WebhookReceiver({"mailgun": kit.adapter}, tracker)
    probe, probe_headers = kit.request(ANN, "probe@example.com", "delivered")
    assert receiver.handle("mailgun", probe_headers, probe).status == 200
    (steps,) = store.steps
    assert steps >= 2  # the token, then the events: there is a "between" to die in

    for at in range(steps + 1):  # every statement, then the commit
        body, headers = kit.request(f"{at:032x}", f"ann{at}@example.com", "delivered")
        before = tracker.count_events()
        store.at = at
        assert _post(receiver, body, headers, sync).status == 503, at
        assert tracker.count_events() == before, at  # nothing half-written
        assert _post(receiver, _forged(body), headers, sync).status == 401, at
        assert _post(receiver, body, headers, sync).json()["new"] == 1, at
        assert _post(receiver, _forged(body), headers, sync).status == 401, at
        assert tracker.count_events() == before + 1, at
        assert tracker.suppression(f"ann{at}@example.com") is None, at


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
def test_after_a_503_only_the_same_request_passes_the_token(
    dying: tuple[Tracker, Dying], sync: bool
) -> None:
    tracker, store = dying
    kit = webhook_kits.mailgun()
    receiver = WebhookReceiver({"mailgun": kit.adapter}, tracker)
    body, headers = kit.request(ANN, "ann@example.com", "delivered")
    store.after_commit = True  # stored, but the answer was lost: Mailgun saw a 503
    assert _post(receiver, body, headers, sync).status == 503
    forged = _forged(body)
    assert _post(receiver, forged, headers, sync).status == 401
    again = _post(receiver, body, headers, sync)
    assert again.json() == {"ok": True, "events": 1, "new": 0, "duplicates": 1}
    assert _post(receiver, forged, headers, sync).status == 401
    assert tracker.count_events() == 1
    assert tracker.state(ANN).status is DeliveryStatus.DELIVERED
    assert tracker.suppression("ann@example.com") is None


def test_a_forged_body_under_a_token_spent_before_the_store_died_is_refused(
    dying: tuple[Tracker, Dying],
) -> None:
    tracker, store = dying
    kit = webhook_kits.mailgun()
    receiver = WebhookReceiver({"mailgun": kit.adapter}, tracker)
    body, headers = kit.request(ANN, "ann@example.com", "delivered")
    store.at = 1  # dies after spending the token, before the events: all rolled back
    assert receiver.handle("mailgun", headers, body).status == 503
    assert receiver.handle("mailgun", headers, body).json()["new"] == 1
    assert receiver.handle("mailgun", headers, _forged(body)).status == 401
    assert tracker.count_events() == 1


def test_a_request_already_stored_is_a_no_op_and_a_different_one_a_refusal(url: str) -> None:
    key = secrets.token_hex(16)
    kit, twin = webhook_kits.mailgun(key), webhook_kits.mailgun(key)
    with Tracker.open(url) as one, Tracker.open(url) as other:
        first = WebhookReceiver({"mailgun": kit.adapter}, one)
        second = WebhookReceiver({"mailgun": twin.adapter}, other)  # another process
        body, headers = kit.request(ANN, "ann@example.com", "delivered")
        assert first.handle("mailgun", headers, body).json()["new"] == 1
        for answer in (
            second.handle("mailgun", headers, body),
            asyncio.run(second.ahandle("mailgun", headers, body)),
        ):
            assert answer.json() == {"ok": True, "events": 1, "new": 0, "duplicates": 1}
        assert second.handle("mailgun", headers, _forged(body)).status == 401
        assert other.count_events() == 1
        assert other.suppression("ann@example.com") is None


# --------------------------------------------------------------------------- other replay stores


class FlakyTokens:
    """A replay store of its own (a cache beside the tracker) that fails on chosen calls."""

    def __init__(self) -> None:
        self.keys: dict[str, datetime] = {}
        self.fail_on: set[int] = set()
        self.calls = 0

    def add_if_absent(self, key: str, expires_at: datetime) -> bool:
        self.calls += 1
        if self.calls in self.fail_on:
            raise StoreError("the token cache is unreachable")
        if key in self.keys:
            return False
        self.keys[key] = expires_at
        return True

    def discard(self, key: str) -> None:
        self.keys.pop(key, None)


@pytest.mark.parametrize("failing_call", [1, 2])
def test_a_replay_store_of_its_own_failing_between_its_two_keys_loses_nothing(
    url: str, failing_call: int
) -> None:
    kit = webhook_kits.mailgun()
    tokens = FlakyTokens()
    kit.adapter.nonce_store = tokens  # type: ignore[attr-defined]
    with Tracker.open(url) as tracker:
        receiver = WebhookReceiver({"mailgun": kit.adapter}, tracker)
        body, headers = kit.request(ANN, "ann@example.com", "delivered")
        tokens.fail_on = {failing_call}
        assert receiver.handle("mailgun", headers, body).status == 503
        assert receiver.handle("mailgun", headers, body).json()["new"] == 1
        assert receiver.handle("mailgun", headers, _forged(body)).status == 401
        assert receiver.handle("mailgun", headers, body).json()["duplicates"] == 1
        assert tracker.count_events() == 1


def test_without_a_tracker_a_failed_callback_is_retried_and_a_forged_body_refused() -> None:
    kit = webhook_kits.mailgun()
    seen: list[EmailEvent] = []
    fail = [True]

    def handle(event: EmailEvent) -> None:
        if fail.pop() if fail else False:
            raise RuntimeError("the application's queue is down")
        seen.append(event)

    receiver = WebhookReceiver({"mailgun": kit.adapter}, on_event=handle)
    body, headers = kit.request(ANN, "ann@example.com", "delivered")
    assert receiver.handle("mailgun", headers, body).status == 500
    assert receiver.handle("mailgun", headers, _forged(body)).status == 401
    assert receiver.handle("mailgun", headers, body).status == 200
    assert [e.recipient for e in seen] == ["ann@example.com"]
