"""``/readyz`` and ``/metrics``: what monitors and Prometheus read from the app.

``/readyz`` answers the receiver's :meth:`~unimailtrack.webhooks.WebhookReceiver.areadiness`
(the store, every provider's webhook health, orphans, dead letters). ``/metrics`` refreshes
the health gauges from the store, then renders every counter in Prometheus' text exposition
format; without ``prometheus-client`` it answers 404 naming the extra to install.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import suppress

from pydantic_core import to_json
from starlette.requests import Request
from starlette.responses import Response

from unimailtrack import _telemetry as telemetry
from unimailtrack.tracking import StoreError
from unimailtrack.webhooks import WebhookReceiver

__all__ = ["metrics", "readyz"]

Endpoint = Callable[[Request], Awaitable[Response]]


def readyz(receiver: WebhookReceiver) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        status, details = await receiver.areadiness()
        response = Response(to_json(details), status_code=status, media_type="application/json")
        response.headers["cache-control"] = "no-store"
        if status == 503:
            response.headers["retry-after"] = "5"
        return response

    return endpoint


def metrics(receiver: WebhookReceiver) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        if telemetry.prometheus_text() is None:
            return Response(
                "metrics need prometheus-client: pip install 'unimailtrack[prometheus]'\n",
                status_code=404,
                media_type="text/plain",
            )
        health = getattr(receiver.tracker, "aprovider_health", None)
        if health is not None:
            # The counters are worth reading while the store is down; /readyz reports it.
            with suppress(StoreError):
                await health(receiver.providers)  # sets the health gauges
        rendered = telemetry.prometheus_text()
        assert rendered is not None
        body, content_type = rendered
        return Response(body, media_type=content_type, headers={"cache-control": "no-store"})

    return endpoint
