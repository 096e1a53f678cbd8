"""Amazon SNS, attacked: re-cut signed strings, lying headers, look-alike certificate URLs, a
redirecting certificate server, certificates from another region, deep and oversized bodies.

Each attack is tried on the verifier itself and then over real HTTP through the receiver and a
real store: the answer is 401 (400 for a verified body that cannot be read), never 500, and
nothing is stored as an event.
"""

from __future__ import annotations

import http.server
import json
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import unimailtrack
from live_server import running
from unimailtrack import EventType, PayloadError, SignatureError
from unimailtrack.adapters.ses import SESAdapter, SnsSigner
from unimailtrack.adapters.ses.signing import (
    MAX_CONTAINERS,
    MAX_DEPTH,
    MAX_ENVELOPE_BYTES,
    MAX_STRINGS,
    canonical_string,
    fetch_certificate,
    nesting_ok,
)
from unimailtrack.tracking import Tracker
from unimailtrack.web import create_app
from unimailtrack.webhooks import WebhookReceiver

TOPIC = "arn:aws:sns:us-east-1:111122223333:ses-events"
MESSAGE_ID = "0100018d0b7c2f31-8e2a6c44-1f0b-4d7e-b5a9-3c2d1e0f9a8b-000000"

NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
CONFIRMATION_FIELDS = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)


@pytest.fixture(scope="module")
def signer() -> SnsSigner:
    return SnsSigner(key_size=1024)


class Loader:
    """A certificate loader that serves a signer's certificate and remembers every URL."""

    def __init__(self, signer: SnsSigner) -> None:
        self.signer = signer
        self.urls: list[str] = []

    def __call__(self, url: str) -> bytes:
        self.urls.append(url)
        return self.signer.certificate_pem


@pytest.fixture
def loader(signer: SnsSigner) -> Loader:
    return Loader(signer)


@pytest.fixture
def adapter(loader: Loader) -> SESAdapter:
    return SESAdapter(region="us-east-1", allowed_topic_arns=[TOPIC], certificate_loader=loader)


def delivery(recipient: str = "alice@example.com", when: str = "2024-01-15T09:30:03.412Z") -> str:
    event = {
        "eventType": "Delivery",
        "mail": {
            "timestamp": "2024-01-15T09:30:01.000Z",
            "messageId": MESSAGE_ID,
            "destination": [recipient],
            "tags": {"unimailtrack_id": ["01a2b3c4d5e6f708192a3b4c5d6e7f80"]},
        },
        "delivery": {
            "timestamp": when,
            "recipients": [recipient],
            "smtpResponse": "250 2.0.0 OK",
        },
    }
    return json.dumps(event, separators=(",", ":"))


def envelope_of(body: bytes) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(body)
    return document


