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
import ipaddress
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from unimailtrack import _constants as C
from unimailtrack.errors import ConfigurationError, InvalidQuery, MissingDependency

try:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import ClientDisconnect, Request, cookie_parser
    from starlette.responses import RedirectResponse, Response, StreamingResponse
    from starlette.routing import BaseRoute, Route
    from starlette.types import ASGIApp, Message, Receive, Scope, Send
except ImportError:  # pragma: no cover - exercised in the no-extras CI lane
    raise MissingDependency("starlette", "web", purpose="The unimailtrack web app") from None

from pydantic_core import to_json

from unimailtrack.tracking import Alert, StateChange, StoreError, Tracker
from unimailtrack.unsubscribe import OneClickUnsubscribe
from unimailtrack.web._operate import dead_letter_endpoints, metrics, readyz
from unimailtrack.web._unsubscribe import unsubscribe_route
from unimailtrack.webhook_auth import with_peer
from unimailtrack.webhooks import WebhookReceiver, WebhookResponse

if TYPE_CHECKING:
    from unimailtrack.web._dashboard import Dashboard

SESSION_COOKIE = "umt_session"

__all__ = ["BodyTimeout", "as_response", "build_app", "read_limited", "webhook_endpoint"]

Endpoint = Callable[[Request], Awaitable[Response]]

log = logging.getLogger("unimailtrack.web")

_JSON = "application/json"
_MAX_PAGE = 100
_MAX_ROWS = 1000


# --------------------------------------------------------------------------- webhooks


def as_response(answer: WebhookResponse) -> Response:
    """A Starlette response carrying the receiver's answer."""
    return Response(answer.body, status_code=answer.status, headers=dict(answer.headers))


class BodyTimeout(Exception):
    """The request body did not arrive in full within the time allowed."""

    def __init__(self, received: int) -> None:
        super().__init__(f"the body did not arrive in time ({received} bytes received)")
        self.received = received


class _Cut(Exception):
    """The client went away before its body was complete."""

    def __init__(self, received: int) -> None:
        super().__init__(received)
        self.received = received


async def read_limited(
    request: Request, limit: int, timeout: float | None = C.DEFAULT_BODY_TIMEOUT
) -> bytes | None:
    """The request body, or None as soon as it is known to be larger than ``limit`` bytes:
    from ``Content-Length`` before anything is read, else while the body streams in. Raises
    ``BodyTimeout`` when the whole body has not arrived within ``timeout`` seconds, and
    starlette's ``ClientDisconnect`` when the client goes away before the end."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    return None
    except TimeoutError:
        raise BodyTimeout(len(body)) from None
    except ClientDisconnect:
        raise _Cut(len(body)) from None
    return bytes(body)


def too_slow(timeout: float | None) -> Response:
    """408, and the connection closed: a client trickling its body gets no second chance."""
    response = _problem(408, f"the request body did not arrive within {timeout} seconds")
    response.headers["connection"] = "close"
    return response


async def read_body(request: Request, limit: int, timeout: float | None) -> bytes | Response | None:
    """``read_limited`` for an endpoint: the body, None when it is too large, or the answer
    to give when it came too slowly or not at all (each logged in one line)."""
    try:
        return await read_limited(request, limit, timeout)
    except BodyTimeout as exc:
        log.warning(
            "%s %s: the body did not arrive within %s s (%d bytes received); answered 408",
            request.method,
            request.url.path,
            timeout,
            exc.received,
        )
        return too_slow(timeout)
    except _Cut as exc:
        log.warning(
            "%s %s: the client disconnected after %d bytes of the body; nothing was stored",
            request.method,
            request.url.path,
            exc.received,
        )
        return Response(status_code=400)  # never sent: the client is gone


def webhook_endpoint(
    receiver: WebhookReceiver,
    body_timeout: float | None = C.DEFAULT_BODY_TIMEOUT,
    *,
    concurrency: int = C.WEBHOOK_CONCURRENCY,
) -> Endpoint:
    """The endpoint for ``/webhooks/{provider}``: POST handles a webhook, HEAD and GET answer a
    reachability check; an unknown provider is refused before its body is read, a body that
    takes longer than ``body_timeout`` seconds to arrive is answered 408.

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
        body = await read_body(request, receiver.max_body_size, body_timeout)
        if isinstance(body, Response):
            return body
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


