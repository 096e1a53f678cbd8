"""Parsing one provider's bodies with unimailtrack and with django-anymail, round by round.

Every round times each contender once on the same bodies, in turn, and takes the ratio of
unimailtrack to django-anymail within that round; the rounds repeat, so a burst of load on the
machine spoils one round's pair rather than one contender's figures. The table shows each
contender's median rate; the line under it the ratio's min/median/max over the rounds. The
default configuration (no extras: the standard library's JSON decoder) is a row of its own.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _harness import JSON_LIBRARY, Row, rounds, setup_django, timed_rate
from unimailtrack import _json

FIXTURES = Path(__file__).parent.parent / "tests" / "fixtures" / "webhooks"
REFERENCE = "django-anymail parse_events"
OURS = "unimailtrack parse_webhook"
ROUNDS = 7

Case = tuple[bytes, dict[str, str]]


def fixtures(provider: str) -> list[Case]:
    """Every fixture of ``provider`` as (body, headers)."""
    found = [json.loads(p.read_text()) for p in sorted(FIXTURES.glob(f"{provider}_*.json"))]
    return [(case["body"].encode(), case["headers"]) for case in found]


def django_request(body: bytes, headers: dict[str, str]) -> Any:
    """The smallest Django request django-anymail's views read: body, content type, headers."""
    from django.http import HttpRequest

    request = HttpRequest()
    request.method = "POST"
    request.content_type = "application/json"
    request._body = body
    for name, value in headers.items():
        request.META["HTTP_" + name.upper().replace("-", "_")] = value
    return request


def versus(
    title: str,
    cases: Sequence[Case],
    ours: Callable[[bytes, dict[str, str]], list[Any]],
    view: Any,
    events: int,
) -> tuple[str, list[Row], str, list[float]]:
    """Rows of median rates (events per second) and the per-round ratios ours/anymail."""
    setup_django()

    def run_ours() -> None:
        for body, headers in cases:
            ours(body, headers)

    def run_anymail() -> None:
        for body, headers in cases:
            view.parse_events(django_request(body, headers))

    def run_ours_stdlib() -> None:
        # unimailtrack without the fast extra: the decoder such an installation uses (the
        # standard library's C scanner, ``_json.stdlib_loads``) underneath.
        fast = _json.loads
        _json.loads = _json.stdlib_loads
        try:
            run_ours()
        finally:
            _json.loads = fast

    def run_decode() -> None:
        for body, _ in cases:
            json.loads(body)

    def run_decode_fast() -> None:
        for body, _ in cases:
            _json.loads(body)

    runs = {
        "decode only (json.loads)": run_decode,
        OURS: run_ours,
        OURS + ", stdlib json": run_ours_stdlib,
        REFERENCE: run_anymail,
    }
    if JSON_LIBRARY == "orjson":  # the floor of the orjson target: its own decoder alone
        runs["decode only (orjson.loads)"] = run_decode_fast
    contenders = {
        label: timed_rate(run, events, repeat=3, min_time=0.05) for label, run in runs.items()
    }
    # Every row carries its ratio to django-anymail within each round (bench/parse.py reads
    # them for the scorecard), and the order rotates from round to round.
    rows = rounds(contenders, reference=REFERENCE, count=ROUNDS)
    ratios = list(next(row for row in rows if row.label == OURS).ratios)
    return title, rows, REFERENCE, ratios


def spread_line(ratios: Sequence[float]) -> str:
    return (
        f"  ratio to {REFERENCE}, per round ({len(ratios)} rounds): "
        f"min {min(ratios):.2f}x / median {statistics.median(ratios):.2f}x / max {max(ratios):.2f}x"
    )
