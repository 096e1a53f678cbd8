"""The product screens: a contact's history, the report, a bulk send's analytics and rows."""

from __future__ import annotations

from datetime import timedelta

import pytest
from tracking_support import T0, Store, event

from unimailtrack import DeliveryStatus, Email, RecipientResult, SendResult
from unimailtrack.tracking import BulkStats, SendRecord, Tracker


def _record(
    tracker: Tracker,
    recipients: list[tuple[str, str, str | None]],
    *,
    bulk_id: str,
    subject: str = "Hello",
    category: str | None = "share_link",
    provider: str = "memory",
    status: DeliveryStatus = DeliveryStatus.ACCEPTED,
) -> None:
    """Record one send to (tracking id, address, display name) triples."""
    email = Email(
        sender="events@example.com",
        to=[f"{name} <{address}>" if name else address for _, address, name in recipients],
        subject=subject,
        text="...",
        category=category,
        metadata={"contact_id": "7"},
        tags=["t"],
    )
    tracker.record_send(
        email,
        SendResult(
            bulk_id=bulk_id,
            recipients=[
                RecipientResult(
                    recipient=address,
                    tracking_id=tid,
                    status=status,
                    provider=provider,
                    message_id=f"m-{tid}",
                    error=None if status is DeliveryStatus.ACCEPTED else "not sent",
                )
                for tid, address, _ in recipients
            ],
        ),
    )


def test_history_pages_newest_first_with_a_total(store: Store) -> None:
    tracker = store.open()
    for i in range(60):
        store.clock.now = T0 + timedelta(minutes=i)
        _record(
            tracker, [(f"t{i:03d}", "Ada@Example.com", "Ada")], bulk_id=f"b{i}", subject=f"#{i}"
        )
    _record(tracker, [("other", "bob@example.com", None)], bulk_id="bx")

    first = tracker.history("ada@example.com")
    assert first.total == 60
    assert len(first) == 25
    assert [r.subject for r in first][:3] == ["#59", "#58", "#57"]
    assert first.next_cursor is not None
    second = tracker.history("ada@example.com", cursor=first.next_cursor)
    third = tracker.history("ada@example.com", cursor=second.next_cursor)
    assert (len(second), len(third), third.next_cursor) == (25, 10, None)
    subjects = [r.subject for page in (first, second, third) for r in page]
    assert subjects == [f"#{i}" for i in reversed(range(60))]


def test_history_rows_carry_what_the_emails_tab_shows(store: Store) -> None:
    tracker = store.open()
    _record(tracker, [("t1", "ada@example.com", "Ada Lovelace")], bulk_id="b1")
    tracker.ingest([event("bounced", "t1", at=5, bounce="hard", reason="550 5.1.1 no such user")])
    [row] = tracker.history("ADA@example.com")
    assert isinstance(row, SendRecord)
    assert (row.tracking_id, row.recipient, row.name, row.subject, row.category) == (
        "t1",
        "ada@example.com",
        "Ada Lovelace",
        "Hello",
        "share_link",
    )
    assert (row.metadata, row.tags, row.provider, row.message_id) == (
        {"contact_id": "7"},
        ["t"],
        "memory",
        "m-t1",
    )
    assert (row.status, row.reason) == (DeliveryStatus.BOUNCED, "550 5.1.1 no such user")
    assert row.sent_at == store.clock.now
    assert row.updated_at == T0 + timedelta(seconds=5)


def test_a_send_has_its_record_before_any_event_arrives(store: Store) -> None:
    tracker = store.open()
    _record(tracker, [("t1", "ada@example.com", "Ada Lovelace")], bulk_id="b1")
    sent = tracker.send("t1")
    assert sent is not None
    assert (sent.tracking_id, sent.bulk_id, sent.recipient, sent.name, sent.subject) == (
        "t1",
        "b1",
        "ada@example.com",
        "Ada Lovelace",
        "Hello",
    )
    assert (sent.status, sent.reason, sent.metadata) == (
        DeliveryStatus.ACCEPTED,
        None,
        {"contact_id": "7"},
    )
    assert sent.sent_at == sent.updated_at == store.clock.now
    assert tracker.timeline("t1") == []

    tracker.ingest([event("bounced", "t1", at=5, bounce="hard", reason="550 5.1.1 no such user")])
    bounced = tracker.send("t1")
    assert bounced is not None
    assert (bounced.status, bounced.reason) == (DeliveryStatus.BOUNCED, "550 5.1.1 no such user")
    assert bounced == tracker.history("ada@example.com")[0]