_MAX_TEXT = 1000
"""The longest text a query or path parameter may hold (an address, an id, a category)."""
_MAX_LISTED = 50
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def text_param(raw: str | None, name: str) -> str | None:
    """A text parameter, refused when it holds a control character (NUL cannot even reach
    PostgreSQL) or is longer than any value the tracker keeps."""
    if raw is None:
        return None
    if len(raw) > _MAX_TEXT:
        raise InvalidQuery(name, f"is longer than {_MAX_TEXT} characters")
    if _CONTROL.search(raw):
        raise InvalidQuery(name, "holds a control character")
    return raw


def _param(query: Mapping[str, str], name: str) -> str | None:
    return text_param(query.get(name), name)


def path_param(request: Request, name: str) -> str:
    """A path parameter, checked as ``text_param`` checks."""
    value = text_param(request.path_params[name], name)
    assert value is not None
    return value


def whole_param(query: Mapping[str, str], name: str, default: int, most: int) -> int:
    raw = query.get(name, str(default))
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 12 and 1 <= int(raw) <= most):
        raise InvalidQuery(name, f"must be a whole number from 1 to {most}")
    return int(raw)


def time_param(raw: str | None, name: str) -> datetime | None:
    """An ISO 8601 time (UTC when it names no zone), or None when not given."""
    if text_param(raw, name) is None or raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw)
        return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidQuery(name, "must be an ISO 8601 time, e.g. 2024-01-15T09:30:00Z") from None


def _listed(query: Mapping[str, str], name: str) -> tuple[str, ...] | None:
    """A filter given once as a comma-separated list: ``?status=bounced,dropped``."""
    raw = _param(query, name)
    if raw is None:
        return None
    values = tuple(v for v in raw.split(",") if v)
    if len(values) > _MAX_LISTED:
        raise InvalidQuery(name, f"lists more than {_MAX_LISTED} values")
    return values


def _order(query: Mapping[str, str]) -> bool:
    order = query.get("order", "asc")
    if order not in ("asc", "desc"):
        raise InvalidQuery("order", "must be asc or desc")
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
            "/api/sends/{tracking_id}/events": self.events,
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
            since=time_param(query.get("since"), "since"),
            until=time_param(query.get("until"), "until"),
            status=_listed(query, "status"),
            category=_listed(query, "category"),
            provider=_listed(query, "provider"),
            bulk_id=_param(query, "bulk_id"),
            recipient=_param(query, "recipient"),
            cursor=_param(query, "cursor"),
            limit=whole_param(query, "limit", 50, _MAX_PAGE),
        )
        return _json(page)

    async def send(self, request: Request) -> Response:
        """The state of one send (the fold of its events), its record under ``send`` (null
        while only events are known) and, once recorded, its badge as status and reason:
        a send just made shows ``accepted`` with an empty timeline."""
        tracking_id = path_param(request, "tracking_id")
        record = await self.tracker.asend(tracking_id)
        state = await self.tracker.astate(tracking_id)
        if record is None and not state.timeline:
            return _problem(404, "no send or event is known under this tracking id")
        answer: dict[str, Any] = {f.name: getattr(state, f.name) for f in fields(state)}
        if record is not None:
            answer.update(status=record.status, reason=record.reason)
        return _json({**answer, "send": record})

    async def timeline(self, request: Request) -> Response:
        return _json(await self.tracker.atimeline(path_param(request, "tracking_id")))

    async def events(self, request: Request) -> Response:
        """The timeline in pages: at most ``limit`` events oldest first, with ``next_cursor``
        and ``total``, so that a send opened a million times is read in bounded memory."""
        query = request.query_params
        page = await self.tracker.atimeline_page(
            path_param(request, "tracking_id"),
            cursor=_param(query, "cursor"),
            limit=whole_param(query, "limit", _MAX_PAGE, _MAX_ROWS),
        )
        return _json(page)

    async def history(self, request: Request) -> Response:
        query = request.query_params
        page = await self.tracker.ahistory(
            path_param(request, "address"),
            cursor=_param(query, "cursor"),
            limit=whole_param(query, "limit", 25, _MAX_PAGE),
        )
        return _json(page)

    async def bulk_stats(self, request: Request) -> Response:
        stats = await self.tracker.abulk_stats(path_param(request, "bulk_id"))
        if stats.recipients == 0:
            return _problem(404, "no bulk send is recorded under this id")
        return _json(stats)

    async def bulk_rows(self, request: Request) -> Response:
        query = request.query_params
        page = await self.tracker.abulk_rows(
            path_param(request, "bulk_id"),
            sort=_param(query, "sort") or "date",
            descending=_order(query),
            status=_listed(query, "status"),
            cursor=_param(query, "cursor"),
            limit=whole_param(query, "limit", _MAX_PAGE, _MAX_ROWS),
        )
        return _json(page)

    async def suppressions(self, request: Request) -> Response:
        query = request.query_params
        page = await self.tracker.asuppressions(
            cursor=_param(query, "cursor"), limit=whole_param(query, "limit", _MAX_PAGE, _MAX_ROWS)
        )
        return _json(page)

    async def suppression(self, request: Request) -> Response:
        found = await self.tracker.asuppression(path_param(request, "address"))
        if found is None:
            return _problem(404, "this address is not suppressed")
        return _json(found)

    async def domain_alerts(self, request: Request) -> Response:
        query = request.query_params
        alerts = await self.tracker.adomain_alerts(
            threshold=whole_param(query, "threshold", 3, 1_000_000),
            window=timedelta(hours=whole_param(query, "hours", 24, 24 * 366)),
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
            key: text_param(request.query_params[key], key) or ""
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


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1): hosts only this
    machine reaches."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _beyond_loopback(scope: Scope) -> bool:
    """True when the request came in on an interface other machines reach: the server
    address of the connection is an IP address that is not loopback."""
    server = scope.get("server")
    if not server or not isinstance(server[0], str):
        return False  # a Unix socket, or an in-process client
    try:
        address = ipaddress.ip_address(server[0])
    except ValueError:
        return False
    return not address.is_loopback


