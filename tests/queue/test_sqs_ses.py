"""SES -> SNS -> SQS: the worker reads SNS envelopes off an SQS queue (moto's server over real
HTTP) and verifies each exactly as the HTTP endpoint does before storing anything: forged,
tampered, foreign-topic, unsigned (raw delivery) and unreadable messages are refused and
dropped; genuine ones are stored; the queue ends empty."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator

import pytest
from queue_support import sqs_client

import webhook_kits
from unimailtrack.queue import Queue, Worker, open_queue
from unimailtrack.tracking import Tracker

ANN = "0190a1b2c3d4e5f60718293a4b5c6d7e"
BOB = "0190a1b2c3d4e5f60718293a4b5c6d7f"


@pytest.fixture
def ses_queue(moto_endpoint: str) -> Iterator[tuple[Queue, object]]:
    name = f"ses-{secrets.token_hex(6)}"
    client = sqs_client(moto_endpoint)
    url = client.create_queue(QueueName=name)["QueueUrl"]
    queue = open_queue(
        f"sqs+ses://{name}?region=eu-west-1&endpoint_url={moto_endpoint}&wait=1&visibility=2"
    )
    try:
        yield queue, lambda body: client.send_message(QueueUrl=url, MessageBody=body.decode())
    finally:
        queue.close()
        client.delete_queue(QueueUrl=url)


def test_the_sqs_source_stores_genuine_sns_envelopes_and_refuses_forged_ones(
    ses_queue: tuple[Queue, object], tracker: Tracker
) -> None:
    queue, send = ses_queue
    kit = webhook_kits.ses()
    genuine, _ = kit.request(ANN, "ann@example.com", "delivered")
    send(genuine)
    # Signed by another key (a forger's certificate at an SNS-looking URL).
    forged, _ = webhook_kits.ses().request(BOB, "bob@example.com", "bounced")
    send(forged)
    # A genuine envelope whose Message was altered after signing.
    tampered = json.loads(kit.request(BOB, "bob@example.com", "delivered")[0])
    tampered["Message"] = tampered["Message"].replace("Delivery", "Bounce")
    send(json.dumps(tampered).encode())
    # Signed for real, then claimed to be of another version of the signature scheme.
    relabelled = json.loads(kit.request(BOB, "bob@example.com", "bounced")[0])
    relabelled["SignatureVersion"] = "1"
    send(json.dumps(relabelled).encode())
    # Raw message delivery: an SES event with no SNS envelope, hence no signature.
    send(json.dumps(json.loads(tampered["Message"])).encode())
    send(b"not json at all")

    stats = Worker(queue, tracker, adapters={"ses": kit.adapter}, wait=0.5).run(until_empty=True)
    assert stats.refused == 5 and stats.new == 1 and stats.dead_letters == 0
    assert tracker.count_events() == 1
    assert tracker.state(ANN).status == "delivered"
    assert tracker.timeline(BOB) == []
    assert queue.receive(10, 0.5) == []  # refused messages are dropped, not redelivered


def test_without_an_ses_adapter_nothing_is_believed_or_dropped(
    ses_queue: tuple[Queue, object], tracker: Tracker
) -> None:
    queue, send = ses_queue
    genuine, _ = webhook_kits.ses().request(ANN, "ann@example.com", "delivered")
    send(genuine)
    worker = Worker(queue, tracker, wait=0.5)
    [delivery] = queue.receive(1, 1)
    worker.process([delivery])
    assert tracker.count_events() == 0 and worker.stats.refused == 0
