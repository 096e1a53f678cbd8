"""Mailgun webhooks attacked: re-cut signed strings and hostile multipart bodies.

Mailgun signs ``timestamp + token`` and nothing else. A captured request can be cut again
(the token's first characters moved onto the timestamp: the same HMAC, a "new" token) and
sent with any event data; the adapter must refuse every re-cut, in JSON, form and multipart
bodies alike. Before the signature holds only the three signing fields of a form may be
decoded, by a scanner whose work is bounded by the body's size and by fixed limits.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import pytest

from unimailtrack import EventType, PayloadError, SignatureError
from unimailtrack.adapters import MailgunAdapter
from unimailtrack.adapters.mailgun import (
    MAX_BOUNDARY,
    MAX_FORM_FIELDS,
    MAX_PART_HEADER,
    decode_body,
)
from unimailtrack.tracking import Tracker
from unimailtrack.webhooks import WebhookReceiver

KEY = "3c9a6e1f0b7d4a2e8c5f1d0a9b6e3c7f"
STAMP = "1770920772"
TOKEN = "e0b5477167110d68991efc6b9f89f0a11066af27834600e123"  # Mailgun's documented example
DIGIT_TOKEN = "12" + TOKEN[2:]


def sign(timestamp: str, token: str) -> str:
    return hmac.new(KEY.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()


def at(stamp: str | float) -> datetime:
    return datetime.fromtimestamp(float(stamp), UTC)


def adapter() -> MailgunAdapter:
    return MailgunAdapter(webhook_keys=KEY)


def delivered(recipient: str = "ann@example.com") -> dict[str, Any]:
    return {
        "event": "delivered",
        "id": "G9Bn5sl1TC6nu79C8C0bwg",
        "timestamp": float(STAMP),
        "recipient": recipient,
        "message": {"headers": {"message-id": "1@mg.example.com"}},
    }


def bounce(recipient: str = "ann@example.com") -> dict[str, Any]:
    return {**delivered(recipient), "event": "failed", "severity": "permanent", "reason": "bounce"}


def json_request(
    data: dict[str, Any], timestamp: str, token: str, signature: str
) -> tuple[bytes, dict[str, str]]:
    block = {"timestamp": timestamp, "token": token, "signature": signature}
    body = json.dumps({"signature": block, "event-data": data}).encode()
    return body, {"Content-Type": "application/json"}


def form_request(
    fields: dict[str, str], timestamp: str, token: str, signature: str
) -> tuple[bytes, dict[str, str]]:
    block = {"timestamp": timestamp, "token": token, "signature": signature}
    body = urlencode({**fields, **block}).encode()
    return body, {"Content-Type": "application/x-www-form-urlencoded"}


def multipart_bytes(fields: list[tuple[str, str]], boundary: str = "b0und4ry") -> bytes:
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields
    ]
    return ("".join(parts) + f"--{boundary}--\r\n").encode()


def multipart_request(
    fields: dict[str, str], timestamp: str, token: str, signature: str
) -> tuple[bytes, dict[str, str]]:
    pairs = [*fields.items(), ("timestamp", timestamp), ("token", token), ("signature", signature)]
    body = multipart_bytes(pairs)
    return body, {"Content-Type": "multipart/form-data; boundary=b0und4ry"}


LEGACY_DELIVERED = {"event": "delivered", "recipient": "ann@example.com", "Message-Id": "<1@x>"}
LEGACY_BOUNCE = {**LEGACY_DELIVERED, "event": "bounced", "code": "550", "error": "5.1.1 gone"}

BUILDERS = {
    "json": (json_request, delivered(), bounce()),
    "form": (form_request, LEGACY_DELIVERED, LEGACY_BOUNCE),
    "multipart": (multipart_request, LEGACY_DELIVERED, LEGACY_BOUNCE),
}


def recuts(timestamp: str, token: str) -> dict[str, tuple[str, str]]:
    """Every other way to cut the signed string ``timestamp + token`` near its seam."""
    signed = timestamp + token
    seam = len(timestamp)
    return {
        f"cut at {seam + shift:+d}": (signed[: seam + shift], signed[seam + shift :])
        for shift in (-3, -1, 1, 2, 3)
    }


# --------------------------------------------------------------------------- re-cut


@pytest.mark.parametrize("shape", sorted(BUILDERS))
@pytest.mark.parametrize("token", [TOKEN, DIGIT_TOKEN], ids=["e0-token", "digit-token"])
def test_a_recut_signed_string_is_refused(
    shape: str, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    build, genuine_fields, forged_fields = BUILDERS[shape]
    mailgun = adapter()
    signature = sign(STAMP, token)
    body, headers = build(genuine_fields, STAMP, token, signature)
    mailgun.unwrap(body, headers, now=at(STAMP))
    for name, (timestamp, cut_token) in recuts(STAMP, token).items():
        forged, forged_headers = build(forged_fields, timestamp, cut_token, signature)
        caplog.clear()
        with (
            caplog.at_level(logging.WARNING, logger="unimailtrack.webhooks"),
            pytest.raises(SignatureError),
        ):
            mailgun.unwrap(forged, forged_headers, now=at(STAMP))
        # Refused for its shape, whatever the clock says: not left to the freshness check.
        assert "whole number" in caplog.text or "50 letters" in caplog.text, name


def test_the_e0_recut_would_have_the_same_signature_and_time() -> None:
    """The attack the shape check stops: ``e0`` on the timestamp reads as the same time."""
    assert float(STAMP + "e0") == float(STAMP)
    assert sign(STAMP + "e0", TOKEN[2:]) == sign(STAMP, TOKEN)


@pytest.mark.parametrize("shape", sorted(BUILDERS))
def test_a_recut_body_is_refused_by_the_receiver_and_stores_nothing(shape: str) -> None:
    build, genuine_fields, forged_fields = BUILDERS[shape]
    signature = sign(STAMP, TOKEN)
    with Tracker.open("sqlite:///:memory:") as tracker:
        receiver = WebhookReceiver({"mailgun": adapter()}, tracker)
        body, headers = build(genuine_fields, STAMP, TOKEN, signature)
        assert receiver.handle("mailgun", headers, body, now=at(STAMP)).status == 200
        forged, forged_headers = build(forged_fields, STAMP + "e0", TOKEN[2:], signature)
        answer = receiver.handle("mailgun", forged_headers, forged, now=at(STAMP))
        assert answer.status == 401
        same_cut_other_body = build(forged_fields, STAMP, TOKEN, signature)
        answer = receiver.handle(
            "mailgun", same_cut_other_body[1], same_cut_other_body[0], now=at(STAMP)
        )
        assert answer.status == 401
        assert tracker.count_events() == 1
        assert tracker.suppression("ann@example.com") is None


@pytest.mark.parametrize(
    "timestamp",
    ["1770920772.0", " 1770920772", "1770920772 ", "+1770920772", "１７７０９２０７７２", "0x69"],
)
def test_only_an_all_digits_timestamp_is_accepted(timestamp: str) -> None:
    body, headers = json_request(delivered(), timestamp, TOKEN, sign(timestamp, TOKEN))
    with pytest.raises(SignatureError):
        adapter().unwrap(body, headers, now=at(STAMP))


@pytest.mark.parametrize(
    "token",
    [TOKEN[:-1], TOKEN + "a", TOKEN[:-1] + "-", TOKEN[:-1] + "é", TOKEN[:-1] + " "],
    ids=["49", "51", "dash", "accent", "space"],
)
def test_only_a_token_of_mailguns_shape_is_accepted(token: str) -> None:
    body, headers = json_request(delivered(), STAMP, token, sign(STAMP, token))
    with pytest.raises(SignatureError):
        adapter().unwrap(body, headers, now=at(STAMP))


def test_real_tokens_in_upper_case_or_mixed_alphanumerics_are_not_refused() -> None:
    for token in (TOKEN.upper(), "Ab9" * 16 + "Zz"):
        body, headers = json_request(delivered(), STAMP, token, sign(STAMP, token))
        (event,) = adapter().unwrap(body, headers, now=at(STAMP))
        assert event.type is EventType.DELIVERED


def test_an_integer_json_timestamp_is_read_as_its_digits() -> None:
    block = {"timestamp": int(STAMP), "token": TOKEN, "signature": sign(STAMP, TOKEN)}
    body = json.dumps({"signature": block, "event-data": delivered()}).encode()
    adapter().unwrap(body, {"Content-Type": "application/json"}, now=at(STAMP))
    block["timestamp"] = float(STAMP)
    body = json.dumps({"signature": block, "event-data": delivered()}).encode()
    with pytest.raises(SignatureError):
        adapter().unwrap(body, {"Content-Type": "application/json"}, now=at(STAMP))


# --------------------------------------------------------------------------- hostile multipart

BOUNDARYLESS_32K = b"--" + b"a" * 32 * 1024 + b"\r\n"


def hostile_bodies() -> dict[str, tuple[bytes, str]]:
    signing = [("timestamp", STAMP), ("token", TOKEN), ("signature", sign(STAMP, TOKEN))]
    many = multipart_bytes([*signing, *[(f"v{i}", "x") for i in range(MAX_FORM_FIELDS + 1)]])
    long_head = (
        b'--b\r\nContent-Disposition: form-data; name="x"\r\nX-Pad: '
        + b"p" * (MAX_PART_HEADER + 10)
        + b"\r\n\r\nv\r\n--b--\r\n"
    )
    return {
        "32 KB first line, no boundary": (BOUNDARYLESS_32K, "multipart/form-data"),
        "32 KB first line, no content type": (BOUNDARYLESS_32K, ""),
        "32 KB of text, no boundary": (b"a" * 32 * 1024, "multipart/form-data"),
        "32 KB boundary parameter": (
            BOUNDARYLESS_32K,
            'multipart/form-data; boundary="' + "a" * 32 * 1024 + '"',
        ),
        "boundary one over the limit": (
            multipart_bytes(signing, "b" * (MAX_BOUNDARY + 1)),
            "multipart/form-data; boundary=" + "b" * (MAX_BOUNDARY + 1),
        ),
        "boundary with a forbidden character": (
            multipart_bytes(signing, "a<b"),
            'multipart/form-data; boundary="a<b"',
        ),
        "empty boundary": (b"--\r\n\r\n", 'multipart/form-data; boundary=""'),
        "too many parts": (many, "multipart/form-data; boundary=b0und4ry"),
        "part header over the limit": (long_head, "multipart/form-data; boundary=b"),
        "never closed": (
            multipart_bytes(signing)[: -len("--b0und4ry--\r\n")],
            "multipart/form-data; boundary=b0und4ry",
        ),
        "header block never ended": (
            b'--b\r\nContent-Disposition: form-data; name="x"' + b" " * 2048,
            "multipart/form-data; boundary=b",
        ),
        "boundary far into the body": (
            b"x" * 4096 + multipart_bytes(signing),
            "multipart/form-data; boundary=b0und4ry",
        ),
    }


@pytest.mark.parametrize("case", sorted(hostile_bodies()))
def test_a_hostile_multipart_body_is_refused_with_a_typed_error(case: str) -> None:
    body, content_type = hostile_bodies()[case]
    headers = {"Content-Type": content_type} if content_type else {}
    with pytest.raises(PayloadError) as raised:
        decode_body(body, headers)
    assert raised.value.provider == "mailgun"
    with pytest.raises(PayloadError):
        decode_body(body, headers, signing_only=True)
    with pytest.raises(SignatureError):
        adapter().verify_webhook(body, headers, now=at(STAMP))
    with pytest.raises(PayloadError):
        MailgunAdapter.parse_webhook_body(body, headers)


@pytest.mark.parametrize("size", [1024, 32 * 1024, 1024 * 1024])
def test_a_boundaryless_body_is_refused_on_its_first_line_whatever_follows(size: int) -> None:
    """The refusal reads at most the first ``MAX_BOUNDARY + 4`` bytes: the same error for any
    length and any content after them."""
    for tail in (b"a" * size, b"\r\n" * (size // 2), b"\x00" * size):
        body = b"--" + b"a" * (MAX_BOUNDARY + 1) + tail
        with pytest.raises(PayloadError, match="boundary is not 1 to 70"):
            decode_body(body, {"Content-Type": "multipart/form-data"})


def test_the_hostile_bodies_go_to_the_receiver_as_401_without_touching_the_store() -> None:
    with Tracker.open("sqlite:///:memory:") as tracker:
        receiver = WebhookReceiver({"mailgun": adapter()}, tracker)
        for body, content_type in hostile_bodies().values():
            headers = {"Content-Type": content_type} if content_type else {}
            assert receiver.handle("mailgun", headers, body, now=at(STAMP)).status == 401
        assert tracker.dead_letters() == []
        assert tracker.count_events() == 0


def test_nothing_but_the_signing_fields_is_decoded_before_the_signature_holds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A part no decoder knows, after the signing fields, is not looked at while the signature
    is wrong (the refusal names the signature), and is a payload error once it holds."""
    poison = (
        b'--b0und4ry\r\nContent-Disposition: form-data; name="event"\r\n'
        b"Content-Transfer-Encoding: x-unheard-of\r\n\r\n\xff\xfe\r\n"
    )
    for signature in ("0" * 64, sign(STAMP, TOKEN)):
        signing = multipart_bytes(
            [("timestamp", STAMP), ("token", TOKEN), ("signature", signature)]
        )
        body = signing.replace(b"--b0und4ry--\r\n", poison + b"--b0und4ry--\r\n")
        headers = {"Content-Type": "multipart/form-data; boundary=b0und4ry"}
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="unimailtrack.webhooks"):
            if signature == "0" * 64:
                with pytest.raises(SignatureError):
                    adapter().unwrap(body, headers, now=at(STAMP))
                assert "matches no configured signing key" in caplog.text
            else:
                with pytest.raises(PayloadError, match="transfer encoding"):
                    adapter().unwrap(body, headers, now=at(STAMP))


