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
from contextlib import contextmanager, nullcontext, suppress
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
    SignatureCause,
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


def _table(
    headers: Sequence[str], rows: Iterable[Sequence[Any]], *, wrap: int | None = None
) -> str:
    """Rows as aligned columns under a header line; None prints as ``-``. Column ``wrap``
    (an index, e.g. -1 for the last) is shown in full, wrapped to the terminal's width on
    lines of its own, where other columns are cut at 60 characters."""
    wrapped = None if wrap is None else range(len(headers))[wrap]
    cells = [
        [("-" if v is None else _cell(v, full=i == wrapped)) for i, v in enumerate(row)]
        for row in rows
    ]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    columns = _terminal_width()
    if wrapped is not None and columns is not None:
        room = columns - 2 * (len(headers) - 1)
        room -= sum(w for i, w in enumerate(widths) if i != wrapped)
        widths[wrapped] = max(len(headers[wrapped]), min(widths[wrapped], max(room, 20)))
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True))]
    for row in cells:
        lines += _row_lines(row, widths, wrapped)
    return "\n".join(line.rstrip() for line in lines)


def _terminal_width() -> int | None:
    """The terminal's width when standard output is one; None when it is a pipe or a file,
    where a long cell stays on its line (for grep and scripts)."""
    if not sys.stdout.isatty():
        return None
    import shutil

    return shutil.get_terminal_size((100, 24)).columns


