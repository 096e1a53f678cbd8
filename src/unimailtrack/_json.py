"""JSON decoding for the webhook hot paths.

orjson when it is installed (``unimailtrack[fast]``): it decodes a webhook body in about a
third of the standard library's time, and decoding is a third to a half of what parsing a
webhook costs. Without it the standard library's decoder does the same job. Both raise a
``ValueError`` subclass on malformed input.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = ["loads"]


def _decoder() -> Callable[[bytes | str], Any]:
    try:
        from orjson import loads as orjson_loads
    except ImportError:  # pragma: no cover - exercised where the fast extra is absent
        return json.loads
    return orjson_loads


loads: Callable[[bytes | str], Any] = _decoder()
"""Decode JSON from bytes or text."""
