"""The ``unimailtrack`` command.

Every subcommand is one function ``name(args) -> int`` and one ``_add_name(subparsers)`` that
declares its arguments; ``SUBCOMMANDS`` lists the latter, so adding a subcommand is adding
those two functions and one entry. Tracker answers print as tables, or as JSON with ``--json``.
The exit status (:class:`Exit`, docs/cli.md) tells a usage error from a refused signature, an
unreadable body or a store failure, so that scripts can act on each.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from unimailtrack import _constants as C
from unimailtrack.errors import (
    ConfigurationError,
    PayloadError,
    SendError,
    SignatureError,
    UnimailtrackError,
)

if TYPE_CHECKING:
    from unimailtrack.adapters.base import Adapter
    from unimailtrack.model import Suppression
    from unimailtrack.tracking import Tracker
    from unimailtrack.webhooks import WebhookReceiver

__all__ = ["SUBCOMMANDS", "Exit", "build_parser", "main"]


class Exit(IntEnum):
    """The command's exit status."""

    OK = 0
    FAILED = 1
    """The operation ran and did not succeed: no recipient accepted, nothing found."""
    USAGE = 2
    """The command line is wrong (argparse's own convention)."""
    CONFIG = 3
    """The configuration is missing or malformed: DSN, keys, an extra not installed."""
    SIGNATURE = 4
    """A webhook request failed verification."""
    PAYLOAD = 5
    """A webhook body cannot be read."""
    STORE = 6
    """The tracking store failed."""
    INTERRUPTED = 130


DSN_ENV = "UNIMAILTRACK_DSN"
STORE_ENV = "UNIMAILTRACK_STORE"
API_AUTH_ENV = "UNIMAILTRACK_API_TOKEN"


# --------------------------------------------------------------------------- output