_PUBLIC = ("/webhooks/", "/healthz", "/readyz", "/openapi.json", "/static/", "/login", "/u/")
"""What needs no token: the providers' endpoints (their signatures guard them), the health
checks, the API's description, the stylesheet and script, and the login form."""


def _is_public(path: str) -> bool:
    return any(path == p or path.startswith(p) for p in _PUBLIC)


_FORWARDING = (b"forwarded", b"x-forwarded-for", b"x-real-ip")


def _forwarded(scope: Scope) -> bool:
    """True when a proxy says it forwarded the request: it came from elsewhere, even though
    the connection is a loopback one (a proxy on this machine in front of the app)."""
    return any(name in _FORWARDING for name, _ in scope["headers"])


class _Guard:
    """Access to everything but ``_PUBLIC``: with a token, ``Authorization: Bearer <token>``
    or the dashboard's session cookie is required; without one, only connections that arrived
    on loopback, and not forwarded by a proxy, are answered, unless ``open`` says the operator
    put their own authentication in front. A dashboard page without a session sends the
    browser to the login form."""

    def __init__(
        self, app: ASGIApp, token: str | None, open: bool, dashboard: Dashboard | None
    ) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode() if token else None
        self.open = open
        self.dashboard = dashboard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not _is_public(scope["path"]):
            refusal = self.refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope) -> Response | None:
        api = scope["path"].startswith("/api/") or self.dashboard is None
        if self.expected is not None:
            headers = dict(scope["headers"])
            if hmac.compare_digest(headers.get(b"authorization", b""), self.expected):
                return None
            if self.dashboard is not None:
                cookies = cookie_parser(headers.get(b"cookie", b"").decode("latin-1"))
                if self.dashboard.sessions.valid(cookies.get(SESSION_COOKIE)):
                    return None
            if not api and scope["method"] in ("GET", "HEAD"):
                target = scope["path"] + (
                    "?" + scope["query_string"].decode("latin-1") if scope["query_string"] else ""
                )
                root = scope.get("root_path", "")
                return RedirectResponse(f"{root}/login?{urlencode({'next': target})}", 303)
            response = _problem(401, "this API needs Authorization: Bearer <token>")
            response.headers["www-authenticate"] = "Bearer"
            return response
        if self.open or not (_beyond_loopback(scope) or _forwarded(scope)):
            return None
        detail = (
            "this API is served beyond loopback without a token: start it with an API token "
            "(serve --api-token), or api_auth=False (serve --no-api-auth) behind your own "
            "authentication"
        )
        if api or self.dashboard is None:
            return _problem(403, detail)
        return self.dashboard.error_page(
            Request(scope), 403, "Forbidden", detail[0].upper() + detail[1:] + "."
        )


