"""Suppression lists as files: CSV or JSON Lines, read for an import and written by an export.

The columns (CSV header, JSON keys) are those of ``Suppression``: ``address`` (required),
``scope`` (empty for every stream), ``cause``, ``reason``, ``source``, ``provider``,
``event_id``, ``tracking_id``, ``created_at`` and ``expires_at`` (ISO 8601 with a time zone).
An import reads ``source`` and ``tracking_id`` but records its own source.

A file that cannot be read as a whole (no header, an unknown column, bytes that are not
UTF-8, a quoted field left open at the end of a truncated file) raises :class:`FileProblem`
naming the line; a row that is wrong on its own is handed to the import, which reports it
with its line number.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from unimailtrack.model import Suppression
from unimailtrack.tracking._suppression import IMPORT_COLUMNS

__all__ = ["COLUMNS", "FileProblem", "SuppressionFile", "write_csv", "write_jsonl"]

COLUMNS = (
    "address",
    "scope",
    "cause",
    "reason",
    "source",
    "provider",
    "event_id",
    "tracking_id",
    "created_at",
    "expires_at",
)

MAX_LINE = 64 * 1024
"""Bytes a line may have: a suppression is one short record, so a longer line is not one."""


class FileProblem(ValueError):
    """The file cannot be read as a suppression list; ``line`` is where it went wrong."""

    def __init__(self, path: str, line: int, problem: str) -> None:
        super().__init__(f"{path}, line {line}: {problem}")
        self.line = line


def _format_of(path: Path, given: str | None) -> str:
    if given is not None:
        return given
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    return "csv"


class SuppressionFile:
    """The rows of a suppression file, with their line numbers. Iterating opens the file
    again each time, so an import that a store retries reads it again from the start."""

    reopen = True

    def __init__(self, path: str | Path, *, format: str | None = None) -> None:
        self.path = Path(path)
        self.format = _format_of(self.path, format)
        if self.format not in ("csv", "jsonl"):
            raise ValueError(f"unknown format {self.format!r}; use csv or jsonl")

    def __iter__(self) -> Iterator[tuple[int, Mapping[str, Any]]]:
        with self.path.open("rb") as raw:
            lines = _lines(raw, str(self.path))
            if self.format == "csv":
                yield from _csv_rows(lines, str(self.path))
            else:
                yield from _jsonl_rows(lines, str(self.path))


def _lines(raw: IO[bytes], path: str) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(raw, start=1):
        if len(line) > MAX_LINE:
            raise FileProblem(path, number, f"the line is longer than {MAX_LINE} bytes")
        try:
            text = line.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise FileProblem(path, number, f"not UTF-8 ({exc.reason})") from None
        if "\x00" in text:
            raise FileProblem(path, number, "the line holds a NUL byte")
        yield number, text


def _csv_rows(lines: Iterator[tuple[int, str]], path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    numbers: list[int] = []

    def texts() -> Iterator[str]:
        for number, text in lines:
            numbers.append(number)
            yield text

    reader = csv.reader(texts(), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise FileProblem(path, 1, "the file is empty: a header line is required")
        names = [name.strip().lower() for name in header]
        unknown = [name for name in names if name not in IMPORT_COLUMNS]
        if unknown or "address" not in names or len(set(names)) != len(names):
            raise FileProblem(
                path,
                1,
                f"wrong header {','.join(header)!r}: the columns are {', '.join(COLUMNS)} "
                "(address required, each once)",
            )
        started = numbers[-1] + 1
        for fields in reader:
            line = started
            started = numbers[-1] + 1
            if not fields or fields == [""]:
                continue
            if len(fields) != len(names):
                yield line, {"__problem__": f"{len(fields)} fields, the header has {len(names)}"}
                continue
            yield line, dict(zip(names, fields, strict=True))
    except csv.Error as exc:
        raise FileProblem(path, numbers[-1] if numbers else 1, f"not valid CSV: {exc}") from None


def _jsonl_rows(
    lines: Iterator[tuple[int, str]], path: str
) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, text in lines:
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except ValueError as exc:
            yield number, {"__problem__": f"not JSON: {exc}"}
            continue
        if not isinstance(value, dict):
            yield number, {"__problem__": "a line must be one JSON object"}
            continue
        yield number, value


def _row(entry: Suppression) -> dict[str, str]:
    data = entry.model_dump(mode="json")
    return {name: "" if data.get(name) is None else str(data[name]) for name in COLUMNS}


def write_csv(entries: Iterable[Suppression], out: IO[str]) -> int:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    count = 0
    for entry in entries:
        row = _row(entry)
        writer.writerow([row[name] for name in COLUMNS])
        count += 1
    return count


def write_jsonl(entries: Iterable[Suppression], out: IO[str]) -> int:
    count = 0
    for entry in entries:
        out.write(json.dumps(entry.model_dump(mode="json"), separators=(",", ":")) + "\n")
        count += 1
    return count


def text_stream(binary: IO[bytes]) -> IO[str]:
    return io.TextIOWrapper(binary, encoding="utf-8", newline="")
