"""The recorded webhook requests in tests/fixtures/webhooks (README.md there explains them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures" / "webhooks"


def load_fixture(name: str) -> dict[str, Any]:
    """One webhook fixture case."""
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return data


def fixtures_for(provider: str) -> list[str]:
    """The names of every fixture of one provider."""
    return sorted(p.name for p in FIXTURES.glob(f"{provider}_*.json"))