def post_form(envelope: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    return json.dumps(envelope, indent=2).encode(), SnsSigner.headers(envelope)


def with_certificate_url(body: bytes, url: str) -> bytes:
    """``body`` naming another certificate: the URL is not signed, so the signature still
    matches and only the URL check can refuse it."""
    return json.dumps({**envelope_of(body), "SigningCertURL": url}).encode()


def raw_canonical(envelope: dict[str, Any], fields: tuple[str, ...]) -> bytes:
    """The string SNS signs, built the naive way, without any check."""
    return "".join(f"{n}\n{envelope[n]}\n" for n in fields if n in envelope).encode()


# --------------------------------------------------------------------------- re-cutting


def subject_folded_into_message_id(signer: SnsSigner) -> tuple[bytes, bytes, dict[str, Any]]:
    """A signed notification with a Subject, and the same signature on a forgery whose
    MessageId swallowed the Subject: the naive signed string is byte for byte the same."""
    body, _ = signer.notification(
        delivery(), topic_arn=TOPIC, subject="Amazon SES Email Event", version="1"
    )
    original = envelope_of(body)
    forged = {k: v for k, v in original.items() if k != "Subject"}
    forged["MessageId"] = f"{original['MessageId']}\nSubject\n{original['Subject']}"
    assert raw_canonical(forged, NOTIFICATION_FIELDS) == raw_canonical(
        original, NOTIFICATION_FIELDS
    )
    return body, json.dumps(forged).encode(), forged


def test_folding_the_subject_into_the_message_id_is_refused(
    signer: SnsSigner, adapter: SESAdapter, caplog: pytest.LogCaptureFixture
) -> None:
    body, forged_body, forged = subject_folded_into_message_id(signer)
    now = datetime.now(UTC)
    adapter.verify_webhook(body, SnsSigner.headers(envelope_of(body)), now=now)
    # Even with headers that agree with the forgery, the newline in MessageId refuses it.
    with caplog.at_level(logging.WARNING, "unimailtrack.webhooks"), pytest.raises(SignatureError):
        adapter.verify_webhook(forged_body, SnsSigner.headers(forged), now=now)
    assert "newline" in caplog.text
    with pytest.raises(ValueError, match="MessageId holds a newline"):
        canonical_string(forged)


def test_a_re_cut_notification_yields_the_same_event_ids(signer: SnsSigner) -> None:
    body, forged_body, _ = subject_folded_into_message_id(signer)
    original = unimailtrack.parse_webhook("ses", body)
    recut = unimailtrack.parse_webhook("ses", forged_body)
    assert [e.event_id for e in recut] == [e.event_id for e in original]
    # The same SES event delivered raw (its text is the Message) has those ids too.
    raw = envelope_of(body)["Message"].encode()
    assert [e.event_id for e in unimailtrack.parse_webhook("ses", raw)] == [
        e.event_id for e in original
    ]
    # And another event about the same message does not.
    later, _ = signer.notification(delivery(when="2024-01-15T09:31:00.000Z"), topic_arn=TOPIC)
    assert unimailtrack.parse_webhook("ses", later)[0].event_id != original[0].event_id


NEWLINE_CASES = [("Notification", f) for f in NOTIFICATION_FIELDS[1:]] + [
    ("SubscriptionConfirmation", f) for f in CONFIRMATION_FIELDS[1:]
]


@pytest.mark.parametrize(("kind", "field"), NEWLINE_CASES)
def test_a_newline_in_any_signed_field_but_the_message_is_refused(
    kind: str,
    field: str,
    signer: SnsSigner,
    adapter: SESAdapter,
    loader: Loader,
) -> None:
    now = datetime.now(UTC)
    if kind == "Notification":
        body, _ = signer.notification(delivery(), topic_arn=TOPIC, subject="Event", timestamp=now)
        fields = NOTIFICATION_FIELDS
    else:
        body, _ = signer.subscription_confirmation(topic_arn=TOPIC, timestamp=now)
        fields = CONFIRMATION_FIELDS
    envelope = envelope_of(body)
    envelope[field] = envelope[field] + "\nx"
    # Signed for real over the naive string: only the newline rule can refuse it.
    envelope["Signature"] = signer.sign_bytes(
        raw_canonical(envelope, fields), envelope["SignatureVersion"]
    )
    forged, headers = post_form(envelope)
    with pytest.raises(SignatureError):
        adapter.verify_webhook(forged, headers, now=now)
    assert loader.urls == []  # refused before any certificate is fetched


def test_a_newline_in_the_message_is_signed_as_sns_signs_it(
    signer: SnsSigner, adapter: SESAdapter
) -> None:
    """The Message may hold newlines (a subscription confirmation's does), in both versions."""
    for version in ("1", "2"):
        body, headers = signer.subscription_confirmation(topic_arn=TOPIC, version=version)
        assert "\n" in envelope_of(body)["Message"]
        adapter.verify_webhook(body, headers)
        body, headers = signer.notification("line one\nline two", topic_arn=TOPIC, version=version)
        adapter.verify_webhook(body, headers)


def _parses(data: str, fields: tuple[str, ...]) -> list[dict[str, str]]:
    """Every way of reading ``data`` as ``Name\\nValue\\n`` lines of ``fields`` in order, each
    field optional: what a verifier that trusts the string alone could be made to believe."""
    if not fields:
        return [{}] if data == "" else []
    found = _parses(data, fields[1:])  # the field left out
    head = f"{fields[0]}\n"
    if data.startswith(head):
        rest = data[len(head) :]
        end = rest.find("\n")
        while end != -1:
            for tail in _parses(rest[end + 1 :], fields[1:]):
                found.append({fields[0]: rest[:end], **tail})
            end = rest.find("\n", end + 1)
    return found


PIECES = st.lists(
    st.sampled_from(["", "x", "Subject", "MessageId", "Timestamp", "TopicArn", "Message"]),
    max_size=3,
).map("\n".join)


@settings(max_examples=300, deadline=None)
@given(message=PIECES, message_id=PIECES, subject=st.none() | PIECES, timestamp=PIECES)
def test_the_signed_string_reads_one_way_only(
    message: str, message_id: str, subject: str | None, timestamp: str
) -> None:
    envelope = {
        "Type": "Notification",
        "Message": message,
        "MessageId": message_id,
        "Timestamp": timestamp,
        "TopicArn": TOPIC,
    }
    if subject is not None:
        envelope["Subject"] = subject
    try:
        signed = canonical_string(envelope).decode()
    except ValueError:
        return  # refused: no signature over it is ever believed
    readings = []
    for reading in _parses(signed, NOTIFICATION_FIELDS):
        required = {"Message", "MessageId", "Timestamp", "TopicArn", "Type"}
        if not required <= reading.keys():
            continue
        try:
            canonical_string(reading)
        except ValueError:
            continue
        readings.append(reading)
    assert readings == [envelope]


# --------------------------------------------------------------------------- headers


@pytest.mark.parametrize("message_id", ["another-id", "", None])
def test_the_message_id_header_must_be_the_signed_one(
    message_id: str | None, signer: SnsSigner, adapter: SESAdapter, loader: Loader
) -> None:
    body, headers = signer.notification(delivery(), topic_arn=TOPIC)
    del headers["x-amz-sns-message-id"]
    if message_id is not None:
        headers["X-Amz-Sns-Message-Id"] = message_id
    with pytest.raises(SignatureError):
        adapter.verify_webhook(body, headers)
    assert loader.urls == []


def test_a_field_given_twice_is_refused(signer: SnsSigner, adapter: SESAdapter) -> None:
    """One JSON reader keeps the first of two equal keys, another the last: never both."""
    body, headers = signer.notification(delivery(), topic_arn=TOPIC)
    adapter.verify_webhook(body, headers)
    twice = body.replace(b'"Type": "Notification",', b'"Type": "Notification", "Type": "x",')
    assert twice != body
    with pytest.raises(SignatureError):
        adapter.verify_webhook(twice, headers)


# --------------------------------------------------------------------------- certificates


@pytest.mark.parametrize(
    ("topic", "url"),
    [
        (TOPIC, "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem"),
        (
            "arn:aws:sns:eu-west-1:111122223333:ses-events",
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
        ),
        (
            "arn:aws-cn:sns:cn-north-1:111122223333:ses-events",
            "https://sns.cn-northwest-1.amazonaws.com.cn/SimpleNotificationService-abc.pem",
        ),
        (
            "arn:aws-cn:sns:cn-north-1:111122223333:ses-events",
            "https://sns.cn-north-1.amazonaws.com/SimpleNotificationService-abc.pem",
        ),
        (
            "arn:aws-us-gov:sns:us-gov-west-1:111122223333:ses-events",
            "https://sns.us-gov-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
        ),
    ],
)
def test_a_certificate_from_another_region_is_never_fetched(
    topic: str, url: str, signer: SnsSigner, loader: Loader
) -> None:
    body, headers = signer.notification(delivery(), topic_arn=topic)
    adapter = SESAdapter(certificate_loader=loader)
    adapter.verify_webhook(body, headers)  # with the certificate in the topic's own region
    assert len(loader.urls) == 1
    with pytest.raises(SignatureError):
        adapter.verify_webhook(with_certificate_url(body, url), headers)
    assert len(loader.urls) == 1


@dataclass
class CertificateServer:
    """A real HTTP server on 127.0.0.1: ``/SimpleNotificationService-1.pem`` redirects to
    ``/SimpleNotificationService-2.pem``, which serves the certificate."""

    url: str
    paths: list[str]

    @property
    def redirecting(self) -> str:
        return f"{self.url}/SimpleNotificationService-1.pem"

    @property
    def target(self) -> str:
        return f"{self.url}/SimpleNotificationService-2.pem"


@pytest.fixture
def certificate_server(signer: SnsSigner) -> Iterator[CertificateServer]:
    paths: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            paths.append(self.path)
            if self.path.endswith("-1.pem"):
                self.send_response(302)
                self.send_header("Location", "/SimpleNotificationService-2.pem")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(signer.certificate_pem)))
            self.end_headers()
            self.wfile.write(signer.certificate_pem)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield CertificateServer(f"http://127.0.0.1:{server.server_address[1]}", paths)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_the_default_fetcher_never_follows_a_redirect(
    certificate_server: CertificateServer, signer: SnsSigner
) -> None:
    assert fetch_certificate(certificate_server.target) == signer.certificate_pem
    with pytest.raises(ValueError, match="302"):
        fetch_certificate(certificate_server.redirecting)
    assert certificate_server.paths == [
        "/SimpleNotificationService-2.pem",
        "/SimpleNotificationService-1.pem",
    ]