def _emit_json(value: Any) -> None:
    from pydantic_core import to_json

    sys.stdout.write(to_json(value, indent=2).decode() + "\n")


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Rows as aligned columns under a header line; None prints as ``-``."""
    cells = [[("-" if v is None else _cell(v)) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    text = str(getattr(value, "value", value))
    return text if len(text) <= 60 else text[:59] + "…"


def _error(message: str) -> None:
    sys.stderr.write(f"unimailtrack: {message}\n")


# --------------------------------------------------------------------------- shared set-up


def _open_tracker(args: argparse.Namespace) -> Tracker:
    from unimailtrack.tracking import Tracker

    return Tracker.open(args.store)


def _configured_adapters(args: argparse.Namespace) -> dict[str, Adapter]:
    """The adapters the DSN names, by provider name (webhook keys come from the DSN)."""
    from unimailtrack.mailer import build_adapters

    if not args.dsn:
        raise ConfigurationError(
            f"no DSN: pass --dsn or set {DSN_ENV} (e.g. sendgrid://API_KEY@default?webhook_key=...)"
        )
    adapters, _ = build_adapters(args.dsn)
    named: dict[str, Adapter] = {}
    for adapter in adapters:
        named.setdefault(adapter.name, adapter)
    return named


def _parse_time(text: str) -> datetime:
    """An ISO 8601 time or unix seconds, as an aware UTC datetime."""
    try:
        return datetime.fromtimestamp(float(text), UTC)
    except (ValueError, OverflowError, OSError):
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time: use ISO 8601 (2024-01-15T09:31:00Z) or unix seconds"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not a header: use 'Name: value'")
    return name.strip(), value.strip()


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not key=value")
    return key, value


# --------------------------------------------------------------------------- saved requests


@dataclass(frozen=True, slots=True)
class SavedRequest:
    """A webhook request kept for later: which provider, its headers and the exact body."""

    provider: str
    headers: Mapping[str, str]
    body: bytes

    @classmethod
    def from_record(cls, record: Any, where: str) -> SavedRequest:
        """From ``{"provider", "headers", "body"}`` (or ``"body_base64"`` for bytes that are
        not text): the shape of a JSON Lines request log, and of the test fixtures."""
        if not isinstance(record, dict) or not isinstance(record.get("provider"), str):
            raise PayloadError(f"{where}: expected an object with provider, headers and body")
        headers = record.get("headers") or {}
        if not isinstance(headers, dict):
            raise PayloadError(f"{where}: headers must be an object")
        if isinstance(record.get("body_base64"), str):
            import base64

            body = base64.b64decode(record["body_base64"])
        elif isinstance(record.get("body"), str):
            body = record["body"].encode("utf-8")
        else:
            raise PayloadError(f"{where}: body must be a string (or body_base64)")
        return cls(record["provider"], {str(k): str(v) for k, v in headers.items()}, body)


def _read_requests(
    path: Path, provider: str | None, headers: Sequence[tuple[str, str]]
) -> Iterator[tuple[SavedRequest, int]]:
    """Every saved request in ``path`` with the bytes read so far (for a progress bar).

    With ``provider`` the file is one raw body sent by that provider. Otherwise it holds saved
    requests as JSON Lines, or one JSON object (pretty-printed or not).
    """
    if provider is not None:
        body = path.read_bytes()
        yield SavedRequest(provider, dict(headers), body), len(body)
        return
    with path.open("rb") as stream:
        first = stream.readline()
        try:
            record = json.loads(first)
        except ValueError:
            whole = first + stream.read()
            yield SavedRequest.from_record(_load_json(whole, str(path)), str(path)), len(whole)
            return
        done = len(first)
        yield SavedRequest.from_record(record, f"{path}:1"), done
        for number, line in enumerate(stream, start=2):
            done += len(line)
            if line.strip():
                record = _load_json(line, f"{path}:{number}")
                yield SavedRequest.from_record(record, f"{path}:{number}"), done


def _load_json(data: bytes, where: str) -> Any:
    try:
        return json.loads(data)
    except ValueError as exc:
        raise PayloadError(f"{where}: not JSON ({exc})") from None


class _Progress:
    """A one-line progress bar on stderr, redrawn at most ten times a second; silent when
    stderr is not a terminal."""

    def __init__(self, total: int, stream: IO[str] | None = None) -> None:
        self.total = max(total, 1)
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self._drawn = 0.0

    def update(self, done: int, note: str) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self._drawn < 0.1 and done < self.total):
            return
        self._drawn = now
        share = min(done / self.total, 1.0)
        bar = "#" * int(share * 30)
        self.stream.write(f"\r[{bar:<30}] {share:6.1%}  {note}")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")


# --------------------------------------------------------------------------- serve


def _add_serve(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "serve",
        help="run the webhook endpoints, the JSON API and the dashboard",
        description="Serve POST /webhooks/{provider} for every provider in the DSN, the "
        "read-only JSON API under /api/, the live change stream /api/changes and the "
        "dashboard at /.",
    )
    p.add_argument("--dsn", default=os.environ.get(DSN_ENV), help=f"default: ${DSN_ENV}")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (%(default)s)")
    p.add_argument("--port", type=int, default=8025, help="port, 0 for any free one (%(default)s)")
    p.add_argument(
        "--max-body-size",
        type=int,
        default=C.DEFAULT_MAX_WEBHOOK_BODY,
        metavar="BYTES",
        help="refuse larger webhook bodies with 413 (%(default)s)",
    )
    p.add_argument("--no-api", action="store_true", help="serve no JSON API")
    p.add_argument("--no-dashboard", action="store_true", help="serve no dashboard (HTML screens)")
    p.add_argument(
        "--api-token",
        default=os.environ.get(API_AUTH_ENV),
        metavar="TOKEN",
        help=f"require 'Authorization: Bearer TOKEN' on /api/ (default: ${API_AUTH_ENV}); "
        "needed to listen beyond loopback",
    )
    p.add_argument(
        "--no-api-auth",
        action="store_true",
        help="serve /api/ without a token beyond loopback: only behind your own authentication",
    )
    p.add_argument(
        "--body-timeout",
        type=float,
        default=C.DEFAULT_BODY_TIMEOUT,
        metavar="SECONDS",
        help="answer 408 and hang up when a request body takes longer (%(default)s)",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    _store_option(p)
    p.set_defaults(run=serve)


def serve(args: argparse.Namespace) -> int:
    """Run the ASGI app on ``--host``/``--port`` until interrupted."""
    from unimailtrack.web import create_app
    from unimailtrack.webhooks import WebhookReceiver

    _check_api_access(args)
    adapters = _configured_adapters(args)
    tracker = _open_tracker(args)
    try:
        receiver = WebhookReceiver(adapters, tracker, max_body_size=args.max_body_size)
        app = create_app(
            receiver,
            api=not args.no_api,
            api_token=args.api_token or None,
            api_auth=not args.no_api_auth,
            body_timeout=args.body_timeout if args.body_timeout > 0 else None,
            dashboard=not args.no_dashboard,
        )
    except BaseException:
        tracker.close()
        raise
    run_server(app, args.host, args.port, log_level=args.log_level, finish=tracker.aclose)
    return Exit.OK


def _check_api_access(args: argparse.Namespace) -> None:
    """Refuse to serve the API (every recipient's address and history) to the network
    without a token, unless ``--no-api-auth`` says something else guards it."""
    from unimailtrack.web._app import is_loopback

    if args.api_token and args.no_api_auth:
        raise ConfigurationError("--api-token and --no-api-auth contradict each other: pick one")
    nothing_private = args.no_api and args.no_dashboard
    if nothing_private or args.api_token or args.no_api_auth or is_loopback(args.host):
        return
    raise ConfigurationError(
        f"--host {args.host} serves the API beyond this machine, and the API shows every "
        f"recipient's address and history: give it a token (--api-token or ${API_AUTH_ENV}), "
        "or --no-api-auth when your own authentication stands in front of it, or --no-api "
        "--no-dashboard"
    )


def run_server(
    app: Any,
    host: str,
    port: int,
    *,
    log_level: str = "info",
    finish: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Serve ``app`` with uvicorn until interrupted, and print the address once it listens
    (``--port 0`` picks a free port, and this line says which). ``finish`` runs in the event
    loop after the server stopped: close the tracker there, where it was used."""
    try:
        import uvicorn
    except ImportError:
        from unimailtrack.errors import MissingDependency

        raise MissingDependency("uvicorn", "web", purpose="unimailtrack serve") from None
    import asyncio

    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)

    async def run() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.02)
        try:
            if server.started:
                address, bound_port = server.servers[0].sockets[0].getsockname()[:2]
                where = f"[{address}]" if ":" in address else address
                print(f"unimailtrack: serving http://{where}:{bound_port}", flush=True)
            await task
        finally:
            if finish is not None:
                await finish()

    asyncio.run(run())


