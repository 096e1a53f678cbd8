"""The dashboard: server-rendered pages over the tracker's public API, and nothing else.

Every screen part is one tracker call (one program on the store), so a page costs the queries
behind it and no more. Templates and the one stylesheet and script ship inside the package
(``web/templates``, ``web/static``); Jinja2 escapes everything a page shows, and the
Content-Security-Policy lets only the shipped script run. Forms carry a CSRF token: an HMAC of
a random cookie under a key the browser never sees.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, Final
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from unimailtrack.errors import InvalidQuery, MissingDependency

try:
    import jinja2
except ImportError:  # pragma: no cover - exercised in the no-extras CI lane
    raise MissingDependency("jinja2", "web", purpose="The unimailtrack dashboard") from None

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from unimailtrack.model import DeliveryStatus, Suppression
from unimailtrack.tracking import StoreError, Tracker
from unimailtrack.web._app import (
    SESSION_COOKIE,
    path_param,
    read_body,
    text_param,
    time_param,
    whole_param,
)

__all__ = [
    "CSRF_COOKIE",
    "SESSION_COOKIE",
    "Dashboard",
    "Sessions",
    "badge_label",
    "badge_tone",
]

CSRF_COOKIE: Final = "umt_csrf"
SESSION_LIFETIME: Final = 12 * 3600
"""Seconds a login lasts."""
HISTORY_PAGE: Final = 25
TIMELINE_PAGE: Final = 100
"""Events of a send's timeline shown at first, and added by each "Load more"."""
REPORT_PAGE: Final = 50
BULK_PAGE: Final = 100
SUPPRESSION_PAGE: Final = 100
_MAX_FORM: Final = 16 * 1024

_LABELS: Final = {
    DeliveryStatus.ACCEPTED: "sent",
    DeliveryStatus.PROCESSED: "sent",
    DeliveryStatus.DEFERRED: "delayed",
    DeliveryStatus.COMPLAINED: "spam reported",
}
_TONES: Final = {
    DeliveryStatus.DELIVERED: "green",
    DeliveryStatus.OPENED: "green",
    DeliveryStatus.CLICKED: "green",
    DeliveryStatus.DEFERRED: "amber",
    DeliveryStatus.BOUNCED: "red",
    DeliveryStatus.DROPPED: "red",
    DeliveryStatus.REJECTED: "red",
    DeliveryStatus.FAILED: "red",
    DeliveryStatus.COMPLAINED: "red",
}
"""The colours people know: sent grey, delivered green, delayed amber, failures red.
``static/dashboard.js`` holds the same two tables for badges that change live."""

SUPPRESSION_LABELS: Final = {
    "address": "Address",
    "cause": "Cause",
    "reason": "Reason",
    "created_at": "Since",
    "event_id": "Event",
    "tracking_id": "Send",
}
"""Headings for the ``Suppression`` fields known today; any other field the model gains is
shown under its own name, so the suppression screens follow the model."""


def badge_label(status: DeliveryStatus | str) -> str:
    """What a badge says: ``sent`` for accepted, ``delayed`` for deferred, ..."""
    value = DeliveryStatus(status)
    return _LABELS.get(value, value.value)


def badge_tone(status: DeliveryStatus | str) -> str:
    """The badge's colour: grey, green, amber or red."""
    return _TONES.get(DeliveryStatus(status), "grey")


def _when(moment: datetime | None) -> str:
    if moment is None:
        return ""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _plain(value: Any) -> str:
    """Any field value as text (escaped by the template like everything else)."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return _when(value)
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def suppression_fields() -> list[tuple[str, str]]:
    """(field name, heading) for every field of the current ``Suppression`` model, in the
    model's order (a pydantic model or a dataclass alike)."""
    if dataclasses.is_dataclass(Suppression):
        names = [f.name for f in dataclasses.fields(Suppression)]
    else:
        names = list(Suppression.model_fields)
    return [
        (name, SUPPRESSION_LABELS.get(name, name.replace("_", " ").capitalize())) for name in names
    ]


# --------------------------------------------------------------------------- sessions, CSRF


