"""The operator's subcommands of ``unimailtrack``: ``health``, ``orphans``, ``dead-letters``,
``backfill`` and ``dev``.

They follow ``cli.py``'s shape (one ``name(args) -> int`` and one ``_add_name(subparsers)``
each) and its exit statuses; ``cli.build_parser`` adds :data:`SUBCOMMANDS` after its own.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unimailtrack import _constants as C
from unimailtrack.cli import (
    DSN_ENV,
    Exit,
    _cell,
    _configured_adapters,
    _emit_json,
    _error,
    _json_option,
    _open_tracker,
    _parse_time,
    _store_option,
    _table,
)
from unimailtrack.errors import ConfigurationError, PayloadError, SendError, SignatureError

if TYPE_CHECKING:
    from unimailtrack.tracking import DeadLetter, Tracker

__all__ = ["SUBCOMMANDS", "parse_duration"]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)?", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``2h``, ``7d``, ``1w``, or plain seconds."""
    found = _DURATION.fullmatch(text.strip())
    if not found or float(found.group(1)) <= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: use e.g. 90s, 30m, 2h, 7d (or plain seconds)"
        )
    unit = found.group(2).lower() if found.group(2) else None
    return timedelta(seconds=float(found.group(1)) * _UNITS[unit])


def _dsn_providers(args: argparse.Namespace) -> list[str]:
    """The providers the DSN names, when one is given; none otherwise (the store's own)."""
    return sorted(_configured_adapters(args)) if args.dsn else []


# --------------------------------------------------------------------------- health


def _add_health(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "health",
        help="is every provider's webhook alive? exit 1 when one is not (for cron and monitors)",
        description="For each provider the DSN names or the store sent through lately: when "
        "its last event arrived, and unhealthy when sends went out through it during --silence "
        "and no event came back in that time (the usual sign that a webhook died). Also counts "
        "the orphans and the dead letters. Exit 1 when a provider is unhealthy.",
    )
    p.add_argument("--dsn", default=os.environ.get(DSN_ENV), help=f"default: ${DSN_ENV}")
    p.add_argument(
        "--silence",
        type=parse_duration,
        default=C.HEALTH_SILENCE,
        metavar="DURATION",
        help="how long without events while sending is unhealthy (default: 6h)",
    )
    p.add_argument(
        "--grace",
        type=parse_duration,
        default=C.HEALTH_GRACE,
        metavar="DURATION",
        help="sends younger than this do not count yet (default: 15m)",
    )
    _store_option(p)
    _json_option(p)
    p.set_defaults(run=health)


def health(args: argparse.Namespace) -> int:
    providers = _dsn_providers(args)
    with _open_tracker(args) as tracker:
        report = tracker.provider_health(providers, silence=args.silence, grace=args.grace)
    if args.json:
        _emit_json(report.as_dict())
    else:
        print(
            _table(
                ["provider", "healthy", "last event", "sends", "reason"],
                [
                    (p.provider, "yes" if p.healthy else "NO", p.last_event_at, p.sends, p.reason)
                    for p in report.providers
                ],
                wrap=-1,
            )
            if report.providers
            else "no provider configured or sent through lately"
        )
        print(f"{report.orphans} orphan event(s), {report.dead_letters} dead letter(s)")
    return Exit.OK if report.healthy else Exit.FAILED


# --------------------------------------------------------------------------- orphans


def _add_orphans(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "orphans",
        help="events no recorded send has claimed after a while",
        description="Events still unmatched to a send --older-than after they arrived: "
        "account-wide webhooks about mail sent elsewhere, or sends never recorded. They stay "
        "stored and join their send as soon as it is recorded.",
    )
    p.add_argument(
        "--older-than",
        type=parse_duration,
        default=C.ORPHAN_AFTER,
        metavar="DURATION",
        help="(default: 1h)",
    )
    p.add_argument("--provider", help="only this provider's")
    p.add_argument("--limit", type=int, default=100, help="rows at most (%(default)s)")
    _store_option(p)
    _json_option(p)
    p.set_defaults(run=orphans)