# --------------------------------------------------------------------------- send


def _add_send(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "send",
        help="send an e-mail through the DSN and print its tracking ids",
        description="Send one e-mail (one tracked copy per recipient) through the configured "
        "DSN, record it in the store and print each recipient's tracking id.",
    )
    p.add_argument("--dsn", default=os.environ.get(DSN_ENV), help=f"default: ${DSN_ENV}")
    p.add_argument(
        "--from", dest="sender", required=True, metavar="ADDRESS", help="'Name <a@b>' or a@b"
    )
    p.add_argument("--to", action="append", default=[], metavar="ADDRESS", help="repeatable")
    p.add_argument("--cc", action="append", default=[], metavar="ADDRESS", help="repeatable")
    p.add_argument("--bcc", action="append", default=[], metavar="ADDRESS", help="repeatable")
    p.add_argument("--reply-to", metavar="ADDRESS")
    p.add_argument("--subject", default="")
    p.add_argument("--text", help="the plain-text body ('-' reads standard input)")
    p.add_argument("--html", help="the HTML body, or @FILE to read it from a file")
    p.add_argument("--category", help="e.g. rsvp_invite")
    p.add_argument("--tag", action="append", default=[], dest="tags", metavar="TAG")
    p.add_argument(
        "--meta",
        action="append",
        default=[],
        type=_pair,
        metavar="KEY=VALUE",
        dest="metadata",
        help="metadata that comes back with every event (repeatable)",
    )
    p.add_argument("--track-opens", action="store_true", help="ask the provider to track opens")
    p.add_argument("--track-clicks", action="store_true", help="ask the provider to track clicks")
    p.add_argument("--no-record", action="store_true", help="send without recording the send")
    _store_option(p)
    _json_option(p)
    p.set_defaults(run=send)