def test_no_send_record_without_a_recorded_send(store: Store) -> None:
    tracker = store.open()
    assert tracker.send("nothing-here") is None
    tracker.ingest([event("delivered", "early", at=1)])  # its events arrive first
    assert tracker.send("early") is None
    _record(tracker, [("early", "ada@example.com", None)], bulk_id="b1")
    joined = tracker.send("early")
    assert joined is not None
    assert joined.status is DeliveryStatus.DELIVERED


def test_history_limits_and_cursors_are_checked(tracker: Tracker) -> None:
    with pytest.raises(ValueError, match="limit"):
        tracker.history("a@example.com", limit=0)
    with pytest.raises(ValueError, match="cursor"):
        tracker.history("a@example.com", cursor="not-a-cursor")
    report_cursor = _report_cursor(tracker)
    with pytest.raises(ValueError, match="does not belong"):
        tracker.history("a@example.com", cursor=report_cursor)


def _report_cursor(tracker: Tracker) -> str:
    _record(tracker, [("c1", "a@example.com", None), ("c2", "b@example.com", None)], bulk_id="c")
    cursor = tracker.report(limit=1).next_cursor
    assert cursor is not None
    return cursor


def test_suppressed_and_duplicate_sends_show_their_outcome(tracker: Tracker) -> None:
    _record(
        tracker, [("t1", "ada@example.com", None)], bulk_id="b", status=DeliveryStatus.SUPPRESSED
    )
    [row] = tracker.history("ada@example.com")
    assert (row.status, row.reason) == (DeliveryStatus.SUPPRESSED, "not sent")


def test_report_filters_by_date_status_category_and_provider(store: Store) -> None:
    tracker = store.open()
    store.clock.now = T0
    _record(tracker, [("a1", "a@example.com", None)], bulk_id="b1", category="rsvp_invite")
    store.clock.now = T0 + timedelta(days=1)
    _record(
        tracker,
        [("b1", "b@example.com", None)],
        bulk_id="b2",
        category="share_link",
        provider="ses",
    )
    store.clock.now = T0 + timedelta(days=2)
    _record(tracker, [("c1", "c@example.com", None)], bulk_id="b3", category="upload_rejection")
    tracker.ingest([event("delivered", "b1", at=5), event("bounced", "c1", at=5, bounce="soft")])

    def ids(page: object) -> list[str]:
        return [r.tracking_id for r in page]  # type: ignore[attr-defined]

    assert ids(tracker.report()) == ["c1", "b1", "a1"]
    assert ids(tracker.report(since=T0 + timedelta(hours=1))) == ["c1", "b1"]
    assert ids(tracker.report(until=T0 + timedelta(days=2))) == ["b1", "a1"]
    assert ids(tracker.report(status="delivered")) == ["b1"]
    assert ids(tracker.report(status=[DeliveryStatus.BOUNCED, "accepted"])) == ["c1", "a1"]
    assert ids(tracker.report(category=["rsvp_invite", "share_link"])) == ["b1", "a1"]
    assert ids(tracker.report(provider="ses")) == ["b1"]
    assert ids(tracker.report(bulk_id="b3")) == ["c1"]
    assert ids(tracker.report(recipient="A@example.com")) == ["a1"]
    first = tracker.report(limit=2)
    assert (ids(first), first.total) == (["c1", "b1"], 3)
    rest = tracker.report(limit=2, cursor=first.next_cursor)
    assert (ids(rest), rest.next_cursor) == (["a1"], None)
    with pytest.raises(ValueError, match="sent"):
        tracker.report(status="sent")


