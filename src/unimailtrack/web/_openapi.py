"""The OpenAPI 3.1 description of the JSON API, written by hand from the endpoints in
``_app``; ``tests/test_dashboard.py`` checks that it names every route the app serves and
every query parameter each one reads."""

from __future__ import annotations

from typing import Any, Final

from unimailtrack._version import __version__

__all__ = ["ROUTES", "document"]

_TEXT: Final = {"type": "string", "maxLength": 1000}
_CURSOR: Final = {
    "name": "cursor",
    "in": "query",
    "schema": _TEXT,
    "description": "next_cursor from the previous page",
}


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": schema or _TEXT, "description": description}


def _limit(default: int, most: int) -> dict[str, Any]:
    schema = {"type": "integer", "minimum": 1, "maximum": most, "default": default}
    return _query("limit", "how many items on one page", schema)


def _path(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": _TEXT,
        "description": description,
    }


_STATUS_LIST: Final = _query("status", "one badge or a comma-separated list of badges")
_TIME: Final = {"type": "string", "format": "date-time"}

ROUTES: Final[dict[str, dict[str, Any]]] = {
    "/webhooks/{provider}": {
        "methods": ("get", "post"),
        "summary": "A provider's webhook (POST); GET and HEAD answer reachability checks",
        "parameters": [_path("provider", "sendgrid, mailgun, ses, memory, ...")],
        "auth": False,
    },
    "/healthz": {"summary": "Liveness: 200 with the version", "parameters": [], "auth": False},
    "/readyz": {
        "summary": "Readiness: 200 while the store answers, else 503",
        "parameters": [],
        "auth": False,
    },
    "/openapi.json": {"summary": "This document", "parameters": [], "auth": False},
    "/api/sends": {
        "summary": "The Track Emails report: sends newest first",
        "parameters": [
            _query("since", "sent at or after (ISO 8601; UTC when no zone)", _TIME),
            _query("until", "sent before (ISO 8601)", _TIME),
            _STATUS_LIST,
            _query("category", "one category or a comma-separated list"),
            _query("provider", "one provider or a comma-separated list"),
            _query("bulk_id", "sends of one bulk send"),
            _query("recipient", "sends to one address"),
            _CURSOR,
            _limit(50, 100),
        ],
    },
    "/api/sends/{tracking_id}": {
        "summary": "One send: its badge, reason, events and record",
        "parameters": [_path("tracking_id", "the send's tracking id")],
    },
    "/api/sends/{tracking_id}/timeline": {
        "summary": "One send's events, oldest first, all of them",
        "parameters": [_path("tracking_id", "the send's tracking id")],
    },
    "/api/sends/{tracking_id}/events": {
        "summary": "One send's events, oldest first, a page at a time, with a total",
        "parameters": [_path("tracking_id", "the send's tracking id"), _CURSOR, _limit(100, 1000)],
    },
    "/api/recipients/{address}/history": {
        "summary": "A contact's Emails tab: newest first, with a total",
        "parameters": [_path("address", "the e-mail address"), _CURSOR, _limit(25, 100)],
    },
    "/api/bulk/{bulk_id}": {
        "summary": "A bulk send's analytics row",
        "parameters": [_path("bulk_id", "the bulk send's id")],
    },
    "/api/bulk/{bulk_id}/rows": {
        "summary": "A bulk send's per-recipient rows",
        "parameters": [
            _path("bulk_id", "the bulk send's id"),
            _query(
                "sort",
                "what to sort by",
                {"enum": ["name", "email", "status", "date", "sent_at"], "default": "date"},
            ),
            _query("order", "the direction", {"enum": ["asc", "desc"], "default": "asc"}),
            _STATUS_LIST,
            _CURSOR,
            _limit(100, 1000),
        ],
    },
    "/api/suppressions": {
        "summary": "The suppression list, newest first",
        "parameters": [_CURSOR, _limit(100, 1000)],
    },
    "/api/suppressions/{address}": {
        "summary": "Why an address is suppressed (404 when it is not)",
        "parameters": [_path("address", "the e-mail address")],
    },
    "/api/domain-alerts": {
        "summary": "Domains where several recipients bounced: a likely block",
        "parameters": [
            _query(
                "threshold",
                "different recipients that must have bounced",
                {"type": "integer", "minimum": 1, "default": 3},
            ),
            _query(
                "hours",
                "the window, in hours",
                {"type": "integer", "minimum": 1, "maximum": 8784, "default": 24},
            ),
        ],
    },
    "/api/alerts": {
        "summary": "Sender-reputation and mailbox-provider alerts, evaluated now",
        "parameters": [
            _query(
                "all",
                "1 for every alert kept, closed ones included; 0 (the default) for the open ones",
                {"type": "integer", "enum": [0, 1], "default": 0},
            )
        ],
    },
    "/api/dead-letters": {
        "summary": "Webhook bodies that could not be read, newest first",
        "parameters": [
            _query("provider", "only this provider's"),
            _limit(100, 1000),
        ],
    },
    "/api/dead-letters/{letter_id}": {
        "summary": "One dead letter with its headers and body (404 when there is none)",
        "parameters": [_path("letter_id", "the dead letter's id")],
    },
    "/metrics": {
        "summary": "The counters in Prometheus' text format (needs unimailtrack[prometheus])",
        "parameters": [],
        "content": "text/plain",
    },
    "/api/changes": {
        "summary": "Server-Sent Events: one `state` event per badge change",
        "parameters": [
            _query("tracking_id", "only this send's changes"),
            _query("bulk_id", "only this bulk send's changes"),
            _query("recipient", "only changes about this address"),
        ],
        "content": "text/event-stream",
    },
}


def document(root: str = "") -> dict[str, Any]:
    """The OpenAPI document, with ``root`` (where the app is mounted) as its server."""
    paths: dict[str, Any] = {}
    for path, route in ROUTES.items():
        responses: dict[str, Any] = {
            "200": {
                "description": "the answer",
                "content": {route.get("content", "application/json"): {}},
            },
            "400": {"description": 'a malformed parameter: {"error": "..."}'},
        }
        if route.get("auth", True):
            responses["401"] = {"description": "no valid token"}
            responses["403"] = {"description": "no token configured, and not on loopback"}
        operation = {
            "summary": route["summary"],
            "parameters": route["parameters"],
            "responses": responses,
        }
        if route.get("auth", True):
            operation["security"] = [{"bearer": []}]
        paths[path] = dict.fromkeys(route.get("methods", ("get",)), operation)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "unimailtrack",
            "version": __version__,
            "description": "Webhook endpoints and the read-only JSON API over the tracker.",
        },
        "servers": [{"url": root or "/"}],
        "paths": paths,
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
