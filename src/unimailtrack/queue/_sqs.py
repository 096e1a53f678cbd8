"""Amazon SQS through boto3 (the ``ses`` extra's dependency): visibility timeouts and redelivery.

A received message stays invisible for ``visibility`` seconds; it is deleted once the store
has committed its events. One a worker gives back has its visibility set to the retry delay;
one whose worker died reappears when its visibility runs out. SQS counts deliveries
(``ApproximateReceiveCount``). A message is at most 256 KiB: envelopes travel compressed, and
one still larger is refused at enqueue time (503: the provider sends it again later, and the
log says why) rather than cut.

URL: ``sqs://queue-name?region=eu-west-1`` or the queue's URL
(``https://sqs.eu-west-1.amazonaws.com/123456789012/queue-name``); ``endpoint_url`` points the
client elsewhere (a local stand-in), ``visibility`` and ``wait`` (long polling, at most 20 s)
are seconds. Credentials come from the AWS chain.

``sqs+ses://...`` reads a queue subscribed to the SNS topic Amazon SES publishes to: each
message is an SNS envelope, turned into an untrusted :class:`Envelope` for provider ``ses``
that the worker verifies exactly as the HTTP endpoint would, dated by when SQS received it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from unimailtrack.errors import ConfigurationError, MissingDependency, QueueError
from unimailtrack.queue._base import Delivery, Queue, positive_seconds, queue_options
from unimailtrack.queue._envelope import Envelope

__all__ = ["MAX_SQS_MESSAGE", "SQSQueue", "sns_envelope"]

MAX_SQS_MESSAGE = 256 * 1024
_BATCH = 10
"""SQS hands out and deletes at most ten messages a call."""


def _import_boto3() -> Any:
    try:
        import boto3
    except ImportError:
        raise MissingDependency("boto3", "ses", purpose="An Amazon SQS webhook queue") from None
    return boto3


def sns_envelope(body: bytes, sent_at: datetime) -> Envelope:
    """An SQS message holding an SNS envelope, as the HTTP endpoint would have received it:
    the headers SNS sends are rebuilt from the envelope's own fields (the signature covers
    them), so verification checks exactly what it checks over HTTP."""
    headers = {"content-type": "text/plain; charset=UTF-8"}
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        document = None
    if isinstance(document, dict):
        for header, name in (
            ("x-amz-sns-message-type", "Type"),
            ("x-amz-sns-message-id", "MessageId"),
            ("x-amz-sns-topic-arn", "TopicArn"),
        ):
            value = document.get(name)
            if isinstance(value, str):
                headers[header] = value
    return Envelope(
        "ses",
        body,
        headers,
        sent_at,
        verified=False,
        id=headers.get("x-amz-sns-message-id") or "(no MessageId)",
        trusted=False,
    )


class SQSQueue(Queue):
    """A webhook queue on Amazon SQS (see the module docstring for the URL)."""

    def __init__(self, url: str, *, client: Any = None) -> None:
        self.url = url
        parts = urlsplit(url)
        options = queue_options(url)
        self.ses = parts.scheme.lower() == "sqs+ses"
        self.visibility = positive_seconds(options, "visibility", self.visibility)
        self.wait = min(20.0, positive_seconds(options, "wait", 20.0))
        region = options.get("region")
        if parts.scheme.lower() == "https":
            self._queue_url: str | None = urlunsplit(parts._replace(query="", fragment=""))
            self._name = parts.path.rsplit("/", 1)[-1]
            region = region or parts.netloc.split(".")[1]
        else:
            self._name = unquote(parts.netloc + parts.path).strip("/")
            if not self._name or "/" in self._name:
                raise ConfigurationError(f"{url!r} names no SQS queue: sqs://queue-name?region=...")
            self._queue_url = None
        if client is None:
            boto3 = _import_boto3()
            kwargs: dict[str, Any] = {}
            if region:
                kwargs["region_name"] = region
            if options.get("endpoint_url"):
                kwargs["endpoint_url"] = options["endpoint_url"]
            client = boto3.client("sqs", **kwargs)
        self._client = client
        from botocore.exceptions import BotoCoreError, ClientError

        self._errors: tuple[type[BaseException], ...] = (BotoCoreError, ClientError)

    def _fail(self, doing: str, exc: BaseException) -> QueueError:
        return QueueError(f"SQS queue {self._name!r}: {doing} failed: {exc}")

    @property
    def queue_url(self) -> str:
        if self._queue_url is None:
            try:
                self._queue_url = str(self._client.get_queue_url(QueueName=self._name)["QueueUrl"])
            except self._errors as exc:
                raise self._fail("finding the queue", exc) from exc
        return self._queue_url

    def put(self, envelope: Envelope) -> None:
        if self.ses:
            raise QueueError("an sqs+ses:// queue is written by Amazon SNS, not by a receiver")
        data = envelope.encode()
        if len(data) > MAX_SQS_MESSAGE:
            raise QueueError(
                f"SQS queue {self._name!r}: {envelope.describe()} is {len(data)} bytes encoded, "
                f"over SQS's {MAX_SQS_MESSAGE}; lower the provider's batch size"
            )
        try:
            self._client.send_message(QueueUrl=self.queue_url, MessageBody=data.decode("ascii"))
        except self._errors as exc:
            raise self._fail("SendMessage", exc) from exc

    def receive(self, limit: int, wait: float) -> list[Delivery]:
        deliveries: list[Delivery] = []
        poll = max(0, min(int(self.wait), int(wait)))
        try:
            while len(deliveries) < limit:
                answer = self._client.receive_message(
                    QueueUrl=self.queue_url,
                    MaxNumberOfMessages=min(_BATCH, limit - len(deliveries)),
                    WaitTimeSeconds=poll if not deliveries else 0,
                    VisibilityTimeout=math.ceil(self.visibility),
                    MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
                )
                messages = answer.get("Messages", [])
                if not messages:
                    break
                deliveries.extend(self._delivery(m) for m in messages)
        except self._errors as exc:
            if deliveries:  # hand out what arrived; the rest waits for the next call
                return deliveries
            raise self._fail("ReceiveMessage", exc) from exc
        return deliveries

    def _delivery(self, message: dict[str, Any]) -> Delivery:
        attributes = message.get("Attributes", {})
        attempts = int(attributes.get("ApproximateReceiveCount", 1))
        body = str(message.get("Body", "")).encode()
        handle = message["ReceiptHandle"]
        if not self.ses:
            return Delivery.read(body, attempts, handle)
        sent = int(attributes.get("SentTimestamp", 0)) / 1000 or datetime.now(UTC).timestamp()
        return Delivery(
            sns_envelope(body, datetime.fromtimestamp(sent, UTC)), body, attempts, handle
        )

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        for start in range(0, len(deliveries), _BATCH):
            chunk = deliveries[start : start + _BATCH]
            entries = [{"Id": str(i), "ReceiptHandle": d.handle} for i, d in enumerate(chunk)]
            try:
                answer = self._client.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
            except self._errors as exc:
                raise self._fail("DeleteMessageBatch", exc) from exc
            failed = answer.get("Failed", [])
            if failed:
                raise QueueError(
                    f"SQS queue {self._name!r}: {len(failed)} deletions failed: {failed}"
                )

    def release(self, delivery: Delivery, delay: float) -> None:
        try:
            self._client.change_message_visibility(
                QueueUrl=self.queue_url,
                ReceiptHandle=delivery.handle,
                VisibilityTimeout=max(0, min(43_200, int(delay))),
            )
        except self._errors as exc:
            raise self._fail("ChangeMessageVisibility", exc) from exc

    def extend(self, deliveries: Sequence[Delivery]) -> None:
        for start in range(0, len(deliveries), _BATCH):
            chunk = deliveries[start : start + _BATCH]
            entries = [
                {
                    "Id": str(i),
                    "ReceiptHandle": d.handle,
                    "VisibilityTimeout": math.ceil(self.visibility),
                }
                for i, d in enumerate(chunk)
            ]
            try:
                self._client.change_message_visibility_batch(
                    QueueUrl=self.queue_url, Entries=entries
                )
            except self._errors as exc:
                raise self._fail("ChangeMessageVisibilityBatch", exc) from exc

    def pending(self) -> int:
        try:
            attributes = self._client.get_queue_attributes(
                QueueUrl=self.queue_url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )["Attributes"]
        except QueueError:
            return -1
        except self._errors:
            return -1
        return int(attributes["ApproximateNumberOfMessages"]) + int(
            attributes["ApproximateNumberOfMessagesNotVisible"]
        )
