"""Postmark's suppression list of one message stream, read and written: pure builders and
readers (the adapter's base class pages, retries and pushes).

Reading: ``GET /message-streams/{stream}/suppressions/dump``, which Postmark answers whole, with
no paging. A pull asks for one ``SuppressionReason`` at a time (``HardBounce``,
``SpamComplaint``, ``ManualSuppression``), so a pull that fails resumes at the first reason it
had not read; the cursor is this module's JSON naming that reason.

What each entry becomes: a hard bounce and a spam complaint concern the address, and suppress
every stream. A manual suppression says who made it in ``Origin``: ``Recipient`` is the
recipient's unsubscribe, ``Customer`` the sender's own (the API or the dashboard), ``Admin``
Postmark's staff blocking the address (every stream). Postmark keeps the list per message
stream, so an unsubscribe and a sender's suppression concern the stream named like the message
stream (``outbound``, Postmark's default transactional stream, is the default stream). Postmark
keeps no temporary entries: nothing here expires by itself.

Writing: ``POST /message-streams/{stream}/suppressions`` with ``{"Suppressions":
[{"EmailAddress": ...}]}``, at most 50 addresses a request. Postmark records each as a
``ManualSuppression`` of ``Customer`` origin and answers each address with ``Status``
``Suppressed`` or ``Failed`` (with a ``Message``); a failed address is reported as skipped.
Entries of every stream are written, and stream entries only when their stream is the message
stream's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote

import httpx

from unimailtrack._json import load_untrusted
from unimailtrack.adapters.base import (
    PushCall,
    RemoteSuppression,
    SuppressionPage,
    error_for_status,
)
from unimailtrack.errors import PayloadError
from unimailtrack.model import DEFAULT_STREAM

__all__ = ["DEFAULT_MESSAGE_STREAM", "PUSH_SIZE", "REASONS", "page_request", "push_calls"]

PROVIDER: Final = "postmark"
REASONS: Final = ("HardBounce", "SpamComplaint", "ManualSuppression")
"""The reasons Postmark suppresses for, one request each."""
PUSH_SIZE: Final = 50
DEFAULT_MESSAGE_STREAM: Final = "outbound"
_ORIGIN_CAUSES: Final[Mapping[str, str]] = {
    "Recipient": "unsubscribed",
    "Customer": "manual",
    "Admin": "blocked",
}


def stream_scope(message_stream: str) -> str:
    """Our stream that a Postmark message stream's unsubscribes concern."""
    return DEFAULT_STREAM if message_stream == DEFAULT_MESSAGE_STREAM else message_stream


def _reason(cursor: str | None) -> str:
    if cursor is None:
        return REASONS[0]
    try:
        value = json.loads(cursor)
    except ValueError:
        value = None
    if not isinstance(value, dict) or value.get("reason") not in REASONS:
        raise ValueError(f"not a Postmark suppression cursor: {cursor!r}")
    return str(value["reason"])


def _stream_path(base_url: str, message_stream: str) -> str:
    return f"{base_url}/message-streams/{quote(message_stream, safe='')}/suppressions"


def page_request(
    base_url: str, message_stream: str, headers: Mapping[str, str], cursor: str | None
) -> httpx.Request:
    return httpx.Request(
        "GET",
        _stream_path(base_url, message_stream) + "/dump",
        params={"SuppressionReason": _reason(cursor)},
        headers=headers,
    )


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _entry(item: Any, message_stream: str) -> RemoteSuppression | None:
    if not isinstance(item, dict) or not isinstance(item.get("EmailAddress"), str):
        return None
    reason = item.get("SuppressionReason")
    found = item.get("Origin")
    origin = found if isinstance(found, str) else ""
    if reason == "HardBounce":
        cause, scope = "bounced", None
    elif reason == "SpamComplaint":
        cause, scope = "complained", None
    elif reason == "ManualSuppression":
        cause = _ORIGIN_CAUSES.get(origin, "manual")
        scope = None if cause == "blocked" else stream_scope(message_stream)
    else:
        return None
    told = f"{reason} by {origin}" if origin else str(reason)
    return RemoteSuppression(
        address=item["EmailAddress"],
        cause=cause,
        scope=scope,
        reason=f"on Postmark's suppression list of the {message_stream!r} stream ({told})",
        created_at=_time(item.get("CreatedAt")),
        origin=str(reason),
    )