def _row_lines(row: Sequence[str], widths: Sequence[int], wrapped: int | None) -> list[str]:
    if wrapped is None or len(row[wrapped]) <= widths[wrapped]:
        return ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))]
    import textwrap

    parts = textwrap.wrap(row[wrapped], widths[wrapped], break_long_words=True) or [""]
    lines = []
    for number, part in enumerate(parts):
        line = [(c if number == 0 else "") for c in row]
        line[wrapped] = part
        lines.append("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)))
    return lines


def _cell(value: Any, *, full: bool = False) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    text = " ".join(str(getattr(value, "value", value)).split())
    return text if full or len(text) <= 60 else text[:59] + "…"


def _again(command: Sequence[str], args: argparse.Namespace, **changes: str) -> str:
    """The command line that asks for the next page: the same options, ``changes`` applied,
    quoted for a POSIX shell so that pasting it works."""
    import shlex

    words = ["unimailtrack", *command]
    options = {"store": args.store if args.store != os.environ.get(STORE_ENV) else None}
    options |= {"limit": str(args.limit) if args.limit != 25 else None}
    options |= changes
    for name, value in options.items():
        if value is not None:
            words += [f"--{name.replace('_', '-')}", value]
    return " ".join(shlex.quote(word) for word in words)


def _error(message: str) -> None:
    sys.stderr.write(f"unimailtrack: {message}\n")


# --------------------------------------------------------------------------- shared set-up


class UsageError(UnimailtrackError):
    """The command line names something that is not there (exit 2)."""


def _sqlite_path(store: str | None) -> Path | None:
    """The file an SQLite store URL names (the default file for None); None otherwise."""
    if store is None:
        from unimailtrack.tracking._tracker import DEFAULT_PATH

        return Path.cwd() / DEFAULT_PATH
    if not store.lower().startswith("sqlite://"):
        return None
    from urllib.parse import unquote, urlsplit

    path = unquote(urlsplit(store).path)[1:]
    return None if not path or path == ":memory:" else Path(path)


def _open_tracker(args: argparse.Namespace, *, create: bool = False) -> Tracker:
    """The store ``--store`` names. Only commands that fill a store (``create``) make a new
    SQLite file, and say where; the others refuse a file that is not there (a typo would
    otherwise answer every question with an empty new database)."""
    from unimailtrack.tracking import Tracker

    path = _sqlite_path(args.store)
    fresh = path is not None and not path.exists()
    if fresh and not create:
        hint = "" if args.store else f" (pass --store or set {STORE_ENV})"
        raise UsageError(
            f"no store at {path}{hint}: serve, replay, emulate, dev and suppressions import or "
            "pull create one"
        )
    tracker = Tracker.open(args.store)
    if fresh:
        sys.stderr.write(f"unimailtrack: created a new store at {path}\n")
    return tracker


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
    p.add_argument(
        "--workers",
        type=_worker_count,
        default=1,
        metavar="N",
        help="serve from N processes sharing the port (%(default)s); each opens the store",
    )
    p.add_argument(
        "--queue",
        metavar="URL",
        help="enqueue verified webhooks here instead of storing them (redis://...?stream=NAME, "
        "sqs://NAME?region=..., postgresql://...?outbox=1); run unimailtrack worker to store them",
    )
    _store_option(p)
    p.set_defaults(run=serve)


def _worker_count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of workers (1 or more)")
    return int(text)


def serve(args: argparse.Namespace) -> int:
    """Run the ASGI app on ``--host``/``--port`` until interrupted."""
    if args.workers > 1:
        return _serve_workers(args)
    from unimailtrack.web import create_app
    from unimailtrack.webhooks import WebhookReceiver

    _check_api_access(args)
    adapters = _configured_adapters(args)
    _warn_unkeyed(adapters)
    tracker = _open_tracker(args, create=True)
    try:
        queue = None
        if args.queue:
            from unimailtrack.queue import open_queue

            queue = open_queue(args.queue)
        receiver = WebhookReceiver(adapters, tracker, max_body_size=args.max_body_size, queue=queue)
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
    run_server(
        app,
        args.host,
        args.port,
        log_level=args.log_level,
        finish=tracker.aclose,
        sock=getattr(args, "inherited_socket", None),
    )
    return Exit.OK


_RESTARTS = 5
"""Workers that may die unasked (and be started again) before ``serve`` gives up."""


def _serve_workers(args: argparse.Namespace) -> int:
    """``serve --workers N``: bind the port once, fork N workers that each serve the app
    from that one listening socket (the kernel hands each connection to one of them), and
    supervise them: a worker that dies is started again, and a TERM or INT stops them all.

    Each worker builds its own adapters and opens its own tracker, after the fork; the
    parent checks the DSN and opens the store once beforehand (applying migrations), so that
    a mistake is reported once and not by every worker. Replay protection and the change
    stream that an in-process cache or hub would give are per worker: with PostgreSQL the
    nonces and change notifications are shared through the database."""
    import signal
    import socket

    if not hasattr(os, "fork"):
        raise ConfigurationError("serve --workers needs a system with fork (Linux, macOS)")
    _configured_adapters(args)
    _open_tracker(args, create=True).close()
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    listener = socket.create_server((args.host, args.port), family=family, backlog=2048)
    address, port = listener.getsockname()[:2]
    where = f"[{address}]" if ":" in address else address
    print(f"unimailtrack: serving http://{where}:{port}", flush=True)
    workers: set[int] = set()
    stopping = False

    def start() -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            code: int = Exit.FAILED
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                args.workers = 1
                args.inherited_socket = listener
                code = serve(args)
            except BaseException as exc:  # a worker never returns into the parent's code
                _error(f"worker {os.getpid()} stopped: {exc!r}")
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        workers.add(pid)

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in workers:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    restarts = 0
    try:
        for _ in range(args.workers):
            start()
        while workers:
            try:
                pid, _status = os.wait()
            except ChildProcessError:
                break
            workers.discard(pid)
            if stopping:
                continue
            restarts += 1
            if restarts > _RESTARTS:
                _error(f"workers keep stopping ({restarts} so far); stopping the others")
                stop(signal.SIGTERM, None)
                continue
            _error(f"worker {pid} stopped unasked; starting another")
            start()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        listener.close()
    if restarts > _RESTARTS:
        return Exit.FAILED
    return Exit.INTERRUPTED if stopping else Exit.OK


def _warn_unkeyed(adapters: Mapping[str, Adapter]) -> None:
    """Say which providers will have every webhook refused: no key is configured."""
    quiet = logging.getLogger("unimailtrack.webhooks")
    for name, adapter in sorted(adapters.items()):
        was, quiet.disabled = quiet.disabled, True
        try:  # an empty request: refused for having no key, before anything else is read
            adapter.verify_webhook(b"", {})
        except SignatureError as exc:
            unkeyed = exc.cause is SignatureCause.NO_KEY
        except Exception:  # refused some other way: not for want of a key
            unkeyed = False
        else:
            unkeyed = False
        finally:
            quiet.disabled = was
        if unkeyed:
            _error(
                f"warning: no webhook key for {name}: every {name} webhook will be refused "
                "(401); add its key to the DSN (see docs/configuration.md)"
            )


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
    sock: Any = None,
) -> None:
    """Serve ``app`` with uvicorn until interrupted, and print the address once it listens
    (``--port 0`` picks a free port, and this line says which). ``finish`` runs in the event
    loop after the server stopped: close the tracker there, where it was used. ``sock`` is a
    listening socket to serve from instead (a worker of ``serve --workers``; the parent has
    printed the address)."""
    try:
        import uvicorn
    except ImportError:
        from unimailtrack.errors import MissingDependency

        raise MissingDependency("uvicorn", "web", purpose="unimailtrack serve") from None
    import asyncio
    import gc

    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)

    async def run() -> None:
        # Everything loaded so far lives as long as the server: keep it out of the cyclic
        # collector's full passes, which would otherwise walk it while parsing every batch.
        gc.freeze()
        task = asyncio.create_task(server.serve(sockets=None if sock is None else [sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.02)
        try:
            if server.started and sock is None:
                address, bound_port = server.servers[0].sockets[0].getsockname()[:2]
                where = f"[{address}]" if ":" in address else address
                print(f"unimailtrack: serving http://{where}:{bound_port}", flush=True)
            await task
        finally:
            if finish is not None:
                await finish()

    asyncio.run(run())


# --------------------------------------------------------------------------- worker


def _add_worker(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "worker",
        help="store the webhooks a queue holds",
        description="Read verified webhook envelopes from a queue in batches, store their "
        "events and acknowledge them after the commit; retry with backoff, keep an envelope that "
        "keeps failing as a dead letter. SIGTERM finishes the batch in hand and stops.",
    )
    p.add_argument(
        "--queue",
        "--source",
        dest="queue",
        required=True,
        metavar="URL",
        help="redis://...?stream=NAME, sqs://NAME?region=..., sqs+ses://NAME?region=... (SNS "
        "envelopes of SES events, verified here), postgresql://...?outbox=1",
    )
    p.add_argument("--batch", type=int, default=100, metavar="N", help="envelopes a transaction")
    p.add_argument("--concurrency", type=int, default=1, metavar="N", help="batches at once")
    p.add_argument(
        "--max-attempts", type=int, default=5, metavar="N", help="tries before a dead letter"
    )
    p.add_argument(
        "--dsn",
        default=os.environ.get(DSN_ENV),
        help=f"adapters that verify sqs+ses messages (default: ${DSN_ENV}; else SES defaults)",
    )
    p.add_argument("--until-empty", action="store_true", help="stop when the queue is empty")
    p.add_argument(
        "--progress-every", type=float, default=10.0, metavar="SECONDS", help="summary period"
    )
    p.add_argument("--json", action="store_true", help="print the summaries as JSON lines")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    _store_option(p)
    p.set_defaults(run=worker)


def worker(args: argparse.Namespace) -> int:
    """Drain ``--queue`` into ``--store`` until SIGTERM (or, ``--until-empty``, the end)."""
    import signal

    from unimailtrack.queue import Worker, open_queue, progress_printer

    if args.batch < 1 or args.concurrency < 1 or args.max_attempts < 1:
        raise ConfigurationError("--batch, --concurrency and --max-attempts must be at least 1")
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    queue = open_queue(args.queue)
    adapters: dict[str, Adapter] = {}
    if getattr(queue, "ses", False):
        adapters = _configured_adapters(args) if args.dsn else {}
        if "ses" not in adapters:
            from unimailtrack.adapters import get_adapter_class

            adapters["ses"] = get_adapter_class("ses")()
    tracker = _open_tracker(args)
    runner = Worker(
        queue, tracker, adapters=adapters, batch=args.batch, max_attempts=args.max_attempts
    )

    def stop(signum: int, frame: Any) -> None:
        runner.stop()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        stats = runner.run(
            concurrency=args.concurrency,
            until_empty=args.until_empty,
            progress=progress_printer(as_json=args.json),
            progress_every=args.progress_every,
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
        tracker.close()
        queue.close()
    progress_printer(as_json=args.json)(stats)
    return Exit.OK


# --------------------------------------------------------------------------- retention


def _duration(text: str) -> Any:
    from datetime import timedelta

    units = {"h": 3600, "d": 86400, "w": 7 * 86400}
    number, unit = text[:-1], text[-1:].lower()
    if unit not in units or not number.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 90d, 12w or 72h")
    return timedelta(seconds=int(number) * units[unit])


def _add_retention(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "retention",
        help="forget events older than a window (a dry run unless --apply)",
        description="Count, or with --apply remove, the events received more than --keep ago: "
        "PostgreSQL drops whole monthly partitions, SQLite deletes in bounded batches. Per-message "
        "state (badges, first-seen times, counters) and suppressions are kept.",
    )
    p.add_argument("--keep", type=_duration, required=True, help="e.g. 90d, 12w, 72h (>= 72h)")
    p.add_argument("--apply", action="store_true", help="remove; without it, only count")
    p.add_argument(
        "--dedupe-window",
        type=_duration,
        metavar="DURATION",
        help="how long event ids are remembered against retries (PostgreSQL; default 14d)",
    )
    _store_option(p)
    _json_option(p)
    p.set_defaults(run=retention)


def retention(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from unimailtrack.tracking._partitions import as_rows

    with _open_tracker(args) as tracker:
        try:
            report = tracker.retention(
                args.keep, apply=args.apply, dedupe_window=args.dedupe_window
            )
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
    if args.json:
        values = asdict(report)
        values["keep"] = report.keep.total_seconds()
        _emit_json(values)
    else:
        print(_table(["", "retention"], as_rows(report)))
        if not report.applied:
            print("(a dry run: nothing was removed; add --apply)")
    return Exit.OK


# --------------------------------------------------------------------------- partitions


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def _add_partitions(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "partitions",
        help="the monthly partitions of the PostgreSQL event history",
        description="split-legacy moves the events of events_legacy (the table of before the "
        "monthly partitions) into one partition a month, so that retention drops its months "
        "one by one: copied in batches that each commit with their progress (run it again to "
        "resume), then swapped in by one short transaction. A dry run that counts the rows of "
        "each month unless --apply; --abandon gives up a split under way. See docs/scale.md.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    split = actions.add_parser(
        "split-legacy",
        help="move events_legacy into monthly partitions (a dry run unless --apply)",
    )
    split.add_argument(
        "--batch", type=_positive_int, default=50_000, help="rows a transaction (%(default)s)"
    )
    split.add_argument(
        "--max-batches",
        type=_positive_int,
        metavar="N",
        help="stop after N copy transactions (default: copy everything, then swap)",
    )
    doing = split.add_mutually_exclusive_group()
    doing.add_argument("--apply", action="store_true", help="move the rows; without it, count")
    doing.add_argument(
        "--abandon",
        action="store_true",
        help="give up a split under way: drop its copy and its trigger, leave events_legacy",
    )
    _store_option(split)
    _json_option(split)
    split.set_defaults(run=partitions)


def partitions(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from unimailtrack.tracking._partitions import as_rows

    with _open_tracker(args) as tracker:
        report = (
            tracker.abandon_split()
            if args.abandon
            else tracker.split_legacy(
                batch=args.batch, apply=args.apply, max_batches=args.max_batches
            )
        )
    if args.json:
        _emit_json(asdict(report))
    else:
        print(_table(["", "split-legacy"], as_rows(report)))
        if args.abandon:
            return Exit.OK  # the note says what was given up
        if not report.applied:
            print("(a dry run: nothing was moved; add --apply)")
        elif not report.finished:
            print("(not finished: run it again to go on)")
    return Exit.OK


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
    from unimailtrack.model import DeliveryStatus, Email

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
        problem = _email_problem(exc, args)
        return _send_failed(args, "invalid", f"cannot build the e-mail: {problem}")
    store = nullcontext() if args.no_record else _open_tracker(args)
    # The adapters log a failed request for applications; here the error is printed once.
    quiet = logging.getLogger("unimailtrack.send")
    was, quiet.disabled = quiet.disabled, True
    try:
        with store as tracker, Mailer(args.dsn, tracker=tracker) as mailer:
            result = mailer.send(email)
    except SendError as exc:
        return _send_failed(args, _snake(type(exc).__name__), f"not sent: {exc}")
    finally:
        quiet.disabled = was
    sent = any(r.status is DeliveryStatus.ACCEPTED for r in result.recipients)
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
                wrap=-1,
            )
        )
        if not sent:
            _error("nothing was sent: no recipient was accepted")
    return Exit.OK if sent else Exit.FAILED


_OPTIONS = {
    "sender": "--from",
    "to": "--to",
    "cc": "--cc",
    "bcc": "--bcc",
    "reply_to": "--reply-to",
    "subject": "--subject",
    "text": "--text",
    "html": "--html",
    "category": "--category",
    "tags": "--tag",
    "metadata": "--meta",
}


def _email_problem(exc: Exception, args: argparse.Namespace) -> str:
    """What is wrong with the options, in their own names: never pydantic's raw report."""
    from pydantic import ValidationError

    from unimailtrack.errors import InvalidAddress

    if isinstance(exc, InvalidAddress):
        for name, option in _OPTIONS.items():
            given = getattr(args, name, None)
            if exc.address == given or (isinstance(given, list) and exc.address in given):
                return f"{option}: {exc}"
    if not isinstance(exc, ValidationError):
        return str(exc)
    problems = []
    for error in exc.errors(include_url=False):
        where = error.get("loc") or ()
        option = _OPTIONS.get(str(where[0]), str(where[0])) if where else "the e-mail"
        message = str(error.get("msg", "is not valid")).removeprefix("Value error, ")
        problems.append(f"{option}: {message}")
    return "; ".join(problems)


def _send_failed(args: argparse.Namespace, kind: str, message: str) -> int:
    if getattr(args, "json", False):
        _emit_json({"ok": False, "error": kind, "message": message})
    _error(message)
    return Exit.USAGE if kind == "invalid" else Exit.FAILED


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


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
    tracker = None if args.dry_run else _open_tracker(args, create=True)
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
            with _refusals() as reasons:
                answer = receiver.handle(
                    request.provider, request.headers, request.body, now=args.now
                )
            if answer.status == 401:
                detail = _refusal_text(reasons.reasons, args.now)
                report.take(f"request {index}", 401, {"detail": detail})
                progress.update(done, f"{report.requests} requests, {report.events} events")
                continue
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


@contextmanager
def _refusals() -> Iterator[_Reasons]:
    """Collect the causes adapters log while refusing, instead of printing them."""
    reasons = _Reasons()
    logger = logging.getLogger("unimailtrack.webhooks")
    logger.addHandler(reasons)
    was, logger.propagate = logger.propagate, False
    try:
        yield reasons
    finally:
        logger.removeHandler(reasons)
        logger.propagate = was


def _refusal_text(reasons: Sequence[str], now: datetime | None) -> str:
    refused = [r for r in reasons if " refused: " in r] or list(reasons)
    text = "; ".join(refused) or "the signature does not verify"
    if now is None and any(r.endswith("[stale]") for r in refused):
        text += " (a saved request is old: pass --now with the time it was received)"
    return text


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
    outcome: dict[str, Any] = {"provider": request.provider, "valid": False}
    with _refusals() as reasons:  # the causes are printed below, once
        try:
            events = adapter.unwrap(request.body, request.headers, now=args.now)
        except SignatureError as exc:
            outcome["reason"] = _refusal_text(reasons.reasons, args.now)
            outcome["cause"] = exc.cause.value
            code = Exit.SIGNATURE
        except PayloadError as exc:
            outcome.update(valid=True, reason=f"signed, but the body cannot be read: {exc.message}")
            code = Exit.PAYLOAD
        else:
            outcome.update(valid=True, events=len(events))
            code = Exit.OK
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
            wrap=4,
        )
    )
    print(f"{len(page.items)} of {page.total}")
    if page.next_cursor:
        print("more: " + _again(["history", args.address], args, cursor=page.next_cursor))
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
            wrap=-1,
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
                from unimailtrack.tracking import Page

                # Every row, read a page at a time (a table needs them all for its widths).
                every = tuple(
                    tracker.iter_bulk_rows(
                        args.bulk_id, sort=args.sort, descending=args.desc, status=statuses
                    )
                )
                rows = Page(every, None, len(every))
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
        help="the suppression list: show, import, export, pull from or push to a provider",
        description="The addresses that are not sent to, and why. "
        "'suppressions' lists them; 'suppressions ADDRESS' shows one and its history "
        "(--remove lifts it); 'suppressions import FILE' imports a CSV or JSON Lines file "
        "(a dry run unless --apply); 'suppressions export' writes the list; "
        "'suppressions pull DSN' reads a provider's own list (applied with --apply); "
        "'suppressions push DSN' writes ours into a provider's (with --apply). "
        "See docs/suppression.md.",
    )
    p.add_argument(
        "words",
        nargs="*",
        metavar="ADDRESS | import FILE | export | pull DSN | push DSN",
        help="what to do",
    )
    p.add_argument("--remove", action="store_true", help="take ADDRESS off the list")
    p.add_argument("--apply", action="store_true", help="import, pull or push for real")
    p.add_argument(
        "--skip-invalid", action="store_true", help="import the valid rows of a file with bad ones"
    )
    p.add_argument(
        "--format", choices=("csv", "jsonl"), help="file format (default: by extension; csv)"
    )
    p.add_argument("--output", metavar="FILE", help="export into FILE instead of standard output")
    p.add_argument(
        "--partial", action="store_true", help="apply what a failed pull fetched (with --apply)"
    )
    p.add_argument(
        "--progress-file",
        metavar="FILE",
        help="where a pull keeps what it fetched, to resume after a failure "
        "(default: .unimailtrack-pull-<provider>.jsonl in the working directory)",
    )
    _store_option(p)
    _json_option(p)
    p.set_defaults(run=suppressions)


