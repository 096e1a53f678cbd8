"""Every built-in adapter passes the adapter contract of ``unimailtrack.testing``."""

from __future__ import annotations

import functools
import json
import secrets
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx

from unimailtrack.adapters import (
    BrevoAdapter,
    MailgunAdapter,
    MemoryAdapter,
    PostmarkAdapter,
    ResendAdapter,
    SendGridAdapter,
    SESAdapter,
)
from unimailtrack.adapters.base import Adapter
from unimailtrack.adapters.brevo import BrevoWebhookSigner
from unimailtrack.adapters.mailgun import MailgunWebhookSigner
from unimailtrack.adapters.postmark import PostmarkWebhookSigner
from unimailtrack.adapters.resend import ResendWebhookSigner
from unimailtrack.adapters.sendgrid import SendGridWebhookSigner
from unimailtrack.adapters.ses.signing import SnsSigner
from unimailtrack.testing import AdapterContract, Keyed

Request = tuple[bytes, dict[str, str]]
JSON = {"Content-Type": "application/json"}


class TestSendGrid(AdapterContract):
    adapter_class = SendGridAdapter
    dsn = f"sendgrid://SG.contract-key@default?webhook_key={SendGridWebhookSigner().public_key}"

    def keyed(self, **options: Any) -> Keyed:
        signer = SendGridWebhookSigner()
        return Keyed(
            SendGridAdapter("SG.contract-key", webhook_keys=signer.public_key, **options), signer
        )

    def _post(self, keyed: Keyed, event: dict[str, Any]) -> Request:
        body = json.dumps([event]).encode() + b"\r\n"
        return body, {**JSON, **keyed.signer.sign(body)}

    def webhook(self, keyed: Keyed, tracking_id: str, recipient: str) -> Request:
        return self._post(
            keyed,
            {
                "email": recipient,
                "event": "delivered",
                "timestamp": int(time.time()),
                "sg_event_id": uuid.uuid4().hex,
                "sg_message_id": "msg.filter0001",
                "unimailtrack_id": tracking_id,
            },
        )

    def unknown_webhook(self, keyed: Keyed) -> Request:
        return self._post(keyed, {"event": "brand_new", "timestamp": int(time.time())})

    def send_response(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(202, headers={"X-Message-Id": "sg-contract"})


class TestMailgun(AdapterContract):
    adapter_class = MailgunAdapter
    dsn = "mailgun://key-contract:mg.example.com@default?webhook_key=contract-signing-key"
    signs_body = False  # Mailgun signs its timestamp and token, not the event beside them

    def keyed(self, **options: Any) -> Keyed:
        key = secrets.token_hex(16)
        adapter = MailgunAdapter("key-contract", "mg.example.com", webhook_keys=key, **options)
        return Keyed(adapter, MailgunWebhookSigner(key))

    def _post(self, keyed: Keyed, data: dict[str, Any]) -> Request:
        return keyed.signer.json_body(data), dict(JSON)

    def webhook(self, keyed: Keyed, tracking_id: str, recipient: str) -> Request:
        return self._post(
            keyed,
            {
                "id": uuid.uuid4().hex[:22],
                "event": "delivered",
                "timestamp": time.time(),
                "recipient": recipient,
                "message": {"headers": {"message-id": "contract@mg.example.com"}},
                "user-variables": {"unimailtrack_id": tracking_id},
                "delivery-status": {"code": 250, "message": "OK"},
            },
        )

    def unknown_webhook(self, keyed: Keyed) -> Request:
        return self._post(
            keyed,
            {"id": "x1", "event": "brand-new", "timestamp": time.time(), "recipient": "a@b.c"},
        )

    def send_response(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"id": "<contract@mg.example.com>", "message": "Queued"})


TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-events"


@functools.cache
def _session() -> Any:
    import boto3

    return boto3.Session(aws_access_key_id="AKIDCONTRACT", aws_secret_access_key="contract/secret")


@functools.cache
def _sns_signer(slot: int) -> SnsSigner:
    del slot  # one signer per slot, made once: RSA keys are slow to generate
    return SnsSigner(key_size=1024)


