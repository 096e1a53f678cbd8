"""Moving the suppression list between providers, end to end through the emulator: each
provider's own list API is read page by page (429 and Retry-After honoured), applied only
when complete, resumed after a failure half-way, and written into another provider."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from unimailtrack import suppression_sync
from unimailtrack.adapters import MailgunAdapter, SendGridAdapter
from unimailtrack.adapters.base import RemoteSuppression
from unimailtrack.adapters.memory import MemoryAdapter
from unimailtrack.cli import main
from unimailtrack.emulator import Emulator
from unimailtrack.emulator._server import RateLimit
from unimailtrack.errors import NotSupported
from unimailtrack.tracking import Tracker


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(api_key="sk-test") as running:
        yield running


@pytest.fixture(params=["sqlite", "postgres"])
def tracker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Tracker]:
    """A tracker on each backend: a pull applies into either the same way."""
    if request.param == "sqlite":
        with Tracker.open(f"sqlite:///{tmp_path / 'sync.sqlite3'}") as opened:
            yield opened
        return
    import secrets

    from tracking.tracking_support import POSTGRES_URL, drop_schema, require_postgres, with_schema

    require_postgres()
    schema = f"t_{secrets.token_hex(6)}"
    try:
        with Tracker.open(with_schema(POSTGRES_URL, schema)) as opened:
            yield opened
    finally:
        drop_schema(schema)


def seed_sendgrid(emulator: Emulator, bounces: int = 1203) -> None:
    lists = emulator.suppressions("sendgrid")
    lists.add(
        "bounces",
        *(
            {
                "created": 1700000000 + i,
                "email": f"b{i}@example.com",
                "reason": "550 5.1.1 unknown",
                "status": "5.1.1",
            }
            for i in range(bounces)
        ),
    )
    lists.add(
        "bounces",
        {"created": 1700000000, "email": "full@example.com", "reason": "452", "status": "4.2.2"},
    )
    lists.add("blocks", {"created": 1700000000, "email": "blk@example.org", "reason": "rep"})
    lists.add("spam_reports", {"created": 1700000000, "email": "spam@example.com", "ip": "1"})
    lists.add("unsubscribes", {"created": 1700000000, "email": "all@example.com"})
    lists.add("groups", {"id": 7, "name": "marketing"})
    lists.add("group:7", "news@example.com")


def test_a_sendgrid_pull_reads_every_list_and_keeps_severity(
    emulator: Emulator, tracker: Tracker, tmp_path: Path
) -> None:
    seed_sendgrid(emulator)
    adapter = emulator.adapter("sendgrid")
    progress = tmp_path / "pull.jsonl"
    dry = suppression_sync.pull(tracker, adapter, progress_file=progress)
    assert (dry.complete, dry.fetched, dry.applied) == (True, 1208, False)
    assert dry.imported is not None and dry.imported.new == 1208
    assert tracker.suppression("b0@example.com") is None
    done = suppression_sync.pull(tracker, adapter, apply=True, progress_file=progress)
    assert done.applied and not progress.exists()
    hard = tracker.suppression("b0@example.com")
    assert hard is not None and (hard.source, hard.provider, hard.expires_at) == (
        "provider-sync",
        "sendgrid",
        None,
    )
    # A provider's soft-bounce and block lists never become permanent suppressions.
    for address in ("full@example.com", "blk@example.org"):
        soft = tracker.suppression(address)
        assert soft is not None and soft.expires_at is not None
    news = tracker.suppression("news@example.com", stream="marketing")
    assert news is not None and news.scope == "marketing"
    assert tracker.suppression("news@example.com") is None
    again = suppression_sync.pull(tracker, adapter, apply=True, progress_file=progress)
    assert again.imported is not None and (again.imported.new, again.imported.updated) == (0, 0)
    adapter.close()


def test_a_pull_that_fails_half_way_applies_nothing_and_resumes(
    emulator: Emulator, tracker: Tracker, tmp_path: Path
) -> None:
    seed_sendgrid(emulator)
    lists = emulator.suppressions("sendgrid")
    lists.fail_after = 2  # two pages of bounces, then 500s
    adapter = emulator.adapter("sendgrid", retry=suppression_sync_retry())
    progress = tmp_path / "pull.jsonl"
    failed = suppression_sync.pull(tracker, adapter, apply=True, progress_file=progress)
    assert (failed.complete, failed.fetched, failed.pages, failed.applied) == (
        False,
        1000,
        2,
        False,
    )
    assert failed.error is not None and "status=500" in failed.error
    assert tracker.suppressions(limit=1).total == 0
    assert progress.exists()
    lists.fail_after = None
    resumed = suppression_sync.pull(tracker, adapter, apply=True, progress_file=progress)
    assert (resumed.complete, resumed.fetched, resumed.applied) == (True, 1208, True)
    assert resumed.imported is not None and resumed.imported.new == 1208
    # The two pages read before the failure were not asked for again.
    assert lists.served == 2 + 6
    adapter.close()


def suppression_sync_retry():  # type: ignore[no-untyped-def]
    from unimailtrack._http import RetryPolicy

    return RetryPolicy(max_retries=1, initial_delay=0.01)


def test_partial_applies_what_a_failed_pull_fetched(
    emulator: Emulator, tracker: Tracker, tmp_path: Path
) -> None:
    seed_sendgrid(emulator)
    emulator.suppressions("sendgrid").fail_after = 1
    adapter = emulator.adapter("sendgrid", retry=suppression_sync_retry())
    report = suppression_sync.pull(
        tracker, adapter, apply=True, partial=True, progress_file=tmp_path / "p.jsonl"
    )
    assert (report.complete, report.applied, report.fetched) == (False, True, 500)
    assert tracker.suppressions(limit=1).total == 500
    adapter.close()


def test_429_with_retry_after_is_honoured_through_the_retry_policy(tmp_path: Path) -> None:
    with Emulator(api_key="sk", rate_limit=RateLimit(2, per=0.5)) as emulator:
        seed_sendgrid(emulator, bounces=1800)
        with Tracker.open(f"sqlite:///{tmp_path / 't.sqlite3'}") as tracker:
            adapter = emulator.adapter("sendgrid")
            report = suppression_sync.pull(
                tracker, adapter, apply=True, progress_file=tmp_path / "p.jsonl"
            )
            assert report.complete and report.fetched == 1805
            adapter.close()


def test_mailgun_and_ses_pull_and_a_push_writes_into_another_provider(
    emulator: Emulator, tracker: Tracker, tmp_path: Path
) -> None:
    mailgun = emulator.suppressions("mailgun")
    mailgun.add(
        "bounces",
        *(
            {
                "address": f"m{i}@example.com",
                "code": "550",
                "error": "no such user",
                "created_at": "Fri, 21 Oct 2022 10:15:00 UTC",
            }
            for i in range(1500)
        ),
    )
    mailgun.add(
        "complaints", {"address": "c@example.com", "created_at": "Fri, 21 Oct 2022 10:15:00 UTC"}
    )
    mailgun.add("unsubscribes", {"address": "u@example.com", "tags": ["marketing"]})
    adapter = emulator.adapter("mailgun")
    report = suppression_sync.pull(tracker, adapter, apply=True, progress_file=tmp_path / "m")
    assert (report.complete, report.fetched) == (True, 1502)
    assert tracker.suppression("u@example.com", stream="marketing") is not None
    ses_lists = emulator.suppressions("ses")
    ses_lists.add(
        "addresses",
        {"EmailAddress": "s@example.com", "Reason": "COMPLAINT", "LastUpdateTime": 1700000000},
    )
    ses = emulator.adapter("ses")
    pulled = suppression_sync.pull(tracker, ses, apply=True, progress_file=tmp_path / "s")
    assert pulled.complete and tracker.suppression("s@example.com") is not None

    dry = suppression_sync.push(tracker, ses)
    assert len(dry.pushed) == 1502 and len(dry.skipped) == 1
    assert len(ses_lists.records("addresses")) == 1
    pushed = suppression_sync.push(tracker, ses, apply=True)
    assert pushed.errors == [] and len(pushed.pushed) == 1502
    written = {r["EmailAddress"]: r["Reason"] for r in ses_lists.records("addresses")}
    assert written["c@example.com"] == "COMPLAINT" and written["m7@example.com"] == "BOUNCE"
    sendgrid = emulator.adapter("sendgrid")
    assert suppression_sync.push(tracker, sendgrid, apply=True).errors == []
    emails = {r["email"] for r in emulator.suppressions("sendgrid").records("unsubscribes")}
    assert {"m0@example.com", "s@example.com"} <= emails and "u@example.com" not in emails
    pushed_back = suppression_sync.push(tracker, adapter, apply=True)
    assert pushed_back.errors == []
    for one in (adapter, ses, sendgrid):
        one.close()


def test_the_async_shells_page_and_push_the_same() -> None:
    with Emulator(api_key="sk") as emulator:
        seed_sendgrid(emulator, bounces=700)
        adapter = emulator.adapter("sendgrid")

        async def run() -> int:
            count = 0
            async for page in adapter.alist_suppressions():
                count += len(page.items)
            result = await adapter.apush_suppressions(
                [RemoteSuppression(address="x@example.com", cause="bounced")]
            )
            assert len(result.pushed) == 1
            await adapter.aclose()
            return count

        assert asyncio.run(run()) == 705


def test_adapters_without_a_list_api_say_so() -> None:
    memory = MemoryAdapter()
    with pytest.raises(NotSupported, match="memory does not support reading"):
        next(memory.list_suppressions())
    with pytest.raises(NotSupported):
        memory.push_suppressions([])


def test_a_tampered_mailgun_cursor_cannot_send_the_key_elsewhere() -> None:
    adapter = MailgunAdapter("key", "example.com")
    cursor = json.dumps({"list": "bounces", "url": "https://attacker.example/steal"})
    with pytest.raises(ValueError, match="not a page of"):
        adapter.suppression_page_request(cursor)
    with pytest.raises(ValueError, match="not a SendGrid suppression cursor"):
        SendGridAdapter("key").suppression_page_request("{not json")


def test_a_provider_page_that_is_not_a_list_is_a_payload_error() -> None:
    from unimailtrack.errors import PayloadError

    adapter = SendGridAdapter("key")
    request = adapter.suppression_page_request(None)
    with pytest.raises(PayloadError):
        adapter.read_suppression_page(None, httpx.Response(200, json={"a": 1}, request=request))


def test_the_cli_pulls_with_a_summary_and_resumes(
    emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_sendgrid(emulator, bounces=10)
    store = f"sqlite:///{tmp_path / 'c.sqlite3'}"
    progress = str(tmp_path / "progress.jsonl")
    dsn = emulator.dsn("sendgrid")
    args = ["suppressions", "pull", dsn, "--store", store, "--progress-file", progress]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "fetched 15 from sendgrid" in out and "dry run" in out
    assert main([*args, "--apply"]) == 0
    assert "applied: 15 new" in capsys.readouterr().out
    assert main(["suppressions", "push", dsn, "--store", store]) == 0
    assert "would push (dry run; --apply to push) 12 to sendgrid; skipped 1" in (
        capsys.readouterr().out
    )