_ACTIONS = ("import", "export", "pull", "push")


def suppressions(args: argparse.Namespace) -> int:
    words: list[str] = list(args.words)
    action = words[0] if words and words[0] in _ACTIONS else None
    if action is not None:
        rest = words[1:]
        needs = 0 if action == "export" else 1
        if len(rest) != needs:
            what = {"import": "a FILE", "pull": "a DSN", "push": "a DSN"}.get(action)
            _error(f"suppressions {action} takes {what or 'no argument'}")
            return Exit.USAGE
        if action == "import":
            return _import_file(args, rest[0])
        if action == "export":
            return _export(args)
        from unimailtrack import suppression_sync

        with _open_tracker(args, create=action == "pull") as tracker:
            if action == "pull":
                return int(suppression_sync.pull_command(tracker, rest[0], args))
            return int(suppression_sync.push_command(tracker, rest[0], args))
    if len(words) > 1:
        _error("suppressions takes one ADDRESS at most")
        return Exit.USAGE
    address = words[0] if words else None
    if args.remove and not address:
        _error("--remove needs an ADDRESS")
        return Exit.USAGE
    with _open_tracker(args) as tracker:
        if address is None:
            found = list(_every_suppression(tracker))
            history = []
        else:
            one = tracker.unsuppress(address) if args.remove else None
            one = one or tracker.suppression(address)
            found = [] if one is None else [one]
            history = tracker.suppression_history(address)
    if address is not None and not found and not history:
        _error(f"{address} is not suppressed")
        return Exit.FAILED
    failed = address is not None and not found and not args.remove
    if args.json:
        _emit_json(found if address is None else {"suppression": found[:1], "history": history})
        return Exit.FAILED if failed else Exit.OK
    print(
        _table(
            ["address", "scope", "cause", "reason", "source", "since", "until"],
            [
                (
                    s.address,
                    s.scope or "every stream",
                    s.cause,
                    s.reason,
                    s.source,
                    s.created_at,
                    s.expires_at,
                )
                for s in found
            ],
        )
    )
    if history:
        print()
        print(
            _table(
                ["recorded", "change", "scope", "cause", "source", "provider", "event id"],
                [
                    (
                        c.recorded_at,
                        c.action,
                        c.suppression.scope or "every stream",
                        c.suppression.cause,
                        c.suppression.source,
                        c.suppression.provider,
                        c.suppression.event_id,
                    )
                    for c in history
                ],
            )
        )
    if args.remove:
        print(f"{address} removed from the suppression list")
    elif failed:
        _error(f"{address} is not suppressed now (its history is above)")
        return Exit.FAILED
    return Exit.OK


