"""The ``unimailtrack`` command: each subcommand's output and exit status, on real stores."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from unimailtrack.adapters import MemoryAdapter
from unimailtrack.adapters.sendgrid import SendGridWebhookSigner
from unimailtrack.cli import SUBCOMMANDS, Exit, main
from unimailtrack.tracking import Tracker
from webhook_fixtures import load_fixture

SECRET = "cli-test-webhook-secret"
MEMORY_DSN = f"memory://?webhook_secret={SECRET}"


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SQLite store, named by the environment as a deployment would."""
    url = f"sqlite:///{tmp_path / 'track.sqlite3'}"
    monkeypatch.setenv("UNIMAILTRACK_STORE", url)
    monkeypatch.setenv("UNIMAILTRACK_DSN", MEMORY_DSN)
    return url


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def send_invite(capsys: pytest.CaptureFixture[str], *to: str) -> dict[str, Any]:
    recipients = [arg for address in to for arg in ("--to", address)]
    code, out, _ = run(
        capsys,
        "send",
        "--from",
        "Events <events@example.com>",
        *recipients,
        "--subject",
        "Spring Gala",
        "--text",
        "Join us",
        "--category",
        "rsvp_invite",
        "--meta",
        "event_id=gala",
        "--json",
    )
    assert code == Exit.OK
    result: dict[str, Any] = json.loads(out)
    return result


def memory_requests(path: Path, outcomes: dict[str, tuple[str, str]], **options: Any) -> Path:
    """A JSON Lines file of signed memory webhook requests, one per (tracking id, outcome)."""
    memory = MemoryAdapter(webhook_secret=SECRET)
    lines = []
    for tracking_id, (recipient, outcome) in outcomes.items():
        event = {
            "event": outcome,
            "id": f"evt-{tracking_id[-6:]}-{outcome}",
            "recipient": recipient,
            "tracking_id": tracking_id,
            "timestamp": (datetime.now(UTC) - timedelta(minutes=1)).timestamp(),
        }
        if outcome == "bounced":
            event |= {"bounce": "hard", "reason": "550 5.1.1 user unknown"}
        body, headers = memory.webhook([event], **options)
        lines.append(json.dumps({"provider": "memory", "headers": headers, "body": body.decode()}))
    path.write_text("\n".join(lines) + "\n")
    return path


# --------------------------------------------------------------------------- the parser


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == Exit.OK
    for name in ("serve", "send", "replay", "verify", "history", "timeline", "stats"):
        assert name in out
    assert "suppressions" in out
    assert "emulate" in out
    assert "alerts" in out and "outbox" in out
    assert len(SUBCOMMANDS) == 11


def test_a_wrong_command_line_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "teleport")[0] == Exit.USAGE
    assert run(capsys, "history")[0] == Exit.USAGE
    assert run(capsys, "replay", "x", "--now", "yesterday")[0] == Exit.USAGE


# --------------------------------------------------------------------------- send


def test_send_prints_a_tracking_id_per_recipient_and_records_the_send(
    capsys: pytest.CaptureFixture[str], store: str
) -> None:
    code, out, _ = run(
        capsys,
        "send",
        "--from",
        "events@example.com",
        "--to",
        "ann@example.com",
        "--to",
        "ANN@example.com",
        "--subject",
        "Hi",
        "--text",
        "Hello",
    )
    assert code == Exit.OK
    lines = out.splitlines()
    assert lines[0].startswith("bulk id ")
    assert lines[1].split()[:3] == ["RECIPIENT", "STATUS", "TRACKING"]
    assert [line.split()[1] for line in lines[2:]] == ["accepted", "duplicate"]

    code, out, _ = run(capsys, "history", "ann@example.com", "--limit", "1")
    assert code == Exit.OK
    assert "  Hi  " in out
    assert "1 of 2" in out
    assert "more: unimailtrack history ann@example.com --cursor " in out


