"""Postmark webhook parsing: unimailtrack beside django-anymail 15 on the same bodies.

The bodies are the Postmark request fixtures of the test suite (tests/fixtures/webhooks/*),
each parsed from bytes to events. django-anymail's tracking view reads a Django request, so its
row includes building the smallest one that carries the body and headers. Both decode with what
they find installed: django-anymail with ``json``, unimailtrack with orjson when
``unimailtrack[fast]`` is there (as in the benchmark environment). See ``_versus.py`` for how
the rounds are taken.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _harness import Row, print_table, setup_django
from _versus import fixtures, spread_line, versus
from unimailtrack.adapters import PostmarkAdapter

_ratios: list[float] = []


def measure() -> tuple[str, list[Row], str]:
    setup_django()
    from anymail.webhooks.postmark import PostmarkTrackingWebhookView as View

    view = View()
    cases = fixtures("postmark")
    parse = PostmarkAdapter.parse_webhook_body
    from _versus import django_request

    events = 0
    for body, headers in cases:  # the same bodies give the same events
        ours = parse(body, headers)
        theirs = view.parse_events(django_request(body, headers))
        assert [e.recipient for e in ours] == [e.recipient or "" for e in theirs]
        events += len(ours)
    title = f"Postmark webhook parsing ({len(cases)} bodies, {events} events)"
    title, rows, reference, ratios = versus(title, cases, parse, view, events)
    _ratios[:] = ratios
    return title, rows, reference


def spread() -> str:
    return spread_line(_ratios)


if __name__ == "__main__":
    title, rows, reference = measure()
    print_table(title, rows, reference=reference)
    print(spread())