def _import_file(args: argparse.Namespace, path: str) -> int:
    from unimailtrack._suppression_files import FileProblem, SuppressionFile

    source = SuppressionFile(path, format=args.format)
    if not source.path.is_file():
        _error(f"{path}: no such file")
        return Exit.USAGE
    started = time.monotonic()

    def progress(read: int) -> None:
        sys.stderr.write(f"\r{read} rows read ({time.monotonic() - started:.1f} s)")
        sys.stderr.flush()

    try:
        with _open_tracker(args, create=True) as tracker:
            report = tracker.import_numbered(
                source,
                dry_run=not args.apply,
                skip_invalid=args.skip_invalid,
                progress=progress,
            )
    except FileProblem as exc:
        sys.stderr.write("\n")
        _error(f"{exc}; nothing was imported")
        return Exit.FAILED
    sys.stderr.write("\n")
    if args.json:
        _emit_json(report)
    else:
        for problem in report.errors[:50]:
            _error(f"{path}, line {problem.line}: {problem.reason}")
        if report.invalid > 50:
            _error(f"... and {report.invalid - 50} more invalid rows")
        verb = "imported" if report.applied else "would import (dry run; --apply to import)"
        if report.invalid and not args.skip_invalid:
            verb = "refused: nothing imported (fix the rows, or --skip-invalid)"
        print(
            f"{verb}: {report.new} new, {report.updated} updated, {report.unchanged} "
            f"unchanged, {report.invalid} invalid"
        )
    if report.invalid and not args.skip_invalid:
        return Exit.FAILED
    return Exit.OK


