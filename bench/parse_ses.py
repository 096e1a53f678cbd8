"""Amazon SES webhook parsing: unimailtrack beside django-anymail on the same SNS bodies.

The bodies are the SES notification fixtures of the test suite (event publishing and a legacy
notification; a bounce, a two-recipient complaint, deliveries), each parsed from bytes to
events. django-anymail's ``AmazonSESTrackingWebhookView.parse_events`` reads a Django request,
so its row includes building the smallest one that carries the body. Decoding alone (the SNS
envelope, then the SES event inside its ``Message``) is the floor no parser can go below.

The last row is the cost of one SNS signature check (RSA-2048 with SHA-256 or SHA-1) once the
signing certificate is cached, on the same bodies signed by a generated key.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _harness import JSON_LIBRARY, Row, print_table, rounds, setup_django, timed_rate
from unimailtrack import _json
from unimailtrack.adapters.ses import SESAdapter, SnsSigner

FIXTURES = Path(__file__).parent.parent / "tests" / "fixtures" / "webhooks"
REFERENCE = "django-anymail parse_events"
ROUNDS = 7

Case = tuple[bytes, dict[str, str], datetime]


def bodies(signer: SnsSigner) -> list[Case]:
    """Every SES notification fixture as (signed body, headers, a clock it is fresh at)."""
    cases = [json.loads(p.read_text()) for p in sorted(FIXTURES.glob("ses_*.json"))]
    found: list[Case] = []
    for case in cases:
        if case.get("expect_control"):
            continue
        envelope = json.loads(case["body"])
        signature = signer.signature(envelope, case["signing"]["signature_version"])
        body = case["body"].replace(case["signing"]["placeholder"], signature).encode()
        clock = datetime.fromisoformat(envelope["Timestamp"]) + timedelta(minutes=1)
        found.append((body, case["headers"], clock))
    return found


def anymail_parser() -> Callable[[bytes], list[Any]]:
    setup_django()
    from anymail.webhooks.amazon_ses import AmazonSESTrackingWebhookView
    from django.http import HttpRequest

    view = AmazonSESTrackingWebhookView()

    def parse(body: bytes) -> list[Any]:
        request = HttpRequest()
        request.method = "POST"
        request.content_type = "text/plain"
        request._body = body
        events: list[Any] = view.parse_events(request)
        return events

    return parse


def measure() -> tuple[str, list[Row], str]:
    signer = SnsSigner()
    cases = bodies(signer)
    anymail = anymail_parser()
    parse = SESAdapter.parse_webhook_body
    verifier = SESAdapter(region="us-east-1", certificate_loader=signer.load_certificate)

    events = 0
    for body, headers, clock in cases:  # the same bodies give the same events
        ours = parse(body, headers)
        theirs = anymail(body)
        assert [e.recipient for e in ours] == [e.recipient for e in theirs]
        verifier.verify_webhook(body, headers, now=clock)  # and every one verifies
        events += len(ours)

    def run_ours() -> None:
        for body, headers, _ in cases:
            parse(body, headers)

    def run_anymail() -> None:
        for body, _, _ in cases:
            anymail(body)

    def run_decode() -> None:
        for body, _, _ in cases:
            json.loads(json.loads(body)["Message"])

    def run_decode_fast() -> None:
        for body, _, _ in cases:
            _json.loads(_json.loads(body)["Message"])

    def run_verify() -> None:
        for body, headers, clock in cases:
            verifier.verify_webhook(body, headers, now=clock)

    contenders = {
        "decode only (json.loads, envelope + message)": timed_rate(run_decode, events),
        "unimailtrack parse_webhook": timed_rate(run_ours, events),
        REFERENCE: timed_rate(run_anymail, events),
        "unimailtrack verify_webhook (cached cert), checks/s": timed_rate(run_verify, len(cases)),
    }
    if JSON_LIBRARY == "orjson":  # the floor of the orjson target: its own decoder alone
        contenders["decode only (orjson.loads, envelope + message)"] = timed_rate(
            run_decode_fast, events
        )
    rows = rounds(contenders, reference=REFERENCE, count=ROUNDS)
    title = (
        f"Amazon SES webhook parsing ({len(cases)} SNS bodies, {events} events; {ROUNDS} "
        f"rounds; unimailtrack decodes with {JSON_LIBRARY})"
    )
    return title, rows, REFERENCE


if __name__ == "__main__":
    title, rows, reference = measure()
    print_table(title, rows, reference=reference)
