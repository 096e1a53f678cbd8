"""``unimailtrack alerts`` and ``unimailtrack outbox``."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "tracking"))

from tracking_support import event

from unimailtrack import EventType
from unimailtrack.cli import main
from unimailtrack.outbox import WebhookEndpoint
from unimailtrack.standard_webhooks import new_secret
from unimailtrack.tracking import Tracker


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def blocks(now: datetime) -> list[object]:
    return [
        event(
            EventType.BOUNCED,
            f"b{c}",
            at=now - timedelta(minutes=20),
            recipient=f"{c}@gmail.com",
            bounce="block",
            reason="550 5.7.1 unusual rate of unsolicited mail",
        )
        for c in "abc"
    ]


def test_alerts_are_evaluated_and_listed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    store = f"sqlite:///{tmp_path / 'a.sqlite3'}"
    with Tracker.open(store) as tracker:
        tracker.ingest(blocks(datetime.now(UTC)))  # type: ignore[arg-type]
    code, out, _ = run(capsys, "alerts", "--store", store)
    assert code == 0
    header, row = out.strip().splitlines()
    assert header.split()[:5] == ["KIND", "LEVEL", "SCOPE", "VIA", "RATE"]
    assert row.split()[:3] == ["mailbox_block", "warn", "google"]
    code, out, _ = run(capsys, "alerts", "--store", store, "--json", "--no-evaluate")
    [alert] = json.loads(out)
    assert (alert["kind"], alert["scope"], alert["count"], alert["sequence"]) == (
        "mailbox_block",
        "google",
        3,
        1,
    )
    assert alert["closed_at"] is None


def test_outbox_lists_replays_and_delivers(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = f"sqlite:///{tmp_path / 'o.sqlite3'}"
    secret = new_secret()
    # An endpoint nobody listens on: every attempt fails at once.
    hook = WebhookEndpoint("app", "http://127.0.0.1:9/hooks", (secret,), max_age=timedelta(0))
    with Tracker.open(store, webhooks=[hook]) as tracker:
        tracker.ingest([event(EventType.DELIVERED, "t1", at=datetime.now(UTC))])
    code, out, _ = run(capsys, "outbox", "--store", store, "--json")
    [entry] = json.loads(out)
    assert (entry["status"], entry["event_type"], entry["attempts"]) == (
        "pending",
        "message.delivered",
        0,
    )
    code, _, err = run(capsys, "outbox", "--store", store, "--deliver")
    assert code == 3 and "UNIMAILTRACK_WEBHOOK_ENDPOINTS" in err
    monkeypatch.setenv(
        "UNIMAILTRACK_WEBHOOK_ENDPOINTS",
        json.dumps([{"name": "app", "url": hook.url, "secrets": [secret], "max_age_seconds": 0}]),
    )
    code, out, _ = run(capsys, "outbox", "--store", store, "--deliver")
    assert code == 0
    assert "0 delivered, 0 to retry, 1 given up" in out
    assert "failed" in out.splitlines()[1]
    code, out, _ = run(capsys, "outbox", "--store", store, "--replay")
    assert "1 message(s) queued again" in out and "pending" in out
    code, _, err = run(capsys, "outbox", "--store", store, "--status", "lost")
    assert code == 2 and "lost" in err