def _export(args: argparse.Namespace) -> int:
    from unimailtrack._suppression_files import write_csv, write_jsonl

    fmt = args.format or ("jsonl" if args.output and args.output.endswith(".jsonl") else "csv")
    write = write_jsonl if fmt == "jsonl" else write_csv
    with _open_tracker(args) as tracker:
        if args.output:
            with open(args.output, "w", encoding="utf-8", newline="") as out:
                count = write(tracker.export_suppressions(), out)
            sys.stderr.write(f"{count} suppressions written to {args.output}\n")
        else:
            write(tracker.export_suppressions(), sys.stdout)
    return Exit.OK


def _every_suppression(tracker: Tracker) -> Iterator[Suppression]:
    cursor: str | None = None
    while True:
        page = tracker.suppressions(cursor=cursor, limit=1000)
        yield from page.items
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


# --------------------------------------------------------------------------- alerts


def _add_alerts(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "alerts",
        help="sender-reputation alerts: complaint and bounce rates, blocks, authentication",
        description="Evaluate the alert rules over the store, then list the open alerts "
        "(--all: every alert kept). Run it every minute from cron to keep alerts current.",
    )
    p.add_argument("--all", action="store_true", help="closed alerts too")
    p.add_argument(
        "--no-evaluate", action="store_true", help="list what is stored without evaluating"
    )
    _store_option(p)
    _json_option(p)
    p.set_defaults(run=alerts)