def test_a_redirecting_certificate_url_is_refused_by_the_verifier(
    certificate_server: CertificateServer, signer: SnsSigner
) -> None:
    """Through the default fetcher (no loader): the URL is trusted exactly, as an emulator's
    is, so that only the redirect can refuse it."""
    body, headers = signer.notification(delivery(), topic_arn=TOPIC)
    for url, verifies in (
        (certificate_server.redirecting, False),
        (certificate_server.target, True),
    ):
        adapter = SESAdapter(trusted_certificate_urls=[url])
        if verifies:
            adapter.verify_webhook(with_certificate_url(body, url), headers)
        else:
            with pytest.raises(SignatureError):
                adapter.verify_webhook(with_certificate_url(body, url), headers)
    assert certificate_server.paths == [
        "/SimpleNotificationService-1.pem",
        "/SimpleNotificationService-2.pem",
    ]


# --------------------------------------------------------------------------- depth and size


def nested(depth: int, opener: str = "[", closer: str = "]") -> str:
    return opener * depth + closer * depth


def deep_object(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


DEEP_BODIES = {
    "1,000 arrays": nested(1000).encode(),
    "100,000 arrays": nested(100_000).encode(),
    "1,000 objects": deep_object(1000).encode(),
    "100,000 objects": deep_object(100_000).encode(),
    "an envelope with deep attributes": json.dumps(
        {"Type": "Notification", "MessageId": "m", "TopicArn": TOPIC, "Message": "{}"}
    )[:-1].encode()
    + b', "MessageAttributes": '
    + deep_object(5000).encode()
    + b"}",
    "unclosed": ("[" * 100_000).encode(),
}


@pytest.mark.parametrize("name", sorted(DEEP_BODIES))
@pytest.mark.parametrize("raw_delivery", [False, True])
def test_deep_unsigned_bodies_are_refused_before_decoding(
    name: str, raw_delivery: bool, loader: Loader
) -> None:
    headers = {
        "x-amz-sns-message-type": "Notification",
        "x-amz-sns-message-id": "m",
        "x-amz-sns-topic-arn": TOPIC,
    }
    adapter = SESAdapter(certificate_loader=loader, allow_raw_delivery=raw_delivery)
    with pytest.raises(SignatureError):
        adapter.verify_webhook(DEEP_BODIES[name], headers)
    assert loader.urls == []


def test_an_oversized_body_is_refused_unread(signer: SnsSigner, adapter: SESAdapter) -> None:
    body, headers = signer.notification("x" * (MAX_ENVELOPE_BYTES + 1), topic_arn=TOPIC)
    with pytest.raises(SignatureError):
        adapter.verify_webhook(body, headers)
    body, headers = signer.notification("x" * 256 * 1024, topic_arn=TOPIC)  # SNS's own limit
    adapter.verify_webhook(body, headers)


def deep_delivery(depth: int) -> str:
    """A Delivery event nested ``depth`` deep in all: its mail's tags are nested lists."""
    event = json.loads(delivery())
    event["mail"]["tags"] = "DEEP"
    return json.dumps(event).replace('"DEEP"', nested(depth - 2))


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1000, 100_000])
def test_a_signed_message_nested_deep_is_a_payload_error(
    depth: int, signer: SnsSigner, adapter: SESAdapter
) -> None:
    body, headers = signer.notification(deep_delivery(depth), topic_arn=TOPIC)
    adapter.verify_webhook(body, headers)  # signed: the signature holds
    with pytest.raises(PayloadError, match="nests deeper"):
        adapter.parse_webhook(body, headers)


