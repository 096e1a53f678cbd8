"""Webhook endpoints for a Flask application::

    app.register_blueprint(blueprint(receiver), url_prefix="/email")
    # POST /email/webhooks/<provider>

The body is read from the WSGI stream in pieces and refused with 413 once it passes the
receiver's limit (at once when ``Content-Length`` says so), so an oversized request is never
held in memory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unimailtrack.errors import MissingDependency
from unimailtrack.web._body import read_limited
from unimailtrack.webhook_auth import with_peer

if TYPE_CHECKING:
    from flask import Blueprint, Response

    from unimailtrack.webhooks import WebhookReceiver, WebhookResponse

__all__ = ["blueprint"]


def blueprint(receiver: WebhookReceiver, *, name: str = "unimailtrack") -> Blueprint:
    """A blueprint with ``POST`` (and ``GET``/``HEAD``) ``/webhooks/<provider>``; CSRF
    protection does not apply, the signature check is the authentication."""
    try:
        from flask import Blueprint, Response, request
    except ImportError:
        raise MissingDependency("flask", "flask", purpose="unimailtrack.web.flask") from None

    def respond(answer: WebhookResponse) -> Response:
        return Response(answer.body, status=answer.status, headers=dict(answer.headers))

    webhooks = Blueprint(name, __name__)

    @webhooks.route("/webhooks/<provider>", methods=["POST", "GET", "HEAD"])
    def webhook(provider: str) -> Response:
        if request.method != "POST":
            return respond(receiver.probe(provider))
        if not receiver.knows(provider):
            return respond(receiver.not_found(provider))
        declared = request.content_length
        body = None
        if declared is None or declared <= receiver.max_body_size:
            body = read_limited(request.stream, receiver.max_body_size)
        if body is None:
            return respond(receiver.too_large())
        headers = with_peer(dict(request.headers), request.remote_addr)
        return respond(receiver.handle(provider, headers, body))

    return webhooks