def _measure(kind: str, value: float) -> str:
    return f"{value:.2%}" if kind.endswith("_rate") else f"{value:g}"


def alerts(args: argparse.Namespace) -> int:
    with _open_tracker(args) as tracker:
        found = tracker.alerts(open_only=not args.all, evaluate=not args.no_evaluate)
    if args.json:
        _emit_json(found)
        return Exit.OK
    print(
        _table(
            [
                "kind",
                "level",
                "scope",
                "via",
                "rate",
                "threshold",
                "opened",
                "closed",
                "seq",
                "detail",
            ],
            [
                (
                    a.kind,
                    a.level,
                    a.scope,
                    a.provider,
                    _measure(a.kind, a.rate),
                    _measure(a.kind, a.threshold),
                    a.opened_at,
                    a.closed_at,
                    a.sequence,
                    a.check if a.check else a.reply,
                )
                for a in found
            ],
        )
    )
    return Exit.OK


# --------------------------------------------------------------------------- outbox


def _add_outbox(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "outbox",
        help="outbound webhooks waiting or failed; replay or deliver them",
        description="List the outbound webhook messages that are pending or failed. "
        "--replay queues failed ones again (all, or the ids given); --deliver posts what is "
        "due to the endpoints configured in $UNIMAILTRACK_WEBHOOK_ENDPOINTS.",
    )
    p.add_argument(
        "--status",
        default="pending,failed",
        metavar="S[,S]",
        help="which to list: pending, failed, delivered (default: pending,failed)",
    )
    p.add_argument("--replay", nargs="*", type=int, metavar="ID", help="queue failed ones again")
    p.add_argument("--deliver", action="store_true", help="post what is due now")
    p.add_argument("--limit", type=int, default=100, help="list at most this many")
    _store_option(p)
    _json_option(p)
    p.set_defaults(run=outbox)