def test_a_signed_message_within_the_bound_is_read(signer: SnsSigner, adapter: SESAdapter) -> None:
    body, headers = signer.notification(deep_delivery(MAX_DEPTH), topic_arn=TOPIC)
    (event,) = adapter.unwrap(body, headers)
    assert event.type is EventType.DELIVERED


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


TRICKY_TEXT = st.text(alphabet='[]{}"\\ab\n', max_size=6)
JSON_VALUES = st.recursive(
    st.none() | st.integers() | TRICKY_TEXT,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(TRICKY_TEXT, children, max_size=3)
    ),
    max_leaves=40,
)


@settings(max_examples=400, deadline=None)
@given(value=JSON_VALUES, limit=st.integers(min_value=0, max_value=8), ascii_only=st.booleans())
def test_the_nesting_scan_measures_what_the_decoder_would_build(
    value: Any, limit: int, ascii_only: bool
) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    assert nesting_ok(text, limit) is (_depth(value) <= limit)
    assert nesting_ok(text.encode(), limit) is (_depth(value) <= limit)


# --------------------------------------------------------------------------- over real HTTP


@dataclass
class Site:
    client: httpx.Client
    tracker: Tracker
    loader: Loader

    def post(self, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return self.client.post("/webhooks/ses", content=body, headers=headers)


@contextmanager
def make_site(
    tmp_path: Path, signer: SnsSigner, *, use_loader: bool = True, **options: Any
) -> Iterator[Site]:
    loader = Loader(signer)
    adapter = SESAdapter(
        region="us-east-1",
        allowed_topic_arns=[TOPIC],
        certificate_loader=loader if use_loader else None,
        **options,
    )
    with Tracker.open(f"sqlite:///{tmp_path / 'tracking.db'}") as tracker:
        receiver = WebhookReceiver({"ses": adapter}, tracker)
        with (
            running(create_app(receiver, api=False)) as url,
            httpx.Client(base_url=url, timeout=60) as client,
        ):
            yield Site(client, tracker, loader)


@pytest.fixture
def site(tmp_path: Path, signer: SnsSigner) -> Iterator[Site]:
    with make_site(tmp_path, signer) as made:
        yield made


Attack = Callable[[SnsSigner, CertificateServer], tuple[bytes, dict[str, str]]]


def _fold(signer: SnsSigner, _: CertificateServer) -> tuple[bytes, dict[str, str]]:
    body, forged, _ = subject_folded_into_message_id(signer)
    # A header cannot hold the newline: the original id is what a replayer can send.
    return forged, SnsSigner.headers(envelope_of(body))


def _fold_without_header(
    signer: SnsSigner, server: CertificateServer
) -> tuple[bytes, dict[str, str]]:
    forged, headers = _fold(signer, server)
    del headers["x-amz-sns-message-id"]
    return forged, headers


def _signed_newline(signer: SnsSigner, _: CertificateServer) -> tuple[bytes, dict[str, str]]:
    body, _ = signer.notification(delivery(), topic_arn=TOPIC, subject="Event")
    envelope = envelope_of(body)
    envelope["Subject"] += "\nx"
    envelope["Signature"] = signer.sign_bytes(
        raw_canonical(envelope, NOTIFICATION_FIELDS), envelope["SignatureVersion"]
    )
    return post_form(envelope)


def _header_mismatch(signer: SnsSigner, _: CertificateServer) -> tuple[bytes, dict[str, str]]:
    body, headers = signer.notification(delivery(), topic_arn=TOPIC)
    return body, {**headers, "x-amz-sns-message-id": "another-id"}


def _no_message_id_header(signer: SnsSigner, _: CertificateServer) -> tuple[bytes, dict[str, str]]:
    body, headers = signer.notification(delivery(), topic_arn=TOPIC)
    del headers["x-amz-sns-message-id"]
    return body, headers


def _look_alike(url: str) -> Attack:
    def attack(signer: SnsSigner, _: CertificateServer) -> tuple[bytes, dict[str, str]]:
        body, headers = signer.notification(delivery(), topic_arn=TOPIC)
        return with_certificate_url(body, url), headers

    return attack


def _local_certificate(
    signer: SnsSigner, server: CertificateServer
) -> tuple[bytes, dict[str, str]]:
    # Not an SNS host: refused outright, nothing is fetched at all.
    return _look_alike(server.target)(signer, server)


def _deep(depth: int) -> Attack:
    def attack(signer: SnsSigner, _: CertificateServer) -> tuple[bytes, dict[str, str]]:
        return nested(depth).encode(), SnsSigner.headers(
            {"Type": "Notification", "MessageId": "m", "TopicArn": TOPIC}
        )

    return attack


ATTACKS: dict[str, Attack] = {
    "subject folded into the message id": _fold,
    "subject folded, no message id header": _fold_without_header,
    "a signed newline in the subject": _signed_newline,
    "a message id header that lies": _header_mismatch,
    "no message id header": _no_message_id_header,
    "certificate path with ..": _look_alike(
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem/../evil.pem"
    ),
    "certificate path with a query": _look_alike(
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem?x=.pem"
    ),
    "certificate path with a fragment": _look_alike(
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem#.pem"
    ),
    "certificate path with an encoded slash": _look_alike(
        "https://sns.us-east-1.amazonaws.com/x%2F..%2FSimpleNotificationService-abc.pem"
    ),
    "certificate in another region": _look_alike(
        "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem"
    ),
    "a certificate on a server of the sender's own": _local_certificate,
    "1,000 deep": _deep(1000),
    "100,000 deep": _deep(100_000),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_every_attack_is_answered_401_and_stores_nothing(
    name: str, site: Site, signer: SnsSigner, certificate_server: CertificateServer
) -> None:
    body, headers = ATTACKS[name](signer, certificate_server)
    answer = site.post(body, headers)
    assert answer.status_code == 401, answer.text
    assert site.tracker.count_events() == 0
    assert site.tracker.dead_letters() == []
    assert site.loader.urls == []
    assert certificate_server.paths == []
    # The receiver is still well: a genuine notification is stored.
    body, headers = signer.notification(delivery(), topic_arn=TOPIC)
    assert site.post(body, headers).status_code == 200
    assert site.tracker.count_events() == 1


@pytest.mark.parametrize("depth", [1000, 100_000])
def test_a_signed_deep_message_is_kept_as_a_dead_letter_and_answered_400(
    depth: int, site: Site, signer: SnsSigner
) -> None:
    body, headers = signer.notification(nested(depth), topic_arn=TOPIC)
    answer = site.post(body, headers)
    assert answer.status_code == 400, answer.text
    assert site.tracker.count_events() == 0
    (letter,) = site.tracker.dead_letters()
    assert letter.body == body


def test_an_oversized_body_is_answered_401(site: Site, signer: SnsSigner) -> None:
    body, headers = signer.notification("x" * (MAX_ENVELOPE_BYTES + 1), topic_arn=TOPIC)
    assert site.post(body, headers).status_code == 401
    assert site.tracker.count_events() == 0


def test_a_redirecting_certificate_server_is_answered_401(
    tmp_path: Path, signer: SnsSigner, certificate_server: CertificateServer
) -> None:
    """The default fetcher, over HTTP: the redirecting URL is trusted exactly (as an emulator's
    is), so only the redirect can refuse it; its target is never asked for."""
    url = certificate_server.redirecting
    with make_site(tmp_path, signer, use_loader=False, trusted_certificate_urls=[url]) as site:
        body, headers = signer.notification(delivery(), topic_arn=TOPIC)
        answer = site.post(with_certificate_url(body, url), headers)
        assert answer.status_code == 401, answer.text
        assert site.tracker.count_events() == 0
    assert certificate_server.paths == ["/SimpleNotificationService-1.pem"]


def test_with_verification_off_a_re_cut_is_a_duplicate(tmp_path: Path, signer: SnsSigner) -> None:
    """Verification turned off explicitly believes anything; even so, a re-cut of a stored
    notification adds nothing: its event ids are those of the original."""
    with make_site(tmp_path, signer, verify_webhooks=False) as site:
        body, forged, _ = subject_folded_into_message_id(signer)
        first = site.post(body, SnsSigner.headers(envelope_of(body))).json()
        again = site.post(forged, SnsSigner.headers(envelope_of(body))).json()
        assert (first["new"], again["new"], again["duplicates"]) == (1, 0, 1)
        assert site.tracker.count_events() == 1


def test_a_genuine_notification_arrives_only_once_when_resent(
    site: Site, signer: SnsSigner
) -> None:
    """SNS retries with the same body; the same SES event under another SNS MessageId (a
    second subscription of one endpoint) is the same event too."""
    text = delivery()
    body, headers = signer.notification(text, topic_arn=TOPIC, timestamp=datetime.now(UTC))
    other, other_headers = signer.notification(
        text, topic_arn=TOPIC, timestamp=datetime.now(UTC) - timedelta(seconds=5)
    )
    assert [site.post(b, h).json()["new"] for b, h in [(body, headers)] * 2] == [1, 0]
    assert site.post(other, other_headers).json()["new"] == 0
    assert site.tracker.count_events() == 1


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("[" + "[]," * MAX_CONTAINERS + "[]]", False),
        ("[" + "[]," * (MAX_CONTAINERS - 2) + "[]]", True),
        ("[" + '"",' * MAX_STRINGS + '""]', False),
        ("[" + '"",' * (MAX_STRINGS - 1) + '""' + "]" + "", True),
        ('["' + '\\"' * 100_000 + '"' + ", [" * 30 + "]" * 30 + "]", True),  # one string
    ],
)
def test_the_scan_bounds_how_much_structure_a_body_holds(text: str, ok: bool) -> None:
    assert nesting_ok(text) is ok
