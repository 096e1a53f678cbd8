"""Live updates: state changes handed to subscribers once they are committed.

Inside a process, a :class:`Hub` calls every subscribed callback with each change, after the
transaction that made it has committed. Across processes (PostgreSQL), changes travel as
``NOTIFY`` payloads (:func:`encode_changes`) and the receiving tracker's listener hands them to
its own hub; a process skips the payloads it sent itself, since it delivered those already.

Live updates tell a screen to refresh a badge; the store stays the truth. A subscriber that
was not listening when a change happened reads it from the store like anyone else.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import logging
import threading
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Self

from unimailtrack.model import DeliveryStatus
from unimailtrack.tracking._records import StateChange, from_micros, to_micros

__all__ = ["ChangeStream", "Hub", "decode_changes", "encode_changes"]

log = logging.getLogger("unimailtrack.tracking")

Callback = Callable[[StateChange], object]

_MAX_PAYLOAD = 7900
"""PostgreSQL refuses a NOTIFY payload of 8000 bytes or more."""


class Hub:
    """The subscribers of one tracker. Thread-safe: changes may be published from any
    thread (the caller's, a worker's, the listener's)."""

    def __init__(self, on_first_subscriber: Callable[[], None]) -> None:
        self._callbacks: dict[int, Callback] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._on_first = on_first_subscriber
        self._started = False

    def subscribe(self, callback: Callback) -> Callable[[], None]:
        """Call ``callback(change)`` for every change from now on; returns the function that
        unsubscribes (calling it again does nothing)."""
        with self._lock:
            if not self._started:
                self._on_first()
                self._started = True
            key = next(self._ids)
            self._callbacks[key] = callback

        def unsubscribe() -> None:
            with self._lock:
                self._callbacks.pop(key, None)

        return unsubscribe

    def publish(self, changes: Sequence[StateChange]) -> None:
        """Hand ``changes`` to every subscriber. A subscriber that raises is logged and does
        not stop the others: the changes are committed whatever a subscriber thinks."""
        if not changes:
            return
        with self._lock:
            callbacks = list(self._callbacks.values())
        for callback in callbacks:
            for change in changes:
                try:
                    callback(change)
                except Exception:
                    log.exception("a state change subscriber failed on %s", change.tracking_id)


class ChangeStream:
    """An async iterator of state changes, subscribed from the moment it is created.

    Use it as ``async with tracker.changes() as changes: async for change in changes: ...``
    (or iterate it directly and ``await changes.aclose()`` when done). Changes wait in an
    unbounded queue until read.
    """

    def __init__(self, hub: Hub) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[StateChange] = asyncio.Queue()
        self._unsubscribe = hub.subscribe(self._deliver)

    def _deliver(self, change: StateChange) -> None:
        if self._loop.is_closed():
            self._unsubscribe()
            return
        self._loop.call_soon_threadsafe(self._queue.put_nowait, change)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> StateChange:
        return await self._queue.get()

    async def aclose(self) -> None:
        self._unsubscribe()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __del__(self) -> None:
        # Also when __init__ failed (no running loop): there is nothing to undo then.
        unsubscribe = getattr(self, "_unsubscribe", None)
        if unsubscribe is not None:
            unsubscribe()


# --------------------------------------------------------------------------- across processes


def _change_fields(change: StateChange) -> list[Any]:
    return [
        change.tracking_id,
        change.recipient,
        change.bulk_id,
        None if change.previous is None else change.previous.value,
        change.status.value,
        change.reason,
        change.event_id,
        to_micros(change.timestamp),
    ]


def _ascii_item(fields: list[Any]) -> bytes:
    return json.dumps(fields, separators=(",", ":")).encode("ascii")


def _item_encoder() -> Callable[[list[Any]], bytes]:
    """orjson's encoder when installed (``unimailtrack[fast]``), as for stored events; a
    value orjson refuses goes through the standard library."""
    try:
        import orjson
    except ImportError:
        return _ascii_item
    dumps = orjson.dumps

    def item(fields: list[Any]) -> bytes:
        try:
            return dumps(fields)
        except TypeError:
            return _ascii_item(fields)

    return item


_encode_item = _item_encoder()


def _item(change: StateChange) -> bytes:
    return _encode_item(_change_fields(change))


def encode_changes(origin: str, changes: Sequence[StateChange]) -> list[str]:
    """``changes`` as NOTIFY payloads under the size limit (counted in UTF-8 bytes), each
    naming its ``origin``."""
    prefix = b'{"o":' + _ascii_item([origin])[1:-1] + b',"c":['
    budget = _MAX_PAYLOAD - len(prefix) - 2
    payloads: list[str] = []
    items: list[bytes] = []
    used = 0
    for change in changes:
        item = _item(change)
        if len(item) >= budget:
            item = _fitted(change, budget)
        if items and used + len(item) >= budget:
            payloads.append((prefix + b",".join(items) + b"]}").decode())
            items, used = [], 0
        items.append(item)
        used += len(item) + 1
    if items:
        payloads.append((prefix + b",".join(items) + b"]}").decode())
    return payloads


def _fitted(change: StateChange, budget: int) -> bytes:
    """A change whose reason alone would overflow a payload keeps the start of its reason,
    at most 1,000 characters and as many as fit (escaped, a character may take 12 bytes)."""
    reason = change.reason or ""
    keep = min(len(reason), 1000)
    while True:
        item = _item(dataclasses.replace(change, reason=reason[:keep]))
        if len(item) < budget or not keep:
            return item
        keep //= 2


def decode_changes(payload: str) -> tuple[str, list[StateChange]]:
    """The origin and the changes of a payload made by :func:`encode_changes`."""
    data = json.loads(payload)
    changes = [
        StateChange(
            tracking_id=tid,
            recipient=recipient,
            bulk_id=bulk_id,
            previous=None if previous is None else DeliveryStatus(previous),
            status=DeliveryStatus(status),
            reason=reason,
            event_id=event_id,
            timestamp=from_micros(at),
        )
        for tid, recipient, bulk_id, previous, status, reason, event_id, at in data["c"]
    ]
    return data["o"], changes