class Sessions:
    """Login sessions and CSRF tokens, both HMACs under keys derived from one secret: the API
    token when there is one (so every process behind a load balancer agrees), else a random
    key of this process."""

    def __init__(self, token: str | None) -> None:
        root = token.encode() if token else secrets.token_bytes(32)
        self.token = token
        self._session_key = hashlib.sha256(b"unimailtrack session\0" + root).digest()
        self._csrf_key = hashlib.sha256(b"unimailtrack csrf\0" + root).digest()

    def _mac(self, key: bytes, text: str) -> str:
        return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()

    def issue(self, now: float | None = None) -> str:
        issued = str(int(time.time() if now is None else now))
        return f"{issued}.{self._mac(self._session_key, issued)}"

    def valid(self, cookie: str | None, now: float | None = None) -> bool:
        if not cookie or self.token is None:
            return False
        issued, _, mac = cookie.partition(".")
        if not (issued.isascii() and issued.isdigit() and len(issued) <= 12):
            return False
        if not hmac.compare_digest(mac, self._mac(self._session_key, issued)):
            return False
        age = (time.time() if now is None else now) - int(issued)
        return 0 <= age <= SESSION_LIFETIME

    def token_matches(self, given: str) -> bool:
        return self.token is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def csrf_for(self, cookie: str) -> str:
        return self._mac(self._csrf_key, cookie)

    def csrf_valid(self, cookie: str | None, given: str | None) -> bool:
        if not cookie or not given:
            return False
        return hmac.compare_digest(given, self.csrf_for(cookie))


# --------------------------------------------------------------------------- errors as pages


