"""The web face of unimailtrack: an ASGI app and thin helpers for existing applications.

``create_app(receiver)`` (contract) is a Starlette app with the webhook endpoints, a read-only
JSON API over the receiver's tracker, a Server-Sent Events stream of badge changes and, with
``dashboard=True``, the server-rendered dashboard; run it
with any ASGI server, or ``unimailtrack serve``. ``unimailtrack.web.fastapi``,
``unimailtrack.web.flask`` and ``unimailtrack.web.django`` add the webhook endpoints to an
application built on those frameworks. Each framework is imported on first use; a missing one
raises ``MissingDependency`` naming the extra to install.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from unimailtrack.webhooks import WebhookReceiver

__all__ = ["create_app"]


def create_app(
    receiver: WebhookReceiver,
    *,
    api: bool = True,
    api_token: str | None = None,
    api_auth: bool = True,
    heartbeat: float = 15.0,
    unsubscribe_secret: str | Sequence[str] | None = None,
    public_url: str | None = None,
    unsubscribe_streams: str | Sequence[str] | None = None,
    unsubscribe_expiry: timedelta | None = None,
    env: Mapping[str, str] | None = None,
    body_timeout: float | None = 30.0,
    dashboard: bool = False,
    queue: Any = None,
) -> Starlette:
    """The ASGI app for ``receiver`` (contract).

    ``POST /webhooks/{provider}`` takes webhooks for every configured provider (HEAD and GET
    answer 200 for reachability checks). With ``api`` and a tracker on the receiver, read-only
    JSON under ``/api/`` answers the product's questions and ``/api/changes`` streams badge
    changes as Server-Sent Events, a comment every ``heartbeat`` seconds keeping proxies from
    closing an idle stream. ``api_token`` requires ``Authorization: Bearer <token>`` on
    ``/api/``: the API shows recipients' addresses, the webhooks must stay public. Without a
    token the API answers only connections that arrived on a loopback address (403 beyond),
    unless ``api_auth=False`` says that authentication in front of the app guards it.

    A request body that has not arrived in full within ``body_timeout`` seconds is answered
    408 and its connection closed; a client that goes away mid-body is logged in one line.
    A malformed query or path parameter is answered 400 with the reason.

    ``dashboard`` adds the server-rendered screens (``/`` Track Emails, ``/sends/{id}``,
    ``/contacts/{address}``, ``/bulk/{id}``, ``/suppressions``, ``/alerts``; docs/dashboard.md),
    protected like the API: the bearer token, or the session cookie of its login form. Every
    app answers ``/healthz`` and ``/readyz``; with ``api``, ``/openapi.json`` describes it.

    With an unsubscribe secret (``unsubscribe_secret``, else ``UNIMAILTRACK_UNSUBSCRIBE_SECRET``
    in ``env``, by default the process environment) ``POST /u/{token}`` is one-click
    unsubscribe (RFC 8058); without one ``/u/`` answers 404. See docs/deliverability.md.

    ``queue`` (a ``unimailtrack.queue.Queue`` or a queue URL) makes the receiver enqueue
    verified requests instead of storing them (``WebhookReceiver.use_queue``; docs/scale.md).
    """
    from unimailtrack.unsubscribe import DEFAULT_EXPIRY, OneClickUnsubscribe
    from unimailtrack.web._app import build_app

    one_click = OneClickUnsubscribe.configured(
        os.environ if env is None else env,
        secret=unsubscribe_secret,
        public_url=public_url,
        streams=unsubscribe_streams,
        expiry=unsubscribe_expiry or DEFAULT_EXPIRY,
    )
    if queue is not None:
        receiver.use_queue(queue)
    return build_app(
        receiver,
        api=api,
        api_token=api_token,
        api_auth=api_auth,
        heartbeat=heartbeat,
        body_timeout=body_timeout,
        dashboard=dashboard,
        one_click=one_click,
    )
