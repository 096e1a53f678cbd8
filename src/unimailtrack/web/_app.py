"""The Starlette app behind ``unimailtrack.web.create_app``.

Webhook bodies are read as they stream in and refused with 413 the moment they pass the
receiver's limit (or at once when ``Content-Length`` says so), before the rest is read. The
JSON API calls the tracker's async methods (SQLite works in its own thread, PostgreSQL
asynchronously), so no request holds the event loop. The change stream turns
``tracker.changes()`` into Server-Sent Events, one ``state`` event per badge change.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from typing import Any

from unimailtrack import _constants as C
from unimailtrack.errors import ConfigurationError, MissingDependency

try:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import BaseRoute, Route
    from starlette.types import ASGIApp, Receive, Scope, Send
except ImportError:  # pragma: no cover - exercised in the no-extras CI lane
    raise MissingDependency("starlette", "web", purpose="The unimailtrack web app") from None

from pydantic_core import to_json

from unimailtrack.tracking import Alert, StateChange, StoreError, Tracker
from unimailtrack.unsubscribe import OneClickUnsubscribe
from unimailtrack.web._operate import dead_letter_endpoints, metrics, readyz
from unimailtrack.web._unsubscribe import unsubscribe_route
from unimailtrack.webhook_auth import with_peer
from unimailtrack.webhooks import WebhookReceiver, WebhookResponse

__all__ = ["as_response", "build_app", "read_limited", "webhook_endpoint"]

Endpoint = Callable[[Request], Awaitable[Response]]

_JSON = "application/json"
_MAX_PAGE = 100
_MAX_ROWS = 1000


# --------------------------------------------------------------------------- webhooks


def as_response(answer: WebhookResponse) -> Response:
    """A Starlette response carrying the receiver's answer."""
    return Response(answer.body, status_code=answer.status, headers=dict(answer.headers))


async def read_limited(request: Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it is known to be larger than ``limit`` bytes:
    from ``Content-Length`` before anything is read, else while the body streams in."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def webhook_endpoint(
    receiver: WebhookReceiver, *, concurrency: int = C.WEBHOOK_CONCURRENCY
) -> Endpoint:
    """The endpoint for ``/webhooks/{provider}``: POST handles a webhook, HEAD and GET answer a
    reachability check; an unknown provider is refused before its body is read.

    At most ``concurrency`` bodies are verified, parsed and stored at once; the others wait
    their turn in the event loop, in order. Verifying and parsing are CPU work under one
    interpreter lock: eight batches parsed at once take as long as eight in a row, but each
    holds its memory and its caller waits for all eight, while the threads fight over the
    lock. Two at a time keep one parsing while another is in the database (which releases
    the lock)."""
    gate: asyncio.Semaphore | None = None

    async def endpoint(request: Request) -> Response:
        provider = request.path_params["provider"]
        if request.method != "POST":
            return as_response(receiver.probe(provider))
        if not receiver.knows(provider):
            return as_response(receiver.not_found(provider))
        body = await read_limited(request, receiver.max_body_size)
        if body is None:
            return as_response(receiver.too_large())
        # The connection's peer, for adapters that check where a request came from; a header
        # of that name sent by the client is dropped first.
        peer = request.client.host if request.client else None
        nonlocal gate
        if gate is None:  # made in the event loop that serves
            gate = asyncio.Semaphore(max(1, concurrency))
        async with gate:
            return as_response(
                await receiver.ahandle(provider, with_peer(request.headers, peer), body)
            )

    return endpoint


# --------------------------------------------------------------------------- the JSON API


def _json(value: Any, status: int = 200) -> Response:
    return Response(to_json(value), status_code=status, media_type=_JSON)


def _problem(status: int, detail: str) -> Response:
    return _json({"error": detail}, status)


def _whole(query: Mapping[str, str], name: str, default: int, most: int) -> int:
    raw = query.get(name, str(default))
    if not raw.isdigit() or not 1 <= int(raw) <= most:
        raise ValueError(f"{name} must be a whole number from 1 to {most}")
    return int(raw)


