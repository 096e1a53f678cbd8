"""What the dashboard asks of the tracker beyond the listings: searching the report by
recipient or subject, a bulk send's machine opens, whether each send asked for tracking, and a
readiness ping; on every backend, sync and async alike."""

from __future__ import annotations

import asyncio

from tracking_support import Store, event

from unimailtrack import DeliveryStatus, Email, RecipientResult, SendResult
from unimailtrack.tracking import Tracker


def _send(
    tracker: Tracker,
    tid: str,
    address: str,
    subject: str,
    *,
    bulk_id: str = "b",
    track: bool = False,
) -> None:
    email = Email(
        sender="events@example.com",
        to=[address],
        subject=subject,
        text="...",
        track_opens=track,
        track_clicks=track,
    )
    result = SendResult(
        bulk_id=bulk_id,
        recipients=[
            RecipientResult(
                recipient=address,
                tracking_id=tid,
                status=DeliveryStatus.ACCEPTED,
                provider="memory",
                message_id=f"m-{tid}",
            )
        ],
    )
    tracker.record_send(email, result)


def test_the_report_searches_recipient_and_subject_case_insensitively(store: Store) -> None:
    tracker = store.open()
    _send(tracker, "s1", "Ann.Archer@example.com", "Spring Gala")
    _send(tracker, "s2", "bob@example.org", "Your 50% discount")
    _send(tracker, "s3", "cyd@example.net", "Spring_sale")

    def ids(search: str) -> list[str]:
        return sorted(r.tracking_id for r in tracker.report(search=search))

    assert ids("ann.arch") == ["s1"]
    assert ids("SPRING") == ["s1", "s3"]
    assert ids("50%") == ["s2"]
    assert ids("%") == ["s2"]  # a literal percent sign, not "anything"
    assert ids("g_g") == []  # an underscore matches only an underscore, not "g g"
    assert ids("g_") == ["s3"]
    assert ids("example.org") == ["s2"]
    assert tracker.report(search="spring", limit=1).total == 2
    page = asyncio.run(tracker.areport(search="gala"))
    assert [r.tracking_id for r in page] == ["s1"]


def test_records_say_whether_the_send_asked_for_tracking(store: Store) -> None:
    tracker = store.open()
    _send(tracker, "t1", "a@example.com", "x", track=True)
    _send(tracker, "t2", "b@example.com", "x")
    assert tracker.send("t1").track_opens is True  # type: ignore[union-attr]
    assert tracker.send("t2").track_clicks is False  # type: ignore[union-attr]
    rows = {r.tracking_id: r.track_opens for r in tracker.bulk_rows("b")}
    assert rows == {"t1": True, "t2": False}
    stats = tracker.bulk_stats("b")
    assert (stats.open_tracked, stats.click_tracked) == (1, 1)


def test_bulk_stats_count_machine_opens_apart(store: Store) -> None:
    tracker = store.open()
    _send(tracker, "o1", "a@example.com", "x", track=True)
    _send(tracker, "o2", "b@example.com", "x", track=True)
    _send(tracker, "o3", "c@example.com", "x", track=True, bulk_id="other")
    tracker.ingest(
        [
            event("delivered", "o1", at=1, recipient="a@example.com"),
            event("opened", "o1", at=2, recipient="a@example.com", machine=True),
            event("opened", "o1", at=3, recipient="a@example.com"),
            event("opened", "o2", at=4, recipient="b@example.com", machine=True),
            event("opened", "o3", at=5, recipient="c@example.com", machine=True),
        ]
    )
    stats = tracker.bulk_stats("b")
    assert (stats.opens, stats.machine_opens) == (3, 2)
    assert (stats.open_tracked, stats.click_tracked) == (2, 2)
    assert asyncio.run(tracker.abulk_stats("other")).machine_opens == 1


def test_ping_answers_while_the_store_does(store: Store) -> None:
    tracker = store.open()
    assert tracker.ping() is True
    assert asyncio.run(tracker.aping()) is True
