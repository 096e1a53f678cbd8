"""Postmark's suppression-list wire format: the cursor, the requests, a refused answer (the
pulls and pushes themselves run end to end in tests/test_suppression_sync_postmark_brevo.py)."""

from __future__ import annotations

import json

import httpx
import pytest

from unimailtrack.adapters import PostmarkAdapter
from unimailtrack.errors import ConfigurationError, PayloadError


def test_postmark_cursors_and_answers_are_checked() -> None:
    adapter = PostmarkAdapter("token")
    with pytest.raises(ValueError, match="not a Postmark suppression cursor"):
        adapter.suppression_page_request(json.dumps({"reason": "Everything"}))
    request = adapter.suppression_page_request(None)
    assert request.url.path == "/message-streams/outbound/suppressions/dump"
    assert request.url.params["SuppressionReason"] == "HardBounce"
    with pytest.raises(PayloadError):
        adapter.read_suppression_page(None, httpx.Response(200, json=[], request=request))
    with pytest.raises(ConfigurationError, match="needs a server token"):
        next(PostmarkAdapter().list_suppressions())