def _time(query: Mapping[str, str], name: str) -> datetime | None:
    raw = query.get(name)
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"{name} must be an ISO 8601 time, e.g. 2024-01-15T09:30:00Z") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _listed(query: Mapping[str, str], name: str) -> tuple[str, ...] | None:
    """A filter given once as a comma-separated list: ``?status=bounced,dropped``."""
    raw = query.get(name)
    return None if raw is None else tuple(v for v in raw.split(",") if v)


def _order(query: Mapping[str, str]) -> bool:
    order = query.get("order", "asc")
    if order not in ("asc", "desc"):
        raise ValueError("order must be asc or desc")
    return order == "desc"


class _Api:
    """The read-only endpoints over one tracker, through its async methods."""

    def __init__(self, tracker: Tracker, heartbeat: float) -> None:
        self.tracker = tracker
        self.heartbeat = heartbeat

    def routes(self) -> list[BaseRoute]:
        endpoints: dict[str, Endpoint] = {
            "/api/sends": self.report,
            "/api/sends/{tracking_id}": self.send,
            "/api/sends/{tracking_id}/timeline": self.timeline,
            "/api/recipients/{address}/history": self.history,
            "/api/bulk/{bulk_id}": self.bulk_stats,
            "/api/bulk/{bulk_id}/rows": self.bulk_rows,
            "/api/suppressions": self.suppressions,
            "/api/suppressions/{address}": self.suppression,
            "/api/domain-alerts": self.domain_alerts,
            "/api/alerts": self.alerts,
            "/api/changes": self.changes,
            **dead_letter_endpoints(self.tracker),
        }
        return [Route(path, _answering(endpoint)) for path, endpoint in endpoints.items()]

    async def report(self, request: Request) -> Response:
        query = request.query_params
        page = await self.tracker.areport(
            since=_time(query, "since"),
            until=_time(query, "until"),
            status=_listed(query, "status"),
            category=_listed(query, "category"),
            provider=_listed(query, "provider"),
            bulk_id=query.get("bulk_id"),
            recipient=query.get("recipient"),
            cursor=query.get("cursor"),
            limit=_whole(query, "limit", 50, _MAX_PAGE),
        )
        return _json(page)

    async def send(self, request: Request) -> Response:
        """The state of one send (the fold of its events), its record under ``send`` (null
        while only events are known) and, once recorded, its badge as status and reason:
        a send just made shows ``accepted`` with an empty timeline."""
        tracking_id = request.path_params["tracking_id"]
        record = await self.tracker.asend(tracking_id)
        state = await self.tracker.astate(tracking_id)
        if record is None and not state.timeline:
            return _problem(404, "no send or event is known under this tracking id")
        answer: dict[str, Any] = {f.name: getattr(state, f.name) for f in fields(state)}
        if record is not None:
            answer.update(status=record.status, reason=record.reason)
        return _json({**answer, "send": record})

    async def timeline(self, request: Request) -> Response:
        return _json(await self.tracker.atimeline(request.path_params["tracking_id"]))

    async def history(self, request: Request) -> Response:
        query = request.query_params
        page = await self.tracker.ahistory(
            request.path_params["address"],
            cursor=query.get("cursor"),
            limit=_whole(query, "limit", 25, _MAX_PAGE),
        )
        return _json(page)

    async def bulk_stats(self, request: Request) -> Response:
        stats = await self.tracker.abulk_stats(request.path_params["bulk_id"])
        if stats.recipients == 0:
            return _problem(404, "no bulk send is recorded under this id")
        return _json(stats)

    async def bulk_rows(self, request: Request) -> Response:
        query = request.query_params
        page = await self.tracker.abulk_rows(
            request.path_params["bulk_id"],
            sort=query.get("sort", "date"),
            descending=_order(query),
            status=_listed(query, "status"),
            cursor=query.get("cursor"),
            limit=_whole(query, "limit", _MAX_PAGE, _MAX_ROWS),
        )
        return _json(page)

    async def suppressions(self, request: Request) -> Response:
        query = request.query_params
        page = await self.tracker.asuppressions(
            cursor=query.get("cursor"), limit=_whole(query, "limit", _MAX_PAGE, _MAX_ROWS)
        )
        return _json(page)

    async def suppression(self, request: Request) -> Response:
        found = await self.tracker.asuppression(request.path_params["address"])
        if found is None:
            return _problem(404, "this address is not suppressed")
        return _json(found)

    async def domain_alerts(self, request: Request) -> Response:
        query = request.query_params
        alerts = await self.tracker.adomain_alerts(
            threshold=_whole(query, "threshold", 3, 1_000_000),
            window=timedelta(hours=_whole(query, "hours", 24, 24 * 366)),
        )
        return _json(alerts)

    async def alerts(self, request: Request) -> Response:
        """The sender-reputation alerts, evaluated now: the open ones, or every one kept
        with ``?all=1``."""
        every = request.query_params.get("all", "0")
        if every not in ("0", "1"):
            raise ValueError("all must be 0 or 1")
        return _json(await self.tracker.aalerts(open_only=every == "0"))

    async def changes(self, request: Request) -> Response:
        """``text/event-stream``: one ``state`` event per badge change, filtered by any of
        ``tracking_id``, ``bulk_id`` and ``recipient``; without a filter, an ``alert``
        event per alert that opens, moves or closes in this process too."""
        wanted = {
            key: request.query_params[key]
            for key in ("tracking_id", "bulk_id", "recipient")
            if key in request.query_params
        }
        return StreamingResponse(
            self._events(wanted),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    async def _events(self, wanted: Mapping[str, str]) -> AsyncIterator[bytes]:
        async with self.tracker.changes(alerts=not wanted) as stream:
            yield b"retry: 3000\n\n"
            while True:
                try:
                    change = await asyncio.wait_for(anext(stream), self.heartbeat)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if isinstance(change, Alert):
                    yield b"event: alert\ndata: " + to_json(change) + b"\n\n"
                elif all(getattr(change, key) == value for key, value in wanted.items()):
                    yield _sse(change)


def _sse(change: StateChange) -> bytes:
    head = f"id: {change.event_id}\n".encode() if change.event_id else b""
    return head + b"event: state\ndata: " + to_json(change) + b"\n\n"


def _answering(endpoint: Endpoint) -> Endpoint:
    """``endpoint``, answering 400 for a query it cannot use (a bad limit, cursor, sort or
    status) and 503 while the store is unavailable."""

    async def answered(request: Request) -> Response:
        try:
            return await endpoint(request)
        except ValueError as exc:
            return _problem(400, str(exc))
        except StoreError:
            response = _problem(503, "the tracking store is unavailable; retry later")
            response.headers["retry-after"] = "5"
            return response

    return answered


# --------------------------------------------------------------------------- access to /api


class _BearerToken:
    """Requires ``Authorization: Bearer <token>`` on ``/api/``; webhooks stay public."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/api/"):
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                response = _problem(401, "this API needs Authorization: Bearer <token>")
                response.headers["www-authenticate"] = "Bearer"
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def build_app(
    receiver: WebhookReceiver,
    *,
    api: bool,
    api_token: str | None,
    heartbeat: float,
    one_click: OneClickUnsubscribe | None = None,
) -> Starlette:
    routes: list[BaseRoute] = [
        Route("/webhooks/{provider}", webhook_endpoint(receiver), methods=["GET", "POST"])
    ]
    routes += [Route("/readyz", readyz(receiver)), Route("/metrics", metrics(receiver))]
    tracker = receiver.tracker
    if one_click is not None:
        if not isinstance(tracker, Tracker):
            raise ConfigurationError("one-click unsubscribe needs the receiver to have a tracker")
        routes.append(unsubscribe_route(tracker, one_click))
    if api and isinstance(tracker, Tracker):
        routes.extend(_Api(tracker, heartbeat).routes())
    middleware = [Middleware(_BearerToken, token=api_token)] if api_token else []
    app = Starlette(routes=routes, middleware=middleware)
    app.state.receiver = receiver
    return app
