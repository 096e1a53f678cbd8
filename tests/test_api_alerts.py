"""``/api/alerts`` and alert events on ``/api/changes``, on a real port."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from live_server import running
from unimailtrack import BounceKind, EmailEvent, EventType
from unimailtrack.adapters import MemoryAdapter
from unimailtrack.tracking import Tracker
from unimailtrack.web import create_app
from unimailtrack.webhooks import WebhookReceiver


def blocks(prefix: str) -> list[EmailEvent]:
    at = datetime.now(UTC) - timedelta(minutes=15)
    return [
        EmailEvent(
            provider="memory",
            type=EventType.BOUNCED,
            provider_event="bounce",
            recipient=f"{prefix}{n}@gmail.com",
            event_id=f"{prefix}-{n}",
            timestamp=at,
            bounce=BounceKind.BLOCK,
            reason="550 5.7.1 unusual rate of unsolicited mail",
        )
        for n in range(3)
    ]


@pytest.fixture
def site() -> Iterator[tuple[httpx.Client, Tracker]]:
    with Tracker.open("sqlite:///:memory:") as tracker:
        app = create_app(WebhookReceiver({"memory": MemoryAdapter()}, tracker), heartbeat=0.05)
        with running(app) as url, httpx.Client(base_url=url, timeout=10) as client:
            yield client, tracker


def test_api_alerts_evaluates_and_lists(site: tuple[httpx.Client, Tracker]) -> None:
    client, tracker = site
    assert client.get("/api/alerts").json() == []
    tracker.ingest(blocks("a"))
    [alert] = client.get("/api/alerts").json()
    assert (alert["kind"], alert["level"], alert["scope"], alert["sequence"]) == (
        "mailbox_block",
        "warn",
        "google",
        1,
    )
    assert alert["closed_at"] is None
    assert client.get("/api/alerts", params={"all": "1"}).json()[0]["id"] == alert["id"]
    assert client.get("/api/alerts", params={"all": "maybe"}).status_code == 400


def test_the_change_stream_carries_alert_changes(site: tuple[httpx.Client, Tracker]) -> None:
    client, tracker = site
    with client.stream("GET", "/api/changes") as stream:
        lines = stream.iter_lines()
        assert next(lines) == "retry: 3000"

        def raise_one() -> None:
            tracker.ingest(blocks("b"))
            tracker.evaluate_alerts()

        worker = threading.Thread(target=raise_one)
        worker.start()
        events = []
        for line in lines:
            if line.startswith("event: "):
                events.append(line.removeprefix("event: "))
            if line.startswith("data: ") and events[-1:] == ["alert"]:
                assert '"kind":"mailbox_block"' in line
                break
        worker.join()
    assert events[-1] == "alert"
