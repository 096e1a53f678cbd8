"""Moving the suppression list with Postmark and Brevo, end to end through the emulator, and
the Postmark, Resend and Brevo events that feed the list: each provider's list is read page by
page (429 and Retry-After honoured), applied only when complete, resumed after a failure
half-way, and written into Postmark; Brevo refuses a push it cannot take."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from unimailtrack import suppression_sync
from unimailtrack._http import RetryPolicy
from unimailtrack.adapters import BrevoAdapter, PostmarkAdapter, ResendAdapter
from unimailtrack.adapters.base import RemoteSuppression
from unimailtrack.cli import main
from unimailtrack.emulator import Emulator
from unimailtrack.emulator._server import RateLimit
from unimailtrack.errors import NotSupported
from unimailtrack.model import DeliveryStatus, Email
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


def quick_retry() -> RetryPolicy:
    return RetryPolicy(max_retries=1, initial_delay=0.01)


CREATED = "2024-03-05T10:15:00-05:00"


def seed_postmark(emulator: Emulator, stream: str = "outbound", bounces: int = 120) -> None:
    def record(address: str, reason: str, origin: str) -> dict[str, str]:
        return {
            "EmailAddress": address,
            "SuppressionReason": reason,
            "Origin": origin,
            "CreatedAt": CREATED,
        }

    emulator.suppressions("postmark").add(
        stream,
        *(record(f"pb{i}@example.com", "HardBounce", "Recipient") for i in range(bounces)),
        record("spam@example.com", "SpamComplaint", "Recipient"),
        record("unsub@example.com", "ManualSuppression", "Recipient"),
        record("mine@example.com", "ManualSuppression", "Customer"),
        record("staff@example.com", "ManualSuppression", "Admin"),
    )


def seed_brevo(emulator: Emulator, bounces: int = 230) -> None:
    def contact(address: str, code: str, message: str, day: int) -> dict[str, object]:
        return {
            "email": address,
            "senderEmail": "news@shop.example",
            "reason": {"code": code, "message": message},
            "blockedAt": f"2024-02-{day:02d}T12:30:00.000Z",
        }

    emulator.suppressions("brevo").add(
        "contacts",
        *(contact(f"bb{i}@example.com", "hardBounce", "Hard bounce", 1) for i in range(bounces)),
        contact("spam@example.com", "contactFlaggedAsSpam", "Contact flagged as spam", 2),
        contact("admin@example.com", "adminBlocked", "Admin blocked", 3),
        contact("left@example.com", "unsubscribedViaEmail", "Unsubscribed via email", 4),
        contact("api@example.com", "unsubscribedViaApi", "Unsubscribed via API", 5),
    )


# --------------------------------------------------------------------------- Postmark


def test_a_postmark_pull_reads_each_reason_and_keeps_what_each_entry_is(
    emulator: Emulator, tracker: Tracker, tmp_path: Path
) -> None:
    seed_postmark(emulator)
    adapter = emulator.adapter("postmark")
    progress = tmp_path / "pull.jsonl"
    dry = suppression_sync.pull(tracker, adapter, progress_file=progress)
    assert (dry.complete, dry.fetched, dry.pages, dry.applied) == (True, 124, 3, False)
    assert dry.by_origin == {"HardBounce": 120, "SpamComplaint": 1, "ManualSuppression": 3}
    assert tracker.suppression("pb0@example.com") is None
    done = suppression_sync.pull(tracker, adapter, apply=True, progress_file=progress)
    assert done.applied and not progress.exists()
    hard = tracker.suppression("pb0@example.com", stream="marketing")
    assert hard is not None
    assert (hard.cause, hard.scope, hard.source, hard.provider, hard.expires_at) == (
        "bounced",
        None,
        "provider-sync",
        "postmark",
        None,
    )
    assert hard.created_at == datetime(2024, 3, 5, 15, 15, tzinfo=UTC)
    spam = tracker.suppression("spam@example.com", stream="marketing")
    assert spam is not None and (spam.cause, spam.scope) == ("complained", None)
    staff = tracker.suppression("staff@example.com", stream="marketing")
    assert staff is not None and (staff.cause, staff.scope) == ("blocked", None)
    # Postmark keeps these per message stream: 'outbound' is the default stream here.
    unsub = tracker.suppression("unsub@example.com")
    assert unsub is not None and (unsub.cause, unsub.scope) == ("unsubscribed", "default")
    assert tracker.suppression("unsub@example.com", stream="marketing") is None
    mine = tracker.suppression("mine@example.com")
    assert mine is not None and (mine.cause, mine.scope) == ("manual", "default")
    again = suppression_sync.pull(tracker, adapter, apply=True, progress_file=progress)
    assert again.imported is not None and (again.imported.new, again.imported.updated) == (0, 0)
    adapter.close()


def test_a_postmark_pull_of_another_stream_scopes_its_unsubscribes_to_it(
    emulator: Emulator, tracker: Tracker, tmp_path: Path
) -> None:
    seed_postmark(emulator, stream="broadcast", bounces=1)
    adapter = emulator.adapter("postmark", message_stream="broadcast")
    report = suppression_sync.pull(tracker, adapter, apply=True, progress_file=tmp_path / "p")
    assert report.complete and report.fetched == 5
    assert tracker.suppression("unsub@example.com") is None
    found = tracker.suppression("unsub@example.com", stream="broadcast")
    assert found is not None and found.scope == "broadcast"
    assert tracker.suppression("pb0@example.com") is not None
    adapter.close()


def test_a_postmark_pull_that_fails_half_way_applies_nothing_and_resumes(
    emulator: Emulator, tracker: Tracker, tmp_path: Path
) -> None:
    seed_postmark(emulator)
    lists = emulator.suppressions("postmark")
    lists.fail_after = 1  # the hard bounces, then 500s
    adapter = emulator.adapter("postmark", retry=quick_retry())
    progress = tmp_path / "pull.jsonl"
    failed = suppression_sync.pull(tracker, adapter, apply=True, progress_file=progress)
    assert (failed.complete, failed.fetched, failed.pages, failed.applied) == (False, 120, 1, False)
    assert failed.error is not None and "status=500" in failed.error
    assert tracker.suppressions(limit=1).total == 0
    lists.fail_after = None
    resumed = suppression_sync.pull(tracker, adapter, apply=True, progress_file=progress)
    assert (resumed.complete, resumed.fetched, resumed.applied) == (True, 124, True)
    # The reason read before the failure was not asked for again: one page, then the other two.
    assert lists.served == 1 + 2
    assert resumed.imported is not None and resumed.imported.new == 124
    adapter.close()


def test_a_push_writes_into_postmark_fifty_a_request_and_postmark_then_refuses(
    emulator: Emulator, tracker: Tracker
) -> None:
    rows = [{"address": f"gone{i}@example.com", "cause": "bounced"} for i in range(120)]
    rows.append({"address": "news@example.com", "scope": "marketing", "cause": "unsubscribed"})
    rows.append({"address": "plain@example.com", "scope": "default", "cause": "unsubscribed"})
    tracker.import_suppressions(rows, source="import", dry_run=False)
    adapter = emulator.adapter("postmark")
    dry = suppression_sync.push(tracker, adapter)
    assert (len(dry.pushed), len(dry.skipped)) == (121, 1)
    assert dry.skipped[0][0].address == "news@example.com"
    assert "per message stream" in dry.skipped[0][1]
    assert emulator.suppressions("postmark").records("outbound") == []
    pushed = suppression_sync.push(tracker, adapter, apply=True)
    assert pushed.errors == [] and len(pushed.pushed) == 121
    written = emulator.suppressions("postmark").records("outbound")
    assert len(written) == 121
    assert {r["SuppressionReason"] for r in written} == {"ManualSuppression"}
    # Postmark now refuses them itself.
    result = adapter.send(
        Email(
            sender="app@example.com",
            to=["gone7@example.com", "fresh@example.com"],
            subject="hi",
            text="hello",
        )
    )
    status = {r.recipient: r.status for r in result.recipients}
    assert status["gone7@example.com"] is DeliveryStatus.SUPPRESSED
    assert status["fresh@example.com"] is DeliveryStatus.ACCEPTED
    adapter.close()


def test_an_address_postmark_refuses_is_skipped_and_the_rest_pushed(emulator: Emulator) -> None:
    adapter = emulator.adapter("postmark")
    entries = [
        RemoteSuppression(address="ok@example.com", cause="bounced"),
        RemoteSuppression(address="not an address", cause="bounced"),
    ]
    result = adapter.push_suppressions(entries)
    assert [e.address for e in result.pushed] == ["ok@example.com"]
    assert [(e.address, why) for e, why in result.skipped] == [
        ("not an address", "Postmark refused it: Invalid email address")
    ]
    assert result.errors == []
    adapter.close()


def test_429_with_retry_after_is_honoured_for_postmark_and_brevo(tmp_path: Path) -> None:
    with Emulator(api_key="sk", rate_limit=RateLimit(2, per=0.5)) as emulator:
        seed_postmark(emulator, bounces=10)
        seed_brevo(emulator, bounces=500)
        with Tracker.open(f"sqlite:///{tmp_path / 't.sqlite3'}") as tracker:
            for name, fetched in (("postmark", 14), ("brevo", 504)):
                adapter = emulator.adapter(name)
                report = suppression_sync.pull(
                    tracker, adapter, apply=True, progress_file=tmp_path / f"{name}.jsonl"
                )
                assert report.complete and report.fetched == fetched, name
                adapter.close()


def test_the_async_shells_read_postmark_and_brevo_the_same() -> None:
    with Emulator(api_key="sk") as emulator:
        seed_postmark(emulator, bounces=30)
        seed_brevo(emulator, bounces=150)

        async def run(name: str) -> tuple[int, int]:
            adapter = emulator.adapter(name)
            count = pages = 0
            async for page in adapter.alist_suppressions():
                count += len(page.items)
                pages += 1
            if name == "postmark":
                result = await adapter.apush_suppressions(
                    [RemoteSuppression(address="x@example.com", cause="bounced")]
                )
                assert len(result.pushed) == 1
            await adapter.aclose()
            return count, pages

        assert asyncio.run(run("postmark")) == (34, 3)
        assert asyncio.run(run("brevo")) == (154, 2)


# --------------------------------------------------------------------------- Brevo


def test_a_brevo_pull_pages_by_offset_and_keeps_what_each_block_is(
    emulator: Emulator, tracker: Tracker, tmp_path: Path
) -> None:
    seed_brevo(emulator)
    adapter = emulator.adapter("brevo")
    progress = tmp_path / "pull.jsonl"
    report = suppression_sync.pull(tracker, adapter, apply=True, progress_file=progress)
    assert (report.complete, report.fetched, report.pages, report.applied) == (True, 234, 3, True)
    hard = tracker.suppression("bb229@example.com", stream="marketing")
    assert hard is not None
    assert (hard.cause, hard.scope, hard.source, hard.provider, hard.expires_at) == (
        "bounced",
        None,
        "provider-sync",
        "brevo",
        None,
    )
    assert hard.created_at == datetime(2024, 2, 1, 12, 30, tzinfo=UTC)
    for address, cause in (("spam@example.com", "complained"), ("admin@example.com", "blocked")):
        found = tracker.suppression(address, stream="marketing")
        assert found is not None and (found.cause, found.scope) == (cause, None)
    # An unsubscribe from one Brevo sender is no stream here: the default stream, as any
    # unsubscribe whose send is not known.
    left = tracker.suppression("left@example.com")
    assert left is not None and (left.cause, left.scope) == ("unsubscribed", "default")
    assert left.reason is not None and "news@shop.example" in left.reason
    assert tracker.suppression("left@example.com", stream="marketing") is None
    again = suppression_sync.pull(tracker, adapter, apply=True, progress_file=progress)
    assert again.imported is not None and (again.imported.new, again.imported.updated) == (0, 0)
    adapter.close()


def test_a_brevo_pull_that_fails_half_way_applies_nothing_and_resumes(
    emulator: Emulator, tracker: Tracker, tmp_path: Path
) -> None:
    seed_brevo(emulator)
    lists = emulator.suppressions("brevo")
    lists.fail_after = 2
    adapter = emulator.adapter("brevo", retry=quick_retry())
    progress = tmp_path / "pull.jsonl"
    failed = suppression_sync.pull(tracker, adapter, apply=True, progress_file=progress)
    assert (failed.complete, failed.fetched, failed.pages, failed.applied) == (False, 200, 2, False)
    assert tracker.suppressions(limit=1).total == 0
    lists.fail_after = None
    resumed = suppression_sync.pull(tracker, adapter, apply=True, progress_file=progress)
    assert (resumed.complete, resumed.fetched, resumed.applied) == (True, 234, True)
    assert lists.served == 2 + 1
    adapter.close()


def test_brevo_refuses_a_push_it_has_no_request_for(emulator: Emulator, tracker: Tracker) -> None:
    tracker.import_suppressions(
        [{"address": "gone@example.com", "cause": "bounced"}], source="import", dry_run=False
    )
    adapter = emulator.adapter("brevo")
    with pytest.raises(NotSupported, match="brevo does not support writing"):
        suppression_sync.push(tracker, adapter)
    with pytest.raises(NotSupported):
        adapter.push_suppressions([RemoteSuppression(address="a@example.com", cause="bounced")])
    adapter.close()


def test_a_send_to_a_blocked_brevo_contact_is_reported_blocked(emulator: Emulator) -> None:
    seed_brevo(emulator, bounces=1)
    assert emulator.sent == []
    adapter = emulator.adapter("brevo")
    adapter.send(Email(sender="app@example.com", to=["bb0@example.com"], subject="s", text="t"))
    (copy,) = emulator.sent
    assert copy.scenario.name == "dropped"
    adapter.close()


# --------------------------------------------------------------------------- the command line


@pytest.mark.parametrize(("provider", "fetched"), [("postmark", 14), ("brevo", 14)])
def test_the_cli_pulls_postmark_and_brevo_with_a_summary(
    emulator: Emulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    provider: str,
    fetched: int,
) -> None:
    seed_postmark(emulator, bounces=10)
    seed_brevo(emulator, bounces=10)
    store = f"sqlite:///{tmp_path / 'c.sqlite3'}"
    progress = str(tmp_path / "progress.jsonl")
    dsn = emulator.dsn(provider)
    args = ["suppressions", "pull", dsn, "--store", store, "--progress-file", progress]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"fetched {fetched} from {provider}" in out and "dry run" in out
    assert main([*args, "--apply"]) == 0
    assert f"applied: {fetched} new" in capsys.readouterr().out
    push = ["suppressions", "push", dsn, "--store", store]
    if provider == "postmark":
        assert main(push) == 0
        assert f"would push (dry run; --apply to push) {fetched} to postmark; skipped 0" in (
            capsys.readouterr().out
        )
        assert main([*push, "--apply"]) == 0
        assert f"pushed {fetched} to postmark" in capsys.readouterr().out
    else:
        assert main(push) != 0
        assert "brevo does not support writing" in capsys.readouterr().err


# --------------------------------------------------------------------------- events


def _postmark_change(address: str, suppress: bool, at: str, record_id: int) -> bytes:
    return json.dumps(
        {
            "RecordType": "SubscriptionChange",
            "ID": record_id,
            "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
            "ServerID": 23,
            "MessageStream": "outbound",
            "ChangedAt": at,
            "Recipient": address,
            "Origin": "Recipient",
            "SuppressSending": suppress,
            "SuppressionReason": "ManualSuppression" if suppress else None,
            "Tag": "",
            "Metadata": {},
        }
    ).encode()


def test_a_postmark_subscription_change_feeds_the_list_as_provider_sync(tracker: Tracker) -> None:
    parse = PostmarkAdapter.parse_webhook_body
    tracker.ingest(parse(_postmark_change("ann@example.com", True, "2024-03-01T10:00:00Z", 1)))
    found = tracker.suppression("ann@example.com")
    assert found is not None
    assert (found.source, found.provider, found.cause) == (
        "provider-sync",
        "postmark",
        "unsubscribed",
    )
    tracker.ingest(parse(_postmark_change("ann@example.com", False, "2024-03-02T10:00:00Z", 2)))
    assert tracker.suppression("ann@example.com") is None
    # A reactivation older than the suppression lifts nothing.
    tracker.ingest(parse(_postmark_change("bob@example.com", True, "2024-03-05T10:00:00Z", 3)))
    tracker.ingest(parse(_postmark_change("bob@example.com", False, "2024-03-04T10:00:00Z", 4)))
    assert tracker.suppression("bob@example.com") is not None


def _resend_change(kind: str, address: str, at: str) -> bytes:
    return json.dumps(
        {
            "type": kind,
            "created_at": at,
            "data": {
                "id": "e169aa45-1ecf-4183-9955-b1499d5701d3",
                "email": address,
                "origin": "bounce",
                "source_id": "4ef9a417-02e9-4d39-ad75-9611e0fcc33c",
                "created_at": at,
            },
        }
    ).encode()


def test_resend_suppression_events_feed_the_list_as_provider_sync(tracker: Tracker) -> None:
    parse = ResendAdapter.parse_webhook_body
    tracker.ingest(
        parse(_resend_change("suppression.added", "cy@example.com", "2024-03-01T10:00:00Z"))
    )
    found = tracker.suppression("cy@example.com", stream="marketing")
    assert found is not None
    assert (found.source, found.provider, found.cause, found.scope) == (
        "provider-sync",
        "resend",
        "blocked",
        None,
    )
    assert found.reason is not None and "bounce" in found.reason
    tracker.ingest(
        parse(_resend_change("suppression.removed", "cy@example.com", "2024-03-02T10:00:00Z"))
    )
    assert tracker.suppression("cy@example.com") is None
    actions = [c.action for c in tracker.suppression_history("cy@example.com")]
    assert actions == ["added", "lifted"]


def test_resend_has_no_list_api_here_and_says_so() -> None:
    adapter = ResendAdapter("re_key")
    with pytest.raises(NotSupported, match="resend does not support reading"):
        next(adapter.list_suppressions())
    with pytest.raises(NotSupported, match="resend does not support writing"):
        adapter.push_suppressions([])


def test_a_brevo_hard_bounce_is_an_event_like_any_provider_bounce(tracker: Tracker) -> None:
    """Brevo's hard_bounce, spam and unsubscribed events are what the recipient's server or
    the recipient did, as SendGrid's and Mailgun's are: recorded with source ``event``."""
    body = json.dumps(
        {
            "event": "hard_bounce",
            "email": "dee@example.com",
            "message-id": "<202403011000.1@smtp-relay.mailin.fr>",
            "ts_event": 1709287200,
            "reason": "550 5.1.1 unknown user",
        }
    ).encode()
    tracker.ingest(BrevoAdapter.parse_webhook_body(body))
    found = tracker.suppression("dee@example.com")
    assert found is not None and (found.source, found.cause) == ("event", "bounced")
