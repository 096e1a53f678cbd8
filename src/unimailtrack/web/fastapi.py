"""Webhook endpoints for a FastAPI or Starlette application.

Two ways in, both one line::

    app.include_router(router(receiver), prefix="/email")  # POST /email/webhooks/{provider}
    mount(app, receiver, "/email")  # FastAPI or Starlette: the whole app under /email

``router`` adds only the webhook endpoints, as native FastAPI routes (they show up in the
OpenAPI schema); ``mount`` adds everything ``create_app`` serves, the JSON API and the change
stream included. Both read the body as it streams in and refuse it with 413 past the limit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from unimailtrack.errors import MissingDependency

if TYPE_CHECKING:
    from fastapi import APIRouter

    from unimailtrack.webhooks import WebhookReceiver

__all__ = ["mount", "router"]


def router(receiver: WebhookReceiver, *, include_in_schema: bool = True) -> APIRouter:
    """A FastAPI router with ``POST`` (and ``GET``/``HEAD``) ``/webhooks/{provider}``."""
    try:
        from fastapi import APIRouter
    except ImportError:
        raise MissingDependency("fastapi", "fastapi", purpose="unimailtrack.web.fastapi") from None
    from unimailtrack.web._app import webhook_endpoint

    endpoint = webhook_endpoint(receiver)
    webhooks = APIRouter(tags=["webhooks"])
    webhooks.add_api_route(
        "/webhooks/{provider}",
        endpoint,
        methods=["POST"],
        include_in_schema=include_in_schema,
        summary="Receive a provider's webhook (verify, parse, store)",
        name="unimailtrack_webhook",
    )
    # Reachability checks: answered, but no part of the documented API.
    webhooks.add_api_route(
        "/webhooks/{provider}",
        endpoint,
        methods=["GET", "HEAD"],
        include_in_schema=False,
        name="unimailtrack_webhook_check",
    )
    return webhooks


def mount(app: Any, receiver: WebhookReceiver, path: str = "/unimailtrack", **options: Any) -> None:
    """Mount ``create_app(receiver, **options)`` under ``path`` of a FastAPI or Starlette
    ``app``: webhooks at ``{path}/webhooks/{provider}``, the API at ``{path}/api/...``."""
    from unimailtrack.web import create_app

    app.mount(path, create_app(receiver, **options))
