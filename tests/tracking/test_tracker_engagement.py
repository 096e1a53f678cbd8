"""Honest engagement in a bulk send's analytics row: machine opens and clicks left out of the
rates, and counted, whatever order the events came in."""

from __future__ import annotations

import random

from test_tracker_alerts import send
from tracking_support import T0, Store, event

from unimailtrack import EventType


def test_bulk_stats_leave_machine_events_out_of_the_rates_and_say_how_many(store: Store) -> None:
    tracker = store.open()
    recipients = [f"r{i}@example.org" for i in range(4)]
    ids = send(tracker, store.clock, T0, recipients, prefix="b")
    browser = "Mozilla/5.0 (Macintosh) AppleWebKit/605 Version/17 Safari/605"
    events = [
        *(
            event(EventType.DELIVERED, t, at=10, recipient=r, event_id=f"d{t}")
            for t, r in zip(ids, recipients, strict=True)
        ),
        # r0: an Apple privacy prefetch 2 s after delivery, then the reader an hour later.
        event(EventType.OPENED, ids[0], at=12, recipient=recipients[0], user_agent="Mozilla/5.0"),
        event(EventType.OPENED, ids[0], at=3610, recipient=recipients[0], user_agent=browser),
        # r1: the provider flags the open as a machine's; a scanner clicks 1 s after delivery.
        event(EventType.OPENED, ids[1], at=11, recipient=recipients[1], machine=True),
        event(EventType.CLICKED, ids[1], at=11, recipient=recipients[1], url="https://x.example"),
        # r2: a person clicks after ten minutes.
        event(EventType.CLICKED, ids[2], at=610, recipient=recipients[2], user_agent=browser),
        # r3: an open nobody can judge.
        event(EventType.OPENED, ids[3], at=900, recipient=recipients[3]),
    ]
    random.Random(7).shuffle(events)
    tracker.ingest(events[:5])
    tracker.ingest(events[5:])

    stats = tracker.bulk_stats("bulk-b")
    assert (stats.delivered, stats.opened, stats.clicked, stats.opens, stats.clicks) == (
        4,
        4,
        2,
        4,
        2,
    )
    assert (stats.human_opens, stats.machine_opens, stats.unknown_opens) == (1, 2, 1)
    assert (stats.human_clicks, stats.machine_clicks, stats.unknown_clicks) == (1, 1, 0)
    assert stats.machine_excluded == 3
    assert stats.opened_excluding_machine == 3  # r0 (the reader), r2 (clicked), r3
    assert stats.clicked_excluding_machine == 1
    assert stats.open_rate == 0.75 and stats.click_rate == 0.25