def _bulk(tracker: Tracker) -> None:
    _record(
        tracker,
        [
            ("r1", "carol@example.com", "Carol"),
            ("r2", "alice@example.com", "Alice"),
            ("r3", "bob@example.com", "Bob"),
            ("r4", "dave@example.com", None),
            ("r5", "erin@example.com", "erin"),
        ],
        bulk_id="bulk",
    )
    _record(
        tracker,
        [("r6", "frank@example.com", "Frank")],
        bulk_id="bulk",
        status=DeliveryStatus.SUPPRESSED,
    )
    tracker.ingest(
        [
            event("delivered", "r1", at=10),
            event("opened", "r1", at=20),
            event("opened", "r1", at=25),
            event("clicked", "r1", at=30),
            event("delivered", "r2", at=11),
            event("opened", "r2", at=40),
            event("deferred", "r3", at=5),
            event("bounced", "r3", at=50, bounce="hard", reason="550 user unknown"),
            event("delivered", "r4", at=12),
            event("complained", "r4", at=60),
            event("dropped", "r5", at=2, reason="Bounced Address"),
            event("delivered", "r9", at=2),  # another send entirely
        ]
    )


def test_bulk_stats_count_each_stage_reached(tracker: Tracker) -> None:
    _bulk(tracker)
    assert tracker.bulk_stats("bulk") == BulkStats(
        bulk_id="bulk",
        recipients=6,
        sent=5,
        suppressed=1,
        duplicates=0,
        not_sent=0,
        delivered=3,
        opened=2,
        clicked=1,
        bounced=1,
        dropped=1,
        deferred=1,
        rejected=0,
        failed=0,
        complained=1,
        unsubscribed=0,
        opens=3,
        clicks=1,
        unique_opens=2,
        unique_clicks=1,
        # No user agents and no machine flags: the opens cannot be judged, and the click
        # 20 s after delivery is a link scanner's.
        unknown_opens=3,
        machine_clicks=1,
        opened_excluding_machine=2,
        open_rate=2 / 3,
        machine_excluded=1,
    )
    assert tracker.bulk_stats("nothing") == BulkStats(bulk_id="nothing")


def test_bulk_stats_count_expired_deferrals_as_failed(store: Store) -> None:
    tracker = store.open(deferred_expiry=timedelta(hours=1))
    _record(tracker, [("d1", "a@example.com", None), ("d2", "b@example.com", None)], bulk_id="b")
    tracker.ingest([event("deferred", "d1", at=T0), event("deferred", "d2", at=T0)])
    tracker.ingest([event("delivered", "d2", at=T0 + timedelta(minutes=5))])
    store.clock.now = T0 + timedelta(hours=2)
    stats = tracker.bulk_stats("b")
    assert (stats.deferred, stats.failed, stats.delivered) == (2, 1, 1)


def _column(page: object, name: str) -> list[object]:
    return [getattr(row, name) for row in page]  # type: ignore[attr-defined]


def test_bulk_rows_sort_by_name_email_status_and_date(tracker: Tracker) -> None:
    _bulk(tracker)
    assert _column(tracker.bulk_rows("bulk", sort="name"), "tracking_id") == [
        "r4",  # no name sorts first
        "r2",
        "r3",
        "r1",
        "r5",  # "erin": sorting ignores case
        "r6",
    ]
    assert _column(tracker.bulk_rows("bulk", sort="email", descending=True), "recipient") == [
        "frank@example.com",
        "erin@example.com",
        "dave@example.com",
        "carol@example.com",
        "bob@example.com",
        "alice@example.com",
    ]
    assert _column(tracker.bulk_rows("bulk", sort="status"), "status") == [
        DeliveryStatus.SUPPRESSED,
        DeliveryStatus.BOUNCED,
        DeliveryStatus.DROPPED,
        DeliveryStatus.OPENED,
        DeliveryStatus.CLICKED,
        DeliveryStatus.COMPLAINED,
    ]
    by_date = tracker.bulk_rows("bulk", sort="date", descending=True)
    # The suppressed copy's badge dates from the send, a day after the events.
    assert _column(by_date, "tracking_id")[:5] == ["r6", "r4", "r3", "r2", "r1"]
    assert by_date.total == 6
    with pytest.raises(ValueError, match="sort must be one of"):
        tracker.bulk_rows("bulk", sort="colour")


def test_bulk_rows_filter_by_status_and_page_by_keyset(tracker: Tracker) -> None:
    _bulk(tracker)
    bounced = tracker.bulk_rows("bulk", status=["bounced", DeliveryStatus.DROPPED], sort="email")
    assert (_column(bounced, "tracking_id"), bounced.total) == (["r3", "r5"], 2)
    for sort in ("name", "email", "status", "date", "sent_at"):
        for descending in (False, True):
            whole = _column(
                tracker.bulk_rows("bulk", sort=sort, descending=descending), "tracking_id"
            )
            paged: list[object] = []
            cursor = None
            while True:
                page = tracker.bulk_rows(
                    "bulk", sort=sort, descending=descending, limit=2, cursor=cursor
                )
                paged.extend(_column(page, "tracking_id"))
                assert page.total == 6
                cursor = page.next_cursor
                if cursor is None:
                    break
            assert paged == whole, (sort, descending)
    other = tracker.bulk_rows("bulk", sort="name", limit=2).next_cursor
    assert other is not None
    with pytest.raises(ValueError, match="does not belong"):
        tracker.bulk_rows("bulk", sort="email", cursor=other)


