"""The ``unimailtrack`` command: each subcommand's output and exit status, on real stores."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from unimailtrack import DeliveryStatus, Email, RecipientResult, SendResult
from unimailtrack.adapters import MemoryAdapter
from unimailtrack.adapters.mailgun import MailgunWebhookSigner
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
    Tracker.open(url).close()  # only serve, replay, emulate and dev create a store
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
    assert "worker" in out and "retention" in out and "partitions" in out
    assert len(SUBCOMMANDS) == 14
    for name in ("health", "orphans", "dead-letters"):
        assert name in out


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
    hint = next(line for line in out.splitlines() if line.startswith("more: "))
    assert hint.startswith("more: unimailtrack history ann@example.com --limit 1 --cursor ")
    # Pasting the hint works: the same options, the next page.
    code, out, _ = run(capsys, *shlex.split(hint.removeprefix("more: "))[1:])
    assert code == Exit.OK
    assert "2 of 2" not in out and "1 of 2" in out and "more: " not in out


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
    assert "ann@example.com  every stream  bounced" in out
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
    # Each refusal says why, and a stale one how to replay it.
    assert "request 1: HTTP 401 memory webhook refused: timestamp outside the tolerance" in out
    assert "pass --now with the time it was received" in out
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
    Tracker.open(f"sqlite:///{path}").close()
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


# --------------------------------------------------------------------------- a newcomer's mistakes


def test_a_store_that_does_not_exist_is_an_error_naming_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "typo.sqlite3"
    for command in (["history", "ann@example.com"], ["suppressions"], ["health"], ["orphans"]):
        code, _, err = run(capsys, *command, "--store", f"sqlite:///{missing}")
        assert code == Exit.USAGE, command
        assert (
            str(missing) in err
            and "serve, replay, emulate, dev and suppressions import or pull create one" in err
        )
    assert not missing.exists()


def test_replay_creates_a_store_and_says_where(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    fresh = tmp_path / "new.sqlite3"
    requests = memory_requests(tmp_path / "r.jsonl", {"t1": ("ann@example.com", "delivered")})
    code, _, err = run(capsys, "replay", str(requests), "--store", f"sqlite:///{fresh}")
    assert code == Exit.OK
    assert f"created a new store at {fresh}" in err
    assert fresh.exists()


def test_send_exits_1_when_every_recipient_is_suppressed(
    capsys: pytest.CaptureFixture[str], store: str
) -> None:
    with Tracker.open(store) as tracker:
        tracker.suppress("ann@example.com", reason="550 5.1.1 user unknown")
    argv = ["send", "--from", "events@example.com", "--to", "ann@example.com", "--text", "x"]
    code, out, err = run(capsys, *argv)
    assert code == Exit.FAILED
    assert "suppressed" in out and "nothing was sent" in err
    code, out, _ = run(capsys, *argv, "--json")
    assert code == Exit.FAILED
    assert json.loads(out)["recipients"][0]["status"] == "suppressed"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_a_failed_send_is_printed_once_with_the_reason_and_as_json(
    capsys: pytest.CaptureFixture[str], store: str
) -> None:
    dsn = f"sendgrid://SG.key@default?base_url=http://127.0.0.1:{_closed_port()}&max_retries=0"
    argv = ["send", "--dsn", dsn, "--from", "events@example.com", "--to", "ann@example.com"]
    code, out, err = run(capsys, *argv, "--text", "x")
    assert code == Exit.FAILED
    assert err.count("not sent") == 1 and "could not be reached" in err
    assert "retried" not in err and out == ""
    code, out, _ = run(capsys, *argv, "--text", "x", "--json")
    assert code == Exit.FAILED
    answer = json.loads(out)
    assert answer["ok"] is False and answer["error"] == "provider_unavailable"
    assert "could not be reached" in answer["message"]


def test_a_wrong_option_is_named_without_pydantic_s_report(
    capsys: pytest.CaptureFixture[str], store: str
) -> None:
    code, out, err = run(capsys, "send", "--from", "not an address", "--to", "a@example.com")
    assert code == Exit.USAGE
    assert "--from:" in err
    assert "pydantic" not in err and "https://" not in err and "validation error" not in err
    code, out, _ = run(capsys, "send", "--from", "e@example.com", "--json")
    assert code == Exit.USAGE
    assert json.loads(out) == {"ok": False, "error": "invalid", "message": ANY_TEXT}


class _AnyText(str):
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and "cannot build the e-mail" in other

    __hash__ = str.__hash__


ANY_TEXT = _AnyText()


def test_long_reasons_are_shown_whole_wrapped_to_the_terminal(
    capsys: pytest.CaptureFixture[str], store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    reason = "550 5.1.1 <ann@example.com>: Recipient address rejected: " + "word " * 30 + "END"
    memory = MemoryAdapter(webhook_secret=SECRET)
    body, headers = memory.webhook(
        [
            {
                "event": "bounced",
                "id": "e1",
                "recipient": "ann@example.com",
                "tracking_id": "t-long",
                "bounce": "hard",
                "reason": reason,
                "timestamp": datetime.now(UTC).timestamp(),
            }
        ]
    )
    with Tracker.open(store) as tracker:
        tracker.ingest(MemoryAdapter.parse_webhook_body(body, headers))
    code, out, _ = run(capsys, "timeline", "t-long")  # a pipe: the reason on one line
    assert code == Exit.OK and reason in out
    monkeypatch.setattr("unimailtrack.cli._terminal_width", lambda: 100)
    code, out, _ = run(capsys, "timeline", "t-long")
    table = out[out.index("TIME") :]
    assert max(len(line) for line in table.splitlines()) <= 100
    assert len(table.splitlines()) > 2  # the reason took lines of its own
    assert "END" in out and "…" not in out
    assert table.count("word") == 30


# --------------------------------------------------------------------------- operating it


def test_health_exits_1_when_a_provider_went_silent_while_sending(
    capsys: pytest.CaptureFixture[str], store: str
) -> None:
    send_invite(capsys, "ann@example.com")
    code, out, _ = run(capsys, "health", "--json")
    assert code == Exit.OK  # the memory provider answered nothing yet, but only just sent
    assert json.loads(out)["providers"]["memory"]["sends"] == 0
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    with Tracker.open(store, clock=lambda: an_hour_ago) as earlier:
        earlier.record_send(
            Email(sender="e@example.com", to=["bob@example.com"], text="x"),
            SendResult(
                bulk_id="b-old",
                recipients=[
                    RecipientResult(
                        recipient="bob@example.com",
                        tracking_id="t-old",
                        status=DeliveryStatus.ACCEPTED,
                        provider="memory",
                        message_id="m-old",
                    )
                ],
            ),
        )
    code, out, _ = run(capsys, "health", "--json")
    answer = json.loads(out)
    assert code == Exit.FAILED, out
    assert answer["providers"]["memory"]["healthy"] is False
    code, out, _ = run(capsys, "health")
    assert code == Exit.FAILED
    assert "NO" in out and "is its webhook still configured" in out
    code, out, _ = run(capsys, "health", "--silence", "30m")
    assert code == Exit.OK  # that send is older than the window asked about
    assert run(capsys, "health", "--silence", "soon")[0] == Exit.USAGE


def test_orphans_lists_events_no_send_claimed(
    capsys: pytest.CaptureFixture[str], store: str, tmp_path: Path
) -> None:
    requests = memory_requests(tmp_path / "r.jsonl", {"unsent-1": ("zed@example.org", "bounced")})
    assert run(capsys, "replay", str(requests))[0] == Exit.OK
    code, out, _ = run(capsys, "orphans")
    assert code == Exit.OK and "0 orphan event(s)" in out  # not after a while yet
    code, out, _ = run(capsys, "orphans", "--older-than", "0.001s", "--json")
    (orphan,) = json.loads(out)
    assert orphan["recipient"] == "zed@example.org" and orphan["type"] == "bounced"


def test_dead_letters_list_show_export_and_replay(
    capsys: pytest.CaptureFixture[str], store: str, tmp_path: Path
) -> None:
    memory = MemoryAdapter(webhook_secret=SECRET)
    good = {
        "event": "delivered",
        "id": "e-good",
        "recipient": "ann@example.com",
        "tracking_id": "t1",
        "timestamp": datetime.now(UTC).timestamp(),
    }
    readable, readable_headers = memory.webhook([good])
    with Tracker.open(store) as tracker:
        # Kept by an older version that could not read it, and a body nobody can read.
        first = tracker.record_dead_letter("memory", readable, readable_headers, "unknown shape")
        second = tracker.record_dead_letter("memory", b"\xff{junk", {}, "not JSON")
    code, out, _ = run(capsys, "dead-letters", "list")
    assert code == Exit.OK and "2 dead letter(s)" in out and "not JSON" in out
    code, out, _ = run(capsys, "dead-letters", "show", str(first))
    assert code == Exit.OK and readable.decode() in out and "unknown shape" in out
    assert run(capsys, "dead-letters", "show", "999")[0] == Exit.FAILED
    exported = tmp_path / "letters.jsonl"
    assert run(capsys, "dead-letters", "export", str(exported))[0] == Exit.OK
    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    assert [line["provider"] for line in lines] == ["memory", "memory"]
    assert "body_base64" in lines[1] and lines[0]["body"] == readable.decode()
    # replay needs a decision about signatures
    assert run(capsys, "dead-letters", "replay")[0] == Exit.USAGE
    code, out, _ = run(capsys, "dead-letters", "replay", "--no-verify", "--json")
    answer = json.loads(out)
    assert code == Exit.PAYLOAD
    assert [item["id"] for item in answer["stored"]] == [first]
    assert [item["id"] for item in answer["unreadable"]] == [second]
    with Tracker.open(store) as tracker:
        assert tracker.state("t1").status.value == "delivered"
        assert [d.id for d in tracker.dead_letters()] == [second]


def test_dead_letter_replay_with_verify_refuses_a_forged_letter(
    capsys: pytest.CaptureFixture[str], store: str
) -> None:
    forged, headers = MemoryAdapter(webhook_secret="another").webhook(
        [{"event": "delivered", "id": "x", "recipient": "a@example.com", "timestamp": 1}]
    )
    with Tracker.open(store) as tracker:
        letter = tracker.record_dead_letter("memory", forged, headers, "unknown shape")
    code, out, _ = run(capsys, "dead-letters", "replay", "--verify", str(letter))
    assert code == Exit.SIGNATURE and "refused: bad_signature" in out
    with Tracker.open(store) as tracker:
        assert tracker.count_events() == 0 and len(tracker.dead_letters()) == 1


def test_serve_without_webhook_keys_warns_that_every_webhook_is_refused(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "UNIMAILTRACK_DSN": "sendgrid://SG.key@default"}
    env["UNIMAILTRACK_STORE"] = f"sqlite:///{tmp_path / 's.sqlite3'}"
    process = subprocess.Popen(
        [sys.executable, "-m", "unimailtrack.cli", "serve", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stdout.readline().startswith(
            "unimailtrack: serving"
        )
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=10)
    assert "no webhook key for sendgrid: every sendgrid webhook will be refused" in err
    assert "created a new store at" in err


def test_replaying_a_mailgun_file_twice_with_verify_is_harmless(
    capsys: pytest.CaptureFixture[str], store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "mailgun-signing-key"
    signer = MailgunWebhookSigner(key)
    then = datetime(2024, 1, 15, 9, 30, tzinfo=UTC)
    lines = []
    for number in range(3):
        body = signer.json_body(
            {
                "id": f"mg-{number}",
                "event": "delivered",
                "timestamp": then.timestamp(),
                "recipient": f"r{number}@example.com",
                "message": {"headers": {"message-id": f"m{number}@mg.example.com"}},
            },
            timestamp=int(then.timestamp()),
        )
        headers = {"Content-Type": "application/json"}
        lines.append(json.dumps({"provider": "mailgun", "headers": headers, "body": body.decode()}))
    saved = tmp_path / "mailgun.jsonl"
    saved.write_text("\n".join(lines) + "\n")
    monkeypatch.setenv(
        "UNIMAILTRACK_DSN", f"mailgun://KEY:mg.example.com@default?webhook_key={key}"
    )
    argv = ["replay", str(saved), "--verify", "--now", then.isoformat()]
    code, out, _ = run(capsys, *argv)
    assert (code, out.split(":")[1].strip()) == (
        Exit.OK,
        "3 new, 0 already stored; 0 refused, 0 unreadable, 0 unknown provider",
    )
    code, out, _ = run(capsys, *argv)  # the same tokens, the same requests: duplicates
    assert code == Exit.OK, out
    assert "0 new, 3 already stored; 0 refused" in out


@pytest.mark.parametrize(
    ("dsn", "said"),
    [
        ("failover(memory:// memory://", "failover( is not closed"),
        ("smtp://user@default", "no adapter named 'smtp'; known adapters: brevo, "),
        ("sendgrid://k@default?region=mars", "'mars'; use one of: global, eu"),
    ],
)
def test_dsn_errors_quote_what_was_typed_and_say_what_is_wrong(
    capsys: pytest.CaptureFixture[str], store: str, dsn: str, said: str
) -> None:
    code, _, err = run(
        capsys,
        "send",
        "--dsn",
        dsn,
        "--from",
        "a@example.com",
        "--to",
        "b@example.com",
        "--text",
        "x",
    )
    assert code == Exit.CONFIG
    assert said in err


def test_an_invalid_status_lists_the_valid_ones(
    capsys: pytest.CaptureFixture[str], store: str
) -> None:
    sent = send_invite(capsys, "ann@example.com")
    code, _, err = run(capsys, "stats", sent["bulk_id"], "--rows", "--status", "bounce")
    assert code == Exit.USAGE
    assert "status must be one of accepted" in err and "bounced" in err


def test_emulate_keeps_its_webhook_keys_in_the_keys_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    keys = tmp_path / "emulator-keys.json"
    argv = ["emulate", "--port", "0", "--for", "0.05", "--json", "--keys-file", str(keys)]
    assert not keys.exists()
    code, out, _ = run(capsys, *argv)
    second = json.loads(out)
    code, out, _ = run(capsys, *argv)
    third = json.loads(out)
    assert code == Exit.OK
    for name in ("sendgrid_webhook_key", "mailgun_signing_key"):
        assert second[name] == third[name]
    assert keys.stat().st_mode & 0o777 == 0o600
    keys.write_text("not json")
    assert run(capsys, *argv)[0] == Exit.CONFIG


def test_dev_runs_the_emulator_and_serve_with_matching_keys_on_one_store(
    tmp_path: Path,
) -> None:
    store = f"sqlite:///{tmp_path / 'dev.sqlite3'}"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "unimailtrack.cli",
            "dev",
            "--port",
            "0",
            "--emulator-port",
            "0",
            "--delay",
            "0",
            "--store",
            store,
            "--log-level",
            "warning",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = []
        while not (line := process.stdout.readline()).startswith("unimailtrack: serving"):
            assert line, "dev ended before serving"
            lines.append(line)
        hint = next(line for line in lines if line.startswith("Try: "))
        words = shlex.split(hint)
        dsn = words[words.index("--dsn") + 1]
        message = words[words.index("--from") :]
        sent = subprocess.run(
            [sys.executable, "-m", "unimailtrack.cli", "send", "--dsn", dsn, "--json", *message],
            env={**os.environ, "UNIMAILTRACK_STORE": store},
            capture_output=True,
            text=True,
            check=True,
        )
        tracking_id = json.loads(sent.stdout)["recipients"][0]["tracking_id"]
        deadline = datetime.now(UTC) + timedelta(seconds=20)
        status = None
        while datetime.now(UTC) < deadline and status != "bounced":
            with Tracker.open(store) as tracker:
                status = tracker.state(tracking_id).status.value
        assert status == "bounced"
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=15)
    assert "refused" not in err


def test_serve_with_workers_shares_one_port_restarts_a_dead_worker_and_stops_on_a_signal(
    tmp_path: Path,
) -> None:
    env = {
        **os.environ,
        "UNIMAILTRACK_DSN": MEMORY_DSN,
        "UNIMAILTRACK_STORE": f"sqlite:///{tmp_path / 'serve.sqlite3'}",
    }
    command = [sys.executable, "-m", "unimailtrack.cli", "serve", "--port", "0", "--workers", "3"]
    process = subprocess.Popen(
        [*command, "--log-level", "warning"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    memory = MemoryAdapter(webhook_secret=SECRET)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("unimailtrack: serving http://127.0.0.1:"), line
        url = line.split()[-1]

        def workers() -> set[int]:
            children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
            return {int(pid) for pid in children.read_text().split()}

        def three_workers(without: int = 0) -> set[int]:
            for _ in range(200):
                now = workers()
                if len(now) == 3 and without not in now:
                    return now
                time.sleep(0.05)
            raise AssertionError(f"workers: {workers()}")

        started = three_workers()
        stamp = datetime.now(UTC).timestamp()

        def post(n: int) -> int:
            event = {
                "event": "delivered",
                "id": f"evt-{n}",
                "recipient": f"r{n}@example.com",
                "tracking_id": f"{n:032d}",
                "timestamp": stamp,
            }
            body, headers = memory.webhook([event])
            # A connection of its own each time, so that the kernel spreads them.
            with httpx.Client(base_url=url, timeout=10) as client:
                answer = client.post("/webhooks/memory", content=body, headers=headers)
            return int(answer.json()["new"])

        assert sum(post(n) for n in range(30)) == 30
        os.kill(min(started), signal.SIGKILL)
        three_workers(without=min(started))
        assert sum(post(n) for n in range(30, 40)) == 10
        with Tracker.open(env["UNIMAILTRACK_STORE"]) as tracker:
            assert tracker.send(f"{35:032d}") is None  # events only: no send was recorded
            assert tracker.state(f"{35:032d}").status.value == "delivered"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == Exit.INTERRUPTED
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
