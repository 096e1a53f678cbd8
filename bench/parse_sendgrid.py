"""SendGrid webhook parsing: unimailtrack beside django-anymail on the same 1,000-event batch.

The batch mixes every event SendGrid documents in proportions like real traffic, with the
fields SendGrid documents for each, three custom args (the tracking id among them), and
timestamps spread over a minute, as in one webhook post. django-anymail's
``SendGridTrackingWebhookView.parse_events`` reads a Django request, so its row includes building
the smallest one that carries the body. ``json.loads`` alone is the floor no parser goes below;
the verify row checks the ECDSA signature (a SHA-256 over the whole body) before parsing.
The lower-bound row (``least_mapping``) is what no parser that builds ``EmailEvent``'s fields
can go below, however it checks them.
Each round runs every row in rotating order; ratios are taken within the round.

Run with ``.venv-bench/bin/python bench/parse.py`` (or this file alone).
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _harness import JSON_LIBRARY, Row, print_table, rounds, setup_django, timed_rate
from unimailtrack import _json
from unimailtrack.adapters.sendgrid import (
    SendGridAdapter,
    SendGridWebhookSigner,
    parse_events,
)
from unimailtrack.adapters.sendgrid.events import NOT_METADATA, PROVIDER
from unimailtrack.model import TRACKING_KEY, _EventDraft

EVENTS = 1000
ROUNDS = 7
REFERENCE = "django-anymail parse_events"
LEAST = "lower bound: decode + bare objects, no checks"
FAST_FLOOR = "orjson.loads alone"
START = 1705310000

# Share of each event in the batch, and the fields SendGrid documents for it.
MIX: dict[str, tuple[int, Callable[[random.Random], dict[str, Any]]]] = {
    "processed": (22, lambda r: {}),
    "delivered": (22, lambda r: {"response": "250 2.0.0 OK queued", "ip": "149.72.1.1", "tls": 1}),
    "open": (
        24,
        lambda r: {
            "useragent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64)",
            "ip": "203.0.113.5",
            "sg_machine_open": r.random() < 0.4,
        },
    ),
    "click": (
        10,
        lambda r: {
            "useragent": "Mozilla/5.0",
            "ip": "203.0.113.5",
            "url": "https://shop.example.com/orders/17",
            "url_offset": {"index": 0, "type": "html"},
        },
    ),
    "deferred": (
        6,
        lambda r: {
            "response": "450 4.2.1 mailbox temporarily unavailable",
            "attempt": str(r.randint(1, 5)),
            "ip": "149.72.1.1",
            "tls": 1,
        },
    ),
    "bounce": (
        5,
        lambda r: {
            "type": r.choice(["bounce", "blocked"]),
            "reason": "550 5.1.1 The email account that you tried to reach does not exist.",
            "status": "5.1.1",
            "bounce_classification": "Invalid Address",
            "ip": "149.72.1.1",
            "tls": 1,
        },
    ),
    "dropped": (4, lambda r: {"reason": r.choice(["Bounced Address", "Unsubscribed Address"])}),
    "spamreport": (2, lambda r: {}),
    "unsubscribe": (2, lambda r: {}),
    "group_unsubscribe": (
        2,
        lambda r: {"asm_group_id": 42, "useragent": "Mozilla/5.0", "ip": "203.0.113.5"},
    ),
    "group_resubscribe": (1, lambda r: {"asm_group_id": 42}),
}


def batch(events: int = EVENTS, seed: int = 7) -> bytes:
    """A mixed SendGrid webhook body of ``events`` events, as SendGrid posts it."""
    rng = random.Random(seed)
    names = list(MIX)
    weights = [MIX[n][0] for n in names]
    items = []
    for i in range(events):
        name = rng.choices(names, weights)[0]
        message = f"{rng.getrandbits(128):032x}"[:22]
        items.append(
            {
                "email": f"user{i}@example.com",
                "timestamp": START + rng.randrange(60),
                "smtp-id": f"<{message}@geopod-ismtpd-4>",
                "event": name,
                "category": ["transactional", "order-confirmation"],
                "sg_event_id": f"{rng.getrandbits(192):048x}",
                "sg_message_id": f"{message}.filterdrecv-5bd4d5c8b8-x2h7k-1-65A4F3D0-2F.0",
                "unimailtrack_id": f"{rng.getrandbits(128):032x}",
                "order_ref": f"ORD-{i}",
                "tenant": "acme",
                **MIX[name][1](rng),
            }
        )
    return (json.dumps(items, separators=(",", ":")) + "\r\n").encode()


def anymail_parser() -> Callable[[bytes], list[Any]]:
    setup_django()
    from anymail.webhooks.sendgrid import SendGridTrackingWebhookView
    from django.http import HttpRequest

    with warnings.catch_warnings():  # anymail warns that it no longer supports SendGrid
        warnings.simplefilter("ignore")
        view = SendGridTrackingWebhookView()

    def parse(body: bytes) -> list[Any]:
        request = HttpRequest()
        request.method = "POST"
        request.content_type = "application/json"
        request._body = body
        events: list[Any] = view.parse_events(request)
        return events

    return parse


def least_mapping(loads: Callable[[bytes], Any]) -> Callable[[bytes], list[Any]]:
    """The least any parser that gives ``EmailEvent``'s fields does, as a lower bound: decode,
    one 18-slot object an event (``make_event``'s own draft class, built by position), the
    custom args gathered into ``metadata``, the categories copied, the time converted once a
    second. No type check, no bound, no bounce kind, no machine opens, no unknown events: a
    parser that may not skip them cannot beat this row."""
    draft = _EventDraft
    from_unix = datetime.fromtimestamp

    def parse(body: bytes) -> list[Any]:
        times: dict[Any, datetime] = {}
        events = []
        for item in loads(body):
            get = item.get
            stamp = get("timestamp")
            moment = times.get(stamp)
            if moment is None:
                moment = times[stamp] = from_unix(stamp, UTC)
            name = get("event")
            events.append(
                draft(
                    PROVIDER,
                    name,
                    name,
                    get("email"),
                    get("sg_event_id"),
                    moment,
                    get("sg_message_id"),
                    get(TRACKING_KEY),
                    get("reason") or get("response"),
                    None,
                    get("status"),
                    get("attempt"),
                    get("url"),
                    get("useragent"),
                    None,
                    list(get("category") or ()),
                    {k: v for k, v in item.items() if k not in NOT_METADATA},
                    item,
                )
            )
        return events

    return parse


def measure() -> tuple[str, list[Row], str]:
    body = batch()
    signer = SendGridWebhookSigner()
    headers = signer.sign(body, timestamp=START + 60)
    now = datetime.fromtimestamp(START + 60, UTC)
    adapter = SendGridAdapter(webhook_keys=signer.public_key)
    anymail = anymail_parser()

    least = least_mapping(_json.loads)
    ours, theirs = parse_events(body), anymail(body)  # the same body gives the same events
    assert [e.recipient for e in ours] == [e.recipient for e in theirs]
    assert [e.event_id for e in ours] == [e.event_id for e in theirs]
    assert [e.event_id for e in least(body)] == [e.event_id for e in ours]

    def verify_and_parse() -> None:
        adapter.verify_webhook(body, headers, now=now)
        parse_events(body)

    measured: dict[str, Callable[[], object]] = {
        f"unimailtrack parse, {JSON_LIBRARY}": lambda: parse_events(body),
        "unimailtrack parse, stdlib json": lambda: parse_events(body, loads=json.loads),
        "unimailtrack verify + parse": verify_and_parse,
        REFERENCE: lambda: anymail(body),
        f"{LEAST}, {JSON_LIBRARY}": lambda: least(body),
        "json.loads alone": lambda: json.loads(body),
    }
    if JSON_LIBRARY == "orjson":  # the floor of the orjson target: its own decoder alone
        measured[FAST_FLOOR] = lambda: _json.loads(body)
    rows = rounds(
        {label: timed_rate(fn, EVENTS) for label, fn in measured.items()},
        reference=REFERENCE,
        count=ROUNDS,
    )
    added = statistics.median(p / v for p, v in zip(rows[0].ratios, rows[2].ratios, strict=True))
    title = (
        f"SendGrid: parse + map a {EVENTS:,}-event mixed batch ({len(body) / 1024:,.0f} KiB; "
        f"{ROUNDS} rounds; unimailtrack decodes with {JSON_LIBRARY}); verification adds "
        f"{added - 1:.1%} (median within rounds)"
    )
    return title, rows, REFERENCE


if __name__ == "__main__":
    title, rows, reference = measure()
    print_table(title, rows, reference=reference)
