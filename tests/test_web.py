"""The ASGI app on a real local port: signed webhooks from every adapter over real HTTP, and
every bad request answered with the right status before anything is stored."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

import webhook_kits
from live_server import raw_exchange, running
from unimailtrack import EmailEvent, EventType
from unimailtrack.tracking import Tracker
from unimailtrack.web import create_app
from unimailtrack.webhooks import WebhookReceiver
from webhook_fixtures import load_fixture
from webhook_kits import Kit

TID = "0190a1b2c3d4e5f60718293a4b5c6d7e"


@pytest.fixture(scope="module")
def kits() -> dict[str, Kit]:
    return {name: make() for name, make in webhook_kits.ALL.items()}


@pytest.fixture(scope="module")
def site(kits: dict[str, Kit]) -> Iterator[tuple[httpx.Client, list[EmailEvent]]]:
    """One server for the module (starting one costs more than every test here)."""
    seen: list[EmailEvent] = []
    receiver = WebhookReceiver(
        {name: kit.adapter for name, kit in kits.items()},
        max_body_size=64 * 1024,
        on_event=seen.append,
    )
    with running(create_app(receiver)) as url, httpx.Client(base_url=url) as client:
        yield client, seen


@pytest.fixture
def server(site: tuple[httpx.Client, list[EmailEvent]]) -> httpx.Client:
    return site[0]


@pytest.fixture
def received(site: tuple[httpx.Client, list[EmailEvent]]) -> list[EmailEvent]:
    """The events the callback received during this test."""
    site[1].clear()
    return site[1]


@pytest.mark.parametrize("provider", sorted(webhook_kits.ALL))
@pytest.mark.parametrize("outcome", ["delivered", "bounced"])
def test_a_signed_webhook_from_each_provider_is_accepted_over_http(
    server: httpx.Client,
    kits: dict[str, Kit],
    received: list[EmailEvent],
    provider: str,
    outcome: str,
) -> None:
    body, headers = kits[provider].request(TID, "ann@example.com", outcome)
    answer = server.post(f"/webhooks/{provider}", content=body, headers=headers)
    assert answer.status_code == 200
    assert answer.json() == {"ok": True, "events": 1}
    [event] = received
    assert (event.provider, event.tracking_id, event.recipient) == (
        provider,
        TID,
        "ann@example.com",
    )
    assert event.type is EventType(outcome)


@pytest.mark.parametrize("provider", sorted(webhook_kits.ALL))
def test_a_webhook_signed_with_another_key_is_refused_401(
    server: httpx.Client, received: list[EmailEvent], provider: str
) -> None:
    forger = webhook_kits.ALL[provider]()
    body, headers = forger.request(TID, "ann@example.com", "delivered")
    assert server.post(f"/webhooks/{provider}", content=body, headers=headers).status_code == 401
    assert received == []


@pytest.mark.parametrize("provider", ["sendgrid", "ses", "memory"])
def test_a_webhook_whose_body_was_changed_is_refused_401(
    server: httpx.Client, kits: dict[str, Kit], received: list[EmailEvent], provider: str
) -> None:
    body, headers = kits[provider].request(TID, "ann@example.com", "delivered")
    changed = body.replace(b"ann@example.com", b"eve@example.com")
    assert server.post(f"/webhooks/{provider}", content=changed, headers=headers).status_code == 401
    assert received == []


@pytest.mark.parametrize("provider", ["sendgrid", "memory"])
def test_a_webhook_without_its_signature_headers_is_refused_401(
    server: httpx.Client, kits: dict[str, Kit], received: list[EmailEvent], provider: str
) -> None:
    body, _ = kits[provider].request(TID, "ann@example.com", "delivered")
    bare = {"Content-Type": "application/json"}
    assert server.post(f"/webhooks/{provider}", content=body, headers=bare).status_code == 401
    assert received == []


def test_a_replayed_mailgun_token_with_another_body_is_refused_401(
    server: httpx.Client, kits: dict[str, Kit], received: list[EmailEvent]
) -> None:
    body, headers = kits["mailgun"].request(TID, "ann@example.com", "delivered")
    assert server.post("/webhooks/mailgun", content=body, headers=headers).status_code == 200
    forged = body.replace(b'"delivered"', b'"complained"', 1)
    assert server.post("/webhooks/mailgun", content=forged, headers=headers).status_code == 401
    # The same request again is Mailgun's retry: answered 200, the same event id again.
    assert server.post("/webhooks/mailgun", content=body, headers=headers).status_code == 200
    assert [e.event_id for e in received] == [received[0].event_id] * 2


def test_a_truncated_signed_body_is_answered_400(
    server: httpx.Client, kits: dict[str, Kit]
) -> None:
    body = load_fixture("sendgrid_malformed_truncated.json")["body"].encode()
    sign = kits["sendgrid"].sign
    assert sign is not None
    answer = server.post("/webhooks/sendgrid", content=body, headers=sign(body))
    assert answer.status_code == 400
    assert answer.json()["error"] == "payload"


@pytest.mark.parametrize(
    ("body", "status", "answer"),
    [
        (b"[]", 200, {"ok": True, "events": 0}),
        (b"not json at all", 400, None),
        (b'{"email": "ann@example.com"}', 400, None),
    ],
    ids=["empty-batch", "not-json", "not-an-array"],
)
def test_signed_bodies_of_every_shape_get_the_right_status(
    server: httpx.Client, kits: dict[str, Kit], body: bytes, status: int, answer: object
) -> None:
    sign = kits["sendgrid"].sign
    assert sign is not None
    response = server.post("/webhooks/sendgrid", content=body, headers=sign(body))
    assert response.status_code == status
    if answer is not None:
        assert response.json() == answer


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/octet-stream"]
)
def test_the_content_type_does_not_matter_only_the_signed_body_does(
    server: httpx.Client, kits: dict[str, Kit], received: list[EmailEvent], content_type: str
) -> None:
    body, headers = kits["sendgrid"].request(TID, "ann@example.com", "delivered")
    answer = server.post(
        "/webhooks/sendgrid", content=body, headers={**headers, "Content-Type": content_type}
    )
    assert answer.status_code == 200
    forged = server.post(
        "/webhooks/sendgrid",
        content=b"email=ann%40example.com",
        headers={"Content-Type": content_type},
    )
    assert forged.status_code == 401
    assert len(received) == 1


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_reachability_checks_are_answered_200(server: httpx.Client, method: str) -> None:
    answer = server.request(method, "/webhooks/sendgrid")
    assert answer.status_code == 200
    assert server.request(method, "/webhooks/nosuch").status_code == 404


def test_other_methods_are_refused(server: httpx.Client) -> None:
    assert server.put("/webhooks/sendgrid", content=b"[]").status_code == 405


def test_an_unknown_provider_is_answered_404_without_reading_the_body(
    server: httpx.Client,
) -> None:
    head = (
        b"POST /webhooks/nosuch HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: 5000\r\n\r\n"
    )
    assert raw_exchange(str(server.base_url), head).startswith(b"HTTP/1.1 404")


def test_a_declared_length_over_the_limit_is_answered_413_before_any_body(
    server: httpx.Client,
) -> None:
    head = (
        b"POST /webhooks/sendgrid HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: 20000000\r\n\r\n"
    )
    answer = raw_exchange(str(server.base_url), head)
    assert answer.startswith(b"HTTP/1.1 413")
    assert b"connection: close" in answer.lower()


def test_a_streamed_body_is_cut_off_with_413_once_it_passes_the_limit(
    server: httpx.Client,
) -> None:
    head = (
        b"POST /webhooks/sendgrid HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"x" * 40_000
    part = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    # Two chunks pass the 64 KiB limit; the body's final empty chunk is never sent.
    answer = raw_exchange(str(server.base_url), head, [part, part])
    assert answer.startswith(b"HTTP/1.1 413")


def test_a_large_batch_under_the_limit_streams_in_whole(
    server: httpx.Client, kits: dict[str, Kit], received: list[EmailEvent]
) -> None:
    assert kits["sendgrid"].batch is not None
    items = [(TID, f"guest{i}@example.com", "delivered") for i in range(100)]
    body, headers = kits["sendgrid"].batch(items)

    def pieces() -> Iterator[bytes]:
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    answer = server.post("/webhooks/sendgrid", content=pieces(), headers=headers)
    assert answer.status_code == 200, answer.text
    assert len(received) == 100


def test_answers_are_json_and_never_cached(server: httpx.Client) -> None:
    answer = server.post("/webhooks/sendgrid", content=b"[]")
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["cache-control"] == "no-store"
    assert json.loads(answer.content)["error"] == "signature"


# --------------------------------------------------------------------------- into a tracker


@pytest.fixture(scope="module")
def tracked() -> Iterator[tuple[httpx.Client, dict[str, Kit], Tracker]]:
    """Every provider's adapter in front of one SQLite tracker, served on a real port."""
    kits = {name: make() for name, make in webhook_kits.ALL.items()}
    with Tracker.open("sqlite:///:memory:") as tracker:
        receiver = WebhookReceiver({name: kit.adapter for name, kit in kits.items()}, tracker)
        with running(create_app(receiver)) as url, httpx.Client(base_url=url) as client:
            yield client, kits, tracker


@pytest.mark.parametrize("provider", sorted(webhook_kits.ALL))
def test_each_provider_s_webhooks_reach_the_tracker_and_its_api_over_http(
    tracked: tuple[httpx.Client, dict[str, Kit], Tracker], provider: str
) -> None:
    client, kits, tracker = tracked
    tracking_id = f"{sorted(webhook_kits.ALL).index(provider):032x}"
    recipient = f"{provider}-guest@example.org"
    for outcome in ("delivered", "bounced"):
        body, headers = kits[provider].request(tracking_id, recipient, outcome)
        answer = client.post(f"/webhooks/{provider}", content=body, headers=headers)
        assert answer.json() == {"ok": True, "events": 1, "new": 1, "duplicates": 0}

    state = client.get(f"/api/sends/{tracking_id}").json()
    assert state["status"] == "bounced"
    assert [e["type"] for e in state["timeline"]] == ["delivered", "bounced"]
    assert {e["provider"] for e in state["timeline"]} == {provider}
    assert client.get(f"/api/suppressions/{recipient}").json()["cause"] == "bounced"
    assert tracker.state(tracking_id).status.value == "bounced"
