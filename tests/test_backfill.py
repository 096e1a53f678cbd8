"""Backfill end to end: sends through the emulator while no webhook reaches the store, then
``unimailtrack backfill`` asks Mailgun's Events API and SendGrid's Email Activity API (both
served by the emulator) and every send gets its badge; a second run stores nothing twice."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from unimailtrack import DeliveryStatus, Email, EventType, Mailer
from unimailtrack._http import HttpxTransport
from unimailtrack.adapters import SendGridAdapter
from unimailtrack.adapters.mailgun import backfill as mailgun_backfill
from unimailtrack.adapters.sendgrid import backfill as sendgrid_backfill
from unimailtrack.cli import Exit, main
from unimailtrack.emulator import SCENARIOS, Emulator
from unimailtrack.tracking import Tracker

GUESTS = (
    "ann@example.com",
    "bounce@example.com",
    "complaint@example.com",
    "opens-and-clicks@example.com",
)


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator() as emu:  # no webhook target: the endpoint is "down"
        yield emu


def _send(emu: Emulator, provider: str, store: str, guests: tuple[str, ...]) -> list[str]:
    with Tracker.open(store) as tracker, Mailer(emu.dsn(provider), tracker=tracker) as mailer:
        result = mailer.send(
            Email(
                sender="events@example.com",
                to=list(guests),
                subject="Spring Gala",
                text="Join us",
                track_opens=True,
                track_clicks=True,
            )
        )
    emu.drain()
    return [r.tracking_id for r in result.recipients]


def _expected(address: str) -> DeliveryStatus:
    name = address.partition("@")[0]
    return SCENARIOS[name].outcome if name in SCENARIOS else DeliveryStatus.DELIVERED


def _backfill(
    capsys: pytest.CaptureFixture[str], dsn: str, store: str
) -> dict[str, dict[str, object]]:
    code = main(["backfill", dsn, "--since", "1h", "--store", store, "--json"])
    out = capsys.readouterr().out
    assert code == Exit.OK, out
    providers: dict[str, dict[str, object]] = json.loads(out)["providers"]
    return providers


def test_mailgun_events_api_backfills_every_page_idempotently(
    emulator: Emulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = f"sqlite:///{tmp_path / 'mg.sqlite3'}"
    ids = _send(emulator, "mailgun", store, GUESTS)
    with Tracker.open(store) as tracker:
        assert tracker.count_events() == 0  # nothing came in by webhook
    monkeypatch.setattr(mailgun_backfill, "PAGE_SIZE", 3)  # several pages for a few events
    first = _backfill(capsys, emulator.dsn("mailgun"), store)["mailgun"]
    total = len(emulator.deliveries)
    assert first["events"] == first["new"] == total > 3
    with Tracker.open(store) as tracker:
        for tracking_id, guest in zip(ids, GUESTS, strict=True):
            assert tracker.state(tracking_id).status is _expected(guest), guest
    again = _backfill(capsys, emulator.dsn("mailgun"), store)["mailgun"]
    assert (again["new"], again["duplicates"]) == (0, total)


def test_sendgrid_email_activity_backfills_statuses(
    emulator: Emulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = f"sqlite:///{tmp_path / 'sg.sqlite3'}"
    guests = (
        "ann@example.com",
        "bob@example.com",
        "bounce@example.com",
        "opens-and-clicks@example.com",
    )
    ids = _send(emulator, "sendgrid", store, guests)
    first = _backfill(capsys, emulator.dsn("sendgrid"), store)["sendgrid"]
    assert first["new"] == first["events"]
    with Tracker.open(store) as tracker:
        states = {guest: tracker.state(tid).status for tid, guest in zip(ids, guests, strict=True)}
    assert states["ann@example.com"] is DeliveryStatus.DELIVERED
    assert states["bob@example.com"] is DeliveryStatus.DELIVERED
    assert states["bounce@example.com"] is DeliveryStatus.BOUNCED
    assert states["opens-and-clicks@example.com"] in (DeliveryStatus.OPENED, DeliveryStatus.CLICKED)
    again = _backfill(capsys, emulator.dsn("sendgrid"), store)["sendgrid"]
    assert again["new"] == 0


def test_a_provider_without_an_events_api_is_said_so(
    emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = f"sqlite:///{tmp_path / 's.sqlite3'}"
    Tracker.open(store).close()
    code = main(["backfill", emulator.dsn("ses"), "--since", "2h", "--store", store])
    assert code == Exit.OK
    assert "ses: no events API to backfill from" in capsys.readouterr().out


def test_a_refused_key_stops_with_the_provider_s_answer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = f"sqlite:///{tmp_path / 's.sqlite3'}"
    Tracker.open(store).close()
    with Emulator(api_key="the-right-key") as emu:
        dsn = emu.dsn("mailgun").replace("the-right-key", "a-wrong-key")
        code = main(["backfill", dsn, "--since", "2h", "--store", store])
    assert code == Exit.FAILED
    assert "mailgun: 0 event(s)" in capsys.readouterr().out


def test_a_full_email_activity_page_is_asked_again_in_halves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    start = datetime(2026, 3, 1, tzinfo=UTC)
    stored = [
        {
            "msg_id": f"m{i}.filter.0",
            "to_email": f"r{i}@example.com",
            "status": "delivered",
            "opens_count": 0,
            "clicks_count": 0,
            "last_event_time": (start + timedelta(minutes=7 * i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        for i in range(17)
    ]
    asked: list[str] = []

    def activity(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer SG.key"
        query = request.url.params["query"]
        asked.append(query)
        low, high = re.findall(r'TIMESTAMP "([^"]+)"', query)
        inside = [m for m in stored if low <= m["last_event_time"] <= high]
        return httpx.Response(200, json={"messages": inside[: int(request.url.params["limit"])]})

    monkeypatch.setattr(sendgrid_backfill, "LIMIT", 4)
    adapter = SendGridAdapter(
        "SG.key", transport=HttpxTransport(httpx.Client(transport=httpx.MockTransport(activity)))
    )
    pages = list(adapter.backfill(start, start + timedelta(hours=2)))
    found = {e.message_id for page in pages for e in page}
    assert found == {m["msg_id"] for m in stored}
    assert len(asked) > 5  # full pages were split
    assert all(e.type is EventType.DELIVERED for page in pages for e in page)
    # The same event ids every time: a second backfill stores nothing twice.
    again = {
        e.event_id for page in adapter.backfill(start, start + timedelta(hours=2)) for e in page
    }
    assert again == {e.event_id for page in pages for e in page}
