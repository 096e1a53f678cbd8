"""``/u/{token}``: one-click unsubscribe (RFC 8058) in the web app.

``POST`` with the body ``List-Unsubscribe=One-Click`` suppresses the token's address at once:
an ``unsubscribed`` event is stored (its id a digest of the token, so a repeated post is a
duplicate) and ingestion suppresses the address, as it does for a provider's own unsubscribe
events. ``GET`` only shows a page whose button makes that post: mail scanners fetch the
links of a message, and fetching must not unsubscribe anyone. A forged, re-cut or expired
token answers 400 and changes nothing; a store that cannot write answers 503 (the mail client
retries).
"""

from __future__ import annotations

import hashlib
import html
import logging
from datetime import UTC, datetime
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from unimailtrack.errors import StoreError, UnsubscribeTokenError
from unimailtrack.model import EmailEvent, EventType
from unimailtrack.tracking import Tracker
from unimailtrack.unsubscribe import ONE_CLICK_BODY, OneClickUnsubscribe, UnsubscribeRequest

__all__ = ["unsubscribe_route"]

log = logging.getLogger("unimailtrack.web")

PROVIDER = "unimailtrack"
"""The ``provider`` of the events one-click unsubscribes store."""
_MAX_BODY = 1024

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="robots" content="noindex">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 32rem; margin: 4rem auto">
<h1>{title}</h1>{body}</body></html>
"""


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    response = HTMLResponse(_PAGE.format(title=title, body=body), status_code=status)
    response.headers["cache-control"] = "no-store"
    response.headers["referrer-policy"] = "no-referrer"
    return response


def _refused() -> HTMLResponse:
    return _page("This link does not work", "<p>The link is invalid or has expired.</p>", 400)


def unsubscribe_event(request: UnsubscribeRequest, token: str, now: datetime) -> EmailEvent:
    """The ``unsubscribed`` event a one-click post stores."""
    digest = hashlib.sha256(token.encode()).hexdigest()[:32]
    return EmailEvent(
        provider=PROVIDER,
        type=EventType.UNSUBSCRIBED,
        provider_event="list_unsubscribe_one_click",
        recipient=request.address,
        event_id=f"one-click-{digest}",
        timestamp=now,
        tracking_id=request.tracking_id,
        reason=f"one-click unsubscribe from {request.stream}",
        metadata={"stream": request.stream},
        raw={"source": "List-Unsubscribe-Post", "stream": request.stream},
    )


def unsubscribe_route(tracker: Tracker, one_click: OneClickUnsubscribe) -> Route:
    async def endpoint(request: Request) -> Response:
        token = request.path_params["token"]
        try:
            verified = one_click.verify(token)
        except UnsubscribeTokenError as exc:
            log.info("refused an unsubscribe token: %s", exc.why)
            return _refused()
        if request.method != "POST":
            action = html.escape(request.url.path, quote=True)
            return _page(
                "Unsubscribe",
                f"<p>Stop receiving {html.escape(verified.stream)} e-mail at this address?</p>"
                f'<form method="post" action="{action}">'
                '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
                '<button type="submit">Unsubscribe</button></form>',
            )
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > _MAX_BODY:
                return _refused()
        fields = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        if ("List-Unsubscribe", "One-Click") not in fields:
            log.info("refused an unsubscribe post without %s", ONE_CLICK_BODY)
            return _refused()
        try:
            await tracker.aingest([unsubscribe_event(verified, token, datetime.now(UTC))])
        except StoreError:
            response = _page("Please try again", "<p>Please try again in a moment.</p>", 503)
            response.headers["retry-after"] = "5"
            return response
        return _page("Unsubscribed", "<p>You will not receive this e-mail any more.</p>")

    return Route("/u/{token}", endpoint, methods=["GET", "POST"])
