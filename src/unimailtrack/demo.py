"""``make demo``: a bulk invite through the in-memory provider, its webhooks fed back through
verification and parsing, and every recipient's status, reason and timeline as a table.

Needs no account anywhere and no network.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from unimailtrack import Email, EmailEvent, Mailer, fold
from unimailtrack.adapters.memory import MemoryAdapter

GUESTS = {
    "ann@example.com": "opens-and-clicks",
    "bob@example.org": "deferred-then-delivered",
    "cyd@example.net": "bounce",
    "dee@example.com": "complaint",
    "eve@example.org": "machine-open",
    "fay@example.net": "soft-bounce",
}


def _when(moment: datetime | None) -> str:
    return moment.strftime("%H:%M:%S") if moment else "-"


def main() -> None:
    memory = MemoryAdapter()
    mailer = Mailer(memory)
    invite = Email(
        sender="Events <events@example.com>",
        to=[*GUESTS, "ann@example.com"],
        subject="You're invited: Spring Gala",
        text="Join us on 21 March. Reply to RSVP.",
        category="rsvp_invite",
        metadata={"event_id": "gala-2026"},
    )
    result = mailer.send(invite)
    print(f"bulk send {result.bulk_id}: {len(result.recipients)} recipients\n")

    events_by_id: dict[str, list[EmailEvent]] = defaultdict(list)
    for entry in result.recipients:
        scenario = GUESTS.get(entry.recipient)
        if scenario is None or entry.status.value != "accepted":
            continue
        body, headers = memory.webhook(memory.scenario(entry.tracking_id, scenario))
        for event in memory.unwrap(body, headers):  # verify, then parse
            events_by_id[event.tracking_id or ""].append(event)

    print(f"{'recipient':<18} {'status':<11} {'reason':<44} timeline")
    for entry in result.recipients:
        events = events_by_id.get(entry.tracking_id, [])
        if not events:
            print(f"{entry.recipient:<18} {entry.status.value:<11} {entry.error or '':<44}")
            continue
        state = fold(events, now=events[-1].timestamp)
        timeline = " -> ".join(f"{e.type.value}@{_when(e.timestamp)}" for e in state.timeline)
        reason = (state.reason or "")[:44]
        print(f"{entry.recipient:<18} {state.status.value:<11} {reason:<44} {timeline}")


if __name__ == "__main__":
    main()