def _body_text(value: str | None) -> str | None:
    if value == "-":
        return sys.stdin.read()
    if value is not None and value.startswith("@"):
        return Path(value[1:]).read_text(encoding="utf-8")
    return value


def send(args: argparse.Namespace) -> int:
    """Send the e-mail; exit 1 when no recipient was accepted."""
    from pydantic import ValidationError

    from unimailtrack.mailer import Mailer
    from unimailtrack.model import Email

    if not args.dsn:
        raise ConfigurationError(f"no DSN: pass --dsn or set {DSN_ENV}")
    try:
        email = Email(
            sender=args.sender,
            to=args.to,
            cc=args.cc,
            bcc=args.bcc,
            reply_to=args.reply_to,
            subject=args.subject,
            text=_body_text(args.text),
            html=_body_text(args.html),
            category=args.category,
            tags=args.tags,
            metadata=dict(args.metadata),
            track_opens=args.track_opens,
            track_clicks=args.track_clicks,
        )
    except (ValidationError, ValueError) as exc:
        _error(f"cannot build the e-mail: {exc}")
        return Exit.USAGE
    store = nullcontext() if args.no_record else _open_tracker(args)
    with store as tracker, Mailer(args.dsn, tracker=tracker) as mailer:
        try:
            result = mailer.send(email)
        except SendError as exc:
            _error(f"not sent: {exc}")
            return Exit.FAILED
    if args.json:
        _emit_json(result)
    else:
        print(f"bulk id {result.bulk_id}")
        print(
            _table(
                ["recipient", "status", "tracking id", "message id", "error"],
                [
                    (r.recipient, r.status, r.tracking_id, r.message_id, r.error)
                    for r in result.recipients
                ],
            )
        )
    return Exit.OK


# --------------------------------------------------------------------------- replay


def _add_replay(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "replay",
        help="feed saved webhook requests through parse and ingest",
        description="Replay saved webhook requests into the store, for backfills and "
        'debugging. FILE holds JSON Lines, one {"provider", "headers", "body"} request '
        "a line (or one such object); with --provider it is one raw body. Verification is "
        "off unless --verify, which checks each request against the DSN's keys.",
    )
    p.add_argument("file", type=Path, metavar="FILE", help="the saved requests")
    _raw_body_options(p)
    p.add_argument("--verify", action="store_true", help="verify signatures with the DSN's keys")
    p.add_argument("--dsn", default=os.environ.get(DSN_ENV), help=f"default: ${DSN_ENV}")
    p.add_argument(
        "--now",
        type=_parse_time,
        metavar="TIME",
        help="the clock freshness checks use with --verify (saved requests are old): "
        "ISO 8601 or unix seconds",
    )
    p.add_argument("--dry-run", action="store_true", help="parse and count; store nothing")
    _store_option(p)
    _json_option(p)
    p.set_defaults(run=replay)


