"""``/readyz``, ``/metrics`` and ``/api/dead-letters``: what operators read from the app.

``/readyz`` answers the receiver's :meth:`~unimailtrack.webhooks.WebhookReceiver.areadiness`
(the store, every provider's webhook health, orphans, dead letters). ``/metrics`` refreshes
the health gauges from the store, then renders every counter in Prometheus' text exposition
format; without ``prometheus-client`` it answers 404 naming the extra to install.
``/api/dead-letters`` lists the bodies kept because they could not be read (newest first,
``?provider=`` and ``?limit=``), ``/api/dead-letters/{id}`` shows one with its headers and
body (as text, or base64 when it is not UTF-8).
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any

from pydantic_core import to_json
from starlette.requests import Request
from starlette.responses import Response

from unimailtrack import _telemetry as telemetry
from unimailtrack.errors import InvalidQuery
from unimailtrack.tracking import DeadLetter, StoreError, Tracker
from unimailtrack.webhooks import WebhookReceiver

__all__ = ["dead_letter_endpoints", "metrics", "readyz"]

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


def dead_letter_endpoints(tracker: Tracker) -> dict[str, Endpoint]:
    async def listing(request: Request) -> Response:
        query = request.query_params
        raw = query.get("limit", "100")
        if not raw.isdigit() or not 1 <= int(raw) <= 1000:
            raise InvalidQuery("limit", "must be a whole number from 1 to 1000")
        from unimailtrack.web._app import text_param  # _app imports this module

        provider = text_param(query.get("provider"), "provider")
        letters = await tracker.adead_letters(provider=provider, limit=int(raw))
        return _json({"items": [_summary(letter) for letter in letters]})

    async def one(request: Request) -> Response:
        raw = request.path_params["letter_id"]
        letter = await tracker.adead_letter(int(raw)) if raw.isdigit() else None
        if letter is None:
            return _json({"error": "no dead letter has this id"}, 404)
        answer = {**_summary(letter), "headers": dict(letter.headers)}
        try:
            answer["body"] = letter.body.decode("utf-8")
        except UnicodeDecodeError:
            answer["body_base64"] = base64.b64encode(letter.body).decode("ascii")
        return _json(answer)

    return {"/api/dead-letters": listing, "/api/dead-letters/{letter_id}": one}


def _summary(letter: DeadLetter) -> dict[str, Any]:
    return {
        "id": letter.id,
        "provider": letter.provider,
        "received_at": letter.received_at,
        "reason": letter.reason,
        "bytes": len(letter.body),
    }


def _json(value: Any, status: int = 200) -> Response:
    return Response(to_json(value), status_code=status, media_type="application/json")
