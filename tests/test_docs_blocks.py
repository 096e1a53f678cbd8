"""Docs that run: every code block in README.md and docs/ either runs as written or is marked
as a fragment.

A block is a fragment when the line just before its opening fence is ``<!-- fragment -->``
(docs/testing.md says so): console sessions with their output, JSON shapes, diagrams, and
excerpts that need a real account or an application around them. Every other block must be
Python, and runs here as written, each in a fresh interpreter in an empty directory with
``UNIMAILTRACK_DSN=memory://``, with a socket guard: connecting anywhere but 127.0.0.1 (or
looking up any other host name) fails the block, so no example ever reaches a real provider.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
MARKER = "<!-- fragment -->"
FENCE = re.compile(
    r"^(?P<indent> *)```(?P<info>[^\n`]*)\n(?P<code>.*?)^(?P=indent)```", re.M | re.S
)

GUARD = r"""
import socket

_ALLOWED = {"127.0.0.1", "localhost", "::1"}


def _check(address):
    host = address[0] if isinstance(address, tuple) else address
    if host not in _ALLOWED:
        raise SystemExit(f"docs example tried to reach {host!r}: only 127.0.0.1 is allowed")


_connect, _connect_ex, _getaddrinfo = (
    socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo
)


def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _check(address)
    return _connect(self, address)


def connect_ex(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _check(address)
    return _connect_ex(self, address)


def getaddrinfo(host, *args, **kwargs):
    if host is not None:
        _check((host.decode() if isinstance(host, bytes) else str(host), 0))
    return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = (
    connect, connect_ex, getaddrinfo
)
"""


@dataclass(frozen=True, slots=True)
class Block:
    document: Path
    line: int
    language: str
    code: str
    fragment: bool

    @property
    def name(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"


def blocks() -> list[Block]:
    found = []
    for document in DOCUMENTS:
        text = document.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            before = text[: match.start()].rstrip(" ").splitlines()
            marked = bool(before) and before[-1].strip() == MARKER
            indent = len(match.group("indent"))
            code = "\n".join(row[indent:] for row in match.group("code").splitlines())
            language = match.group("info").strip().split(" ")[0]
            found.append(Block(document, line, language, code, marked))
    return found


ALL = blocks()
RUNNABLE = [b for b in ALL if not b.fragment]


def test_every_block_is_python_or_marked_as_a_fragment() -> None:
    unmarked = [b.name for b in RUNNABLE if b.language != "python"]
    assert unmarked == [], f"mark these {MARKER} or make them runnable Python"
    assert len(ALL) > 40  # the scan finds the documents' blocks


def test_the_guard_stops_an_example_that_reaches_out(tmp_path: Path) -> None:
    done = _run("import httpx\nhttpx.get('https://api.sendgrid.com/v3/')\n", tmp_path)
    assert done.returncode != 0
    assert "only 127.0.0.1 is allowed" in done.stderr


def _run(code: str, where: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNIMAILTRACK_")}
    # The guard is loaded at start-up as ``sitecustomize``, so the example itself stays the
    # whole file (a ``from __future__`` import must be its first statement).
    env |= {
        "UNIMAILTRACK_DSN": "memory://",
        "PYTHONWARNINGS": "error::ResourceWarning",
        "PYTHONPATH": str(where),
    }
    (where / "sitecustomize.py").write_text(GUARD, encoding="utf-8")
    script = where / "example.py"
    script.write_text(code, encoding="utf-8")
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=where,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


FILE = re.compile(r"# (\w+\.py): ")


@pytest.mark.parametrize("block", RUNNABLE, ids=lambda b: b.name)
def test_the_block_runs_as_written(block: Block, tmp_path: Path) -> None:
    # A block that opens with ``# name.py: ...`` is that file of a walk-through: the blocks
    # after it in the same document may import it, so it is written beside them.
    for earlier in RUNNABLE:
        named = FILE.match(earlier.code)
        if earlier.document == block.document and earlier.line < block.line and named:
            (tmp_path / named.group(1)).write_text(earlier.code, encoding="utf-8")
    done = _run(block.code, tmp_path)
    assert done.returncode == 0, f"{block.name} failed:\n{done.stderr[-3000:]}"