class TestSES(AdapterContract):
    adapter_class = SESAdapter
    dsn = "ses://AKIDCONTRACT:contract-secret@default?region=eu-west-1"
    needs_credentials_to_send = False  # the AWS credential chain
    _slots = iter(range(1_000_000))

    def keyed(self, **options: Any) -> Keyed:
        signer = _sns_signer(next(self._slots) % 2)
        adapter = SESAdapter(
            region="eu-west-1",
            allowed_topic_arns=[TOPIC],
            certificate_loader=signer.load_certificate,
            boto3_session=_session(),
            **options,
        )
        return Keyed(adapter, signer)

    def unkeyed(self) -> Adapter:
        stranger = _sns_signer(2)
        return SESAdapter(
            region="eu-west-1",
            allowed_topic_arns=[TOPIC],
            certificate_loader=stranger.load_certificate,
            boto3_session=_session(),
        )

    def _post(self, keyed: Keyed, event: dict[str, Any]) -> Request:
        body, headers = keyed.signer.notification(event, topic_arn=TOPIC)
        return body, dict(headers)

    def _mail(self, tracking_id: str, recipient: str) -> dict[str, Any]:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        return {
            "messageId": f"0102018d-{tracking_id[:12]}",
            "timestamp": now,
            "destination": [recipient],
            "tags": {"unimailtrack_id": [tracking_id]},
        }

    def webhook(self, keyed: Keyed, tracking_id: str, recipient: str) -> Request:
        mail = self._mail(tracking_id, recipient)
        delivery = {"timestamp": mail["timestamp"], "recipients": [recipient]}
        return self._post(keyed, {"eventType": "Delivery", "mail": mail, "delivery": delivery})

    def unknown_webhook(self, keyed: Keyed) -> Request:
        mail = self._mail(uuid.uuid4().hex, "ann@example.com")
        return self._post(keyed, {"eventType": "BrandNew", "mail": mail})

    def send_response(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"MessageId": f"0100018d-{uuid.uuid4().hex[:8]}"})


class TestMemory(AdapterContract):
    adapter_class = MemoryAdapter
    dsn = "memory://?webhook_secret=contract-secret"
    needs_credentials_to_send = False

    def keyed(self, **options: Any) -> Keyed:
        return Keyed(MemoryAdapter(webhook_secret=secrets.token_hex(16), **options))

    def transport_options(self, handler: Any) -> dict[str, Any]:
        return {}  # the memory adapter is its own provider

    def test_parse_raises_only_payload_error_on_garbage(self) -> None:
        super().test_parse_raises_only_payload_error_on_garbage()

    def _event(self, tracking_id: str, recipient: str, event: str) -> dict[str, Any]:
        return {
            "event": event,
            "id": uuid.uuid4().hex,
            "recipient": recipient,
            "tracking_id": tracking_id,
            "message_id": f"mem-{tracking_id[:8]}",
            "timestamp": time.time(),
        }

    def webhook(self, keyed: Keyed, tracking_id: str, recipient: str) -> Request:
        memory = keyed.adapter
        assert isinstance(memory, MemoryAdapter)
        return memory.webhook([self._event(tracking_id, recipient, "delivered")])

    def unknown_webhook(self, keyed: Keyed) -> Request:
        memory = keyed.adapter
        assert isinstance(memory, MemoryAdapter)
        return memory.webhook([self._event("t", "ann@example.com", "brand_new")])

    def send_response(self, request: httpx.Request) -> httpx.Response:
        raise AssertionError("the memory adapter answers its own requests")


class TestResend(AdapterContract):
    adapter_class = ResendAdapter
    dsn = f"resend://re_contract@default?webhook_secret={ResendWebhookSigner().secret}"

    def keyed(self, **options: Any) -> Keyed:
        signer = ResendWebhookSigner()
        return Keyed(
            ResendAdapter("re_contract", webhook_secrets=[signer.secret], **options), signer
        )

    def _post(self, keyed: Keyed, event: dict[str, Any]) -> Request:
        body = json.dumps(event).encode()
        return body, {**JSON, **keyed.signer.sign(body)}

    def webhook(self, keyed: Keyed, tracking_id: str, recipient: str) -> Request:
        now = datetime.now(UTC).isoformat()
        data = {
            "email_id": str(uuid.uuid4()),
            "created_at": now,
            "from": "sender@example.com",
            "to": [recipient],
            "subject": "Hello",
            "tags": {"unimailtrack_id": tracking_id},
        }
        return self._post(keyed, {"type": "email.delivered", "created_at": now, "data": data})

    def unknown_webhook(self, keyed: Keyed) -> Request:
        now = datetime.now(UTC).isoformat()
        return self._post(
            keyed, {"type": "email.teleported", "created_at": now, "data": {"to": ["a@b.c"]}}
        )

    def send_response(self, request: httpx.Request) -> httpx.Response:
        sent = json.loads(request.content)
        if isinstance(sent, list):
            return httpx.Response(200, json={"data": [{"id": str(uuid.uuid4())} for _ in sent]})
        return httpx.Response(200, json={"id": str(uuid.uuid4())})


