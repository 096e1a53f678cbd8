"""The Resend, Postmark and Brevo request fixtures parse to the events they promise."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import unimailtrack

FIXTURES = Path(__file__).parent.parent / "fixtures" / "webhooks"
CASES = sorted(
    p for name in ("resend", "postmark", "brevo") for p in FIXTURES.glob(f"{name}_*.json")
)


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_a_fixture_parses_to_its_expected_events(path: Path) -> None:
    case: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    events = unimailtrack.parse_webhook(case["provider"], case["body"].encode(), case["headers"])
    assert len(events) == len(case["expected"])
    for event, want in zip(events, case["expected"], strict=True):
        for key, value in want.items():
            actual = event.machine if key == "machine_open" else getattr(event, key)
            assert actual == value, (key, path.name)


def test_there_is_a_fixture_per_provider() -> None:
    assert {json.loads(p.read_text())["provider"] for p in CASES} == {"resend", "postmark", "brevo"}
