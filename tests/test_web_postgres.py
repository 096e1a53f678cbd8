"""The web app over PostgreSQL, as a deployment runs it: two app processes (here two apps, each
with its own tracker on one database). A webhook stored through one reaches the other's change
stream through LISTEN/NOTIFY, and a Mailgun token spent at one is refused at the other."""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Iterator

import httpx
import pytest

import webhook_kits
from live_server import running
from unimailtrack.tracking import Tracker
from unimailtrack.web import create_app
from unimailtrack.webhooks import WebhookReceiver

pytestmark = pytest.mark.postgres

POSTGRES_URL = os.environ.get(
    "UNIMAILTRACK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
TID = "0190a1b2c3d4e5f60718293a4b5c6d7e"


@pytest.fixture
def database() -> Iterator[str]:
    """A schema of its own on the test server, dropped afterwards."""
    psycopg = pytest.importorskip("psycopg")
    from psycopg import sql

    try:
        psycopg.connect(POSTGRES_URL, connect_timeout=3).close()
    except psycopg.Error as exc:
        if os.environ.get("UNIMAILTRACK_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL is required but {POSTGRES_URL} does not answer: {exc}")
        pytest.skip(f"SKIPPED POSTGRESQL TESTS: no server at {POSTGRES_URL} ({exc})")
    schema = f"web_{secrets.token_hex(6)}"
    try:
        yield f"{POSTGRES_URL}{'&' if '?' in POSTGRES_URL else '?'}schema={schema}"
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def test_a_change_stored_by_one_app_reaches_another_app_s_stream(database: str) -> None:
    kit = webhook_kits.memory()
    with Tracker.open(database) as first, Tracker.open(database) as second:
        apps = [create_app(WebhookReceiver({"memory": kit.adapter}, t)) for t in (first, second)]
        with (
            running(apps[0]) as writer_url,
            running(apps[1]) as reader_url,
            httpx.Client(base_url=writer_url, timeout=10) as writer,
            httpx.Client(base_url=reader_url, timeout=10) as reader,
        ):
            with reader.stream("GET", "/api/changes", params={"tracking_id": TID}) as stream:
                lines = stream.iter_lines()
                assert next(lines) == "retry: 3000"
                body, headers = kit.request(TID, "ann@example.com", "bounced")
                posted: list[httpx.Response] = []
                poster = threading.Thread(
                    target=lambda: posted.append(
                        writer.post("/webhooks/memory", content=body, headers=headers)
                    )
                )
                poster.start()
                data = next(line for line in lines if line.startswith("data: "))
                poster.join()
            assert posted[0].json()["new"] == 1
            assert '"status":"bounced"' in data
            assert reader.get(f"/api/sends/{TID}").json()["status"] == "bounced"


def test_a_mailgun_token_is_single_use_across_apps(database: str) -> None:
    key = secrets.token_hex(16)
    kit, twin = webhook_kits.mailgun(key), webhook_kits.mailgun(key)
    with Tracker.open(database) as first, Tracker.open(database) as second:
        one = create_app(WebhookReceiver({"mailgun": kit.adapter}, first))
        other = create_app(WebhookReceiver({"mailgun": twin.adapter}, second))
        body, headers = kit.request(TID, "ann@example.com", "delivered")
        with running(one) as one_url, running(other) as other_url:
            assert (
                httpx.post(f"{one_url}/webhooks/mailgun", content=body, headers=headers).json()[
                    "new"
                ]
                == 1
            )
            forged = body.replace(b'"delivered"', b'"complained"', 1)
            replay = httpx.post(f"{other_url}/webhooks/mailgun", content=forged, headers=headers)
            assert replay.status_code == 401
            retry = httpx.post(f"{other_url}/webhooks/mailgun", content=body, headers=headers)
            assert retry.json()["duplicates"] == 1  # the same request: a no-op, not a refusal
        assert second.count_events() == 1