def outbox(args: argparse.Namespace) -> int:
    from unimailtrack.outbox import OutboxDispatcher, endpoints
    from unimailtrack.tracking import Tracker

    statuses = [s.strip() for s in args.status.split(",") if s.strip()]
    unknown = sorted(set(statuses) - {"pending", "failed", "delivered"})
    if unknown or not statuses:
        _error(f"--status takes pending, failed and delivered, not {', '.join(unknown)}")
        return Exit.USAGE
    hooks = endpoints(os.environ)
    if args.deliver and not hooks:
        raise ConfigurationError(
            "--deliver needs the endpoints in $UNIMAILTRACK_WEBHOOK_ENDPOINTS (a JSON list of "
            "objects with name, url and secrets)"
        )
    notes = []
    with Tracker.open(args.store, webhooks=hooks) as tracker:
        if args.replay is not None:
            count = tracker.replay_outbox(args.replay or None)
            notes.append(f"{count} message(s) queued again")
        if args.deliver:
            report = OutboxDispatcher(tracker).run_once()
            notes.append(
                f"{report.delivered} delivered, {report.retried} to retry, {report.failed} given up"
            )
        found = tracker.outbox(status=statuses, limit=args.limit)
    if args.json:
        _emit_json(found)
    else:
        print(
            _table(
                ["id", "endpoint", "type", "status", "attempts", "next attempt", "last error"],
                [
                    (
                        e.id,
                        e.endpoint,
                        e.event_type,
                        e.status,
                        e.attempts,
                        e.next_attempt_at,
                        e.last_error,
                    )
                    for e in found
                ],
            )
        )
        for note in notes:
            print(note)
    return Exit.OK


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
    p.add_argument(
        "--keys-file",
        type=Path,
        metavar="FILE",
        help="keep the SendGrid and Mailgun webhook keys here across restarts (made if missing)",
    )
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
    _add_worker,
    _add_retention,
    _add_partitions,
    _add_send,
    _add_replay,
    _add_verify,
    _add_history,
    _add_timeline,
    _add_stats,
    _add_suppressions,
    _add_alerts,
    _add_outbox,
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
    from unimailtrack._cli_ops import SUBCOMMANDS as OPERATIONS

    for add in (*SUBCOMMANDS, *OPERATIONS):
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
    except UsageError as exc:
        _error(str(exc))
        return Exit.USAGE
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
