"""SendGrid's suppression lists, read and written: pure request builders and readers.

Reading walks the lists one after the other, each paged by ``offset`` and ``limit`` (at most
500 a page): ``/v3/suppression/bounces``, ``blocks``, ``spam_reports``, ``invalid_emails``,
``unsubscribes`` (the global unsubscribes), then the unsubscribe groups (``/v3/asm/groups``)
and each group's suppressions (``/v3/asm/groups/{id}/suppressions``, one list of addresses).
A cursor is this module's own JSON: the list, the offset, and the groups still to read.

Severity is kept: a bounce whose status is a transient one (4.x.x) and every block are
temporary, so they never become permanent suppressions. A group's unsubscribes concern the
stream named like the group; the global ones every stream.

Writing: SendGrid takes no bounces or spam reports through its API, so every-stream entries go
to the global unsubscribes (``POST /v3/asm/suppressions/global``, 1000 addresses a request),
which make SendGrid refuse the address whatever the mail; stream entries are skipped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
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

PAGE_SIZE: Final = 500
PUSH_SIZE: Final = 1000
_LISTS: Final = ("bounces", "blocks", "spam_reports", "invalid_emails", "unsubscribes")
_CAUSES: Final[Mapping[str, str]] = {
    "bounces": "bounced",
    "blocks": "blocked",
    "spam_reports": "complained",
    "invalid_emails": "invalid",
    "unsubscribes": "unsubscribed",
}


def _cursor(cursor: str | None) -> dict[str, Any]:
    if cursor is None:
        return {"list": _LISTS[0], "offset": 0}
    try:
        value = json.loads(cursor)
    except ValueError:
        raise ValueError(f"not a SendGrid suppression cursor: {cursor!r}") from None
    if not isinstance(value, dict) or "list" not in value:
        raise ValueError(f"not a SendGrid suppression cursor: {cursor!r}")
    return value


def page_request(base_url: str, headers: Mapping[str, str], cursor: str | None) -> httpx.Request:
    where = _cursor(cursor)
    name = where["list"]
    if name in _LISTS:
        return httpx.Request(
            "GET",
            f"{base_url}/v3/suppression/{name}",
            params={"limit": PAGE_SIZE, "offset": int(where["offset"])},
            headers=headers,
        )
    if name == "groups":
        return httpx.Request("GET", f"{base_url}/v3/asm/groups", headers=headers)
    group_id = int(where["groups"][0][0])
    return httpx.Request(
        "GET", f"{base_url}/v3/asm/groups/{group_id}/suppressions", headers=headers
    )


def _time(value: Any) -> datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    return None


def _json(response: httpx.Response) -> Any:
    if response.status_code >= 300:
        raise error_for_status("sendgrid", response, response.text[:500])
    try:
        return load_untrusted(response.content)
    except ValueError:
        raise PayloadError("SendGrid answered a suppression list that is not JSON") from None


def _entry(name: str, item: Any) -> RemoteSuppression | None:
    if not isinstance(item, dict) or not isinstance(item.get("email"), str):
        return None
    status = str(item.get("status") or "")
    return RemoteSuppression(
        address=item["email"],
        cause=_CAUSES[name],
        reason=item.get("reason") if isinstance(item.get("reason"), str) else None,
        created_at=_time(item.get("created")),
        temporary=name == "blocks" or (name == "bounces" and status.startswith("4")),
        origin=name,
    )


def read_page(cursor: str | None, response: httpx.Response) -> SuppressionPage:
    where = _cursor(cursor)
    body = _json(response)
    name = where["list"]
    if name in _LISTS:
        if not isinstance(body, list):
            raise PayloadError(f"SendGrid's {name} list is not a JSON array")
        items = tuple(e for e in (_entry(name, item) for item in body) if e is not None)
        if len(body) >= PAGE_SIZE:
            following: dict[str, Any] = {"list": name, "offset": int(where["offset"]) + len(body)}
        else:
            position = _LISTS.index(name) + 1
            following = (
                {"list": _LISTS[position], "offset": 0}
                if position < len(_LISTS)
                else {"list": "groups"}
            )
        return SuppressionPage(items, json.dumps(following))
    if name == "groups":
        if not isinstance(body, list):
            raise PayloadError("SendGrid's unsubscribe groups are not a JSON array")
        groups = [
            [int(g["id"]), str(g.get("name") or g["id"])]
            for g in body
            if isinstance(g, dict) and isinstance(g.get("id"), int)
        ]
        return SuppressionPage(
            (), json.dumps({"list": "group", "groups": groups}) if groups else None
        )
    groups = where["groups"]
    group_name = str(groups[0][1])
    if not isinstance(body, list):
        raise PayloadError(f"SendGrid's suppressions of group {group_name!r} are not a JSON array")
    items = tuple(
        RemoteSuppression(
            address=address, cause="unsubscribed", scope=group_name, origin=f"group:{groups[0][0]}"
        )
        for address in body
        if isinstance(address, str)
    )
    rest = groups[1:]
    return SuppressionPage(items, json.dumps({"list": "group", "groups": rest}) if rest else None)


def _checker(response: httpx.Response) -> None:
    if response.status_code >= 300:
        raise error_for_status("sendgrid", response, response.text[:500])


def push_calls(
    base_url: str, headers: Mapping[str, str], entries: Sequence[RemoteSuppression]
) -> tuple[list[PushCall], list[tuple[RemoteSuppression, str]]]:
    every = [e for e in entries if e.scope is None]
    skipped = [
        (e, "SendGrid keeps stream unsubscribes in unsubscribe groups; push those by hand")
        for e in entries
        if e.scope is not None
    ]
    check: Callable[[httpx.Response], None] = _checker
    calls = [
        PushCall(
            request=httpx.Request(
                "POST",
                f"{base_url}/v3/asm/suppressions/global",
                json={"recipient_emails": [e.address for e in chunk]},
                headers=headers,
            ),
            entries=tuple(chunk),
            check=check,
        )
        for chunk in (every[i : i + PUSH_SIZE] for i in range(0, len(every), PUSH_SIZE))
    ]
    return calls, skipped
