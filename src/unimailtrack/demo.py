"""``make demo``: the whole story on this machine, with no account anywhere.

1. The emulator stands in for SendGrid, Mailgun, Amazon SES, Resend, Postmark and Brevo on
   127.0.0.1.
2. ``unimailtrack serve`` runs in a process of its own on a fresh SQLite file: the webhook
   endpoints, the JSON API and the live stream of badge changes.
3. One bulk invite goes out through each real adapter in turn; only the DSN changes. The
   recipients' addresses choose what happens to them (docs/emulator.md).
4. Every badge change streams back live while the providers' signed webhooks arrive, some of
   them twice and out of order on purpose; then each recipient's final status and reason.
5. Last, each bulk send's analytics row, the suppression list (kept across providers: the
   later sends refuse the addresses the first one lost) and the domain alerts.
6. The dashboard stays up, its URL printed, until Ctrl-C: the same story in a browser. In a
   shell with no terminal on standard input (a script, CI) the demo ends by itself.

``python -m unimailtrack.demo --delay 0`` runs it as fast as it goes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Final

import httpx

from unimailtrack import AsyncMailer, DeliveryStatus, Email, SendResult
from unimailtrack.config import parse_dsn
from unimailtrack.emulator import PROVIDERS, Emulator
from unimailtrack.tracking import Tracker

__all__ = ["GUESTS", "main"]

GUESTS: Final = (
    "Ann Archer <opens-and-clicks+ann@example.com>",
    "Bob Brown <deferred-then-delivered+bob@example.org>",
    "Cyd Chen <bounce+cyd@oldcorp.example>",
    "Dan Diaz <bounce+dan@oldcorp.example>",
    "Eli Evans <bounce+eli@oldcorp.example>",
    "Fay Fox <complaint+fay@example.com>",
    "Gus Gray <machine-open+gus@example.net>",
    "Hal Hill <soft-bounce+hal@example.org>",
    "Ivy Ito <blocked+ivy@example.net>",
    "Jo Jones <unsubscribe+jo@example.com>",
    "Kim Kerr <dropped+kim@example.org>",
    "Lee Lam <lee@example.com>",
    "Ann Archer <opens-and-clicks+ann@example.com>",
)
"""The guest list: each address names its scenario; Ann is invited twice by mistake."""

NAMES: Final = {
    "sendgrid": "SendGrid",
    "mailgun": "Mailgun",
    "ses": "Amazon SES",
    "resend": "Resend",
    "postmark": "Postmark",
    "brevo": "Brevo",
}
DEFAULT_DELAY: Final = 0.25
START_LIMIT: Final = 20.0
"""Seconds ``unimailtrack serve`` may take to start."""
DRAIN_LIMIT: Final = 30.0
SETTLE_LIMIT: Final = 10.0
"""Seconds the live stream may lag behind the store before the demo goes on without it."""
STOP_LIMIT: Final = 10.0


def invite() -> Email:
    return Email(
        sender="Spring Gala <events@example.com>",
        to=list(GUESTS),
        subject="You're invited: Spring Gala, 21 March",
        text="Join us on 21 March. Reply to RSVP: https://example.com/rsvp",
        html='<p>Join us on 21 March. <a href="https://example.com/rsvp">RSVP</a></p>',
        category="rsvp_invite",
        metadata={"event_id": "gala-2026"},
        track_opens=True,
        track_clicks=True,
    )


# --------------------------------------------------------------------------- output


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, indent: str = "  ") -> str:
    """Rows as aligned columns; a cell's ``None`` is blank."""
    cells = [[str(h) for h in headers]] + [
        ["" if value is None else str(value) for value in row] for row in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        (indent + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))).rstrip()
        for row in cells
    )


def _clip(text: str | None, width: int = 60) -> str:
    text = text or ""
    return text if len(text) <= width else text[: width - 1] + "…"


