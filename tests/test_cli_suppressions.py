"""``unimailtrack suppressions import / export``: files in, files out, bad files refused with
the line named and nothing imported, and an import killed half-way leaving nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tracking.tracking_support import POSTGRES_URL, drop_schema, require_postgres, with_schema
from unimailtrack.cli import Exit, main
from unimailtrack.tracking import Tracker

HEADER = "address,scope,cause,reason,created_at\n"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'list.sqlite3'}"


def test_import_is_a_dry_run_until_applied_and_export_gives_it_back(
    capsys: pytest.CaptureFixture[str], store: str, tmp_path: Path
) -> None:
    source = tmp_path / "list.csv"
    source.write_text(
        HEADER
        + "Ann@EXAMPLE.com,,bounced,550 gone,2024-01-02T03:04:05Z\n"
        + "bob@example.com,marketing,unsubscribed,,\n"
    )
    code, out, _ = run(capsys, "suppressions", "import", str(source), "--store", store)
    assert code == Exit.OK and out.startswith("would import (dry run")
    with Tracker.open(store) as tracker:
        assert tracker.suppression("Ann@example.com") is None
    code, out, _ = run(capsys, "suppressions", "import", str(source), "--store", store, "--apply")
    assert (code, out.strip()) == (Exit.OK, "imported: 2 new, 0 updated, 0 unchanged, 0 invalid")
    code, out, _ = run(capsys, "suppressions", "import", str(source), "--store", store, "--apply")
    assert "0 new, 0 updated, 2 unchanged" in out

    code, out, _ = run(capsys, "suppressions", "export", "--store", store)
    lines = out.splitlines()
    assert lines[0].startswith("address,scope,cause,reason,source")
    assert lines[1].startswith("Ann@example.com,,bounced,550 gone,import")
    code, out, _ = run(capsys, "suppressions", "export", "--format", "jsonl", "--store", store)
    exported = [json.loads(line) for line in out.splitlines()]
    assert [(e["address"], e["scope"]) for e in exported] == [
        ("Ann@example.com", None),
        ("bob@example.com", "marketing"),
    ]
    again = tmp_path / "again.jsonl"
    again.write_text(out)
    other = f"sqlite:///{tmp_path / 'other.sqlite3'}"
    code, out, _ = run(capsys, "suppressions", "import", str(again), "--store", other, "--apply")
    assert "2 new" in out
    code, out, _ = run(capsys, "suppressions", "Ann@example.com", "--store", other)
    assert code == Exit.OK and "added" in out


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("email,cause\nann@example.com,bounced\n", "line 1: wrong header"),
        ("", "line 1: the file is empty"),
        (HEADER + 'ann@example.com,,bounced,"an open quote\n', "not valid CSV"),
        (HEADER + "ann@example.com,,bounced,\xff\n", "line 2: not UTF-8"),
    ],
)
def test_a_file_that_cannot_be_read_is_refused_naming_the_line(
    capsys: pytest.CaptureFixture[str], store: str, tmp_path: Path, content: str, problem: str
) -> None:
    source = tmp_path / "bad.csv"
    source.write_bytes(content.encode("utf-8").replace(b"\xc3\xbf", b"\xff"))
    code, _, err = run(capsys, "suppressions", "import", str(source), "--store", store, "--apply")
    assert code == Exit.FAILED
    assert problem in err and "nothing was imported" in err


def test_invalid_rows_refuse_the_whole_file_unless_skipped(
    capsys: pytest.CaptureFixture[str], store: str, tmp_path: Path
) -> None:
    source = tmp_path / "rows.csv"
    source.write_text(
        HEADER
        + "good@example.com,,,,\n"
        + "not-an-address,,,,\n"
        + "x@example.com,*odd,,,\n"
        + "y@example.com,,,\n"  # truncated: a field short
    )
    code, out, err = run(capsys, "suppressions", "import", str(source), "--store", store, "--apply")
    assert code == Exit.FAILED
    assert "rows.csv, line 3:" in err and "line 4: unknown scope" in err
    assert "line 5: 4 fields, the header has 5" in err
    assert out.startswith("refused: nothing imported")
    with Tracker.open(store) as tracker:
        assert tracker.suppressions().total == 0
    code, out, _ = run(
        capsys, "suppressions", "import", str(source), "--store", store, "--apply", "--skip-invalid"
    )
    assert code == Exit.OK and "1 new" in out and "3 invalid" in out


def test_a_missing_file_and_bad_usage_are_usage_errors(
    capsys: pytest.CaptureFixture[str], store: str
) -> None:
    assert run(capsys, "suppressions", "import", "/nonexistent.csv", "--store", store)[0] == 2
    assert run(capsys, "suppressions", "import", "--store", store)[0] == Exit.USAGE
    assert run(capsys, "suppressions", "export", "extra", "--store", store)[0] == Exit.USAGE


def _killed_import(url: str, tmp_path: Path) -> None:
    source = tmp_path / "big.csv"
    with source.open("w") as out:
        out.write("address\n")
        for i in range(400_000):
            out.write(f"user{i}@example.com\n")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "unimailtrack.cli",
            "suppressions",
            "import",
            str(source),
            "--apply",
            "--store",
            url,
        ],
        stderr=subprocess.PIPE,
        env=env,
    )
    assert child.stderr is not None
    seen = b""
    deadline = time.monotonic() + 120
    while b"rows read" not in seen and time.monotonic() < deadline:
        seen += child.stderr.read1(100)  # type: ignore[attr-defined]
    assert b"rows read" in seen, seen
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    child.stderr.close()
    with Tracker.open(url) as tracker:
        assert tracker.suppressions(limit=1).total == 0
        assert tracker.suppression("user0@example.com") is None


def test_an_import_killed_half_way_leaves_nothing_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'killed.sqlite3'}"
    Tracker.open(url).close()
    _killed_import(url, tmp_path)


def test_an_import_killed_half_way_leaves_nothing_postgres(tmp_path: Path) -> None:
    require_postgres()
    import secrets

    schema = f"t_{secrets.token_hex(6)}"
    url = with_schema(POSTGRES_URL, schema)
    try:
        Tracker.open(url).close()
        _killed_import(url, tmp_path)
    finally:
        drop_schema(schema)
