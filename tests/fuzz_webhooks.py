"""Mutation fuzzing of the webhook path: real fixture bodies, mutated, signed for real, handled
by a receiver over a real store.

Each provider is a :class:`Target`: seed values taken from the recorded fixtures (fresh ids and
a tracking id put in, so that what is stored can be found again), and a way to sign whatever
a mutation made of them. :func:`mutate` makes one case from a seed: a key given a value of
another JSON type or a poison value (NUL and control characters, 2**63 and 2**64, huge strings
and arrays, deep nesting), control characters put into a string, or bytes flipped, inserted
or cut. :func:`check` sends one case through ``WebhookReceiver.handle`` and asserts what must
hold whatever the input: the answer is 200 or 400 (401 only for a Mailgun body so broken that
its signature cannot be read, which nothing may believe), never 500 and never 503 while the
store is healthy; after a 200 every event the body carries is in the store.

The tests (``test_fuzz_webhooks.py``) run a bounded count with a fixed seed; ``make fuzz``
runs this module as a script for the large run::

    UNIMAILTRACK_FUZZ_CASES=100000 UNIMAILTRACK_FUZZ_POSTGRES_CASES=10000 \\
        python tests/fuzz_webhooks.py
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import random
import secrets
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

sys.path.insert(0, str(Path(__file__).parent))

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
from unimailtrack.adapters.brevo.signing import BrevoWebhookSigner
from unimailtrack.adapters.mailgun import MailgunWebhookSigner, decode_body
from unimailtrack.adapters.postmark.signing import PostmarkWebhookSigner
from unimailtrack.adapters.resend.signing import ResendWebhookSigner
from unimailtrack.adapters.sendgrid import SendGridWebhookSigner
from unimailtrack.adapters.ses.signing import SnsSigner
from unimailtrack.errors import PayloadError
from unimailtrack.tracking import Tracker
from unimailtrack.webhooks import WebhookReceiver
from webhook_fixtures import fixtures_for, load_fixture

PROVIDERS = ("sendgrid", "mailgun", "ses", "resend", "postmark", "brevo", "memory")
TOPIC = "arn:aws:sns:us-east-1:111122223333:ses-events"
TRACKING_KEY = "unimailtrack_id"


@dataclass(frozen=True)
class Deep:
    """Arrays nested ``depth`` deep (``inner`` innermost), written without recursion: the
    encoder that writes the cases must not be what fails."""

    depth: int
    inner: Any = None


def _encode(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, Deep):
        inner = b"[]" if value.inner is None else _encode(value.inner)
        return b"[" * value.depth + inner + b"]" * value.depth
    if isinstance(value, Form):
        value = dict(value)
    deep: dict[str, bytes] = {}

    def placeholder(item: Any) -> str:
        if not isinstance(item, Deep):
            raise TypeError(item)
        mark = f"@@deep{len(deep)}@@"
        deep[mark] = _encode(item)
        return mark

    text = json.dumps(value, default=placeholder).encode()
    for mark, data in deep.items():
        text = text.replace(f'"{mark}"'.encode(), data)
    return text


POISON: tuple[Any, ...] = (
    None,
    True,
    False,
    0,
    -1,
    2**31,
    2**63 - 1,
    2**63,
    2**64,
    -(2**63) - 1,
    10**30,
    1e308,
    -0.0,
    0.5,
    "",
    "\x00",
    "550 5.1.1 \x00 user unknown",
    "\x01\x07\x1b\x7f\x9f",
    "\u2028\ufeff",
    "\ud800",
    "é ☃ \U0001f600",
    "x" * 100_000,
    "5.1.1",
    "1705312000",
    [],
    {},
    [1, "a", None, {"b": []}],
    {"a": {"b": [1, {"c": None}]}},
    list(range(10_000)),
    ["a@example.com"] * 300,
    Deep(65),
    Deep(300),
    Deep(1500),
)
"""Values every key is given in turn: each JSON type, and what stores refuse."""
CONTROL = ("\x00", "\x01", "\x08", "\x1f", "\x7f", "\u0085", "\u2028", "\ud83d")


@dataclass
class Target:
    """One provider: its adapter, seeds to mutate, and how to make a signed request."""

    provider: str
    adapter: Adapter
    seeds: list[Callable[[], Any]]
    """Each returns a fresh seed value (new ids each time)."""
    sign: Callable[[Any], tuple[bytes, dict[str, str]]]
    """A mutated value (or bytes) as a signed request."""
    unreadable_is_unauthentic: Callable[[bytes, dict[str, str]], bool] = field(
        default=lambda body, headers: False
    )
    """Whether a 401 is the right answer: the signature itself could not be read."""


def _tracking_id() -> str:
    return secrets.token_hex(16)


def _json_request(
    headers_for: Callable[[bytes], dict[str, str]],
) -> Callable[[Any], tuple[bytes, dict[str, str]]]:
    """How a provider that posts JSON makes a request of a value: the encoded body, and the
    headers ``headers_for`` gives it (a signature, or the webhook's credentials)."""

    def sign(value: Any) -> tuple[bytes, dict[str, str]]:
        body = _encode(value)
        return body, {"Content-Type": "application/json", **headers_for(body)}

    return sign


# --------------------------------------------------------------------------- providers


def sendgrid() -> Target:
    signer = SendGridWebhookSigner()
    bodies = [
        json.loads(load_fixture(name)["body"])
        for name in fixtures_for("sendgrid")
        if "expect_error" not in load_fixture(name)
    ]

    def seed(items: list[dict[str, Any]]) -> Callable[[], Any]:
        def fresh() -> Any:
            tracking_id = _tracking_id()
            return [
                {**item, "sg_event_id": uuid.uuid4().hex, TRACKING_KEY: tracking_id}
                for item in items
            ]

        return fresh

    return Target(
        "sendgrid",
        SendGridAdapter(webhook_keys=signer.public_key),
        [seed(items) for items in bodies],
        _json_request(signer.sign),
    )


def mailgun() -> Target:
    key = secrets.token_hex(16)
    signer = MailgunWebhookSigner(key)
    json_seeds: list[dict[str, Any]] = []
    form_seeds: list[dict[str, str]] = []
    for name in fixtures_for("mailgun"):
        case = load_fixture(name)
        if "json" in case["headers"].get("Content-Type", ""):
            json_seeds.append(json.loads(case["body"])["event-data"])
        else:
            fields = dict(parse_qsl(case["body"], keep_blank_values=True))
            for signed in ("timestamp", "token", "signature"):
                fields.pop(signed, None)
            form_seeds.append(fields)

    def json_seed(data: dict[str, Any]) -> Callable[[], Any]:
        def fresh() -> Any:
            variables = {**(data.get("user-variables") or {}), TRACKING_KEY: _tracking_id()}
            return {**data, "id": uuid.uuid4().hex[:22], "user-variables": variables}

        return fresh

    def form_seed(fields: dict[str, str]) -> Callable[[], Any]:
        def fresh() -> Any:
            return Form({**fields, TRACKING_KEY: _tracking_id(), "nonce": uuid.uuid4().hex})

        return fresh

    def sign(value: Any) -> tuple[bytes, dict[str, str]]:
        block = signer.signature_block()
        if isinstance(value, Form) or (isinstance(value, bytes) and value.startswith(b"form:")):
            head = value.encoded() if isinstance(value, Form) else value[5:]
            body = head + b"&" + urlencode(block).encode()
            return body, {"Content-Type": "application/x-www-form-urlencoded"}
        data = _encode(value)
        body = b'{"signature": ' + json.dumps(block).encode() + b', "event-data": ' + data + b"}"
        return body, {"Content-Type": "application/json"}

    def unreadable(body: bytes, headers: dict[str, str]) -> bool:
        try:
            decode_body(body, headers)
        except PayloadError:
            return True
        return False

    return Target(
        "mailgun",
        MailgunAdapter(webhook_keys=key),
        [json_seed(d) for d in json_seeds] + [form_seed(f) for f in form_seeds],
        sign,
        unreadable,
    )


class Form(dict[str, Any]):
    """A legacy Mailgun form: mutated like an object, sent url-encoded (values as text)."""

    def encoded(self) -> bytes:
        return urlencode(
            {k: v if isinstance(v, str) else _encode(v).decode() for k, v in self.items()},
            errors="surrogatepass",
        ).encode()


def ses() -> Target:
    signer = SnsSigner(key_size=1024)
    events = []
    for name in fixtures_for("ses"):
        envelope = json.loads(load_fixture(name)["body"])
        if envelope.get("Type") == "Notification":
            events.append(json.loads(envelope["Message"]))

    def seed(event: dict[str, Any]) -> Callable[[], Any]:
        def fresh() -> Any:
            mail = dict(event.get("mail") or {})
            mail["tags"] = {**(mail.get("tags") or {}), TRACKING_KEY: [_tracking_id()]}
            return {**event, "mail": mail}

        return fresh

    def sign(value: Any) -> tuple[bytes, dict[str, str]]:
        message = _encode(value).decode("utf-8", "replace")
        return signer.notification(message, topic_arn=TOPIC)

    adapter = SESAdapter(
        region="us-east-1", allowed_topic_arns=[TOPIC], certificate_loader=signer.load_certificate
    )
    return Target("ses", adapter, [seed(e) for e in events], sign)


def _fixture_bodies(provider: str) -> list[Any]:
    return [
        json.loads(load_fixture(name)["body"])
        for name in fixtures_for(provider)
        if "expect_error" not in load_fixture(name)
    ]


def resend() -> Target:
    """Resend's events, each with a fresh message (``email_id``) and tracking tag, signed as
    Resend signs (Standard Webhooks headers, a fresh ``svix-id`` for each request)."""
    signer = ResendWebhookSigner()

    def seed(event: dict[str, Any]) -> Callable[[], Any]:
        def fresh() -> Any:
            data = dict(event.get("data") or {})
            tags = data.get("tags") if isinstance(data.get("tags"), dict) else {}
            data["tags"] = {**tags, TRACKING_KEY: _tracking_id()}
            data["email_id"] = str(uuid.uuid4())
            return {**event, "data": data}

        return fresh

    def sign(value: Any) -> tuple[bytes, dict[str, str]]:
        body = _encode(value)
        headers = signer.sign(body, msg_id=f"msg_{uuid.uuid4().hex}")
        return body, {"Content-Type": "application/json", **headers}

    adapter = ResendAdapter(webhook_secrets=signer.secret)
    return Target("resend", adapter, [seed(e) for e in _fixture_bodies("resend")], sign)


def postmark() -> Target:
    """Postmark's records, each with a fresh ``ID`` and ``MessageID`` and a tracking id in its
    ``Metadata``, sent with the webhook's credentials (Postmark signs nothing)."""
    signer = PostmarkWebhookSigner()

    def seed(record: dict[str, Any]) -> Callable[[], Any]:
        def fresh() -> Any:
            metadata = record.get("Metadata") if isinstance(record.get("Metadata"), dict) else {}
            return {
                **record,
                "ID": 10**17 + secrets.randbelow(9 * 10**17),  # 18 digits: a fixed length
                "MessageID": str(uuid.uuid4()),
                "Metadata": {**metadata, TRACKING_KEY: _tracking_id()},
            }

        return fresh

    adapter = PostmarkAdapter(webhook_secrets=signer.secret)
    seeds = [seed(r) for r in _fixture_bodies("postmark")]
    return Target("postmark", adapter, seeds, _json_request(signer.sign))


def brevo() -> Target:
    """Brevo's events, one or a batch, each batch about one fresh message (``message-id``)
    with a tracking id in ``X-Mailin-custom``, sent with the webhook's credentials."""
    signer = BrevoWebhookSigner()

    def seed(body: Any) -> Callable[[], Any]:
        items = body if isinstance(body, list) else [body]

        def fresh() -> Any:
            custom = json.dumps({TRACKING_KEY: _tracking_id(), "event_id": "fuzz"})
            message = f"<{uuid.uuid4().hex}@smtp-relay.mailin.fr>"
            batch = [{**item, "message-id": message, "X-Mailin-custom": custom} for item in items]
            return batch if isinstance(body, list) else batch[0]

        return fresh

    adapter = BrevoAdapter(webhook_secrets=signer.secret)
    return Target(
        "brevo", adapter, [seed(b) for b in _fixture_bodies("brevo")], _json_request(signer.sign)
    )


def memory() -> Target:
    adapter = MemoryAdapter()
    now = time.time()
    samples = [
        {"event": "delivered", "recipient": "ann@example.com", "message_id": "mem-1"},
        {
            "event": "bounced",
            "recipient": "bob@example.com",
            "bounce": "hard",
            "reason": "550 5.1.1 user unknown",
            "smtp_status": "5.1.1",
            "attempt": 1,
            "tags": ["welcome"],
            "metadata": {"order": "17"},
        },
        {"event": "clicked", "recipient": "cy@example.com", "url": "https://example.com/a"},
    ]

    def fresh() -> Any:
        tracking_id = _tracking_id()
        return {
            "events": [
                {**item, "id": uuid.uuid4().hex, "tracking_id": tracking_id, "timestamp": now}
                for item in samples
            ]
        }

    def sign(value: Any) -> tuple[bytes, dict[str, str]]:
        body = _encode(value)
        stamp = str(int(time.time()))
        mac = hmac.new(
            adapter.webhook_secret.encode(), stamp.encode() + b"." + body, hashlib.sha256
        )
        headers = {
            "Content-Type": "application/json",
            "X-Unimailtrack-Signature": f"t={stamp},v1={mac.hexdigest()}",
        }
        return body, headers

    return Target("memory", adapter, [fresh], sign)


TARGETS: dict[str, Callable[[], Target]] = {
    "sendgrid": sendgrid,
    "mailgun": mailgun,
    "ses": ses,
    "resend": resend,
    "postmark": postmark,
    "brevo": brevo,
    "memory": memory,
}


# --------------------------------------------------------------------------- mutations


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in ``value`` a mutation can put something (keys and list items)."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            found.append((*prefix, key))
            found.extend(_paths(item, (*prefix, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value[:20]):
            found.append((*prefix, index))
            found.extend(_paths(item, (*prefix, index)))
    return found


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        value = value[step]
    return value


def _put(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    """A copy of ``value`` with ``new`` at ``path`` (containers on the way copied)."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    copy = type(value)(value) if isinstance(value, dict) else list(value)
    copy[head] = _put(value[head], rest, new)
    return copy


def key_paths(seed: Any) -> list[tuple[Any, ...]]:
    """The paths a systematic sweep gives each poison value to."""
    return _paths(seed)


def give(seed: Any, path: tuple[Any, ...], value: Any) -> Any:
    """``seed`` with ``value`` at ``path``."""
    return _put(seed, path, value)


def mutate(rng: random.Random, seed: Any) -> Any:
    """One mutated case of ``seed``: a value (sent as JSON) or bytes (sent as they are)."""
    choice = rng.random()
    paths = _paths(seed)
    if choice < 0.45 and paths:  # a key given another type, or a poison value
        value = seed
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            value = _put(value, rng.choice(paths), rng.choice(POISON))
            paths = _paths(value)
            if not paths:
                break
        return value
    if choice < 0.65 and paths:  # control characters put into a string
        strings = [p for p in paths if isinstance(_get(seed, p), str)]
        if strings:
            path = rng.choice(strings)
            text = _get(seed, path)
            at = rng.randrange(len(text) + 1)
            return _put(seed, path, text[:at] + rng.choice(CONTROL) + text[at:])
    if choice < 0.72:  # the whole body nested deep, or a huge array of it
        if rng.random() < 0.5:
            return Deep(rng.choice((65, 200, 1100)), seed)
        return [seed] * rng.choice((2, 50, 500))
    data = seed.encoded() if isinstance(seed, Form) else _encode(seed)
    buffer = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 4, 16))):  # bytes flipped, inserted or cut
        where = rng.randrange(len(buffer) + 1)
        action = rng.random()
        if action < 0.5 and where < len(buffer):
            buffer[where] ^= 1 << rng.randrange(8)
        elif action < 0.8:
            buffer[where:where] = bytes([rng.randrange(256)]) * rng.choice((1, 1, 3, 300))
        else:
            del buffer[where : where + rng.choice((1, 5, 50))]
    return (b"form:" if isinstance(seed, Form) else b"") + bytes(buffer)


# --------------------------------------------------------------------------- checking


@dataclass
class Outcome:
    counts: Counter[str] = field(default_factory=Counter)
    stored: int = 0

    def add(self, status: int) -> None:
        self.counts[str(status) if status in (200, 400, 401) else "other"] += 1


def check(
    target: Target, receiver: WebhookReceiver, tracker: Tracker, case: Any, *, count: bool = True
) -> int:
    """Send one case; assert what must hold; return the status."""
    body, headers = target.sign(case)
    before = tracker.count_events() if count else 0
    response = receiver.handle(target.provider, headers, body)
    status = response.status
    allowed = status in (200, 400) or (
        status == 401 and target.unreadable_is_unauthentic(body, headers)
    )
    assert allowed, (target.provider, status, response.body[:300], body[:300])
    if status == 200:
        answer = response.json()
        if count:
            assert tracker.count_events() - before == answer.get("new", 0), answer
        events = target.adapter.parse_webhook(body, headers)
        assert answer["events"] == len(events)
        by_message: dict[str, set[str]] = {}
        for event in events:
            if event.tracking_id is not None:
                by_message.setdefault(event.tracking_id, set()).add(event.event_id)
        missing = 0
        for tracking_id, ids in by_message.items():
            missing += len(ids - {e.event_id for e in tracker.timeline(tracking_id)})
        # An event not under its own send was stored before, under another (a poison value
        # made its id one an earlier case had): the receiver counted it a duplicate.
        assert missing <= answer.get("duplicates", 0), (target.provider, missing, answer)
    return status


def run(provider: str, url: str, cases: int, seed: int) -> Outcome:
    """``cases`` mutated cases of ``provider`` into the store at ``url``."""
    target = TARGETS[provider]()
    rng = random.Random(f"{seed}:{provider}")
    outcome = Outcome()
    with Tracker.open(url) as tracker:
        receiver = WebhookReceiver({provider: target.adapter}, tracker)
        try:
            for number in range(cases):
                case = mutate(rng, rng.choice(target.seeds)())
                outcome.add(check(target, receiver, tracker, case, count=number % 500 == 0))
        finally:
            outcome.stored = tracker.count_events()
    return outcome


def _postgres_url(schema: str) -> str:
    base = os.environ.get(
        "UNIMAILTRACK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
    )
    return f"{base}{'&' if '?' in base else '?'}schema={schema}"


def _drop(schema: str) -> None:
    import psycopg
    from psycopg import sql

    base = os.environ.get(
        "UNIMAILTRACK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
    )
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def main() -> None:  # pragma: no cover - the make fuzz entry point
    import logging
    import tempfile

    logging.disable(logging.CRITICAL)  # every refusal is logged; the counts say it all
    cases = int(os.environ.get("UNIMAILTRACK_FUZZ_CASES", "100000"))
    pg_cases = int(os.environ.get("UNIMAILTRACK_FUZZ_POSTGRES_CASES", str(cases // 10)))
    seed = int(os.environ.get("UNIMAILTRACK_FUZZ_SEED", "20261201"))
    providers = os.environ.get("UNIMAILTRACK_FUZZ_PROVIDERS", ",".join(PROVIDERS)).split(",")
    print(f"fuzz: seed {seed}, {cases} cases per provider on SQLite, {pg_cases} on PostgreSQL")
    for provider in providers:
        for backend, count in (("sqlite", cases), ("postgres", pg_cases)):
            if not count:
                continue
            started = time.monotonic()
            with tempfile.TemporaryDirectory() as place:
                schema = f"fuzz_{secrets.token_hex(6)}"
                url = f"sqlite:///{place}/fuzz.sqlite3" if backend == "sqlite" else ""
                try:
                    url = url or _postgres_url(schema)
                    outcome = run(provider, url, count, seed)
                finally:
                    if backend == "postgres":
                        _drop(schema)
            took = time.monotonic() - started
            counts = " ".join(f"{k}={v}" for k, v in sorted(outcome.counts.items()))
            print(
                f"{provider:9} {backend:8} cases={count} {counts} "
                f"events_stored={outcome.stored} seconds={took:.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
