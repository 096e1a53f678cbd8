"""For each provider: a configured adapter and signed webhook requests it accepts for real.

Every kit makes its own keys, so a request from one kit is a forgery to another kit's adapter.

``Kit.request(tracking_id, recipient, outcome)`` writes the provider's own event for a
``delivered`` or a hard ``bounced`` copy, signed the way that provider signs (ECDSA for
SendGrid, HMAC for Mailgun and the memory provider, RSA through SNS for SES).
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from unimailtrack.adapters import MailgunAdapter, MemoryAdapter, SendGridAdapter, SESAdapter
from unimailtrack.adapters.base import Adapter
from unimailtrack.adapters.mailgun import MailgunWebhookSigner
from unimailtrack.adapters.sendgrid import SendGridWebhookSigner
from unimailtrack.adapters.ses.signing import SnsSigner

TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-events"

Request = tuple[bytes, dict[str, str]]


@dataclass(frozen=True, slots=True)
class Kit:
    provider: str
    adapter: Adapter
    request: Callable[[str, str, str], Request]
    """``(tracking_id, recipient, "delivered" | "bounced") -> (body, headers)``"""
    batch: Callable[[list[tuple[str, str, str]]], Request] | None = None
    """Several events in one request, for providers that batch."""
    sign: Callable[[bytes], dict[str, str]] | None = None
    """Headers that sign any body, for providers whose signature covers the whole body."""


def _sendgrid_event(tracking_id: str, recipient: str, outcome: str) -> dict[str, Any]:
    event: dict[str, Any] = {
        "email": recipient,
        "timestamp": int(time.time()),
        "sg_event_id": uuid.uuid4().hex,
        "sg_message_id": f"{tracking_id[:12]}.filter0001.1.0",
        "unimailtrack_id": tracking_id,
    }
    if outcome == "delivered":
        return {**event, "event": "delivered", "response": "250 2.0.0 OK"}
    return {
        **event,
        "event": "bounce",
        "type": "bounce",
        "status": "5.1.1",
        "reason": "550 5.1.1 The email account that you tried to reach does not exist",
    }


def sendgrid() -> Kit:
    signer = SendGridWebhookSigner()

    def sign(body: bytes) -> dict[str, str]:
        return {"Content-Type": "application/json", **signer.sign(body)}

    def batch(items: list[tuple[str, str, str]]) -> Request:
        body = json.dumps([_sendgrid_event(*item) for item in items]).encode() + b"\r\n"
        return body, sign(body)

    return Kit(
        "sendgrid",
        SendGridAdapter(webhook_keys=signer.public_key),
        lambda tid, rcpt, outcome: batch([(tid, rcpt, outcome)]),
        batch,
        sign,
    )


def mailgun(key: str | None = None) -> Kit:
    key = key or secrets.token_hex(16)
    signer = MailgunWebhookSigner(key)

    def request(tracking_id: str, recipient: str, outcome: str) -> Request:
        data: dict[str, Any] = {
            "id": uuid.uuid4().hex[:22],
            "timestamp": time.time(),
            "recipient": recipient,
            "message": {"headers": {"message-id": f"{tracking_id[:12]}@mg.example.com"}},
            "user-variables": {"unimailtrack_id": tracking_id},
        }
        if outcome == "delivered":
            data |= {"event": "delivered", "delivery-status": {"code": 250, "message": "OK"}}
        else:
            data |= {
                "event": "failed",
                "severity": "permanent",
                "reason": "bounce",
                "delivery-status": {"code": 550, "message": "5.1.1 The user does not exist"},
            }
        return signer.json_body(data), {"Content-Type": "application/json"}

    return Kit("mailgun", MailgunAdapter(webhook_keys=key), request)


def ses() -> Kit:
    signer = SnsSigner(key_size=1024)

    def request(tracking_id: str, recipient: str, outcome: str) -> Request:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        event: dict[str, Any] = {
            "mail": {
                "messageId": f"0102018d-{tracking_id[:12]}",
                "timestamp": now,
                "destination": [recipient],
                "tags": {"unimailtrack_id": [tracking_id]},
            }
        }
        if outcome == "delivered":
            event |= {
                "eventType": "Delivery",
                "delivery": {
                    "timestamp": now,
                    "recipients": [recipient],
                    "smtpResponse": "250 2.0.0 OK",
                },
            }
        else:
            event |= {
                "eventType": "Bounce",
                "bounce": {
                    "bounceType": "Permanent",
                    "bounceSubType": "General",
                    "timestamp": now,
                    "bouncedRecipients": [
                        {
                            "emailAddress": recipient,
                            "status": "5.1.1",
                            "action": "failed",
                            "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                        }
                    ],
                },
            }
        return signer.notification(event, topic_arn=TOPIC)

    adapter = SESAdapter(
        region="eu-west-1", allowed_topic_arns=[TOPIC], certificate_loader=signer.load_certificate
    )
    return Kit("ses", adapter, request)


def memory() -> Kit:
    adapter = MemoryAdapter()

    def event(tracking_id: str, recipient: str, outcome: str) -> dict[str, Any]:
        raw: dict[str, Any] = {
            "event": outcome,
            "id": uuid.uuid4().hex,
            "recipient": recipient,
            "tracking_id": tracking_id,
            "message_id": f"mem-{tracking_id[:8]}",
            "timestamp": time.time(),
        }
        if outcome == "bounced":
            raw |= {"bounce": "hard", "reason": "550 5.1.1 user unknown", "smtp_status": "5.1.1"}
        return raw

    def batch(items: list[tuple[str, str, str]]) -> Request:
        return adapter.webhook([event(*item) for item in items])

    return Kit("memory", adapter, lambda tid, rcpt, outcome: batch([(tid, rcpt, outcome)]), batch)


ALL: dict[str, Callable[[], Kit]] = {
    "sendgrid": sendgrid,
    "mailgun": mailgun,
    "ses": ses,
    "memory": memory,
}
