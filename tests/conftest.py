"""Shared test helpers: the webhook fixtures and signing helpers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).parent / "fixtures" / "webhooks"


def load_fixture(name: str) -> dict[str, Any]:
    """One webhook fixture case (see tests/fixtures/webhooks/README.md)."""
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return data


def fixtures_for(provider: str) -> list[str]:
    return sorted(p.name for p in FIXTURES.glob(f"{provider}_*.json"))


@pytest.fixture
def fixture_case() -> Any:
    return load_fixture