def test_a_genuine_multipart_body_with_encodings_and_files_is_read() -> None:
    signature = sign(STAMP, TOKEN)
    body = (
        b"--b0und4ry\r\n"
        b'Content-Disposition: form-data; name="event"\r\n\r\nbounced\r\n'
        b"--b0und4ry\r\n"
        b'Content-Disposition: form-data; name="recipient"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\nYW5uQGV4YW1wbGUuY29t\r\n"
        b"--b0und4ry\r\n"
        b'Content-Disposition: form-data; name="error"\r\n'
        b"Content-Type: text/plain; charset=iso-8859-1\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n5.1.1 Adresse inconnue =E9\r\n"
        b"--b0und4ry\r\n"
        b'Content-Disposition: form-data; name="attachment-1"; filename="m.eml"\r\n'
        b"Content-Type: message/rfc822\r\n\r\nSubject: hi\r\n\r\n--not-a-boundary\r\n"
        b"--b0und4ry\r\n"
        b'Content-Disposition: form-data; name="timestamp"\r\n\r\n' + STAMP.encode() + b"\r\n"
        b"--b0und4ry\r\n"
        b'Content-Disposition: form-data; name="token"\r\n\r\n' + TOKEN.encode() + b"\r\n"
        b"--b0und4ry\r\n"
        b'Content-Disposition: form-data; name="signature"\r\n\r\n'
        + signature.encode()
        + b"\r\n--b0und4ry--\r\n"
    )
    headers = {"Content-Type": 'multipart/form-data; boundary="b0und4ry"'}
    (event,) = adapter().unwrap(body, headers, now=at(STAMP))
    assert event.type is EventType.BOUNCED
    assert event.recipient == "ann@example.com"
    assert event.reason == "5.1.1 Adresse inconnue é"
    assert "attachment-1" not in event.raw
