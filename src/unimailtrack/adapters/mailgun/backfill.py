"""Backfill from Mailgun's Events API: the events of a time range, page after page.

``GET /v3/{domain}/events?begin=...&end=...&ascending=yes&limit=300`` (HTTP basic
authentication, user ``api``) answers ``{"items": [...], "paging": {"next": URL, ...}}``; each
item is the same ``event-data`` object a webhook carries, so it maps through the webhook's own
:func:`~unimailtrack.adapters.mailgun.events.event_from` and gets the same event id: events already
received by webhook count as duplicates. Paging follows ``paging.next`` until a page comes back
empty. Mailgun keeps events for a few days (longer on paid plans) and now documents this API as
superseded by its Logs API; the Events API still answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

import httpx

from unimailtrack._http import call_with_retry
from unimailtrack._json import load_untrusted
from unimailtrack.adapters.base import error_for_status, unknown_event
from unimailtrack.adapters.mailgun.events import event_from
from unimailtrack.errors import ConfigurationError, PayloadError, SendError
from unimailtrack.model import EmailEvent

if TYPE_CHECKING:
    from unimailtrack.adapters.mailgun import MailgunAdapter

__all__ = ["PAGE_SIZE", "events"]

PROVIDER = "mailgun"

PAGE_SIZE = 300
"""The most events Mailgun returns in one page."""
MAX_PAGES = 100_000
"""A bound on the pages one backfill follows (30 million events), against a paging loop."""


def events(adapter: MailgunAdapter, since: datetime, until: datetime) -> Iterator[list[EmailEvent]]:
    """Every event Mailgun holds for the adapter's domain from ``since`` to ``until``, oldest
    first, one list per page."""
    authorization = getattr(adapter, "_authorization", None)
    if authorization is None or adapter.domain is None:
        raise ConfigurationError("a Mailgun backfill needs the API key and the domain in the DSN")
    url: str | None = f"{adapter.base_url}/v3/{adapter.domain}/events"
    params: dict[str, str] | None = {
        "begin": str(since.timestamp()),
        "end": str(until.timestamp()),
        "ascending": "yes",
        "limit": str(PAGE_SIZE),
    }
    headers = {"Authorization": authorization, "Accept": "application/json"}
    for _ in range(MAX_PAGES):
        if url is None:
            return
        request = httpx.Request("GET", url, params=params, headers=headers)
        page = call_with_retry(adapter.retry, partial(_page, adapter, request))
        items = page.get("items")
        if not isinstance(items, list) or not items:
            return
        found = []
        for item in items:
            if isinstance(item, dict):
                try:
                    found.append(event_from(item))
                except PayloadError:  # an item the mapping cannot read: kept as it came
                    found.append(unknown_event(PROVIDER, item, "unreadable Events API item"))
        yield found
        paging = page.get("paging")
        following = paging.get("next") if isinstance(paging, dict) else None
        url, params = (following if isinstance(following, str) else None), None


def _page(adapter: MailgunAdapter, request: httpx.Request) -> dict[str, Any]:
    response = adapter.transport.send(request)
    if response.status_code != 200:
        raise error_for_status("mailgun", response, response.text[:200])
    try:
        answer = load_untrusted(response.content)
    except ValueError:
        raise SendError(
            "Mailgun's Events API answered something that is not JSON", provider="mailgun"
        ) from None
    if not isinstance(answer, dict):
        raise SendError("Mailgun's Events API answered an unexpected shape", provider="mailgun")
    return answer