class _Clock:
    """Seconds since the demo started, for the live lines."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def __str__(self) -> str:
        return f"+{time.monotonic() - self.start:5.2f}s"


# --------------------------------------------------------------------------- the receiver


def _lines(stream: IO[str], into: queue.Queue[str]) -> None:
    for line in stream:
        into.put(line)


@contextlib.contextmanager
def serving(dsn: str, store: str, log: IO[str]) -> Iterator[str]:
    """``unimailtrack serve`` on a free port of 127.0.0.1, in its own process; yields its URL.
    It is told to stop (SIGTERM) afterwards, and killed if it does not within a few seconds."""
    command = [sys.executable, "-m", "unimailtrack.cli", "serve", "--port", "0"]
    command += ["--dsn", dsn, "--store", store, "--log-level", "warning"]
    process = subprocess.Popen(  # noqa: S603 - this interpreter, fixed arguments
        command, stdout=subprocess.PIPE, stderr=log, text=True
    )
    assert process.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(process.stdout, lines), daemon=True).start()
    try:
        yield _await_url(process, lines)
    finally:
        process.terminate()
        try:
            process.wait(STOP_LIMIT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()


def _await_url(process: subprocess.Popen[str], lines: queue.Queue[str]) -> str:
    give_up = time.monotonic() + START_LIMIT
    while (left := give_up - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=min(left, 0.5))
        except queue.Empty:
            if process.poll() is not None:
                break
            continue
        _, found, url = line.partition("serving ")
        if found:
            return url.strip()
    raise RuntimeError("unimailtrack serve did not start; its log follows the demo's output")


# --------------------------------------------------------------------------- the story


class _Live:
    """Prints every badge change the receiver streams (``/api/changes``) as it arrives, and
    remembers the latest badge of each tracking id."""

    def __init__(self, client: httpx.AsyncClient, clock: _Clock) -> None:
        self.client = client
        self.clock = clock
        self.ready = asyncio.Event()
        self.latest: dict[str, str] = {}
        self.provider = "?"

    async def watch(self) -> None:
        async with self.client.stream("GET", "/api/changes") as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                self.ready.set()
                if line.startswith("data:"):
                    self.show(json.loads(line.removeprefix("data:")))

    def show(self, change: dict[str, Any]) -> None:
        self.latest[change["tracking_id"]] = change["status"]
        before, now = change.get("previous"), change["status"]
        moved = now if before in (None, now) else f"{before} → {now}"
        who = change.get("recipient") or change["tracking_id"][:16]
        print(f"  {self.clock}  {who:<45} {moved:<28} {_clip(change.get('reason'), 50)}")

    async def settle(self, tracker: Tracker, result: SendResult) -> None:
        """Wait until the stream has shown every accepted copy's badge as the store has it."""
        sent = [r.tracking_id for r in result.recipients if r.status is DeliveryStatus.ACCEPTED]
        give_up = time.monotonic() + SETTLE_LIMIT
        while time.monotonic() < give_up:
            states = [await tracker.astate(t) for t in sent]
            if all(self.latest.get(t) == s.status.value for t, s in zip(sent, states, strict=True)):
                return
            await asyncio.sleep(0.05)


async def _send_through(
    provider: str, emulator: Emulator, tracker: Tracker, live: _Live
) -> SendResult:
    dsn = emulator.dsn(provider)
    print(f"\n{NAMES[provider]}: UNIMAILTRACK_DSN={parse_dsn(dsn).redacted()}")
    async with AsyncMailer(dsn, tracker=tracker) as mailer:
        result = await mailer.send(invite())
    counts: dict[str, int] = {}
    for entry in result.recipients:
        counts[entry.status.value] = counts.get(entry.status.value, 0) + 1
    summary = ", ".join(f"{n} {status}" for status, n in counts.items())
    print(f"  bulk send {result.bulk_id}: {summary}; live badge changes:")
    await asyncio.to_thread(emulator.drain, DRAIN_LIMIT)
    await live.settle(tracker, result)
    rows = (await tracker.abulk_rows(result.bulk_id, sort="email")).items
    print(f"\n  {NAMES[provider]}: where each recipient ended")
    print(
        table(
            ["recipient", "status", "reason"],
            [(r.recipient, r.status, _clip(r.reason)) for r in rows],
            indent="    ",
        )
    )
    return result


STAGES: Final = (
    "sent",
    "delivered",
    "opened",
    "clicked",
    "bounced",
    "dropped",
    "deferred",
    "complained",
    "unsubscribed",
    "suppressed",
    "duplicates",
)
"""The analytics row's columns, in the order a send moves through them."""


async def _analytics(tracker: Tracker, bulks: dict[str, SendResult]) -> None:
    rows = []
    for provider, result in bulks.items():
        stats = await tracker.abulk_stats(result.bulk_id)
        rows.append((NAMES[provider], *(getattr(stats, stage) for stage in STAGES)))
    print("\nBulk-send analytics, one row per send:")
    print(table(["provider", *STAGES], rows))