_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_SECURITY_HEADERS = [
    (b"content-security-policy", _CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]


class _SecurityHeaders:
    """A Content-Security-Policy on every answer: only the script and stylesheet this
    package ships may run or apply; no inline script, no other origin, no framing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in message.get("headers", [])}
                extra = [(n, v) for n, v in _SECURITY_HEADERS if n not in names]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, sending)


# --------------------------------------------------------------------------- health


def _health(receiver: WebhookReceiver) -> list[BaseRoute]:
    """``/healthz``; ``/readyz``, with every provider's webhook health, is ``_operate``'s."""
    from unimailtrack import __version__

    async def healthz(request: Request) -> Response:
        """Liveness: the process answers."""
        return _json({"status": "ok", "version": __version__})

    return [Route("/healthz", healthz)]


def build_app(
    receiver: WebhookReceiver,
    *,
    api: bool,
    api_token: str | None,
    api_auth: bool = True,
    heartbeat: float,
    body_timeout: float | None = C.DEFAULT_BODY_TIMEOUT,
    dashboard: bool = False,
    one_click: OneClickUnsubscribe | None = None,
) -> Starlette:
    routes: list[BaseRoute] = [
        Route(
            "/webhooks/{provider}",
            webhook_endpoint(receiver, body_timeout),
            methods=["GET", "POST"],
        ),
        *_health(receiver),
    ]
    routes += [Route("/readyz", readyz(receiver)), Route("/metrics", metrics(receiver))]
    tracker = receiver.tracker
    if one_click is not None:
        if not isinstance(tracker, Tracker):
            raise ConfigurationError("one-click unsubscribe needs the receiver to have a tracker")
        routes.append(unsubscribe_route(tracker, one_click))
    board: Dashboard | None = None
    if (api or dashboard) and isinstance(tracker, Tracker):
        endpoints = _Api(tracker, heartbeat)
        if api:
            routes.extend(endpoints.routes())
            routes.append(Route("/openapi.json", _openapi(endpoints)))
        else:  # the dashboard's live badges need the change stream
            routes.append(Route("/api/changes", _answering(endpoints.changes)))
    if dashboard:
        if not isinstance(tracker, Tracker):
            raise ConfigurationError("the dashboard needs a receiver with a Tracker")
        from unimailtrack.web._dashboard import Dashboard, Sessions

        board = Dashboard(tracker, Sessions(api_token), body_timeout=body_timeout)
        routes.extend(board.routes())
    middleware = [
        Middleware(_SecurityHeaders),
        Middleware(_Guard, token=api_token, open=not api_auth, dashboard=board),
    ]
    handlers = {} if board is None else _html_errors(board)
    app = Starlette(routes=routes, middleware=middleware, exception_handlers=handlers)
    app.state.receiver = receiver
    return app


def _openapi(api: _Api) -> Endpoint:
    from unimailtrack.web._openapi import document

    async def openapi(request: Request) -> Response:
        return _json(document(request.scope.get("root_path", "")))

    return openapi


def _html_errors(board: Dashboard) -> dict[Any, Any]:
    """404 and 405 as dashboard pages, except under ``/api/`` and ``/webhooks/``, which
    answer JSON as before."""

    async def handler(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        detail = getattr(exc, "detail", "")
        if request.url.path.startswith(("/api/", "/webhooks/")):
            return _problem(status, str(detail))
        title = {404: "Not found", 405: "Method not allowed"}.get(status, "Error")
        text = {
            404: f"There is no page at {request.url.path!r}.",
            405: f"{request.method} is not how {request.url.path!r} is used.",
        }.get(status, str(detail))
        return board.error_page(request, status, title, text)

    return {404: handler, 405: handler}
