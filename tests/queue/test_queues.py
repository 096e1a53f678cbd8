"""Every engine against the real thing: durable put, batches, acknowledgement, redelivery of
what a dead consumer held after its visibility timeout, counted attempts, give-back delays."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from unimailtrack.errors import ConfigurationError, QueueError
from unimailtrack.queue import Envelope, Queue, decode_envelope, open_queue

ENGINES = ["redis", "sqs", "outbox"]
MakeQueue = Callable[..., Queue]


def envelope(n: int) -> Envelope:
    return Envelope.of("memory", f'{{"n": {n}}}'.encode(), {"Content-Type": "application/json"})


def drain(queue: Queue, want: int, *, timeout: float = 10.0) -> list:
    got: list = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        got.extend(queue.receive(want - len(got), 1.0))
    return got


def test_envelopes_keep_everything_a_worker_needs_and_no_credentials() -> None:
    from datetime import UTC, datetime

    from unimailtrack.adapters.base import ReplayToken

    token = ReplayToken("mailgun:1700000000abc", "d" * 64, datetime(2030, 1, 1, tzinfo=UTC))
    body = b'{"x": "' + b"a" * 5000 + b'"}'
    original = Envelope.of(
        "mailgun",
        body,
        {"Content-Type": "application/json", "Authorization": "Bearer secret", "Cookie": "s=1"},
        tokens=[token],
    )
    data = original.encode()
    assert b"secret" not in data and b"s=1" not in data
    assert len(data) < len(body)  # compressed
    back = decode_envelope(data)
    assert back.body == body and back.tokens == (token,) and back.provider == "mailgun"
    assert back.headers == {"content-type": "application/json"}
    assert back.received_at == original.received_at and back.id == original.id


@pytest.mark.parametrize(
    "data",
    [b"", b"[]", b'{"v": 2}', b'{"v": 1, "body": "!!", "encoding": "b64"}', b"\xff\xfe"],
)
def test_a_message_that_is_not_an_envelope_is_a_payload_error(data: bytes) -> None:
    from unimailtrack.errors import PayloadError

    with pytest.raises(PayloadError):
        decode_envelope(data)


def test_a_compressed_body_is_bounded_when_inflated() -> None:
    from unimailtrack.errors import PayloadError

    bomb = Envelope.of("memory", b"0" * 2_000_000, {}).encode()
    with pytest.raises(PayloadError, match="larger than"):
        decode_envelope(bomb, max_body=1_000_000)


@pytest.mark.parametrize(
    "url",
    ["kafka://x", "postgresql://h/db", "sqs://", "redis://h/0?visibility=-1", "sqs://a/b"],
)
def test_a_queue_url_that_names_nothing_known_is_refused(url: str) -> None:
    with pytest.raises(ConfigurationError):
        open_queue(url)


@pytest.mark.parametrize("kind", ENGINES)
def test_put_receive_ack(kind: str, make_queue: MakeQueue) -> None:
    queue = make_queue(kind)
    for n in range(25):
        queue.put(envelope(n))
    got = drain(queue, 25)
    assert sorted(decode(d) for d in got) == list(range(25))
    assert all(d.attempts == 1 for d in got)
    queue.ack(got)
    assert queue.receive(10, 0.5) == []


def decode(delivery) -> int:
    import json

    return int(json.loads(delivery.envelope.body)["n"])


@pytest.mark.parametrize("kind", ENGINES)
def test_what_a_dead_consumer_held_comes_back_after_the_visibility_timeout(
    kind: str, make_queue: MakeQueue
) -> None:
    first = make_queue(kind, visibility=2)
    for n in range(3):
        first.put(envelope(n))
    held = drain(first, 3)
    assert len(held) == 3
    # The consumer "dies": nothing acknowledged. Another consumer sees nothing at once...
    second = make_queue(kind, visibility=2, same=True)
    assert second.receive(10, 0.2) == []
    # ...and everything once the visibility timeout has passed, counted as a second delivery.
    time.sleep(2.5)
    again = drain(second, 3)
    assert sorted(decode(d) for d in again) == [0, 1, 2]
    assert all(d.attempts == 2 for d in again)
    second.ack(again)
    time.sleep(2.5)
    assert second.receive(10, 0.3) == []


@pytest.mark.parametrize("kind", ENGINES)
def test_extend_keeps_holding_without_counting_an_attempt(kind: str, make_queue: MakeQueue) -> None:
    queue = make_queue(kind, visibility=3)
    queue.put(envelope(7))
    [held] = drain(queue, 1)
    time.sleep(2)
    queue.extend([held])
    time.sleep(2)  # past the first lease, within the extended one
    other = make_queue(kind, visibility=3, same=True)
    assert other.receive(10, 0.2) == []
    time.sleep(1.5)
    [again] = drain(other, 1)
    assert again.attempts == 2  # one more delivery, not one per extension


@pytest.mark.parametrize("kind", ENGINES)
def test_release_hands_out_again_after_the_delay(kind: str, make_queue: MakeQueue) -> None:
    queue = make_queue(kind, visibility=30)
    queue.put(envelope(1))
    [held] = drain(queue, 1)
    queue.release(held, 1)
    assert queue.receive(1, 0.2) == []
    [again] = drain(queue, 1, timeout=5)
    assert again.attempts == 2 and decode(again) == 1


def test_sqs_refuses_an_envelope_over_its_message_size(make_queue: MakeQueue) -> None:
    import os

    queue = make_queue("sqs")
    noise = os.urandom(300 * 1024)  # does not compress
    with pytest.raises(QueueError, match="over SQS"):
        queue.put(Envelope.of("memory", noise, {}))


def test_a_queue_that_is_down_raises_queue_error() -> None:
    queue = open_queue("redis://127.0.0.1:1/0?stream=nowhere")
    with pytest.raises(QueueError):
        queue.put(envelope(1))
    outbox_down = "postgresql://postgres@127.0.0.1:1/test?outbox=1&connect_timeout=1"
    with pytest.raises(QueueError):
        open_queue(outbox_down)