def orphans(args: argparse.Namespace) -> int:
    with _open_tracker(args) as tracker:
        try:
            found = tracker.orphans(
                older_than=args.older_than, provider=args.provider, limit=args.limit
            )
        except ValueError as exc:
            _error(str(exc))
            return Exit.USAGE
    if args.json:
        _emit_json(found)
        return Exit.OK
    print(
        _table(
            ["time", "provider", "event", "recipient", "message id", "reason"],
            [(e.timestamp, e.provider, e.type, e.recipient, e.message_id, e.reason) for e in found],
            wrap=-1,
        )
    )
    print(f"{len(found)} orphan event(s)")
    return Exit.OK


# --------------------------------------------------------------------------- dead letters


def _add_dead_letters(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "dead-letters",
        help="list, show, export and replay the webhook bodies that could not be read",
        description="A body the receiver could not read is kept whole (a dead letter) and "
        "answered 400. list shows them newest first; show ID prints one with its headers; "
        "export FILE writes them as JSON Lines that `unimailtrack replay` reads; replay parses "
        "them again (after an upgrade that reads them) and, once stored, removes them.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="newest first")
    listing.add_argument("--provider")
    listing.add_argument("--limit", type=int, default=100, help="rows at most (%(default)s)")
    show = actions.add_parser("show", help="one dead letter, its headers and its body")
    show.add_argument("id", type=int, metavar="ID")
    export = actions.add_parser("export", help="as JSON Lines for `unimailtrack replay`")
    export.add_argument("file", type=Path, metavar="FILE", help="'-' for standard output")
    export.add_argument("--provider")
    export.add_argument("--limit", type=int, default=100_000, help="(%(default)s)")
    again = actions.add_parser(
        "replay", help="parse them again; store what now reads and remove it from the box"
    )
    again.add_argument("ids", type=int, nargs="*", metavar="ID", help="default: every one")
    again.add_argument("--provider")
    check = again.add_mutually_exclusive_group(required=True)
    check.add_argument(
        "--verify",
        action="store_true",
        help="check each signature with the DSN's keys, at the time it was received",
    )
    check.add_argument(
        "--no-verify",
        action="store_true",
        help="believe the bodies without checking (they were verified when they came in)",
    )
    again.add_argument("--dsn", default=os.environ.get(DSN_ENV), help=f"default: ${DSN_ENV}")
    for parser in (listing, show, export, again):
        _store_option(parser)
        _json_option(parser)
    p.set_defaults(run=dead_letters)


def dead_letters(args: argparse.Namespace) -> int:
    with _open_tracker(args) as tracker:
        action: Callable[[argparse.Namespace, Tracker], int] = {
            "list": _list_letters,
            "show": _show_letter,
            "export": _export_letters,
            "replay": _replay_letters,
        }[args.action]
        return action(args, tracker)


def _list_letters(args: argparse.Namespace, tracker: Tracker) -> int:
    letters = tracker.dead_letters(provider=args.provider, limit=args.limit)
    if args.json:
        _emit_json([_letter_summary(letter) for letter in letters])
        return Exit.OK
    print(
        _table(
            ["id", "received", "provider", "bytes", "reason"],
            [(d.id, d.received_at, d.provider, len(d.body), d.reason) for d in letters],
            wrap=-1,
        )
    )
    print(f"{len(letters)} dead letter(s)")
    return Exit.OK


def _letter_summary(letter: DeadLetter) -> dict[str, Any]:
    return {
        "id": letter.id,
        "provider": letter.provider,
        "received_at": letter.received_at,
        "reason": letter.reason,
        "bytes": len(letter.body),
    }


def _saved(letter: DeadLetter) -> dict[str, Any]:
    """The shape ``unimailtrack replay`` reads: provider, headers and the exact body."""
    record: dict[str, Any] = {"provider": letter.provider, "headers": dict(letter.headers)}
    try:
        record["body"] = letter.body.decode("utf-8")
    except UnicodeDecodeError:
        record["body_base64"] = base64.b64encode(letter.body).decode("ascii")
    return record


def _show_letter(args: argparse.Namespace, tracker: Tracker) -> int:
    letter = tracker.dead_letter(args.id)
    if letter is None:
        _error(f"no dead letter {args.id}")
        return Exit.FAILED
    if args.json:
        _emit_json({**_letter_summary(letter), **_saved(letter)})
        return Exit.OK
    print(f"dead letter {letter.id} from {letter.provider}, received {_cell(letter.received_at)}")
    print(f"reason: {letter.reason}")
    for name, value in letter.headers.items():
        print(f"{name}: {value}")
    print()
    sys.stdout.flush()
    sys.stdout.buffer.write(letter.body + (b"" if letter.body.endswith(b"\n") else b"\n"))
    return Exit.OK


def _export_letters(args: argparse.Namespace, tracker: Tracker) -> int:
    letters = tracker.dead_letters(provider=args.provider, limit=args.limit)
    lines = "".join(json.dumps(_saved(letter)) + "\n" for letter in reversed(letters))
    if str(args.file) == "-":
        sys.stdout.write(lines)
    else:
        args.file.write_text(lines, encoding="utf-8")
        if not args.json:
            print(f"{len(letters)} dead letter(s) written to {args.file}")
    if args.json:
        _emit_json({"exported": len(letters), "file": str(args.file)})
    return Exit.OK


def _letters(args: argparse.Namespace, tracker: Tracker) -> Iterator[DeadLetter]:
    if not args.ids:
        yield from reversed(tracker.dead_letters(provider=args.provider, limit=100_000))
        return
    for letter_id in args.ids:
        letter = tracker.dead_letter(letter_id)
        if letter is None:
            raise ConfigurationError(f"no dead letter {letter_id}")
        yield letter


def _replay_letters(args: argparse.Namespace, tracker: Tracker) -> int:
    """Parse (with ``--verify``: verify at the time of receipt, then parse) each dead letter;
    store what now reads, and only then remove it from the box."""
    from unimailtrack.adapters import get_adapter_class

    configured = _configured_adapters(args) if args.verify else {}
    outcome: dict[str, list[Any]] = {"stored": [], "unreadable": [], "refused": []}
    for letter in _letters(args, tracker):
        try:
            if args.verify:
                adapter = configured.get(letter.provider)
                if adapter is None:
                    raise ConfigurationError(f"the DSN configures no {letter.provider!r} adapter")
                events = adapter.unwrap(letter.body, letter.headers, now=letter.received_at)
            else:
                cls = get_adapter_class(letter.provider)
                events = cls.parse_webhook_body(letter.body, letter.headers)
        except PayloadError as exc:
            outcome["unreadable"].append({"id": letter.id, "reason": exc.message})
            continue
        except SignatureError as exc:
            outcome["refused"].append({"id": letter.id, "reason": exc.cause.value})
            continue
        result = tracker.ingest(events)
        tracker.discard_dead_letter(letter.id)
        outcome["stored"].append({"id": letter.id, "new": result.new, "events": len(events)})
    if args.json:
        _emit_json(outcome)
    else:
        print(
            f"{len(outcome['stored'])} stored and removed, {len(outcome['unreadable'])} still "
            f"unreadable, {len(outcome['refused'])} refused"
        )
        for kind in ("unreadable", "refused"):
            for item in outcome[kind]:
                print(f"  {item['id']}: {kind}: {item['reason']}")
    if outcome["refused"]:
        return Exit.SIGNATURE
    return Exit.PAYLOAD if outcome["unreadable"] else Exit.OK


# --------------------------------------------------------------------------- backfill


def _add_backfill(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "backfill",
        help="fetch the events of a past period from each provider's events API",
        description="After an outage of the webhook endpoint, ask each provider in DSN that "
        "offers an events API (Mailgun's Events API; SendGrid's Email Activity API, a paid "
        "add-on) for the events of the last --since, and store them. Idempotent like every "
        "ingest: run it again and nothing is stored twice.",
    )
    p.add_argument("dsn", metavar="DSN", help="the providers to ask, with their API keys")
    p.add_argument(
        "--since",
        type=parse_duration,
        required=True,
        metavar="DURATION",
        help="how far back, e.g. 2h or 3d",
    )
    p.add_argument("--until", type=_parse_time, metavar="TIME", help="default: now")
    _store_option(p)
    _json_option(p)
    p.set_defaults(run=backfill)


def backfill(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    until = args.until or datetime.now(UTC)
    since = until - args.since
    adapters = _configured_adapters(args)
    outcome: dict[str, dict[str, Any]] = {}
    with _open_tracker(args) as tracker:
        for name, adapter in sorted(adapters.items()):
            fetch = getattr(adapter, "backfill", None)
            if fetch is None:
                adapter.close()
                outcome[name] = {"supported": False}
                continue
            counts: dict[str, Any] = {"supported": True, "events": 0, "new": 0, "duplicates": 0}
            try:
                for page in fetch(since, until):
                    stored = tracker.ingest(page)
                    counts["events"] += len(page)
                    counts["new"] += stored.new
                    counts["duplicates"] += stored.duplicates
            except SendError as exc:
                counts["error"] = str(exc)
            finally:
                adapter.close()
            outcome[name] = counts
    if args.json:
        _emit_json({"since": since, "until": until, "providers": outcome})
    else:
        for name, counts in outcome.items():
            if not counts["supported"]:
                print(f"{name}: no events API to backfill from")
                continue
            line = (
                f"{name}: {counts['events']} event(s), {counts['new']} new, "
                f"{counts['duplicates']} already stored"
            )
            print(line + (f"; stopped: {counts['error']}" if "error" in counts else ""))
    return Exit.FAILED if any("error" in c for c in outcome.values()) else Exit.OK


# --------------------------------------------------------------------------- dev


def _add_dev(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "dev",
        help="the emulator and serve together, with matching keys, on one SQLite file",
        description="Run the SendGrid, Mailgun and SES emulator and the webhook endpoints in "
        "one process: the emulator posts every event to serve, which trusts its keys and "
        "stores them in --store. Send with the DSNs it prints and watch the badges move "
        "(unimailtrack history, timeline, the JSON API). For a person to play with; "
        "everything stays on 127.0.0.1.",
    )
    p.add_argument("--port", type=int, default=8025, help="serve's port (%(default)s)")
    p.add_argument(
        "--emulator-port", type=int, default=8026, help="the emulator's port (%(default)s)"
    )
    p.add_argument("--delay", type=float, default=1.0, help="seconds between a copy's events")
    p.add_argument("--keys-file", type=Path, metavar="FILE", help="keep the webhook keys here")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    _store_option(p)
    p.set_defaults(run=dev)


def dev(args: argparse.Namespace) -> int:
    import logging
    import socket

    from unimailtrack.cli import run_server
    from unimailtrack.emulator._command import build, describe, save_keys
    from unimailtrack.mailer import build_adapters
    from unimailtrack.web import create_app
    from unimailtrack.webhooks import WebhookReceiver

    port = args.port
    if port == 0:  # the emulator must know where to post before serve starts
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
    options = argparse.Namespace(
        port=0,
        emulator_port=args.emulator_port,
        webhooks=None,
        delay=args.delay,
        duplicate=0.0,
        reorder=False,
        seed=None,
        rate_limit=None,
        rate_window=1.0,
        api_key=None,
        keys_file=args.keys_file,
    )
    logging.basicConfig(level=args.log_level.upper(), format="%(name)s: %(message)s")
    emulator = build(options, webhooks=f"http://127.0.0.1:{port}/webhooks/{{provider}}")
    with emulator:
        save_keys(args.keys_file, emulator)
        adapters, _ = build_adapters(emulator.receiver_dsn())
        named = {adapter.name: adapter for adapter in adapters}
        tracker = _open_tracker(args, create=True)
        receiver = WebhookReceiver(named, tracker)
        print(describe(emulator), flush=True)
        store = args.store or "sqlite:///unimailtrack.sqlite3"
        print(
            f"\nTry: UNIMAILTRACK_STORE={store} unimailtrack send --dsn "
            f"'{emulator.dsn('sendgrid')}' --from events@example.com --to bounce@example.com "
            "--subject Hello --text hi\n",
            flush=True,
        )
        run_server(
            create_app(receiver), "127.0.0.1", port, log_level=args.log_level, finish=tracker.aclose
        )
    return Exit.OK


SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction[Any]], None], ...] = (
    _add_health,
    _add_orphans,
    _add_dead_letters,
    _add_backfill,
    _add_dev,
)
