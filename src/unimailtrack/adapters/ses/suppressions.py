"""Amazon SES v2's account-level suppression list, read and written: pure builders, readers.

Reading: ``GET /v2/email/suppression/addresses`` (``ListSuppressedDestinations``), paged by
``PageSize`` (at most 1000) and the ``NextToken`` of the previous answer, which is the cursor.
SES keeps two reasons, ``BOUNCE`` (hard bounces) and ``COMPLAINT``; both suppress every
stream.

Writing: one ``PUT /v2/email/suppression/addresses`` (``PutSuppressedDestination``) per address
with its reason: complaints as ``COMPLAINT``, bounced, blocked and invalid addresses as
``BOUNCE``. SES keeps no unsubscribes, so stream entries are skipped.

Every request is signed (SigV4) by the adapter's signer, which this module is handed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urlencode

import httpx

from unimailtrack._json import load_untrusted
from unimailtrack.adapters.base import (
    PushCall,
    RemoteSuppression,
    SuppressionPage,
    error_for_status,
)
from unimailtrack.errors import PayloadError

__all__ = ["LIST_PATH", "PAGE_SIZE", "page_request", "push_calls", "read_page"]

LIST_PATH: Final = "/v2/email/suppression/addresses"
PAGE_SIZE: Final = 1000
_CAUSES: Final = {"BOUNCE": "bounced", "COMPLAINT": "complained"}
_REASONS: Final = {
    "complained": "COMPLAINT",
    "bounced": "BOUNCE",
    "blocked": "BOUNCE",
    "invalid": "BOUNCE",
    "dropped": "BOUNCE",
}

Sign = Callable[[str, str, bytes], httpx.Request]
"""``sign(method, url, body)``: the signed request."""


def page_request(endpoint: str, sign: Sign, cursor: str | None) -> httpx.Request:
    query: dict[str, Any] = {"PageSize": PAGE_SIZE}
    if cursor is not None:
        query["NextToken"] = cursor
    return sign("GET", f"{endpoint}{LIST_PATH}?{urlencode(query)}", b"")


def _time(value: Any) -> datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def _error(response: httpx.Response) -> Exception:
    return error_for_status("ses", response, response.text[:500])


def read_page(cursor: str | None, response: httpx.Response) -> SuppressionPage:
    del cursor
    if response.status_code >= 300:
        raise _error(response)
    try:
        body = load_untrusted(response.content)
    except ValueError:
        raise PayloadError("SES answered a suppression list that is not JSON") from None
    summaries = body.get("SuppressedDestinationSummaries") if isinstance(body, dict) else None
    if not isinstance(summaries, list):
        raise PayloadError("SES's answer has no SuppressedDestinationSummaries")
    items = tuple(
        RemoteSuppression(
            address=item["EmailAddress"],
            cause=_CAUSES.get(str(item.get("Reason")), "bounced"),
            reason=f"on the SES account suppression list ({item.get('Reason')})",
            created_at=_time(item.get("LastUpdateTime")),
            origin=str(item.get("Reason") or ""),
        )
        for item in summaries
        if isinstance(item, dict) and isinstance(item.get("EmailAddress"), str)
    )
    token = body.get("NextToken")
    return SuppressionPage(items, token if isinstance(token, str) and token else None)


def _check(response: httpx.Response) -> None:
    if response.status_code >= 300:
        raise _error(response)


def push_calls(
    endpoint: str, sign: Sign, entries: Sequence[RemoteSuppression]
) -> tuple[list[PushCall], list[tuple[RemoteSuppression, str]]]:
    calls: list[PushCall] = []
    skipped: list[tuple[RemoteSuppression, str]] = []
    for entry in entries:
        reason = _REASONS.get(entry.cause)
        if entry.scope is not None or reason is None:
            skipped.append((entry, "SES's suppression list holds only bounces and complaints"))
            continue
        body = json.dumps({"EmailAddress": entry.address, "Reason": reason}).encode()
        calls.append(
            PushCall(
                request=sign("PUT", endpoint + LIST_PATH, body), entries=(entry,), check=_check
            )
        )
    return calls, skipped
