"""Mailgun's suppression lists, read and written: pure request builders and readers.

Reading walks ``/v3/{domain}/bounces``, ``complaints`` and ``unsubscribes`` one after the
other, each at most 1000 a page, following the ``paging.next`` URL Mailgun gives until a page
comes back empty. The cursor is this module's JSON: the list, and the next URL (on Mailgun's
own host only: a cursor naming another host is refused, so a tampered cursor file cannot send
the API key elsewhere).

Severity is kept: a bounce whose code is a 4xx one is temporary. An unsubscribe with the tag
``*`` concerns every stream; one with tags concerns the stream named like each tag.

Writing: ``POST`` a JSON array of up to 1000 records to each list (bounces for bounced,
blocked and invalid entries, complaints, unsubscribes with the stream as the tag, ``*`` for
every stream).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any, Final

import httpx

from unimailtrack._json import load_untrusted
from unimailtrack.adapters.base import (
    PushCall,
    RemoteSuppression,
    SuppressionPage,
    error_for_status,
)
from unimailtrack.errors import PayloadError

__all__ = ["PAGE_SIZE", "page_request", "push_calls", "read_page"]

PAGE_SIZE: Final = 1000
_LISTS: Final = ("bounces", "complaints", "unsubscribes")
_CAUSES: Final[Mapping[str, str]] = {
    "bounces": "bounced",
    "complaints": "complained",
    "unsubscribes": "unsubscribed",
}
_LIST_OF_CAUSE: Final[Mapping[str, str]] = {
    "bounced": "bounces",
    "blocked": "bounces",
    "invalid": "bounces",
    "dropped": "bounces",
    "soft-bounce-limit": "bounces",
    "complained": "complaints",
    "unsubscribed": "unsubscribes",
}


def _cursor(cursor: str | None) -> dict[str, Any]:
    if cursor is None:
        return {"list": _LISTS[0], "url": None}
    try:
        value = json.loads(cursor)
    except ValueError:
        raise ValueError(f"not a Mailgun suppression cursor: {cursor!r}") from None
    if not isinstance(value, dict) or value.get("list") not in _LISTS:
        raise ValueError(f"not a Mailgun suppression cursor: {cursor!r}")
    return value


def page_request(
    base_url: str, domain: str, headers: Mapping[str, str], cursor: str | None
) -> httpx.Request:
    where = _cursor(cursor)
    url = where.get("url")
    if url:
        if httpx.URL(url).host != httpx.URL(base_url).host:
            raise ValueError(f"the cursor names {url!r}, not a page of {base_url}")
        return httpx.Request("GET", url, headers=headers)
    return httpx.Request(
        "GET",
        f"{base_url}/v3/{domain}/{where['list']}",
        params={"limit": PAGE_SIZE},
        headers=headers,
    )


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None


def _entries(name: str, item: Any) -> list[RemoteSuppression]:
    if not isinstance(item, dict) or not isinstance(item.get("address"), str):
        return []
    address, created = item["address"], _time(item.get("created_at"))
    if name == "unsubscribes":
        tags = [t for t in item.get("tags") or ["*"] if isinstance(t, str)] or ["*"]
        return [
            RemoteSuppression(
                address=address,
                cause="unsubscribed",
                scope=None if tag == "*" else tag,
                created_at=created,
                origin=name,
            )
            for tag in tags
        ]
    code = str(item.get("code") or "")
    return [
        RemoteSuppression(
            address=address,
            cause=_CAUSES[name],
            reason=item.get("error") if isinstance(item.get("error"), str) else None,
            created_at=created,
            temporary=name == "bounces" and code.startswith("4"),
            origin=name,
        )
    ]


def read_page(cursor: str | None, response: httpx.Response) -> SuppressionPage:
    where = _cursor(cursor)
    if response.status_code >= 300:
        raise error_for_status("mailgun", response, response.text[:500])
    try:
        body = load_untrusted(response.content)
    except ValueError:
        raise PayloadError("Mailgun answered a suppression list that is not JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("items"), list):
        raise PayloadError("Mailgun's suppression list has no items array")
    name = where["list"]
    items = tuple(e for item in body["items"] for e in _entries(name, item))
    paging = body.get("paging")
    following = paging.get("next") if isinstance(paging, dict) else None
    following = following if isinstance(following, str) else None
    if body["items"] and following:
        return SuppressionPage(items, json.dumps({"list": name, "url": following}))
    position = _LISTS.index(name) + 1
    if position < len(_LISTS):
        return SuppressionPage(items, json.dumps({"list": _LISTS[position], "url": None}))
    return SuppressionPage(items, None)


def _check(response: httpx.Response) -> None:
    if response.status_code >= 300:
        raise error_for_status("mailgun", response, response.text[:500])


def _record(list_name: str, entry: RemoteSuppression) -> dict[str, Any]:
    record: dict[str, Any] = {"address": entry.address}
    if entry.created_at is not None:
        record["created_at"] = format_datetime(entry.created_at, usegmt=True)
    if list_name == "bounces":
        record["code"] = "550"
        record["error"] = entry.reason or entry.cause
    elif list_name == "unsubscribes":
        record["tags"] = [entry.scope or "*"]
    return record


def push_calls(
    base_url: str, domain: str, headers: Mapping[str, str], entries: Sequence[RemoteSuppression]
) -> tuple[list[PushCall], list[tuple[RemoteSuppression, str]]]:
    by_list: dict[str, list[RemoteSuppression]] = {}
    skipped: list[tuple[RemoteSuppression, str]] = []
    for entry in entries:
        name = _LIST_OF_CAUSE.get(entry.cause)
        if name is None:
            skipped.append((entry, f"Mailgun keeps no list for {entry.cause!r}"))
            continue
        by_list.setdefault(name, []).append(entry)
    calls = []
    for name, listed in by_list.items():
        for start in range(0, len(listed), PAGE_SIZE):
            chunk = listed[start : start + PAGE_SIZE]
            calls.append(
                PushCall(
                    request=httpx.Request(
                        "POST",
                        f"{base_url}/v3/{domain}/{name}",
                        json=[_record(name, e) for e in chunk],
                        headers=headers,
                    ),
                    entries=tuple(chunk),
                    check=_check,
                )
            )
    return calls, skipped
