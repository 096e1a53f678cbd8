"""Honest engagement: a bulk send's opens and clicks split into human, machine and unknown.

Read when asked, never stored: whether an open was a privacy proxy's prefetch depends on
when the message was delivered, and the delivery may be reported after the open. Computed
from the set of stored events, it is the same whatever order they came in.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from unimailtrack.deliverability import Engagement, classify_click, classify_open
from unimailtrack.tracking._records import BulkStats
from unimailtrack.tracking._store import Program, Query

__all__ = ["with_engagement"]

_ENGAGEMENT_SQL = (
    "SELECT e.tracking_id, e.type, e.machine, e.user_agent, e.timestamp_us, "
    "(SELECT MIN(d.timestamp_us) FROM events d "
    "WHERE d.tracking_id = e.tracking_id AND d.type = 'delivered'), m.sent_at_us "
    "FROM messages m JOIN events e ON e.tracking_id = m.tracking_id "
    "WHERE m.bulk_id = :bulk_id AND e.type IN ('opened', 'clicked')"
)
"""Every open and click of a bulk send, with when its message was delivered (or sent)."""
_MICROSECOND = timedelta(microseconds=1)


def with_engagement(stats: Program[BulkStats], bulk_id: str) -> Program[BulkStats]:
    """``stats`` with the engagement fields filled in."""
    counted = yield from stats
    rows = yield Query(_ENGAGEMENT_SQL, {"bulk_id": bulk_id})
    counts = {(kind, who): 0 for kind in ("opened", "clicked") for who in Engagement}
    opened: set[str] = set()
    clicked: set[str] = set()
    for tracking_id, kind, machine, agent, at_us, delivered_us, sent_us in rows:
        since = delivered_us if delivered_us is not None else sent_us
        after = None if since is None else (at_us - since) * _MICROSECOND
        flag = None if machine is None else bool(machine)
        classify = classify_open if kind == "opened" else classify_click
        who = classify(flag, agent, after)
        counts[(kind, who)] += 1
        if who is not Engagement.MACHINE:
            opened.add(tracking_id)
            if kind == "clicked":
                clicked.add(tracking_id)
    delivered = counted.delivered
    return replace(
        counted,
        human_opens=counts[("opened", Engagement.HUMAN)],
        machine_opens=counts[("opened", Engagement.MACHINE)],
        unknown_opens=counts[("opened", Engagement.UNKNOWN)],
        human_clicks=counts[("clicked", Engagement.HUMAN)],
        machine_clicks=counts[("clicked", Engagement.MACHINE)],
        unknown_clicks=counts[("clicked", Engagement.UNKNOWN)],
        opened_excluding_machine=len(opened),
        clicked_excluding_machine=len(clicked),
        open_rate=len(opened) / delivered if delivered else 0.0,
        click_rate=len(clicked) / delivered if delivered else 0.0,
        machine_excluded=counts[("opened", Engagement.MACHINE)]
        + counts[("clicked", Engagement.MACHINE)],
    )