async def _suppressions(tracker: Tracker) -> None:
    found = (await tracker.asuppressions()).items
    print("\nSuppression list (every provider's sends refuse these):")
    rows = [(s.address, s.cause, _clip(s.reason)) for s in found]
    print(table(["address", "cause", "reason"], rows))


async def _domain_alerts(tracker: Tracker) -> None:
    alerts = await tracker.adomain_alerts()
    print("\nDomain alerts (several addresses at one domain bounced: look at the domain):")
    if not alerts:
        print("  none")
    for alert in alerts:
        reasons = _clip("; ".join(sorted(set(alert.reasons))), 70)
        counts = f"{alert.recipients} recipients, {alert.bounces} bounces"
        print(f"  {alert.domain}: {counts} ({reasons})")


async def story(emulator: Emulator, site: str, store: str) -> None:
    """Send through each provider in turn while watching the receiver's live stream, then
    report what the tracker knows."""
    tracker = Tracker.open(store)
    try:
        timeout = httpx.Timeout(10.0, read=None)  # the stream is quiet between changes
        async with httpx.AsyncClient(base_url=site, timeout=timeout) as client:
            live = _Live(client, _Clock())
            watcher = asyncio.create_task(live.watch())
            await asyncio.wait_for(live.ready.wait(), START_LIMIT)
            bulks: dict[str, SendResult] = {}
            for provider in PROVIDERS:
                bulks[provider] = await _send_through(provider, emulator, tracker, live)
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await _analytics(tracker, bulks)
        await _suppressions(tracker)
        await _domain_alerts(tracker)
        posted, stored = len(emulator.deliveries), await tracker.acount_events()
        print(
            f"\n{posted} signed webhook requests verified, some events twice and out of order; "
            f"{stored} distinct events stored; no badge ever moved backwards."
        )
    finally:
        await tracker.aclose()


def interactive() -> bool:
    """True when someone is at a terminal to press Ctrl-C: standard input is a TTY and this
    is not CI."""
    try:
        return sys.stdin is not None and sys.stdin.isatty() and not os.environ.get("CI")
    except ValueError:  # standard input closed
        return False


def linger(site: str, keep: bool) -> None:
    """Leave the dashboard up until Ctrl-C when ``keep``; say where it was either way."""
    if not keep:
        print(f"\nThe dashboard ran at {site}/ (in a terminal, the demo keeps it open).")
        return
    print(f"\nThe dashboard: {site}/  (open it in a browser; Ctrl-C to stop)", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            time.sleep(3600)
    print()


def run(delay: float, home: Path, *, keep: bool = False) -> None:
    """The emulator in this process, ``serve`` in another, the store in ``home``; with
    ``keep``, the dashboard stays up at the end until Ctrl-C."""
    store = f"sqlite:///{home / 'tracking.sqlite3'}"
    emulator = Emulator(delay=delay, duplicate=0.3, reorder=True, seed=2026)
    with open(home / "serve.log", "w+", encoding="utf-8") as log, emulator:
        names = ", ".join(NAMES[p] for p in PROVIDERS[:-1]) + f" and {NAMES[PROVIDERS[-1]]}"
        print(f"The emulator stands in for {names} at {emulator.url}")
        try:
            with serving(emulator.receiver_dsn(), store, log) as site:
                where = site + "/webhooks/{provider}"
                emulator.webhooks = where
                print(f"unimailtrack serve takes their webhooks at {where}")
                asyncio.run(story(emulator, site, store))
                linger(site, keep)
        except BaseException:
            log.seek(0)
            print("\nunimailtrack serve said:\n" + log.read().strip(), file=sys.stderr)
            raise


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unimailtrack.demo", description=__doc__)
    parser.add_argument(
        "--delay",
        type=float,
        default=DEFAULT_DELAY,
        help="seconds between a recipient's events (%(default)s; 0 for the fastest run)",
    )
    parser.add_argument(
        "--exit",
        action="store_true",
        help="end after the story instead of keeping the dashboard up (the default without "
        "a terminal)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(format="  (%(name)s) %(message)s", level=logging.WARNING)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="unimailtrack-demo-") as home:
        run(args.delay, Path(home), keep=interactive() and not args.exit)
    print(f"\nDone in {time.monotonic() - started:.1f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