def _error(response: httpx.Response) -> Exception:
    try:
        body = load_untrusted(response.content)
    except ValueError:
        body = None
    message = body.get("Message") if isinstance(body, dict) else None
    return error_for_status(
        PROVIDER, response, message if isinstance(message, str) else response.text[:500]
    )


def read_page(message_stream: str, cursor: str | None, response: httpx.Response) -> SuppressionPage:
    reason = _reason(cursor)
    if response.status_code >= 300:
        raise _error(response)
    try:
        body = load_untrusted(response.content)
    except ValueError:
        raise PayloadError("Postmark answered a suppression dump that is not JSON") from None
    found = body.get("Suppressions") if isinstance(body, dict) else None
    if not isinstance(found, list):
        raise PayloadError("Postmark's suppression dump has no Suppressions array")
    # Asked for one reason, the dump holds only that one; should it hold others, each is kept
    # by the page of its own reason only, so that no entry is read twice.
    items = tuple(
        e
        for e in (_entry(item, message_stream) for item in found)
        if e is not None and e.origin == reason
    )
    position = REASONS.index(reason) + 1
    following = json.dumps({"reason": REASONS[position]}) if position < len(REASONS) else None
    return SuppressionPage(items, following)


def _checker(
    chunk: Sequence[RemoteSuppression],
) -> Callable[[httpx.Response], list[tuple[RemoteSuppression, str]]]:
    def check(response: httpx.Response) -> list[tuple[RemoteSuppression, str]]:
        if response.status_code >= 300:
            raise _error(response)
        try:
            body = load_untrusted(response.content)
        except ValueError:
            raise PayloadError("Postmark answered a suppression request that is not JSON") from None
        answers = body.get("Suppressions") if isinstance(body, dict) else None
        if not isinstance(answers, list):
            raise PayloadError("Postmark's answer to a suppression request has no Suppressions")
        failed: dict[str, str] = {}
        for answer in answers:
            if not isinstance(answer, dict) or answer.get("Status") == "Suppressed":
                continue
            address = answer.get("EmailAddress")
            if isinstance(address, str):
                message = answer.get("Message")
                failed[address.lower()] = (
                    f"Postmark refused it: {message}"
                    if isinstance(message, str) and message
                    else "Postmark refused it"
                )
        return [(e, failed[e.address.lower()]) for e in chunk if e.address.lower() in failed]

    return check


def push_calls(
    base_url: str,
    message_stream: str,
    headers: Mapping[str, str],
    entries: Sequence[RemoteSuppression],
) -> tuple[list[PushCall], list[tuple[RemoteSuppression, str]]]:
    ours = stream_scope(message_stream)
    taken: list[RemoteSuppression] = []
    skipped: list[tuple[RemoteSuppression, str]] = []
    for entry in entries:
        if entry.scope is not None and entry.scope != ours:
            skipped.append(
                (
                    entry,
                    f"Postmark's list is per message stream; {message_stream!r} does not carry "
                    f"the {entry.scope!r} stream",
                )
            )
            continue
        taken.append(entry)
    calls = []
    url = _stream_path(base_url, message_stream)
    for start in range(0, len(taken), PUSH_SIZE):
        chunk = tuple(taken[start : start + PUSH_SIZE])
        calls.append(
            PushCall(
                request=httpx.Request(
                    "POST",
                    url,
                    json={"Suppressions": [{"EmailAddress": e.address} for e in chunk]},
                    headers=headers,
                ),
                entries=chunk,
                check=_checker(chunk),
            )
        )
    return calls, skipped