class TestPostmark(AdapterContract):
    adapter_class = PostmarkAdapter
    dsn = "postmark://pm-contract-token@default?webhook_secret=hook:contract-password"
    signs_body = False
    dated = False

    def keyed(self, **options: Any) -> Keyed:
        signer = PostmarkWebhookSigner()
        adapter = PostmarkAdapter("pm-contract-token", webhook_secrets=[signer.secret], **options)
        return Keyed(adapter, signer)

    def _post(self, keyed: Keyed, event: dict[str, Any]) -> Request:
        body = json.dumps(event).encode()
        return body, {**JSON, **keyed.signer.sign(body)}

    def webhook(self, keyed: Keyed, tracking_id: str, recipient: str) -> Request:
        return self._post(
            keyed,
            {
                "RecordType": "Delivery",
                "ServerID": 23,
                "MessageStream": "outbound",
                "MessageID": str(uuid.uuid4()),
                "Recipient": recipient,
                "Tag": "contract",
                "DeliveredAt": datetime.now(UTC).isoformat(),
                "Details": "Test delivery webhook details",
                "Metadata": {"unimailtrack_id": tracking_id},
            },
        )

    def unknown_webhook(self, keyed: Keyed) -> Request:
        return self._post(
            keyed,
            {
                "RecordType": "Teleport",
                "Recipient": "ann@example.com",
                "ReceivedAt": datetime.now(UTC).isoformat(),
            },
        )

    def send_response(self, request: httpx.Request) -> httpx.Response:
        sent = json.loads(request.content)

        def ok(message: dict[str, Any]) -> dict[str, Any]:
            return {
                "To": message["To"],
                "ErrorCode": 0,
                "Message": "OK",
                "MessageID": str(uuid.uuid4()),
            }

        if isinstance(sent, list):
            return httpx.Response(200, json=[ok(m) for m in sent])
        return httpx.Response(200, json=ok(sent))


class TestBrevo(AdapterContract):
    adapter_class = BrevoAdapter
    dsn = "brevo://xkeysib-contract@default?webhook_secret=contract-token"
    signs_body = False
    dated = False

    def keyed(self, **options: Any) -> Keyed:
        signer = BrevoWebhookSigner()
        adapter = BrevoAdapter("xkeysib-contract", webhook_secrets=[signer.secret], **options)
        return Keyed(adapter, signer)

    def _post(self, keyed: Keyed, event: dict[str, Any]) -> Request:
        body = json.dumps(event).encode()
        return body, {**JSON, **keyed.signer.sign(body)}

    def webhook(self, keyed: Keyed, tracking_id: str, recipient: str) -> Request:
        now = time.time()
        return self._post(
            keyed,
            {
                "event": "delivered",
                "email": recipient,
                "id": 1,
                "message-id": f"<{uuid.uuid4()}@smtp-relay.mailin.fr>",
                "ts_event": int(now),
                "ts_epoch": int(now * 1000),
                "X-Mailin-custom": json.dumps({"unimailtrack_id": tracking_id}),
                "tags": ["contract"],
            },
        )

    def unknown_webhook(self, keyed: Keyed) -> Request:
        return self._post(
            keyed, {"event": "teleported", "email": "ann@example.com", "ts_event": int(time.time())}
        )

    def send_response(self, request: httpx.Request) -> httpx.Response:
        sent = json.loads(request.content)
        versions = sent.get("messageVersions")
        if versions:
            ids = [f"<{uuid.uuid4()}@smtp-relay.mailin.fr>" for _ in versions]
            return httpx.Response(201, json={"messageIds": ids})
        return httpx.Response(201, json={"messageId": f"<{uuid.uuid4()}@smtp-relay.mailin.fr>"})
