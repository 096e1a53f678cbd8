"""Brevo's blocked-contacts wire format: the cursor, the request, answers (the pulls run end
to end in tests/test_suppression_sync_postmark_brevo.py)."""

from __future__ import annotations

import json

import httpx
import pytest

from unimailtrack.adapters import BrevoAdapter
from unimailtrack.errors import PayloadError


def test_brevo_cursors_and_answers_are_checked() -> None:
    adapter = BrevoAdapter("key")
    with pytest.raises(ValueError, match="not a Brevo suppression cursor"):
        adapter.suppression_page_request(json.dumps({"offset": -1}))
    request = adapter.suppression_page_request(json.dumps({"offset": 200}))
    assert dict(request.url.params) == {"limit": "100", "offset": "200", "sort": "asc"}
    with pytest.raises(PayloadError):
        adapter.read_suppression_page(None, httpx.Response(200, json=[], request=request))
    # An empty list may come without its array.
    page = adapter.read_suppression_page(None, httpx.Response(200, json={}, request=request))
    assert (page.items, page.cursor) == ((), None)
