"""Mailgun webhook parsing: unimailtrack beside django-anymail on the same bodies.

The bodies are the Mailgun request fixtures of the test suite (JSON events and a legacy
form-encoded one), each parsed from bytes to events. django-anymail's
``MailgunTrackingWebhookView.parse_events`` reads a Django request, so its row includes
building the smallest one that carries the body (``HttpRequest`` with the body and content type,
and the form fields for a legacy body). Both parse with whatever they find installed: django-anymail
decodes with ``json``, unimailtrack with orjson when ``unimailtrack[fast]`` is there (as in the
benchmark environment). Decoding alone with the standard library (``json.loads``, ``parse_qsl``
for the form) shows how much of a parse is decoding.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

sys.path.insert(0, str(Path(__file__).parent))

from _harness import JSON_LIBRARY, Row, print_table, rounds, setup_django, timed_rate
from unimailtrack import _json
from unimailtrack.adapters.mailgun import MailgunAdapter
from unimailtrack.adapters.mailgun.body import form_pairs

FIXTURES = Path(__file__).parent.parent / "tests" / "fixtures" / "webhooks"
REFERENCE = "django-anymail parse_events"
ROUNDS = 7


def bodies() -> list[tuple[bytes, dict[str, str]]]:
    """Every Mailgun fixture as (body, headers)."""
    cases = [json.loads(p.read_text()) for p in sorted(FIXTURES.glob("mailgun_*.json"))]
    return [(case["body"].encode(), case["headers"]) for case in cases]


def anymail_parser() -> Callable[[bytes, str], list[Any]]:
    setup_django()
    from anymail.webhooks.mailgun import MailgunTrackingWebhookView
    from django.http import HttpRequest, QueryDict

    view = MailgunTrackingWebhookView()

    def parse(body: bytes, content_type: str) -> list[Any]:
        request = HttpRequest()
        request.method = "POST"
        request.content_type = content_type
        request._body = body
        if content_type != "application/json":
            request.POST = QueryDict(body)
        events: list[Any] = view.parse_events(request)
        return events

    return parse


def measure() -> tuple[str, list[Row], str]:
    cases = bodies()
    typed = [(body, headers, headers["Content-Type"]) for body, headers in cases]
    anymail = anymail_parser()
    parse = MailgunAdapter.parse_webhook_body

    for body, headers, content_type in typed:  # the same bodies give the same events
        (ours,) = parse(body, headers)
        (theirs,) = anymail(body, content_type)
        assert ours.recipient == theirs.recipient

    def run_ours() -> None:
        for body, headers, _ in typed:
            parse(body, headers)

    def run_anymail() -> None:
        for body, _, content_type in typed:
            anymail(body, content_type)

    def run_decode() -> None:
        for body, _, content_type in typed:
            if content_type == "application/json":
                json.loads(body)
            else:
                parse_qsl(body.decode())

    def run_decode_fast() -> None:
        for body, _, content_type in typed:
            if content_type == "application/json":
                _json.loads(body)
            else:
                form_pairs(body.decode())

    count = len(typed)
    runs = {
        "decode only (json.loads)": run_decode,
        "unimailtrack parse_webhook": run_ours,
        REFERENCE: run_anymail,
    }
    if JSON_LIBRARY == "orjson":  # the floor of the orjson target: the fastest decoders alone
        runs["decode only (orjson.loads; form_pairs for the form)"] = run_decode_fast
    # Rounds interleave the contenders in rotating order; each ratio is taken within a round.
    rows = rounds(
        {label: timed_rate(run, count) for label, run in runs.items()},
        reference=REFERENCE,
        count=ROUNDS,
    )
    title = (
        f"Mailgun webhook parsing ({count} bodies: JSON events and a legacy form; "
        f"{ROUNDS} rounds; unimailtrack decodes with {JSON_LIBRARY})"
    )
    return title, rows, REFERENCE


if __name__ == "__main__":
    title, rows, reference = measure()
    print_table(title, rows, reference=reference)