class _PageError(Exception):
    """Answer with the error page: ``status`` and what to tell the reader."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail


def _missing(what: str, value: str) -> _PageError:
    return _PageError(404, "Not found", f"No {what} is known under {value!r}.")


# --------------------------------------------------------------------------- the screens

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class _Sort:
    key: str
    label: str


_BULK_SORTS: Final = (
    _Sort("name", "Name"),
    _Sort("email", "Email"),
    _Sort("status", "Status"),
    _Sort("date", "Date"),
)


class Dashboard:
    """The pages, over one tracker; parameters and bodies are checked as the JSON API checks
    them."""

    def __init__(self, tracker: Tracker, sessions: Sessions, *, body_timeout: float | None) -> None:
        self.tracker = tracker
        self.sessions = sessions
        self.body_timeout = body_timeout
        self.env = jinja2.Environment(
            loader=jinja2.PackageLoader("unimailtrack.web", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(when=_when, plain=_plain, label=badge_label, tone=badge_tone)
        self.env.globals.update(
            statuses=[s.value for s in DeliveryStatus],
            suppression_fields=suppression_fields,
            quote=lambda text: quote(str(text), safe=""),
        )

    def routes(self) -> list[BaseRoute]:
        pages: list[tuple[str, Handler, list[str]]] = [
            ("/", self.report, ["GET"]),
            ("/sends/{tracking_id}", self.send, ["GET"]),
            ("/contacts/{address}", self.contact, ["GET"]),
            ("/bulk/{bulk_id}", self.bulk, ["GET"]),
            ("/suppressions", self.suppressions, ["GET"]),
            ("/suppressions/lift", self.lift, ["POST"]),
            ("/suppressions/correct", self.correct, ["POST"]),
            ("/alerts", self.alerts, ["GET"]),
            ("/login", self.login, ["GET", "POST"]),
            ("/logout", self.logout, ["POST"]),
        ]
        routes: list[BaseRoute] = [
            Route(path, self._answering(handler), methods=methods)
            for path, handler, methods in pages
        ]
        static = StaticFiles(packages=[("unimailtrack.web", "static")])
        routes.append(Mount("/static", app=static, name="static"))
        return routes

    # ------------------------------------------------------------------ rendering

    def render(
        self, request: Request, template: str, code: int = 200, /, **context: Any
    ) -> HTMLResponse:
        cookie = request.cookies.get(CSRF_COOKIE)
        fresh = cookie is None or len(cookie) != 43
        if fresh:
            cookie = secrets.token_urlsafe(32)
        assert cookie is not None
        context.setdefault("changes", "")
        html = self.env.get_template(template).render(
            root=request.scope.get("root_path", ""),
            csrf=self.sessions.csrf_for(cookie),
            signed_in=self.sessions.valid(request.cookies.get(SESSION_COOKIE)),
            path=request.url.path,
            **context,
        )
        response = HTMLResponse(html, status_code=code)
        response.headers["cache-control"] = "no-store"
        if fresh:
            response.set_cookie(
                CSRF_COOKIE,
                cookie,
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
            )
        return response

    def error_page(self, request: Request, status: int, title: str, detail: str) -> HTMLResponse:
        return self.render(request, "error.html", status, title=title, detail=detail)

    def _answering(self, handler: Handler) -> Handler:
        async def answered(request: Request) -> Response:
            try:
                return await handler(request)
            except _PageError as exc:
                return self.error_page(request, exc.status, exc.title, exc.detail)
            except ValueError as exc:  # InvalidQuery, InvalidAddress, a bad form
                return self.error_page(request, 400, "Bad request", str(exc))
            except StoreError:
                page = self.error_page(
                    request,
                    503,
                    "The store is unavailable",
                    "The tracking store did not answer; try again in a few seconds.",
                )
                page.headers["retry-after"] = "5"
                return page

        return answered

    # ------------------------------------------------------------------ forms

    async def _form(self, request: Request) -> dict[str, str]:
        """The posted form, once its CSRF token and origin hold; refused with 403 otherwise,
        before anything is changed."""
        body = await read_body(request, _MAX_FORM, self.body_timeout)
        if isinstance(body, Response):
            raise _PageError(body.status_code, "Request refused", "The form did not arrive.")
        if body is None:
            raise _PageError(413, "Too large", "This form is larger than any form here.")
        try:
            fields = dict(
                parse_qsl(
                    body.decode("utf-8"),
                    keep_blank_values=True,
                    strict_parsing=False,
                    max_num_fields=20,
                )
            )
        except (UnicodeDecodeError, ValueError):
            raise InvalidQuery("form", "cannot be read") from None
        origin = request.headers.get("origin")
        if (origin is not None and not _same_host(origin, request)) or not self.sessions.csrf_valid(
            request.cookies.get(CSRF_COOKIE), fields.get("csrf")
        ):
            raise _PageError(
                403,
                "Form refused",
                "This form did not come from this dashboard, or it expired: reload the page "
                "and send it again. Nothing was changed.",
            )
        return fields

    def _field(self, fields: Mapping[str, str], name: str) -> str:
        value = text_param(fields.get(name), name)
        if not value:
            raise InvalidQuery(name, "is required")
        return str(value)

    # ------------------------------------------------------------------ the pages

    async def report(self, request: Request) -> Response:
        """Track Emails: every send, newest first, filtered, a keyset page at a time."""
        query = request.query_params
        filters = {
            name: text_param(query.get(name), name) or None
            for name in ("status", "category", "provider", "q", "since", "until")
        }
        cursor = text_param(query.get("cursor"), "cursor") or None
        page = await self.tracker.areport(
            since=time_param(filters["since"], "since"),
            until=time_param(filters["until"], "until"),
            status=filters["status"],
            category=filters["category"],
            provider=filters["provider"],
            search=filters["q"],
            cursor=cursor,
            limit=REPORT_PAGE,
        )
        kept = {k: v for k, v in filters.items() if v}
        next_url = None
        if page.next_cursor is not None:
            next_url = "?" + urlencode({**kept, "cursor": page.next_cursor})
        return self.render(
            request,
            "report.html",
            page=page,
            filters=filters,
            next_url=next_url,
            first_url=("?" + urlencode(kept)) if cursor else None,
        )

    async def send(self, request: Request) -> Response:
        """Tracking: one send's badge, record and timeline, oldest first, a page at a time
        ("Load more" adds the next): a send opened a million times costs one page."""
        tracking_id = path_param(request, "tracking_id")
        query = request.query_params
        cursor = text_param(query.get("cursor"), "cursor") or None
        page = await self.tracker.atimeline_page(tracking_id, cursor=cursor, limit=TIMELINE_PAGE)
        next_url = None
        if page.next_cursor is not None:
            next_url = "?" + urlencode({"cursor": page.next_cursor})
        context: dict[str, Any] = {"page": page, "next_url": next_url}
        if query.get("part") == "rows":
            return self.render(request, "send_rows.html", **context)
        record = await self.tracker.asend(tracking_id)
        if record is not None:
            status, reason = record.status, record.reason
        else:  # known only from its events: the badge their fold left in the state row
            badge = await self.tracker.abadge(tracking_id)
            if badge is None or page.total == 0:
                raise _missing("send or event", tracking_id)
            status, reason = badge.status, badge.reason
        return self.render(
            request,
            "send.html",
            changes=urlencode({"tracking_id": tracking_id}),
            tracking_id=tracking_id,
            record=record,
            status=status,
            reason=reason,
            first=cursor is None,
            **context,
        )

    async def contact(self, request: Request) -> Response:
        """Emails: a contact's history newest first, 25 at a time, and its suppression."""
        address = path_param(request, "address")
        query = request.query_params
        cursor = text_param(query.get("cursor"), "cursor") or None
        rows_only = query.get("part") == "rows"
        page = await self.tracker.ahistory(address, cursor=cursor, limit=HISTORY_PAGE)
        next_url = None
        if page.next_cursor is not None:
            next_url = "?" + urlencode({"cursor": page.next_cursor})
        context: dict[str, Any] = {"address": address, "page": page, "next_url": next_url}
        if rows_only:
            return self.render(request, "contact_rows.html", **context)
        suppression = await self.tracker.asuppression(address)
        if page.total == 0 and suppression is None:
            raise _missing("contact", address)
        return self.render(
            request, "contact.html", suppression=suppression, first=cursor is None, **context
        )

    async def bulk(self, request: Request) -> Response:
        """Mail Analytics: the totals row and the recipient panel, sorted and filtered."""
        bulk_id = path_param(request, "bulk_id")
        query = request.query_params
        sort = text_param(query.get("sort"), "sort") or "date"
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise InvalidQuery("order", "must be asc or desc")
        status = text_param(query.get("status"), "status") or None
        cursor = text_param(query.get("cursor"), "cursor") or None
        rows_only = query.get("part") == "rows"
        rows = await self.tracker.abulk_rows(
            bulk_id,
            sort=sort,
            descending=order == "desc",
            status=status,
            cursor=cursor,
            limit=BULK_PAGE,
        )
        view = {"sort": sort, "order": order, **({"status": status} if status else {})}
        next_url = None
        if rows.next_cursor is not None:
            next_url = "?" + urlencode({**view, "cursor": rows.next_cursor})
        context: dict[str, Any] = {"bulk_id": bulk_id, "rows": rows, "next_url": next_url}
        if rows_only:
            return self.render(request, "bulk_rows.html", **context)
        stats = await self.tracker.abulk_stats(bulk_id)
        if stats.recipients == 0:
            raise _missing("bulk send", bulk_id)
        sorts = [
            (
                s,
                "?"
                + urlencode(
                    {
                        **view,
                        "sort": s.key,
                        "order": "desc" if s.key == sort and order == "asc" else "asc",
                    }
                ),
            )
            for s in _BULK_SORTS
        ]
        return self.render(
            request,
            "bulk.html",
            changes=urlencode({"bulk_id": bulk_id}),
            stats=stats,
            sort=sort,
            order=order,
            status=status,
            sorts=sorts,
            **context,
        )

    async def suppressions(self, request: Request) -> Response:
        query = request.query_params
        cursor = text_param(query.get("cursor"), "cursor") or None
        page = await self.tracker.asuppressions(cursor=cursor, limit=SUPPRESSION_PAGE)
        next_url = None
        if page.next_cursor is not None:
            next_url = "?" + urlencode({"cursor": page.next_cursor})
        done = query.get("done")
        notice = None
        subject = text_param(query.get("address"), "address") or ""
        if done == "lifted":
            notice = f"Lifted the suppression of {subject}."
        elif done == "corrected":
            notice = f"Corrected {subject}: its suppression is lifted."
        elif done == "none":
            notice = f"{subject} was not suppressed; nothing changed."
        return self.render(
            request, "suppressions.html", page=page, next_url=next_url, notice=notice
        )

    async def lift(self, request: Request) -> Response:
        fields = await self._form(request)
        address = self._field(fields, "address")
        lifted = await self.tracker.aunsuppress(address)
        done = "lifted" if lifted is not None else "none"
        return self._back(request, done, address)

    async def correct(self, request: Request) -> Response:
        fields = await self._form(request)
        old, new = self._field(fields, "address"), self._field(fields, "new")
        lifted = await self.tracker.acorrect_address(old, new)
        return self._back(request, "corrected" if lifted is not None else "none", old)

    def _back(self, request: Request, done: str, address: str) -> Response:
        root = request.scope.get("root_path", "")
        where = f"{root}/suppressions?" + urlencode({"done": done, "address": address})
        return RedirectResponse(where, status_code=303)

    async def alerts(self, request: Request) -> Response:
        """Domain alerts today; each further kind of alert is one more section."""
        query = request.query_params
        threshold = whole_param(query, "threshold", 3, 1_000_000)
        hours = whole_param(query, "hours", 24, 24 * 366)
        domain = await self.tracker.adomain_alerts(
            threshold=threshold, window=timedelta(hours=hours)
        )
        sections = [("domain", "Domain alerts", domain)]
        return self.render(
            request, "alerts.html", sections=sections, threshold=threshold, hours=hours
        )

    # ------------------------------------------------------------------ signing in

    async def login(self, request: Request) -> Response:
        target = _local(request.query_params.get("next"))
        needs = {"needs_token": self.sessions.token is not None}
        if request.method == "GET":
            return self.render(request, "login.html", target=target, failed=False, **needs)
        fields = await self._form(request)
        if not self.sessions.token_matches(fields.get("token", "")):
            return self.render(request, "login.html", 401, target=target, failed=True, **needs)
        response = RedirectResponse(request.scope.get("root_path", "") + target, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            self.sessions.issue(),
            max_age=SESSION_LIFETIME,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    async def logout(self, request: Request) -> Response:
        await self._form(request)
        response = RedirectResponse(request.scope.get("root_path", "") + "/login", 303)
        response.delete_cookie(SESSION_COOKIE)
        return response


def _same_host(origin: str, request: Request) -> bool:
    """Whether the browser's ``Origin`` names this site (``null`` never does). The scheme is
    not compared: a proxy that ends TLS in front of the app changes it, not the host."""
    host = request.headers.get("host", "")
    return bool(host) and urlsplit(origin).netloc.lower() == host.lower()


def _local(target: str | None) -> str:
    """Where to go after signing in: a path on this site, never another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
