"""A durable queue between the webhook receiver and the store, and the worker that drains it.

The receiver verifies a request, then enqueues it as an :class:`Envelope` and answers as soon
as the queue holds it durably (``WebhookReceiver(..., queue=...)``, ``create_app`` through
the receiver, ``unimailtrack serve --queue URL``). :class:`Worker` (``unimailtrack worker``)
reads envelopes in batches, stores their events and acknowledges them after the commit.

Three engines, each behind an optional extra and chosen by URL (:func:`open_queue`): Redis
Streams (``unimailtrack[redis]``), Amazon SQS (``unimailtrack[ses]``, boto3) and a PostgreSQL
outbox table (``unimailtrack[postgres]``). ``sqs+ses://`` reads an SQS queue that Amazon SNS
fills with SES events, verifying every SNS envelope before believing it.
"""

from __future__ import annotations

from unimailtrack.errors import QueueError
from unimailtrack.queue._base import DEFAULT_VISIBILITY, Delivery, Queue, open_queue
from unimailtrack.queue._envelope import Envelope, decode_envelope
from unimailtrack.queue._worker import Worker, WorkerStats, progress_printer

__all__ = [
    "DEFAULT_VISIBILITY",
    "Delivery",
    "Envelope",
    "Queue",
    "QueueError",
    "Worker",
    "WorkerStats",
    "decode_envelope",
    "open_queue",
    "progress_printer",
]
