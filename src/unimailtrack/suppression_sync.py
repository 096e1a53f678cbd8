"""Moving a suppression list between providers: pull a provider's own list into the
tracker's, push the tracker's into a provider's.

A pull reads every page of the provider's list (``Adapter.list_suppressions``), writing each
page to a progress file as it arrives (JSON Lines: the provider, then each page's entries and
the cursor after it). Nothing is applied to the tracker until the last page has been read,
unless ``partial``; a pull that failed half-way reports what it fetched, keeps the file, and
resumes from its last cursor when run again. The entries are then imported with source
``provider-sync`` (an import is idempotent, so pulling twice changes nothing the second
time), and the provider's temporary lists (soft bounces, blocks) become suppressions that
expire after the tracker's soft-bounce duration, never permanent ones.

A push writes what stands in the tracker into a provider's list
(``Adapter.push_suppressions``), so that the provider refuses those addresses as well.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from unimailtrack.adapters.base import Adapter, PushResult, RemoteSuppression
from unimailtrack.errors import SendError, UnimailtrackError
from unimailtrack.model import Suppression, SuppressionSource
from unimailtrack.tracking import ImportReport, Tracker

__all__ = ["PullReport", "pull", "push", "to_remote"]

_FORMAT = 1


@dataclass
class PullReport:
    """What a pull fetched (``fetched`` entries in ``pages`` pages), whether it read the whole
    list (``complete``), the error that stopped it (``error``), and the import of what it
    fetched when applied (``imported``; a dry run when not applied)."""

    provider: str
    fetched: int = 0
    pages: int = 0
    complete: bool = False
    error: str | None = None
    imported: ImportReport | None = None
    applied: bool = False
    progress_file: str | None = None
    by_origin: dict[str, int] = field(default_factory=dict)


def _entry_json(entry: RemoteSuppression) -> dict[str, Any]:
    return {
        "address": entry.address,
        "cause": entry.cause,
        "scope": entry.scope,
        "reason": entry.reason,
        "created_at": None if entry.created_at is None else entry.created_at.isoformat(),
        "temporary": entry.temporary,
        "origin": entry.origin,
    }


def _entry(data: dict[str, Any]) -> RemoteSuppression:
    created = data.get("created_at")
    return RemoteSuppression(
        address=str(data["address"]),
        cause=str(data["cause"]),
        scope=data.get("scope"),
        reason=data.get("reason"),
        created_at=None if created is None else datetime.fromisoformat(created),
        temporary=bool(data.get("temporary")),
        origin=str(data.get("origin") or ""),
    )


def _read_progress(path: Path, provider: str) -> tuple[list[RemoteSuppression], str | None, int]:
    """What an earlier, unfinished pull of ``provider`` fetched, and where it stopped."""
    entries: list[RemoteSuppression] = []
    cursor: str | None = None
    pages = 0
    with path.open(encoding="utf-8") as lines:
        head = json.loads(next(lines))
        if head.get("provider") != provider or head.get("format") != _FORMAT:
            raise UnimailtrackError(
                f"{path} is the progress of a pull from {head.get('provider')!r}, not "
                f"{provider!r}: remove it or name another --progress-file"
            )
        for line in lines:
            if not line.endswith("\n"):
                break  # a page the last run was writing when it stopped: fetched again
            page = json.loads(line)
            entries.extend(_entry(item) for item in page["items"])
            cursor = page["cursor"]
            pages += 1
    return entries, cursor, pages


def _rows(
    entries: Sequence[RemoteSuppression], provider: str, hold: Callable[[datetime | None], str]
) -> Iterator[dict[str, Any]]:
    for entry in entries:
        created = entry.created_at
        yield {
            "address": entry.address,
            "scope": entry.scope,
            "cause": entry.cause,
            "reason": entry.reason or f"on {provider}'s {entry.origin or 'suppression'} list",
            "provider": provider,
            "created_at": None if created is None else created.isoformat(),
            "expires_at": hold(created) if entry.temporary else None,
        }


def pull(
    tracker: Tracker,
    adapter: Adapter,
    *,
    apply: bool = False,
    partial: bool = False,
    progress_file: str | Path | None = None,
    on_page: Callable[[PullReport], None] | None = None,
) -> PullReport:
    """Read ``adapter``'s provider's suppression list into ``tracker`` (see the module)."""
    path = Path(progress_file or f".unimailtrack-pull-{adapter.name}.jsonl")
    report = PullReport(adapter.name, progress_file=str(path))
    entries: list[RemoteSuppression] = []
    cursor: str | None = None
    if path.exists() and path.stat().st_size:
        entries, cursor, report.pages = _read_progress(path, adapter.name)
        report.fetched = len(entries)
        if report.pages and cursor is None:
            report.complete = True
    else:
        path.write_text(json.dumps({"provider": adapter.name, "format": _FORMAT}) + "\n")
    if not report.complete:
        try:
            with path.open("a", encoding="utf-8") as out:
                for page in adapter.list_suppressions(cursor=cursor):
                    entries.extend(page.items)
                    out.write(
                        json.dumps(
                            {"items": [_entry_json(e) for e in page.items], "cursor": page.cursor}
                        )
                        + "\n"
                    )
                    out.flush()
                    os.fsync(out.fileno())
                    report.pages += 1
                    report.fetched = len(entries)
                    if on_page is not None:
                        on_page(report)
            report.complete = True
        except SendError as exc:
            report.error = str(exc)
    for entry in entries:
        report.by_origin[entry.origin] = report.by_origin.get(entry.origin, 0) + 1
    now = datetime.now(UTC)
    duration = tracker.soft_bounces.duration

    today = now.replace(hour=0, minute=0, second=0, microsecond=0)

    def hold(created: datetime | None) -> str:
        # From when the provider listed it, or (when that is longer ago than the hold) from
        # today: the provider still lists it. A day's granularity keeps a repeated pull
        # from changing anything the same day.
        start = created if created is not None and created + duration > now else today
        return (start + duration).isoformat()

    doing = apply and (report.complete or partial)
    report.imported = tracker.import_suppressions(
        list(_rows(entries, adapter.name, hold)),
        source=SuppressionSource.PROVIDER_SYNC.value,
        dry_run=not doing,
        skip_invalid=True,
    )
    report.applied = report.imported.applied
    if report.applied and report.complete:
        path.unlink(missing_ok=True)
        report.progress_file = None
    return report


def to_remote(entry: Suppression) -> RemoteSuppression:
    cause = entry.cause if entry.cause in ("bounced", "complained", "unsubscribed") else "bounced"
    if entry.cause in ("blocked", "invalid"):
        cause = entry.cause
    return RemoteSuppression(
        address=entry.address,
        cause=cause,
        scope=entry.scope,
        reason=entry.reason,
        created_at=entry.created_at,
        temporary=entry.expires_at is not None,
    )


def push(tracker: Tracker, adapter: Adapter, *, apply: bool = False) -> PushResult:
    """Write what stands in ``tracker`` (permanent entries only: an expiring one would outlive
    its time in the provider's list) into ``adapter``'s provider's list; a dry run reports
    what would be pushed and skipped without calling the provider."""
    entries = [to_remote(s) for s in tracker.export_suppressions() if s.expires_at is None]
    if not apply:
        calls, skipped = adapter.suppression_push_calls(entries)
        return PushResult(pushed=[e for call in calls for e in call.entries], skipped=list(skipped))
    return adapter.push_suppressions(entries)


# --------------------------------------------------------------------------- the command


def _adapter(dsn: str) -> Adapter:
    from unimailtrack.mailer import build_adapters

    adapters, _ = build_adapters(dsn)
    if len(adapters) != 1:
        raise UnimailtrackError("name one provider's DSN, not a failover(...) or roundrobin(...)")
    return adapters[0]


def pull_command(tracker: Tracker, dsn: str, args: argparse.Namespace) -> int:
    adapter = _adapter(dsn)

    def on_page(report: PullReport) -> None:
        sys.stderr.write(f"\r{adapter.name}: {report.fetched} fetched, {report.pages} pages")
        sys.stderr.flush()

    with adapter:
        report = pull(
            tracker,
            adapter,
            apply=args.apply,
            partial=args.partial,
            progress_file=args.progress_file,
            on_page=on_page,
        )
    sys.stderr.write("\n")
    if args.json:
        from pydantic_core import to_json

        sys.stdout.write(to_json(report, indent=2).decode() + "\n")
    else:
        lists = ", ".join(f"{n} {o or 'entries'}" for o, n in sorted(report.by_origin.items()))
        print(f"fetched {report.fetched} from {adapter.name} ({lists or 'nothing'})")
        if report.error is not None:
            print(f"the pull stopped: {report.error}")
            print(f"run the same command again to resume from {report.progress_file}")
        imported = report.imported
        if imported is not None:
            verb = "applied" if report.applied else "would apply (dry run; --apply to apply)"
            if args.apply and not report.applied:
                verb = "nothing applied: the pull is incomplete (--partial applies what it has)"
            print(
                f"{verb}: {imported.new} new, {imported.updated} updated, "
                f"{imported.unchanged} unchanged, {imported.invalid} invalid"
            )
    return 0 if report.complete else 1


def push_command(tracker: Tracker, dsn: str, args: argparse.Namespace) -> int:
    adapter = _adapter(dsn)
    with adapter:
        result = push(tracker, adapter, apply=args.apply)
    verb = "pushed" if args.apply else "would push (dry run; --apply to push)"
    print(f"{verb} {len(result.pushed)} to {adapter.name}; skipped {len(result.skipped)}")
    for entry, why in result.skipped[:20]:
        print(f"  skipped {entry.address} ({entry.scope or 'every stream'}): {why}")
    for error in result.errors:
        print(f"  refused: {error}")
    return 1 if result.errors else 0