def test_send_refuses_a_malformed_address_with_2(
    capsys: pytest.CaptureFixture[str], store: str
) -> None:
    code, _, err = run(
        capsys, "send", "--from", "events@example.com", "--to", "not an address", "--text", "x"
    )
    assert code == Exit.USAGE
    assert "not an address" in err


def test_send_without_a_dsn_is_a_configuration_error(
    capsys: pytest.CaptureFixture[str], store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("UNIMAILTRACK_DSN")
    code, _, err = run(capsys, "send", "--from", "e@example.com", "--to", "a@example.com")
    assert code == Exit.CONFIG
    assert "UNIMAILTRACK_DSN" in err


def test_a_dsn_option_that_makes_no_sense_is_a_configuration_error(
    capsys: pytest.CaptureFixture[str], store: str
) -> None:
    code, _, err = run(
        capsys,
        "send",
        "--dsn",
        "memory://?verify_webhooks=maybe",
        "--from",
        "e@example.com",
        "--to",
        "a@example.com",
        "--text",
        "x",
    )
    assert code == Exit.CONFIG
    assert "verify_webhooks" in err


# --------------------------------------------------------------------------- replay and queries


def test_replay_feeds_saved_requests_into_the_store_and_the_queries_show_them(
    capsys: pytest.CaptureFixture[str], store: str, tmp_path: Path
) -> None:
    sent = send_invite(capsys, "ann@example.com", "bob@example.org")
    ann, bob = (r["tracking_id"] for r in sent["recipients"])
    saved = memory_requests(
        tmp_path / "requests.jsonl",
        {ann: ("ann@example.com", "bounced"), bob: ("bob@example.org", "delivered")},
    )

    code, out, _ = run(capsys, "replay", str(saved))
    assert code == Exit.OK
    assert out.splitlines()[0].startswith("2 requests, 2 events: 2 new, 0 already stored")
    code, out, _ = run(capsys, "replay", str(saved), "--json")
    assert json.loads(out)["duplicates"] == 2

    code, out, _ = run(capsys, "timeline", ann)
    assert code == Exit.OK
    assert out.splitlines()[0] == "status bounced: 550 5.1.1 user unknown"
    code, out, _ = run(capsys, "timeline", ann, "--json")
    assert json.loads(out)["status"] == "bounced"

    code, out, _ = run(capsys, "stats", sent["bulk_id"], "--rows", "--sort", "email", "--desc")
    assert code == Exit.OK
    stages, _, table = out.partition("\n\n")
    counts = dict(line.split() for line in stages.splitlines()[1:])
    assert (counts["delivered"], counts["bounced"], counts["opened"]) == ("1", "1", "0")
    rows = [line.split()[0] for line in table.splitlines()[1:]]
    assert rows == ["bob@example.org", "ann@example.com"]
    code, out, _ = run(capsys, "stats", sent["bulk_id"], "--json")
    assert json.loads(out)["sent"] == 2
    code, out, _ = run(
        capsys, "stats", sent["bulk_id"], "--rows", "--status", "bounced,dropped", "--json"
    )
    assert [r["recipient"] for r in json.loads(out)["rows"]["items"]] == ["ann@example.com"]

    code, out, _ = run(capsys, "suppressions")
    assert code == Exit.OK
    assert "ann@example.com  bounced" in out
    code, out, _ = run(capsys, "suppressions", "ann@example.com", "--remove")
    assert code == Exit.OK
    assert run(capsys, "suppressions", "ann@example.com")[0] == Exit.FAILED


def test_the_timeline_of_a_send_without_events_shows_its_record(
    capsys: pytest.CaptureFixture[str], store: str
) -> None:
    [recipient] = send_invite(capsys, "ann@example.com")["recipients"]
    code, out, _ = run(capsys, "timeline", recipient["tracking_id"])
    assert code == Exit.OK
    status, sent, events = out.splitlines()
    assert (status, events) == ("status accepted", "no events yet")
    assert sent.startswith("sent ") and sent.endswith(" to ann@example.com: Spring Gala")
    code, out, _ = run(capsys, "timeline", recipient["tracking_id"], "--json")
    answer = json.loads(out)
    assert (answer["status"], answer["timeline"]) == ("accepted", [])
    assert (answer["send"]["subject"], answer["send"]["metadata"]) == (
        "Spring Gala",
        {"event_id": "gala"},
    )


def test_queries_about_unknown_things_exit_1(
    capsys: pytest.CaptureFixture[str], store: str
) -> None:
    assert run(capsys, "timeline", "ffffffffffffffffffffffffffffffff")[0] == Exit.FAILED
    assert run(capsys, "stats", "no-such-bulk")[0] == Exit.FAILED
    assert run(capsys, "history", "x@example.com", "--cursor", "garbage")[0] == Exit.USAGE
    assert run(capsys, "stats", "b", "--rows", "--sort", "shoe-size")[0] == Exit.USAGE


def test_replay_with_verification_checks_each_request_against_the_dsn_keys(
    capsys: pytest.CaptureFixture[str], store: str, tmp_path: Path
) -> None:
    sent = send_invite(capsys, "ann@example.com")
    ann = sent["recipients"][0]["tracking_id"]
    then = datetime(2024, 1, 15, 9, 30, tzinfo=UTC)
    saved = memory_requests(
        tmp_path / "old.jsonl", {ann: ("ann@example.com", "delivered")}, timestamp=then
    )

    code, out, _ = run(capsys, "replay", str(saved), "--verify")
    assert code == Exit.SIGNATURE
    assert "1 refused" in out
    code, out, _ = run(capsys, "replay", str(saved), "--verify", "--now", then.isoformat())
    assert code == Exit.OK
    assert "1 new" in out


def test_replay_keeps_unreadable_bodies_as_dead_letters_and_exits_5(
    capsys: pytest.CaptureFixture[str], store: str, tmp_path: Path
) -> None:
    raw = tmp_path / "body.json"
    raw.write_bytes(b'[{"email": "ann@example.com", ')
    code, out, _ = run(capsys, "replay", str(raw), "--provider", "sendgrid")
    assert code == Exit.PAYLOAD
    assert "1 unreadable" in out
    assert "request 1: HTTP 400" in out
    with Tracker.open(store) as tracker:
        [letter] = tracker.dead_letters()
    assert (letter.provider, letter.body) == ("sendgrid", raw.read_bytes())


def test_replay_reads_a_saved_fixture_and_counts_unknown_providers(
    capsys: pytest.CaptureFixture[str], store: str, tmp_path: Path
) -> None:
    fixture = Path(__file__).parent / "fixtures" / "webhooks" / "sendgrid_delivered.json"
    code, out, _ = run(capsys, "replay", str(fixture), "--dry-run")
    assert code == Exit.OK
    assert out.startswith("1 requests, 1 events")

    odd = tmp_path / "odd.jsonl"
    odd.write_text(json.dumps({"provider": "pigeon", "headers": {}, "body": "coo"}) + "\n")
    code, out, _ = run(capsys, "replay", str(odd))
    assert code == Exit.PAYLOAD
    assert "1 unknown provider" in out


def test_replay_stops_with_6_when_the_store_cannot_write(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "locked.sqlite3"
    monkeypatch.setenv("UNIMAILTRACK_STORE", f"sqlite:///{path}?timeout=0.05")
    assert run(capsys, "suppressions")[0] == Exit.OK  # creates the database
    saved = memory_requests(tmp_path / "r.jsonl", {"0" * 32: ("ann@example.com", "delivered")})
    with closing(sqlite3.connect(path, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")
        code, _, err = run(capsys, "replay", str(saved))
        other.execute("ROLLBACK")
    assert code == Exit.STORE
    assert "store failed" in err


def test_a_missing_file_is_a_usage_error(capsys: pytest.CaptureFixture[str], store: str) -> None:
    code, _, err = run(capsys, "replay", "/nonexistent/requests.jsonl")
    assert code == Exit.USAGE
    assert "requests.jsonl" in err


# --------------------------------------------------------------------------- verify


@pytest.fixture
def signer(monkeypatch: pytest.MonkeyPatch) -> SendGridWebhookSigner:
    signer = SendGridWebhookSigner()
    monkeypatch.setenv("UNIMAILTRACK_SENDGRID_WEBHOOK_KEY", signer.public_key)
    monkeypatch.setenv("UNIMAILTRACK_DSN", "sendgrid://default")
    return signer


def saved_fixture(path: Path, signer: SendGridWebhookSigner, *, tamper: bool = False) -> Path:
    case = load_fixture("sendgrid_delivered.json")
    body = case["body"].encode()
    headers = {**case["headers"], **signer.sign(body, timestamp=1705311060)}
    if tamper:
        body = body.replace(b"alice@", b"mallory@")
    path.write_text(json.dumps({"provider": "sendgrid", "headers": headers, "body": body.decode()}))
    return path


def test_verify_accepts_a_genuine_request_at_its_own_time(
    capsys: pytest.CaptureFixture[str], signer: SendGridWebhookSigner, tmp_path: Path
) -> None:
    saved = saved_fixture(tmp_path / "req.json", signer)
    code, out, _ = run(capsys, "verify", str(saved), "--now", "1705311100")
    assert (code, out.strip()) == (Exit.OK, "valid: sendgrid request, 1 event(s)")


def test_verify_says_exactly_why_a_request_fails(
    capsys: pytest.CaptureFixture[str], signer: SendGridWebhookSigner, tmp_path: Path
) -> None:
    saved = saved_fixture(tmp_path / "req.json", signer)
    code, out, err = run(capsys, "verify", str(saved))
    assert code == Exit.SIGNATURE
    assert out.startswith("refused: ") and "tolerance" in out
    assert err == ""

    tampered = saved_fixture(tmp_path / "bad.json", signer, tamper=True)
    code, out, _ = run(capsys, "verify", str(tampered), "--now", "1705311100", "--json")
    assert code == Exit.SIGNATURE
    verdict = json.loads(out)
    assert verdict["valid"] is False
    assert "tolerance" not in verdict["reason"]


def test_verify_needs_the_provider_in_the_dsn(
    capsys: pytest.CaptureFixture[str],
    signer: SendGridWebhookSigner,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("UNIMAILTRACK_DSN", MEMORY_DSN)
    saved = saved_fixture(tmp_path / "req.json", signer)
    code, _, err = run(capsys, "verify", str(saved))
    assert code == Exit.CONFIG
    assert "sendgrid" in err


# --------------------------------------------------------------------------- serve


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    env = {
        **os.environ,
        "UNIMAILTRACK_DSN": MEMORY_DSN,
        "UNIMAILTRACK_STORE": f"sqlite:///{tmp_path / 'serve.sqlite3'}",
    }
    command = [sys.executable, "-m", "unimailtrack.cli", "serve", "--port", "0"]
    process = subprocess.Popen(
        [*command, "--log-level", "warning"], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("unimailtrack: serving http://127.0.0.1:"), line
        yield line.split()[-1], process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


def test_serve_answers_webhooks_and_the_api_until_interrupted(
    served: tuple[str, subprocess.Popen[str]], tmp_path: Path
) -> None:
    url, process = served
    memory = MemoryAdapter(webhook_secret=SECRET)
    event = {
        "event": "delivered",
        "id": "evt-1",
        "recipient": "ann@example.com",
        "tracking_id": "1" * 32,
        "timestamp": datetime.now(UTC).timestamp(),
    }
    body, headers = memory.webhook([event])
    with httpx.Client(base_url=url, timeout=10) as client:
        assert client.post("/webhooks/memory", content=body, headers=headers).json()["new"] == 1
        assert client.get(f"/api/sends/{'1' * 32}").json()["status"] == "delivered"
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=10) == Exit.INTERRUPTED
    # The store was closed on the way out: SQLite folds its write-ahead log back then.
    assert (tmp_path / "serve.sqlite3").exists()
    assert not (tmp_path / "serve.sqlite3-wal").exists()
