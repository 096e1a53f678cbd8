"""Webhook endpoints for a Django project, in ``urls.py``::

    from unimailtrack.web.django import webhook_urls

    urlpatterns = [
        path("email/", include(webhook_urls(receiver))),   # POST /email/webhooks/<provider>
    ]

The view is exempt from CSRF (the signature check is the authentication) and reads the body
in pieces, refusing it with 413 once it passes the receiver's limit. Django's own
``DATA_UPLOAD_MAX_MEMORY_SIZE`` does not apply: the receiver's ``max_body_size`` does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from unimailtrack.errors import MissingDependency
from unimailtrack.web._body import read_limited
from unimailtrack.webhook_auth import with_peer

if TYPE_CHECKING:
    from django.http import HttpRequest, HttpResponse
    from django.urls import URLPattern

    from unimailtrack.webhooks import WebhookReceiver, WebhookResponse

__all__ = ["webhook_urls", "webhook_view"]


def _django() -> None:
    try:
        import django  # noqa: F401
    except ImportError:
        raise MissingDependency("django", "django", purpose="unimailtrack.web.django") from None


def webhook_view(receiver: WebhookReceiver) -> Callable[[HttpRequest, str], HttpResponse]:
    """The view for ``webhooks/<str:provider>``: POST handles a webhook, GET and HEAD answer
    a provider's reachability check."""
    _django()
    from django.http import HttpResponse
    from django.views.decorators.csrf import csrf_exempt

    def respond(answer: WebhookResponse) -> HttpResponse:
        return HttpResponse(answer.body, status=answer.status, headers=dict(answer.headers))

    def view(request: HttpRequest, provider: str) -> HttpResponse:
        if request.method != "POST":
            if request.method not in ("GET", "HEAD"):
                return HttpResponse(status=405, headers={"allow": "GET, HEAD, POST"})
            return respond(receiver.probe(provider))
        if not receiver.knows(provider):
            return respond(receiver.not_found(provider))
        declared = request.META.get("CONTENT_LENGTH") or "0"
        body = None
        if declared.isdigit() and int(declared) <= receiver.max_body_size:
            body = read_limited(request, receiver.max_body_size)
        if body is None:
            return respond(receiver.too_large())
        headers = with_peer(request.headers, request.META.get("REMOTE_ADDR"))
        return respond(receiver.handle(provider, headers, body))

    exempt: Callable[[HttpRequest, str], HttpResponse] = csrf_exempt(view)
    return exempt


def webhook_urls(receiver: WebhookReceiver) -> list[URLPattern]:
    """URL patterns to ``include()``: ``webhooks/<provider>`` for every configured provider."""
    _django()
    from django.urls import path

    return [path("webhooks/<str:provider>", webhook_view(receiver), name="unimailtrack-webhook")]
