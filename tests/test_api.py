"""The read-only JSON API and the change stream, on a real port over a real tracker: a bulk
invite is sent through the memory provider, its webhooks posted over HTTP, and every screen's
question asked of the API."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from starlette.testclient import TestClient

from live_server import running
from unimailtrack import Email, EmailEvent, EventType, Mailer, SendResult
from unimailtrack.adapters import MemoryAdapter
from unimailtrack.tracking import Tracker
from unimailtrack.web import create_app
from unimailtrack.webhooks import WebhookReceiver

GUESTS = {
    "ann@example.com": "bounce",
    "bob@example.org": "opens-and-clicks",
    "cyd@example.net": "delivered",
}
TOKEN = "s3cret-api-token"


@dataclass
class Site:
    api: httpx.Client
    memory: MemoryAdapter
    tracker: Tracker
    result: SendResult

    def post_scenario(self, recipient: str, scenario: str) -> None:
        tracking_id = self.result.for_recipient(recipient).tracking_id
        body, headers = self.memory.webhook(self.memory.scenario(tracking_id, scenario))
        answer = self.api.post("/webhooks/memory", content=body, headers=headers)
        assert answer.status_code == 200, answer.text


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    memory = MemoryAdapter()
    with Tracker.open("sqlite:///:memory:") as tracker:
        mailer = Mailer(memory, tracker=tracker)
        first = mailer.send(_invite("Save the date", list(GUESTS)))
        mailer.send(_invite("You're invited", ["ann@example.com"]))
        receiver = WebhookReceiver(mailer, tracker)
        app = create_app(receiver, heartbeat=0.05)
        with running(app) as url, httpx.Client(base_url=url, timeout=10) as client:
            site = Site(client, memory, tracker, first)
            for address, scenario in GUESTS.items():
                site.post_scenario(address, scenario)
            yield site


def _invite(subject: str, to: list[str]) -> Email:
    return Email(
        sender="Events <events@example.com>",
        to=to,
        subject=subject,
        text="Join us",
        category="rsvp_invite",
        metadata={"event_id": "gala"},
    )


def tid(site: Site, address: str) -> str:
    return site.result.for_recipient(address).tracking_id


# --------------------------------------------------------------------------- the questions


def test_a_send_answers_its_badge_reason_and_timeline(site: Site) -> None:
    state = site.api.get(f"/api/sends/{tid(site, 'ann@example.com')}").json()
    assert state["status"] == "bounced"
    assert state["reason"] == "550 5.1.1 The email account does not exist"
    assert [e["type"] for e in state["timeline"]] == ["processed", "bounced"]

    timeline = site.api.get(f"/api/sends/{tid(site, 'bob@example.org')}/timeline").json()
    assert [e["type"] for e in timeline] == ["processed", "delivered", "opened", "clicked"]
    assert timeline[-1]["url"] == "https://example.com/rsvp"


def test_a_send_answers_its_record(site: Site) -> None:
    answer = site.api.get(f"/api/sends/{tid(site, 'bob@example.org')}").json()
    assert answer["send"]["subject"] == "Save the date"
    assert (answer["send"]["recipient"], answer["send"]["status"]) == ("bob@example.org", "clicked")
    assert answer["send"]["metadata"] == {"event_id": "gala"}


def test_a_send_without_events_yet_answers_its_record_and_an_empty_timeline(site: Site) -> None:
    newest = site.api.get("/api/recipients/ann@example.com/history", params={"limit": 1}).json()
    tracking_id = newest["items"][0]["tracking_id"]
    answer = site.api.get(f"/api/sends/{tracking_id}")
    assert answer.status_code == 200
    state = answer.json()
    assert (state["status"], state["reason"], state["timeline"]) == ("accepted", None, [])
    assert (state["send"]["subject"], state["send"]["sent_at"]) == (
        "You're invited",
        newest["items"][0]["sent_at"],
    )
    assert site.api.get(f"/api/sends/{tracking_id}/timeline").json() == []


def test_events_without_a_recorded_send_answer_with_no_record(site: Site) -> None:
    early = "e" * 32
    site.tracker.ingest(
        [
            EmailEvent(
                provider="memory",
                type=EventType.DELIVERED,
                provider_event="delivered",
                recipient="dee@example.com",
                event_id="api-early-1",
                timestamp=datetime.now(UTC),
                tracking_id=early,
            )
        ]
    )
    state = site.api.get(f"/api/sends/{early}").json()
    assert (state["status"], state["send"]) == ("delivered", None)
    assert [e["type"] for e in state["timeline"]] == ["delivered"]


def test_an_unknown_send_is_404(site: Site) -> None:
    assert site.api.get("/api/sends/ffffffffffffffffffffffffffffffff").status_code == 404


def test_a_recipient_s_history_pages_newest_first_with_a_total(site: Site) -> None:
    first = site.api.get("/api/recipients/ann@example.com/history", params={"limit": 1}).json()
    assert first["total"] == 2
    assert [r["subject"] for r in first["items"]] == ["You're invited"]
    assert first["items"][0]["status"] == "accepted"
    second = site.api.get(
        "/api/recipients/ann@example.com/history",
        params={"limit": 1, "cursor": first["next_cursor"]},
    ).json()
    assert [(r["subject"], r["status"]) for r in second["items"]] == [("Save the date", "bounced")]
    assert second["items"][0]["metadata"] == {"event_id": "gala"}
    assert second["next_cursor"] is None


def test_a_bulk_send_answers_its_analytics_and_sorted_filtered_rows(site: Site) -> None:
    bulk = site.result.bulk_id
    stats = site.api.get(f"/api/bulk/{bulk}").json()
    assert (stats["sent"], stats["delivered"], stats["opened"], stats["clicked"]) == (3, 2, 1, 1)
    assert stats["bounced"] == 1

    rows = site.api.get(f"/api/bulk/{bulk}/rows", params={"sort": "email", "order": "desc"}).json()
    assert [r["recipient"] for r in rows["items"]] == sorted(GUESTS, reverse=True)
    bounced = site.api.get(f"/api/bulk/{bulk}/rows", params={"status": "bounced"}).json()
    assert [r["recipient"] for r in bounced["items"]] == ["ann@example.com"]
    assert site.api.get("/api/bulk/no-such-bulk").status_code == 404


def test_the_track_emails_report_filters_by_status(site: Site) -> None:
    page = site.api.get("/api/sends", params={"status": "bounced,clicked"}).json()
    assert sorted(r["recipient"] for r in page["items"]) == ["ann@example.com", "bob@example.org"]


def test_the_suppression_list_and_one_address_on_it(site: Site) -> None:
    listed = site.api.get("/api/suppressions").json()
    assert [s["address"] for s in listed["items"]] == ["ann@example.com"]
    one = site.api.get("/api/suppressions/ann@EXAMPLE.com").json()
    assert (one["cause"], one["tracking_id"]) == ("bounced", tid(site, "ann@example.com"))
    assert site.api.get("/api/suppressions/cyd@example.net").status_code == 404


def test_domain_alerts_answer_a_list(site: Site) -> None:
    # The scenarios' bounce is dated a few seconds ahead; this one is inside the window.
    earlier = datetime.now(UTC) - timedelta(minutes=1)
    event = site.memory.event(
        tid(site, "ann@example.com"), "bounced", at=earlier, bounce="hard", reason="550 5.1.1"
    )
    body, headers = site.memory.webhook([event])
    assert site.api.post("/webhooks/memory", content=body, headers=headers).status_code == 200

    assert site.api.get("/api/domain-alerts").json() == []
    alerts = site.api.get("/api/domain-alerts", params={"threshold": 1}).json()
    assert [(a["domain"], a["recipients"], a["reasons"]) for a in alerts] == [
        ("example.com", 1, ["550 5.1.1"])
    ]


@pytest.mark.parametrize(
    "path",
    [
        "/api/recipients/ann@example.com/history?limit=0",
        "/api/recipients/ann@example.com/history?limit=many",
        "/api/recipients/ann@example.com/history?cursor=not-a-cursor",
        "/api/bulk/x/rows?sort=shoe-size",
        "/api/bulk/x/rows?order=sideways",
        "/api/sends?status=lost",
        "/api/sends?since=yesterday",
    ],
)
def test_a_query_the_api_cannot_use_is_answered_400(site: Site, path: str) -> None:
    answer = site.api.get(path)
    assert answer.status_code == 400
    assert answer.json()["error"]


# --------------------------------------------------------------------------- live updates


def test_the_change_stream_sends_each_badge_change_as_an_event(site: Site) -> None:
    target = tid(site, "cyd@example.net")
    with site.api.stream("GET", "/api/changes", params={"tracking_id": target}) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        assert next(lines) == "retry: 3000"
        poster = threading.Thread(target=site.post_scenario, args=("cyd@example.net", "complaint"))
        poster.start()
        event = _next_event(lines)
        poster.join()
    assert event["event"] == "state"
    assert '"status":"complained"' in event["data"]
    assert f'"tracking_id":"{target}"' in event["data"]
    assert '"previous":"delivered"' in event["data"]


def test_the_change_stream_keeps_idle_connections_alive(site: Site) -> None:
    with site.api.stream("GET", "/api/changes") as stream:
        lines = stream.iter_lines()
        assert next(lines) == "retry: 3000"
        assert next(line for line in lines if line) == ": keep-alive"


def _next_event(lines: Iterator[str]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in lines:
        if line.startswith(":"):
            continue
        if not line:
            if "data" in fields:
                return fields
            continue
        name, _, value = line.partition(": ")
        fields[name] = value
    raise AssertionError("the stream ended without an event")


# --------------------------------------------------------------------------- access (in process)


def test_an_api_token_guards_the_api_but_not_the_webhooks() -> None:
    memory = MemoryAdapter()
    with Tracker.open("sqlite:///:memory:") as tracker:
        app = create_app(WebhookReceiver({"memory": memory}, tracker), api_token=TOKEN)
        with TestClient(app) as client:
            assert client.get("/api/suppressions").status_code == 401
            wrong = {"Authorization": "Bearer nope"}
            assert client.get("/api/suppressions", headers=wrong).status_code == 401
            right = {"Authorization": f"Bearer {TOKEN}"}
            assert client.get("/api/suppressions", headers=right).status_code == 200
            body, headers = memory.webhook([])
            assert client.post("/webhooks/memory", content=body, headers=headers).status_code == 200


def test_without_a_tracker_or_with_api_off_there_is_no_api() -> None:
    memory = MemoryAdapter()
    with Tracker.open("sqlite:///:memory:") as tracker:
        for app in (
            create_app(WebhookReceiver({"memory": memory})),
            create_app(WebhookReceiver({"memory": memory}, tracker), api=False),
        ):
            with TestClient(app) as client:
                assert client.get("/api/suppressions").status_code == 404
                assert client.get("/webhooks/memory").status_code == 200


def test_the_api_answers_503_while_the_store_is_unavailable() -> None:
    memory = MemoryAdapter()
    tracker = Tracker.open("sqlite:///:memory:")
    app = create_app(WebhookReceiver({"memory": memory}, tracker))
    tracker.close()
    with TestClient(app) as client:
        answer = client.get("/api/suppressions")
        assert answer.status_code == 503
        assert answer.headers["retry-after"] == "5"
        body, headers = memory.webhook(memory.scenario(_sent(memory), "delivered"))
        assert client.post("/webhooks/memory", content=body, headers=headers).status_code == 503


def _sent(memory: MemoryAdapter) -> str:
    return memory.send(_invite("Hi", ["dee@example.com"])).recipients[0].tracking_id
