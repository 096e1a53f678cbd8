"""The webhook receiver over a real tracker: batches stored whole or not at all, duplicates
answered 200, unreadable bodies kept as dead letters, a locked store answered 503 with nothing
half-written, state changes handed to the application, replays refused across receivers."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

import webhook_kits
from unimailtrack import DeliveryStatus, EmailEvent
from unimailtrack.tracking import StateChange, Tracker
from unimailtrack.webhooks import WebhookReceiver, WebhookResponse

ANN = "0190a1b2c3d4e5f60718293a4b5c6d7e"
BOB = "0190a1b2c3d4e5f60718293a4b5c6d7f"


@pytest.fixture
def tracker() -> Iterator[Tracker]:
    with Tracker.open("sqlite:///:memory:") as opened:
        yield opened


def both(
    receiver: WebhookReceiver, provider: str, request: tuple[bytes, dict[str, str]]
) -> tuple[WebhookResponse, WebhookResponse]:
    body, headers = request
    return (
        receiver.handle(provider, headers, body),
        asyncio.run(receiver.ahandle(provider, headers, body)),
    )


@pytest.mark.parametrize("provider", sorted(webhook_kits.ALL))
def test_a_batch_is_stored_and_a_retry_of_it_answers_200_as_duplicates(
    tracker: Tracker, provider: str
) -> None:
    kit = webhook_kits.ALL[provider]()
    receiver = WebhookReceiver({provider: kit.adapter}, tracker)
    body, headers = kit.request(ANN, "ann@example.com", "bounced")

    first = receiver.handle(provider, headers, body)
    assert first.status == 200
    assert first.json() == {"ok": True, "events": 1, "new": 1, "duplicates": 0}
    assert tracker.state(ANN).status is DeliveryStatus.BOUNCED
    assert tracker.suppression("ann@example.com") is not None

    if provider != "mailgun":  # a Mailgun token is single-use: its retry is a new request
        again = asyncio.run(receiver.ahandle(provider, headers, body))
        assert again.json() == {"ok": True, "events": 1, "new": 0, "duplicates": 1}
    assert tracker.count_events() == 1


def test_state_changes_reach_the_application_after_the_commit(tracker: Tracker) -> None:
    kit = webhook_kits.memory()
    assert kit.batch is not None
    changes: list[StateChange] = []
    receiver = WebhookReceiver({"memory": kit.adapter}, tracker, on_state_change=changes.append)

    receiver.handle("memory", *_swap(kit.batch([(ANN, "ann@example.com", "delivered")])))
    assert [(c.tracking_id, c.previous, c.status) for c in changes] == [
        (ANN, None, DeliveryStatus.DELIVERED)
    ]
    asyncio.run(
        receiver.ahandle("memory", *_swap(kit.batch([(ANN, "ann@example.com", "bounced")])))
    )
    assert [(c.previous, c.status) for c in changes[1:]] == [
        (DeliveryStatus.DELIVERED, DeliveryStatus.BOUNCED)
    ]
    assert all(tracker.state(c.tracking_id).status is c.status for c in changes[1:])


def test_a_failing_callback_does_not_fail_a_stored_batch(
    tracker: Tracker, caplog: pytest.LogCaptureFixture
) -> None:
    kit = webhook_kits.memory()

    def broken(event: EmailEvent) -> None:
        raise RuntimeError("the application's cache is down")

    receiver = WebhookReceiver({"memory": kit.adapter}, tracker, on_event=broken)
    for answer in both(receiver, "memory", kit.request(ANN, "ann@example.com", "delivered")):
        assert answer.status == 200
    assert tracker.count_events() == 1
    assert "callback failed after the batch was stored" in caplog.text


def test_an_unreadable_body_is_kept_as_a_dead_letter_and_answered_400(tracker: Tracker) -> None:
    kit = webhook_kits.sendgrid()
    assert kit.sign is not None
    receiver = WebhookReceiver({"sendgrid": kit.adapter}, tracker)
    body = b'[{"email": "ann@example.com", "event": "delivered"'
    headers = {**kit.sign(body), "Authorization": "Basic c2VjcmV0"}

    sync, asynchronous = both(receiver, "sendgrid", (body, headers))
    assert sync.status == asynchronous.status == 400
    letters = tracker.dead_letters()
    assert [(d.provider, d.body) for d in letters] == [("sendgrid", body)] * 2
    assert "JSON" in letters[0].reason
    assert "authorization" not in {k.lower() for k in letters[0].headers}
    assert tracker.count_events() == 0


def test_a_forged_request_stores_nothing(tracker: Tracker) -> None:
    kit = webhook_kits.sendgrid()
    receiver = WebhookReceiver({"sendgrid": kit.adapter}, tracker)
    forged = webhook_kits.sendgrid().request(ANN, "ann@example.com", "delivered")
    for answer in both(receiver, "sendgrid", forged):
        assert answer.status == 401
    assert tracker.count_events() == 0
    assert tracker.dead_letters() == []


# --------------------------------------------------------------------------- the store fails


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Another connection holds the database's write lock while the block runs."""
    with closing(sqlite3.connect(path, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            other.execute("ROLLBACK")


def test_a_store_that_cannot_write_answers_503_and_keeps_nothing_of_the_batch(
    tmp_path: Path,
) -> None:
    path = tmp_path / "track.sqlite3"
    kit = webhook_kits.sendgrid()
    assert kit.batch is not None
    request = kit.batch(
        [(ANN, "ann@example.com", "delivered"), (BOB, "bob@example.org", "bounced")]
    )
    changes: list[StateChange] = []
    with Tracker.open(f"sqlite:///{path}?timeout=0.05") as tracker:
        receiver = WebhookReceiver(
            {"sendgrid": kit.adapter}, tracker, on_state_change=changes.append
        )
        with locked(path):
            for answer in both(receiver, "sendgrid", request):
                assert answer.status == 503
                assert answer.headers["retry-after"] == "30"
                assert answer.json()["error"] == "store"
            assert tracker.count_events() == 0
        assert changes == []

        retried = receiver.handle("sendgrid", request[1], request[0])
        assert retried.json()["new"] == 2
        assert tracker.state(BOB).status is DeliveryStatus.BOUNCED
        assert len(changes) == 2


def test_a_dead_letter_that_cannot_be_kept_answers_503(tmp_path: Path) -> None:
    path = tmp_path / "track.sqlite3"
    kit = webhook_kits.sendgrid()
    assert kit.sign is not None
    body = b"not json"
    with Tracker.open(f"sqlite:///{path}?timeout=0.05") as tracker:
        receiver = WebhookReceiver({"sendgrid": kit.adapter}, tracker)
        with locked(path):
            assert receiver.handle("sendgrid", kit.sign(body), body).status == 503
        assert receiver.handle("sendgrid", kit.sign(body), body).status == 400
        assert len(tracker.dead_letters()) == 1


def test_a_replay_check_that_cannot_reach_the_store_answers_503(tmp_path: Path) -> None:
    path = tmp_path / "track.sqlite3"
    kit = webhook_kits.mailgun()
    body, headers = kit.request(ANN, "ann@example.com", "delivered")
    with Tracker.open(f"sqlite:///{path}?timeout=0.05") as tracker:
        receiver = WebhookReceiver({"mailgun": kit.adapter}, tracker)
        with locked(path):
            assert receiver.handle("mailgun", headers, body).status == 503
        assert receiver.handle("mailgun", headers, body).status == 200  # the token was not spent
        assert tracker.count_events() == 1


def test_a_reachability_check_does_not_touch_the_store(tracker: Tracker) -> None:
    receiver = WebhookReceiver({"memory": webhook_kits.memory().adapter}, tracker)
    tracker.close()  # any use of the store would now fail
    assert receiver.probe("memory").status == 200


# --------------------------------------------------------------------------- replays


def test_the_tracker_becomes_mailgun_s_replay_store_shared_by_every_receiver(
    tracker: Tracker,
) -> None:
    key = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
    kit = webhook_kits.mailgun(key)
    twin = webhook_kits.mailgun(key)  # another process: its own adapter, the same signing key
    first = WebhookReceiver({"mailgun": kit.adapter}, tracker)
    second = WebhookReceiver({"mailgun": twin.adapter}, tracker)
    assert kit.adapter.nonce_store is tracker  # type: ignore[attr-defined]

    body, headers = kit.request(ANN, "ann@example.com", "delivered")
    assert first.handle("mailgun", headers, body).json()["new"] == 1
    # The same request again (Mailgun's retry) is a no-op: a refusal would be retried for hours.
    assert second.handle("mailgun", headers, body).json() == {
        "ok": True,
        "events": 1,
        "new": 0,
        "duplicates": 1,
    }
    forged = _recut_body(body, '"bounced"')
    assert second.handle("mailgun", headers, forged).status == 401
    assert tracker.count_events() == 1


def _recut_body(body: bytes, status: str) -> bytes:
    """The same signature block over other event data."""
    return body.replace(b'"delivered"', status.encode(), 1)


def _swap(request: tuple[bytes, dict[str, str]]) -> tuple[dict[str, str], bytes]:
    body, headers = request
    return headers, body


class _Tokens:
    """A replay store apart from the tracker, as a deployment with its own cache has."""

    def __init__(self) -> None:
        self.keys: set[str] = set()

    def add_if_absent(self, key: str, expires_at: object) -> bool:
        if key in self.keys:
            return False
        self.keys.add(key)
        return True

    def discard(self, key: str) -> None:
        self.keys.discard(key)


@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_verified_request_that_could_not_be_stored_may_be_retried(
    tmp_path: Path, asynchronous: bool
) -> None:
    path = tmp_path / "track.sqlite3"
    kit = webhook_kits.mailgun()
    tokens = _Tokens()
    kit.adapter.nonce_store = tokens  # type: ignore[attr-defined]
    body, headers = kit.request(ANN, "ann@example.com", "delivered")
    with Tracker.open(f"sqlite:///{path}?timeout=0.05") as tracker:
        receiver = WebhookReceiver({"mailgun": kit.adapter}, tracker)
        with locked(path):
            if asynchronous:
                failed = asyncio.run(receiver.ahandle("mailgun", headers, body))
            else:
                failed = receiver.handle("mailgun", headers, body)
            assert failed.status == 503
        # The token stays spent: only this very request may pass it again.
        forged = _recut_body(body, '"failed", "severity": "permanent", "reason": "bounce"')
        assert receiver.handle("mailgun", headers, forged).status == 401
        assert receiver.handle("mailgun", headers, body).json()["new"] == 1
        assert receiver.handle("mailgun", headers, body).json()["duplicates"] == 1
        assert receiver.handle("mailgun", headers, forged).status == 401
        assert tracker.count_events() == 1
        assert tracker.state(ANN).status is DeliveryStatus.DELIVERED