@dataclass(slots=True)
class ReplayReport:
    """What a replay did, request by request outcome counts."""

    requests: int = 0
    events: int = 0
    new: int = 0
    duplicates: int = 0
    refused: int = 0
    unreadable: int = 0
    unknown_provider: int = 0
    failures: list[str] = field(default_factory=list)

    def take(self, where: str, status: int, answer: Mapping[str, Any]) -> None:
        self.requests += 1
        if status == 200:
            self.events += int(answer.get("events", 0))
            self.new += int(answer.get("new", answer.get("events", 0)))
            self.duplicates += int(answer.get("duplicates", 0))
            return
        if status == 401:
            self.refused += 1
        elif status == 404:
            self.unknown_provider += 1
        else:
            self.unreadable += 1
        self.failures.append(f"{where}: HTTP {status} {answer.get('detail', '')}".rstrip())

    def exit_code(self) -> Exit:
        if self.refused:
            return Exit.SIGNATURE
        if self.unreadable or self.unknown_provider:
            return Exit.PAYLOAD
        return Exit.OK


def _replay_receivers(
    args: argparse.Namespace, tracker: Tracker | None
) -> Callable[[str], WebhookReceiver | None]:
    """The receiver for each provider met in the file. With ``--verify`` it is one receiver
    over the DSN's adapters; otherwise an adapter of each provider, built when first met, with
    verification off. None for a provider no adapter is registered as."""
    from unimailtrack.adapters import get_adapter_class
    from unimailtrack.webhooks import WebhookReceiver

    if args.verify:
        configured = WebhookReceiver(
            _configured_adapters(args), tracker, confirm_subscriptions=False
        )
        return lambda provider: configured
    built: dict[str, WebhookReceiver] = {}

    def receiver_for(provider: str) -> WebhookReceiver | None:
        if provider not in built:
            try:
                adapter = get_adapter_class(provider)(verify_webhooks=False)
            except ConfigurationError:
                return None
            built[provider] = WebhookReceiver(
                {provider: adapter}, tracker, confirm_subscriptions=False
            )
        return built[provider]

    return receiver_for


def replay(args: argparse.Namespace) -> int:
    """Replay every request in FILE; stop at the first store failure."""
    size = args.file.stat().st_size
    tracker = None if args.dry_run else _open_tracker(args)
    report = ReplayReport()
    progress = _Progress(size)
    try:
        receiver_for = _replay_receivers(args, tracker)
        requests = _read_requests(args.file, args.provider, args.header)
        for index, (request, done) in enumerate(requests, start=1):
            receiver = receiver_for(request.provider)
            if receiver is None:
                report.take(f"request {index}", 404, {"detail": f"no {request.provider!r} adapter"})
                continue
            answer = receiver.handle(request.provider, request.headers, request.body, now=args.now)
            if answer.status >= 500:
                progress.close()
                _error(f"request {index}: the store failed; replay stopped, nothing more stored")
                return Exit.STORE
            report.take(f"request {index}", answer.status, answer.json())
            progress.update(done, f"{report.requests} requests, {report.events} events")
    finally:
        if tracker is not None:
            tracker.close()
    progress.close()
    if args.json:
        _emit_json(report)
    else:
        print(
            f"{report.requests} requests, {report.events} events: {report.new} new, "
            f"{report.duplicates} already stored; {report.refused} refused, "
            f"{report.unreadable} unreadable, {report.unknown_provider} unknown provider"
        )
        for line in report.failures:
            print(f"  {line}")
    return report.exit_code()


# --------------------------------------------------------------------------- verify


def _add_verify(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "verify",
        help="check one saved webhook request against the configured keys",
        description="Verify one saved request (a JSON object with provider, headers and body, "
        "or a raw body with --provider and --header) against the DSN's webhook keys, and say "
        "exactly why it fails.",
    )
    p.add_argument("file", type=Path, metavar="FILE", help="the saved request")
    _raw_body_options(p)
    p.add_argument("--dsn", default=os.environ.get(DSN_ENV), help=f"default: ${DSN_ENV}")
    p.add_argument(
        "--now",
        type=_parse_time,
        metavar="TIME",
        help="the clock for the freshness check: ISO 8601 or unix seconds (default: now)",
    )
    _json_option(p)
    p.set_defaults(run=verify)