def test_domain_alerts_flag_several_recipients_bouncing_at_one_domain(store: Store) -> None:
    tracker = store.open()
    store.clock.now = T0 + timedelta(hours=10)
    tracker.ingest(
        [
            event(
                "bounced",
                "a",
                at=60,
                recipient="a@corp.example",
                bounce="hard",
                reason="550 5.7.1 blocked",
            ),
            event(
                "bounced",
                "b",
                at=120,
                recipient="b@CORP.example",
                bounce="block",
                reason="554 policy",
            ),
            event(
                "bounced",
                "c",
                at=180,
                recipient="c@corp.example",
                bounce="hard",
                reason="550 5.7.1 blocked",
            ),
            event("bounced", "c2", at=190, recipient="c@corp.example", bounce="hard"),
            event("bounced", "d", at=60, recipient="d@small.example", bounce="hard"),
            event("bounced", "e", at=60, recipient="e@small.example", bounce="hard"),
            event("bounced", "f", at=60, recipient="f@soft.example", bounce="soft"),
            event("bounced", "g", at=60, recipient="g@soft.example", bounce="soft"),
            event("bounced", "h", at=60, recipient="h@soft.example", bounce="soft"),
            event("bounced", "i", at=-86400 * 3, recipient="i@small.example", bounce="hard"),
        ]
    )
    [alert] = tracker.domain_alerts()
    assert (alert.domain, alert.recipients, alert.bounces) == ("corp.example", 3, 4)
    assert (alert.first_at, alert.last_at) == (
        T0 + timedelta(seconds=60),
        T0 + timedelta(seconds=190),
    )
    assert alert.reasons == ("550 5.7.1 blocked", "554 policy")
    assert [a.domain for a in tracker.domain_alerts(threshold=2)] == [
        "corp.example",
        "small.example",
    ]
    assert [a.domain for a in tracker.domain_alerts(kinds=["hard"])] == []
    assert [a.domain for a in tracker.domain_alerts(window=timedelta(days=4), threshold=3)] == [
        "corp.example",
        "small.example",
    ]
    assert tracker.domain_alerts(now=T0 + timedelta(days=30)) == []


def test_dead_letters_keep_the_body_and_drop_credentials(tracker: Tracker) -> None:
    first = tracker.record_dead_letter(
        "sendgrid",
        b"[{truncated",
        {"Content-Type": "application/json", "Authorization": "Basic c2VjcmV0"},
        "body is not JSON",
    )
    second = tracker.record_dead_letter("ses", b"\x00\xff", {}, "not a notification")
    letters = tracker.dead_letters()
    assert [d.id for d in letters] == [second, first]
    assert letters[1].body == b"[{truncated"
    assert letters[1].headers == {"Content-Type": "application/json"}
    assert (letters[1].provider, letters[1].reason) == ("sendgrid", "body is not JSON")
    assert [d.id for d in tracker.dead_letters(provider="ses")] == [second]
    assert tracker.discard_dead_letter(second)
    assert not tracker.discard_dead_letter(second)
    assert [d.id for d in tracker.dead_letters()] == [first]


def test_nonces_are_remembered_until_they_expire(store: Store) -> None:
    tracker = store.open()
    other_process = store.open()
    expires = store.clock.now + timedelta(minutes=5)
    assert tracker.add_if_absent("token-1", expires)
    assert not other_process.add_if_absent("token-1", expires)
    assert other_process.add_if_absent("token-2", expires)
    store.clock.advance(timedelta(minutes=6))
    assert tracker.add_if_absent("token-1", store.clock.now + timedelta(minutes=5))
    store.clock.advance(timedelta(minutes=6))
    tracker.sweep()
    assert tracker.add_if_absent("token-2", store.clock.now + timedelta(minutes=5))
