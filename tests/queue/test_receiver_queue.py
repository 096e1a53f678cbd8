"""The receiver's queue seam: verify first, enqueue only what verified, answer 200 once the
queue holds it and 503 when it cannot; Mailgun's token handled as for a store failure (spent
pinned to its request before the enqueue, so that the request posted again is admitted and
stored once, a different request under the token is refused, and a queue failure loses
nothing)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence

import pytest

import webhook_kits
from unimailtrack.errors import QueueError
from unimailtrack.queue import Delivery, Envelope, Queue, Worker
from unimailtrack.tracking import Tracker
from unimailtrack.webhooks import WebhookReceiver

MakeQueue = Callable[..., Queue]
ANN = "0190a1b2c3d4e5f60718293a4b5c6d7e"


class Flaky(Queue):
    """A real queue whose next ``failures`` puts fail, as a broker that is down would."""

    def __init__(self, inner: Queue, failures: int) -> None:
        self.inner, self.failures, self.url = inner, failures, inner.url

    def put(self, envelope: Envelope) -> None:
        if self.failures:
            self.failures -= 1
            raise QueueError("the broker is down")
        self.inner.put(envelope)

    def receive(self, limit: int, wait: float) -> list[Delivery]:
        return self.inner.receive(limit, wait)

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        self.inner.ack(deliveries)

    def release(self, delivery: Delivery, delay: float) -> None:
        self.inner.release(delivery, delay)

    def extend(self, deliveries: Sequence[Delivery]) -> None:
        self.inner.extend(deliveries)


def drain(queue: Queue, tracker: Tracker) -> int:
    return Worker(queue, tracker, wait=0.3).run(until_empty=True).envelopes


@pytest.mark.parametrize("kind", ["redis", "sqs", "outbox"])
def test_a_verified_batch_is_queued_then_stored_and_a_forgery_is_never_queued(
    kind: str, make_queue: MakeQueue, tracker: Tracker
) -> None:
    kit = webhook_kits.sendgrid()
    queue = make_queue(kind)
    receiver = WebhookReceiver({"sendgrid": kit.adapter}, tracker, queue=queue)
    assert kit.batch is not None
    body, headers = kit.batch(
        [(ANN, "ann@example.com", "delivered"), (ANN, "ann@example.com", "bounced")]
    )
    answer = receiver.handle("sendgrid", headers, body)
    assert answer.status == 200 and answer.json() == {"ok": True, "events": 2, "queued": True}
    assert tracker.count_events() == 0  # stored by a worker, not by the receiver
    forged = body.replace(b"ann@", b"eve@")
    assert receiver.handle("sendgrid", headers, forged).status == 401
    other_kit = webhook_kits.sendgrid()
    assert other_kit.batch is not None
    foreign_body, foreign_headers = other_kit.batch([(ANN, "eve@example.com", "delivered")])
    assert receiver.handle("sendgrid", foreign_headers, foreign_body).status == 401
    assert drain(queue, tracker) == 1
    assert tracker.count_events() == 2
    assert tracker.state(ANN).status == "bounced"


def test_a_queue_that_cannot_take_the_request_answers_503_like_a_store_failure(
    make_queue: MakeQueue, tracker: Tracker
) -> None:
    kit = webhook_kits.sendgrid()
    queue = Flaky(make_queue("redis"), failures=1)
    receiver = WebhookReceiver({"sendgrid": kit.adapter}, tracker, queue=queue)
    body, headers = kit.request(ANN, "ann@example.com", "delivered")
    down = receiver.handle("sendgrid", headers, body)
    assert down.status == 503 and down.headers["retry-after"] == "30"
    assert receiver.handle("sendgrid", headers, body).status == 200  # the provider's retry
    drain(queue, tracker)
    assert tracker.count_events() == 1


def test_a_broker_that_is_not_there_answers_503(tracker: Tracker) -> None:
    kit = webhook_kits.sendgrid()
    receiver = WebhookReceiver(
        {"sendgrid": kit.adapter}, tracker, queue="redis://127.0.0.1:1/0?stream=nowhere"
    )
    body, headers = kit.request(ANN, "ann@example.com", "delivered")
    assert receiver.handle("sendgrid", headers, body).status == 503


def _mailgun_retoken(body: bytes) -> bytes:
    """A different request under the same signed token (the signature covers only the
    timestamp and the token): what an attacker who captured one request can build."""
    document = json.loads(body)
    document["event-data"]["recipient"] = "eve@example.com"
    return json.dumps(document).encode()


@pytest.mark.parametrize("replay_store", ["tracker", "adapter"])
def test_an_enqueued_mailgun_request_is_refused_as_a_replay_and_its_retry_is_stored_once(
    replay_store: str, make_queue: MakeQueue, tracker: Tracker
) -> None:
    kit = webhook_kits.mailgun()
    queue = Flaky(make_queue("redis"), failures=1)
    receiver = WebhookReceiver(
        {"mailgun": kit.adapter}, tracker if replay_store == "tracker" else None, queue=queue
    )
    body, headers = kit.request(ANN, "ann@example.com", "delivered")
    # The queue is down: 503, and nothing is lost: Mailgun's retry of the same request is let in.
    assert receiver.handle("mailgun", headers, body).status == 503
    assert receiver.handle("mailgun", headers, _mailgun_retoken(body)).status == 401
    assert receiver.handle("mailgun", headers, body).status == 200
    # Posted again once queued: the same request is admitted (and stored once), another
    # request under its token is refused.
    assert receiver.handle("mailgun", headers, body).status == 200
    assert receiver.handle("mailgun", headers, _mailgun_retoken(body)).status == 401
    stats = Worker(queue, tracker, wait=0.3).run(until_empty=True)
    assert stats.envelopes == 2 and stats.new == 1 and stats.duplicates == 1
    assert tracker.count_events() == 1
    assert tracker.state(ANN).status == "delivered"


def test_a_replay_that_reached_the_queue_is_not_stored_by_the_worker(
    make_queue: MakeQueue, tracker: Tracker
) -> None:
    """Two receivers with replay stores of their own each let one of two requests under one
    token through; the store, where the worker spends the token with the events, keeps the
    first and refuses the other."""
    kit = webhook_kits.mailgun()
    queue = make_queue("redis")
    body, headers = kit.request(ANN, "ann@example.com", "delivered")
    first = WebhookReceiver({"mailgun": kit.adapter}, queue=queue)
    assert first.handle("mailgun", headers, body).status == 200
    from unimailtrack.adapters.base import InMemoryNonceStore

    kit.adapter.nonce_store = InMemoryNonceStore()  # another process: it has seen nothing
    assert first.handle("mailgun", headers, _mailgun_retoken(body)).status == 200
    stats = Worker(queue, tracker, wait=0.3).run(until_empty=True)
    assert stats.replays == 1 and stats.new == 1
    [event] = tracker.timeline(ANN)
    assert event.recipient == "ann@example.com"


def test_the_async_path_enqueues_alike(make_queue: MakeQueue, tracker: Tracker) -> None:
    kit = webhook_kits.mailgun()
    queue = make_queue("outbox")
    receiver = WebhookReceiver({"mailgun": kit.adapter}, tracker, queue=queue)
    body, headers = kit.request(ANN, "ann@example.com", "bounced")

    async def post(data: bytes) -> int:
        return (await receiver.ahandle("mailgun", headers, data)).status

    assert asyncio.run(post(body)) == 200
    assert asyncio.run(post(_mailgun_retoken(body))) == 401
    drain(queue, tracker)
    assert tracker.state(ANN).status == "bounced"


def test_create_app_enqueues_through_http(make_queue: MakeQueue, tracker: Tracker) -> None:
    import httpx

    from unimailtrack.web import create_app

    kit = webhook_kits.sendgrid()
    queue = make_queue("redis")
    app = create_app(WebhookReceiver({"sendgrid": kit.adapter}, tracker), api=False, queue=queue)
    body, headers = kit.request(ANN, "ann@example.com", "delivered")

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post("/webhooks/sendgrid", content=body, headers=headers)

    answer = asyncio.run(post())
    assert answer.status_code == 200 and answer.json()["queued"] is True
    drain(queue, tracker)
    assert tracker.count_events() == 1