class _Reasons(logging.Handler):
    """Collects the causes adapters log when they refuse a signature: the error itself says
    nothing about the cause, on purpose, but the operator running ``verify`` should know."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.reasons: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.reasons.append(record.getMessage())


def verify(args: argparse.Namespace) -> int:
    """Verify, then parse, one saved request."""
    requests = list(_read_requests(args.file, args.provider, args.header))
    if len(requests) != 1:
        _error(f"{args.file} holds {len(requests)} requests; verify checks exactly one")
        return Exit.USAGE
    request = requests[0][0]
    adapter = _configured_adapters(args).get(request.provider)
    if adapter is None:
        raise ConfigurationError(f"the DSN configures no {request.provider!r} adapter")
    reasons = _Reasons()
    logger = logging.getLogger("unimailtrack.webhooks")
    logger.addHandler(reasons)
    logger.propagate = False  # the causes are printed below, once
    outcome: dict[str, Any] = {"provider": request.provider, "valid": False}
    try:
        events = adapter.unwrap(request.body, request.headers, now=args.now)
    except SignatureError:
        outcome["reason"] = "; ".join(reasons.reasons) or "the signature does not verify"
        code = Exit.SIGNATURE
    except PayloadError as exc:
        outcome.update(valid=True, reason=f"signed, but the body cannot be read: {exc.message}")
        code = Exit.PAYLOAD
    else:
        outcome.update(valid=True, events=len(events))
        code = Exit.OK
    finally:
        logger.removeHandler(reasons)
        logger.propagate = True
    if args.json:
        _emit_json(outcome)
    elif code is Exit.OK:
        print(f"valid: {request.provider} request, {outcome['events']} event(s)")
    else:
        print(f"{'refused' if code is Exit.SIGNATURE else 'unreadable'}: {outcome['reason']}")
    return code


# --------------------------------------------------------------------------- tracker answers


def _add_history(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "history",
        help="the e-mails sent to an address, newest first",
        description="A contact's e-mails, newest first, a page at a time, with the total.",
    )
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument("--limit", type=int, default=25, help="rows a page (%(default)s)")
    p.add_argument("--cursor", help="the cursor a previous page printed")
    _store_option(p)
    _json_option(p)
    p.set_defaults(run=history)


def history(args: argparse.Namespace) -> int:
    with _open_tracker(args) as tracker:
        try:
            page = tracker.history(args.address, cursor=args.cursor, limit=args.limit)
        except ValueError as exc:
            _error(str(exc))
            return Exit.USAGE
    if args.json:
        _emit_json(page)
        return Exit.OK
    print(
        _table(
            ["sent at", "status", "subject", "category", "reason", "tracking id"],
            [
                (r.sent_at, r.status, r.subject, r.category, r.reason, r.tracking_id)
                for r in page.items
            ],
        )
    )
    print(f"{len(page.items)} of {page.total}")
    if page.next_cursor:
        print(f"more: unimailtrack history {args.address} --cursor {page.next_cursor}")
    return Exit.OK


def _add_timeline(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "timeline",
        help="the status and every event of one send, oldest first",
        description="The badge of one (message, recipient), its reason, and every event.",
    )
    p.add_argument("tracking_id", metavar="TRACKING_ID", help="as send printed it")
    _store_option(p)
    _json_option(p)
    p.set_defaults(run=timeline)


def timeline(args: argparse.Namespace) -> int:
    with _open_tracker(args) as tracker:
        record = tracker.send(args.tracking_id)
        state = tracker.state(args.tracking_id)
    if record is None and not state.timeline:
        _error(f"nothing is known about {args.tracking_id}")
        return Exit.FAILED
    status, reason = state.status, state.reason
    if record is not None:  # its badge: the send's own outcome until an event says more
        status, reason = record.status, record.reason
    if args.json:
        answer = {f.name: getattr(state, f.name) for f in fields(state)}
        _emit_json({**answer, "status": status, "reason": reason, "send": record})
        return Exit.OK
    print(f"status {status.value}" + (f": {reason}" if reason else ""))
    if record is not None:
        print(f"sent {_cell(record.sent_at)} to {record.recipient}: {record.subject or '-'}")
    if not state.timeline:
        print("no events yet")
        return Exit.OK
    print(
        _table(
            ["time", "event", "provider event", "recipient", "reason"],
            [
                (e.timestamp, e.type, e.provider_event, e.recipient, e.reason or e.url)
                for e in state.timeline
            ],
        )
    )
    return Exit.OK


def _add_stats(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "stats",
        help="a bulk send's analytics, and its recipients with --rows",
        description="How many recipients of a bulk send reached each stage; with --rows, "
        "each recipient's status.",
    )
    p.add_argument("bulk_id", metavar="BULK_ID", help="as send printed it")
    p.add_argument("--rows", action="store_true", help="list every recipient")
    p.add_argument("--sort", default="date", help="name, email, status or date (%(default)s)")
    p.add_argument("--desc", action="store_true", help="sort descending")
    p.add_argument("--status", help="only recipients with this status (or these: bounced,dropped)")
    _store_option(p)
    _json_option(p)
    p.set_defaults(run=stats)


def stats(args: argparse.Namespace) -> int:
    with _open_tracker(args) as tracker:
        figures = tracker.bulk_stats(args.bulk_id)
        rows = None
        if args.rows:
            try:
                statuses = args.status.split(",") if args.status else None
                rows = tracker.bulk_rows(
                    args.bulk_id, sort=args.sort, descending=args.desc, status=statuses
                )
            except ValueError as exc:
                _error(str(exc))
                return Exit.USAGE
    if figures.recipients == 0:
        _error(f"no bulk send {args.bulk_id} is recorded")
        return Exit.FAILED
    if args.json:
        _emit_json({"stats": figures, "rows": rows} if rows is not None else figures)
        return Exit.OK
    from dataclasses import asdict

    print(
        _table(["stage", "count"], [(k, v) for k, v in asdict(figures).items() if k != "bulk_id"])
    )
    if rows is not None:
        print()
        print(
            _table(
                ["recipient", "status", "reason", "sent at", "updated at", "tracking id"],
                [
                    (r.recipient, r.status, r.reason, r.sent_at, r.updated_at, r.tracking_id)
                    for r in rows.items
                ],
            )
        )
    return Exit.OK


def _add_suppressions(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "suppressions",
        help="the suppression list, or one address on it",
        description="The addresses that are not sent to, and why; --remove lifts one.",
    )
    p.add_argument(
        "address", nargs="?", metavar="ADDRESS", help="show (or with --remove, lift) this one"
    )
    p.add_argument("--remove", action="store_true", help="take ADDRESS off the list")
    _store_option(p)
    _json_option(p)
    p.set_defaults(run=suppressions)


def suppressions(args: argparse.Namespace) -> int:
    if args.remove and not args.address:
        _error("--remove needs an ADDRESS")
        return Exit.USAGE
    with _open_tracker(args) as tracker:
        if args.address is None:
            found = list(_every_suppression(tracker))
        else:
            one = tracker.unsuppress(args.address) if args.remove else None
            one = one or tracker.suppression(args.address)
            found = [] if one is None else [one]
    if args.address is not None and not found:
        _error(f"{args.address} is not suppressed")
        return Exit.FAILED
    if args.json:
        _emit_json(found if args.address is None else found[0])
        return Exit.OK
    print(
        _table(
            ["address", "cause", "reason", "since", "tracking id"],
            [(s.address, s.cause, s.reason, s.created_at, s.tracking_id) for s in found],
        )
    )
    if args.remove:
        print(f"{args.address} removed from the suppression list")
    return Exit.OK


def _every_suppression(tracker: Tracker) -> Iterator[Suppression]:
    cursor: str | None = None
    while True:
        page = tracker.suppressions(cursor=cursor, limit=1000)
        yield from page.items
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


# --------------------------------------------------------------------------- emulate


def _add_emulate(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "emulate",
        help="run a local SendGrid, Mailgun and Amazon SES for trying and testing",
        description="Serve the SendGrid, Mailgun and SES send APIs on 127.0.0.1, play a "
        "scenario for every recipient chosen by its address (bounce@, complaint@ ...) and post "
        "each provider's signed webhooks to --webhooks. Prints the DSNs and keys to use. "
        "See docs/emulator.md.",
    )
    p.add_argument("--port", type=int, default=8026, help="port, 0 for any free one (%(default)s)")
    p.add_argument(
        "--webhooks",
        metavar="URL",
        help="post events here, {provider} replaced by the provider's name, e.g. "
        "http://127.0.0.1:8025/webhooks/{provider} (this machine only)",
    )
    p.add_argument("--delay", type=float, default=0.0, help="seconds between a copy's events")
    p.add_argument("--duplicate", type=float, default=0.0, help="chance each event posts twice")
    p.add_argument("--reorder", action="store_true", help="post events out of order")
    p.add_argument("--seed", type=int, help="repeat the same duplication and reordering")
    p.add_argument("--rate-limit", type=int, metavar="N", help="answer 429 beyond N requests")
    p.add_argument("--rate-window", type=float, default=1.0, metavar="SECONDS")
    p.add_argument("--api-key", help="the only SendGrid and Mailgun API key taken (default: any)")
    p.add_argument("--for", dest="duration", type=float, metavar="SECONDS", help="stop after")
    _json_option(p)
    p.set_defaults(run=emulate)


def emulate(args: argparse.Namespace) -> int:
    """Run the emulator (``unimailtrack.emulator``) until interrupted or ``--for`` passes."""
    from unimailtrack.emulator._command import run

    return run(args)


# --------------------------------------------------------------------------- the parser


def _raw_body_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--provider", help="FILE is one raw body that this provider sent")
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        type=_header,
        metavar="'NAME: VALUE'",
        help="a header the raw body came with (repeat for each)",
    )


def _store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        default=os.environ.get(STORE_ENV),
        metavar="URL",
        help=f"sqlite:///path or postgresql://... (default: ${STORE_ENV}, else "
        "unimailtrack.sqlite3 in the working directory)",
    )


def _json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction[Any]], None], ...] = (
    _add_serve,
    _add_send,
    _add_replay,
    _add_verify,
    _add_history,
    _add_timeline,
    _add_stats,
    _add_suppressions,
    _add_emulate,
)


def build_parser() -> argparse.ArgumentParser:
    from unimailtrack import __version__

    parser = argparse.ArgumentParser(
        prog="unimailtrack",
        description="Send e-mail through any provider and track every recipient.",
        epilog="Exit codes: 0 ok, 1 failed, 2 usage, 3 configuration, 4 signature refused, "
        "5 unreadable webhook, 6 store failure.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else Exit.USAGE
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return int(run(args))
    except KeyboardInterrupt:
        return Exit.INTERRUPTED
    except ConfigurationError as exc:
        _error(str(exc))
        return Exit.CONFIG
    except OSError as exc:  # an input file that cannot be read
        _error(str(exc))
        return Exit.USAGE
    except PayloadError as exc:
        _error(str(exc))
        return Exit.PAYLOAD
    except UnimailtrackError as exc:
        if _is_store_error(exc):
            _error(f"the store failed: {exc}")
            return Exit.STORE
        raise


def _is_store_error(exc: Exception) -> bool:
    from unimailtrack.tracking import StoreError

    return isinstance(exc, StoreError)


if __name__ == "__main__":
    sys.exit(main())
