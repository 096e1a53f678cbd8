"""``make demo`` runs the whole story and finishes by itself."""

from __future__ import annotations

import os
import pty
import queue
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from unimailtrack import demo


@pytest.mark.slow
def test_the_demo_tells_the_whole_story(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(["--delay", "0"]) == 0
    out = capsys.readouterr().out
    for name in ("SendGrid", "Mailgun", "Amazon SES", "Resend", "Postmark", "Brevo"):
        assert f"\n{name}: UNIMAILTRACK_DSN=" in out
    assert "accepted → bounced" in out  # a live transition, streamed by serve
    sections = out.split("where each recipient ended")
    assert len(sections) == 7
    mailgun_rows = sections[2].split("Amazon SES:")[0]
    assert "bounce+cyd@oldcorp.example" in mailgun_rows
    assert "suppressed since" in mailgun_rows  # the suppression list outlives a provider
    assert "oldcorp.example: 3 recipients" in out
    analytics = out.split("Bulk-send analytics")[1].splitlines()
    assert analytics[2].split()[:2] == ["SendGrid", "12"]


def _demo(stdin: int, env: dict[str, str]) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "unimailtrack.demo", "--delay", "0"]
    return subprocess.Popen(
        command, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )


_readers: dict[int, threading.Thread] = {}


def _finish(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait()
    reader = _readers.pop(process.pid, None)
    if reader is not None:
        reader.join(10)
    if process.stdout is not None:
        process.stdout.close()


def _line_with(process: subprocess.Popen[str], text: str, limit: float) -> str:
    lines: queue.Queue[str] = queue.Queue()
    stream = process.stdout
    assert stream is not None
    reader = threading.Thread(target=lambda: [lines.put(x) for x in stream], daemon=True)
    reader.start()
    _readers[process.pid] = reader
    give_up = time.monotonic() + limit
    while time.monotonic() < give_up:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        if text in line:
            return line
    raise AssertionError(f"the demo never said {text!r}")


@pytest.mark.slow
def test_in_a_terminal_the_demo_leaves_the_dashboard_up_until_ctrl_c() -> None:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    terminal, seat = pty.openpty()
    process = _demo(seat, env)
    os.close(seat)
    try:
        line = _line_with(process, "The dashboard: http://", 180)
        url = line.split("The dashboard: ")[1].split()[0]
        page = httpx.get(url, timeout=10)
        assert page.status_code == 200 and "Track Emails" in page.text
        assert "rsvp_invite" in page.text
        time.sleep(1)
        assert process.poll() is None  # still serving
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(url, timeout=5)
    finally:
        _finish(process)
        os.close(terminal)


@pytest.mark.slow
def test_without_a_terminal_the_demo_ends_by_itself() -> None:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    process = _demo(subprocess.DEVNULL, env)
    try:
        _line_with(process, "The dashboard ran at http://", 180)
        assert process.wait(30) == 0
    finally:
        _finish(process)
