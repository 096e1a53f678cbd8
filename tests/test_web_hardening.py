"""The web app under hostile input: every query and path parameter of every API route given
garbage (never a 500, never a 503 while the store is healthy), the API refused beyond
loopback without a token, and request bodies that trickle in or stop half-way, over real
HTTP against a real ``unimailtrack serve``."""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tracking_support import POSTGRES_URL, drop_schema, require_postgres, with_schema

from live_server import running
from unimailtrack import Email, InvalidQuery, Mailer
from unimailtrack.adapters import MemoryAdapter
from unimailtrack.cli import Exit, main
from unimailtrack.tracking import Tracker
from unimailtrack.web import create_app
from unimailtrack.webhooks import WebhookReceiver

SECRET = "hardening-webhook-secret"
MEMORY_DSN = f"memory://?webhook_secret={SECRET}"

# Every API route and the query parameters it reads ({} marks the path parameter).
ROUTES: dict[str, tuple[str, ...]] = {
    "/api/sends": (
        "since",
        "until",
        "status",
        "category",
        "provider",
        "bulk_id",
        "recipient",
        "cursor",
        "limit",
    ),
    "/api/sends/{}": (),
    "/api/sends/{}/timeline": (),
    "/api/recipients/{}/history": ("cursor", "limit"),
    "/api/bulk/{}": (),
    "/api/bulk/{}/rows": ("sort", "order", "status", "cursor", "limit"),
    "/api/suppressions": ("cursor", "limit"),
    "/api/suppressions/{}": (),
    "/api/domain-alerts": ("threshold", "hours"),
    "/api/alerts": ("all",),
    "/api/dead-letters": ("provider", "limit"),
    "/api/changes": ("tracking_id", "bulk_id", "recipient"),
}
LISTINGS = ("report", "history", "suppressions", "bulk:date:asc", "bulk:name:desc")


def _cursor(*values: object) -> str:
    raw = json.dumps(list(values)).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# --------------------------------------------------------------------------- a populated site


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """A served app over a tracker holding a bulk send and a suppression; yields (base URL,
    a bulk id)."""
    schema = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('hardening') / 'site.sqlite3'}"
    else:
        require_postgres()
        schema = f"h_{secrets.token_hex(6)}"
        url = with_schema(POSTGRES_URL, schema)
    memory = MemoryAdapter()
    try:
        with Tracker.open(url) as tracker:
            mailer = Mailer(memory, tracker=tracker)
            to = [f"guest{i}@example.com" for i in range(5)]
            result = mailer.send(
                Email(sender="e@example.com", to=to, subject="Hi", text="x", category="news")
            )
            tracker.suppress("gone@example.com", "550 5.1.1 user unknown")
            app = create_app(WebhookReceiver(mailer, tracker), heartbeat=0.05)
            with running(app) as base:
                assert result.bulk_id is not None
                yield base, result.bulk_id
    finally:
        if schema is not None:
            drop_schema(schema)


garbage_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=40),
    st.integers().map(str),
    st.integers(min_value=2**63 - 2, max_value=2**70).map(str),
    st.sampled_from(["", "-1", "0", "1e9", "²", "9" * 5000, "x" * 3000, "\x00", "a,b,,c"]),
    st.sampled_from(
        ["2024-01-15T09:30:00Z", "9999-12-31T23:59:59-23:59", "0001-01-01T00:00+14:00"]
    ),
    st.lists(
        st.one_of(
            st.integers(min_value=-(2**80), max_value=2**80),
            st.text(max_size=8),
            st.none(),
            st.booleans(),
            st.floats(allow_nan=False),
            st.just([[[[]]]]),
        ),
        max_size=4,
    ).flatmap(lambda tail: st.sampled_from(LISTINGS).map(lambda kind: _cursor(kind, *tail))),
    st.just(_cursor(*(["["] * 1)) + "[" * 10),
)


def _get(client: httpx.Client, path: str, params: dict[str, str]) -> int:
    if path == "/api/changes":
        with client.stream("GET", path, params=params) as answer:
            return answer.status_code
    return client.get(path, params=params).status_code


@pytest.mark.parametrize("route", list(ROUTES))
def test_garbage_in_any_parameter_is_answered_400_never_500(
    site: tuple[str, str], route: str
) -> None:
    base, bulk_id = site
    names = ROUTES[route]

    @settings(
        max_examples=100,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        path_value=st.one_of(st.just(bulk_id), garbage_text),
        params=st.dictionaries(st.sampled_from(names or ("unused",)), garbage_text, max_size=4),
    )
    def check(path_value: str, params: dict[str, str]) -> None:
        path = route.replace("{}", quote(path_value, safe="")) if "{}" in route else route
        status = _get(client, path, params)
        assert status in (200, 307, 400, 404), (path, params, status)

    with httpx.Client(base_url=base, timeout=10) as client:
        check()


@pytest.mark.parametrize(
    ("path", "kind", "query"),
    [
        ("/api/sends", "report", {}),
        ("/api/recipients/guest1@example.com/history", "history", {}),
        ("/api/suppressions", "suppressions", {}),
        ("/api/bulk/{bulk}/rows", "bulk:date:asc", {}),
        ("/api/bulk/{bulk}/rows", "bulk:status:desc", {"sort": "status", "order": "desc"}),
    ],
)
@pytest.mark.parametrize(
    "position",
    [[2**63, "x"], [-(2**63) - 1, "x"], [10**30, "x"], [True, "x"], ["x", 1], [1.5, "x"]],
)
def test_a_cursor_out_of_range_is_answered_400_with_a_message(
    site: tuple[str, str],
    path: str,
    kind: str,
    query: dict[str, str],
    position: list[object],
) -> None:
    base, bulk_id = site
    scope = [""] if kind == "suppressions" else []  # its positions end with the scope
    params = {**query, "cursor": _cursor(kind, *position, *scope)}
    with httpx.Client(base_url=base, timeout=10) as client:
        answer = client.get(path.format(bulk=bulk_id), params=params)
    assert answer.status_code == 400, answer.text
    # Refused for what it holds, not for belonging to another listing.
    assert answer.json()["error"] == "cursor holds a position this listing cannot have"


@pytest.mark.parametrize("value", ["a\x00b", "x" * 1001, "tab\there"])
def test_control_characters_and_overlong_text_are_refused_400(
    site: tuple[str, str], value: str
) -> None:
    base, _ = site
    with httpx.Client(base_url=base, timeout=10) as client:
        for path, params in [
            ("/api/sends", {"recipient": value}),
            ("/api/sends", {"category": value}),
            (f"/api/sends/{quote(value, safe='')}", {}),
            (f"/api/suppressions/{quote(value, safe='')}", {}),
        ]:
            answer = client.get(path, params=params)
            assert answer.status_code == 400, (path, answer.text)
            assert answer.json()["error"]


def test_the_tracker_raises_a_typed_error_for_a_foreign_or_huge_cursor(tmp_path: Path) -> None:
    with Tracker.open(f"sqlite:///{tmp_path / 't.sqlite3'}") as tracker:
        for bad in ("%%%", _cursor("history", 2**64, "x"), "A" * 2000, _cursor("report", 1, "x")):
            with pytest.raises(InvalidQuery) as caught:
                tracker.history("a@example.com", cursor=bad)
            assert caught.value.parameter == "cursor"
        with pytest.raises(InvalidQuery, match="sort"):
            tracker.bulk_rows("b", sort="nonsense")
        with pytest.raises(InvalidQuery, match="status"):
            tracker.report(status="sent")
        assert isinstance(InvalidQuery("x", "y"), ValueError)


def test_a_huge_cursor_is_a_typed_error_on_postgresql_too() -> None:
    require_postgres()
    schema = f"h_{secrets.token_hex(6)}"
    try:
        with (
            Tracker.open(with_schema(POSTGRES_URL, schema)) as tracker,
            pytest.raises(InvalidQuery),
        ):
            tracker.suppressions(cursor=_cursor("suppressions", 2**63, "k"))
    finally:
        drop_schema(schema)


# --------------------------------------------------------------------------- access


def _asgi_get(app: object, base: str, path: str, **headers: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]

    async def get() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url=base) as client:
            return await client.get(path, headers=headers)

    import asyncio

    return asyncio.run(get())


def test_without_a_token_the_api_answers_only_on_loopback(tmp_path: Path) -> None:
    with Tracker.open(f"sqlite:///{tmp_path / 't.sqlite3'}") as tracker:
        receiver = WebhookReceiver({"memory": MemoryAdapter()}, tracker)
        app = create_app(receiver)
        assert _asgi_get(app, "http://127.0.0.1:8025", "/api/suppressions").status_code == 200
        assert _asgi_get(app, "http://[::1]:8025", "/api/suppressions").status_code == 200
        beyond = _asgi_get(app, "http://192.0.2.7:8025", "/api/suppressions")
        assert beyond.status_code == 403
        assert "--api-token" in beyond.json()["error"]
        # Webhooks stay reachable from anywhere.
        assert _asgi_get(app, "http://192.0.2.7:8025", "/webhooks/memory").status_code == 200
        # Behind the operator's own authentication.
        opened = create_app(receiver, api_auth=False)
        assert _asgi_get(opened, "http://192.0.2.7:8025", "/api/suppressions").status_code == 200
        # With a token, the token is what counts, wherever the request came in.
        guarded = create_app(receiver, api_token="t0ken")
        assert _asgi_get(guarded, "http://127.0.0.1", "/api/suppressions").status_code == 401
        ok = _asgi_get(
            guarded, "http://192.0.2.7", "/api/suppressions", authorization="Bearer t0ken"
        )
        assert ok.status_code == 200


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7", "mail.example.com"])
def test_serve_refuses_to_expose_the_api_beyond_loopback_without_a_token(
    capsys: pytest.CaptureFixture[str], host: str
) -> None:
    code = main(["serve", "--dsn", MEMORY_DSN, "--host", host])
    assert code == Exit.CONFIG
    err = capsys.readouterr().err
    assert "--api-token" in err
    assert "--no-api-auth" in err


def test_serve_refuses_a_token_and_no_auth_together(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["serve", "--dsn", MEMORY_DSN, "--api-token", "t", "--no-api-auth"]
    assert main(argv) == Exit.CONFIG
    assert "contradict" in capsys.readouterr().err


# --------------------------------------------------------------------------- slow and cut bodies


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str], Path]]:
    """``unimailtrack serve`` on 127.0.0.1 with a one-second body timeout; yields its URL,
    the process and the file its standard error goes to."""
    env = {**os.environ, "UNIMAILTRACK_STORE": f"sqlite:///{tmp_path / 'serve.sqlite3'}"}
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "unimailtrack.cli", "serve", "--dsn", MEMORY_DSN]
    with log.open("w") as err:
        process = subprocess.Popen(
            [*command, "--port", "0", "--body-timeout", "1", "--log-level", "warning"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("unimailtrack: serving http://127.0.0.1:"), line
        yield line.split()[-1], process, log
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=15)
        if process.stdout is not None:
            process.stdout.close()


def _connect(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


_HEAD = (
    b"POST /webhooks/memory HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
    b"content-length: 1000\r\n\r\n"
)


def test_a_trickled_body_is_answered_408_and_hung_up_while_others_flow(
    served: tuple[str, subprocess.Popen[str], Path],
) -> None:
    base, _, _ = served
    stop = threading.Event()
    answer = bytearray()
    closed_after: list[float] = []

    def slowloris() -> None:
        with _connect(base) as conn:
            conn.sendall(_HEAD)
            started = time.monotonic()
            conn.settimeout(0.2)
            while not stop.is_set() and time.monotonic() - started < 10:
                try:
                    conn.sendall(b"[")
                except OSError:  # the server hung up (EPIPE, ECONNRESET) before recv saw it
                    closed_after.append(time.monotonic() - started)
                    break
                try:
                    chunk = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    chunk = b""
                if not chunk:
                    closed_after.append(time.monotonic() - started)
                    break
                answer.extend(chunk)

    trickle = threading.Thread(target=slowloris)
    began = time.monotonic()
    trickle.start()
    served_while_held = 0
    try:
        with httpx.Client(base_url=base, timeout=5) as client:
            for _ in range(10):
                assert client.get("/api/suppressions").status_code == 200
                served_while_held += not closed_after
                time.sleep(0.05)
    finally:
        trickle.join(timeout=15)
        stop.set()
    assert answer.startswith(b"HTTP/1.1 408"), bytes(answer[:200])
    assert closed_after, "the server kept the slow connection open"
    # Hung up after the one-second bound (plus scheduling on a busy machine), not at once.
    assert 0.9 <= closed_after[0] <= 6.0, closed_after
    # Other requests were answered while the slow body held its connection.
    assert served_while_held >= 3, (served_while_held, time.monotonic() - began)


def test_a_client_that_disconnects_mid_body_is_logged_in_one_line(
    served: tuple[str, subprocess.Popen[str], Path],
) -> None:
    base, process, log = served
    with _connect(base) as conn:
        conn.sendall(_HEAD + b'[{"event": "deliv')
        time.sleep(0.2)
    deadline = time.monotonic() + 5
    while "disconnected" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    # The server is still serving.
    with httpx.Client(base_url=base, timeout=5) as client:
        assert client.get("/api/suppressions").status_code == 200
    process.terminate()
    process.wait(timeout=15)
    text = log.read_text()
    lines = [line for line in text.splitlines() if "disconnected" in line]
    assert len(lines) == 1, text
    assert "after 17 bytes" in lines[0]
    assert "Traceback" not in text


def test_a_body_in_time_is_still_stored(served: tuple[str, subprocess.Popen[str], Path]) -> None:
    base, _, _ = served
    memory = MemoryAdapter(webhook_secret=SECRET)
    event = {
        "event": "delivered",
        "id": "evt-1",
        "recipient": "ann@example.com",
        "tracking_id": "2" * 32,
        "timestamp": datetime.now(UTC).timestamp(),
    }
    body, headers = memory.webhook([event])
    with httpx.Client(base_url=base, timeout=10) as client:
        assert client.post("/webhooks/memory", content=body, headers=headers).json()["new"] == 1


@pytest.mark.parametrize(
    "allowed",
    [["--api-token", "t0ken"], ["--no-api-auth"], ["--no-api", "--no-dashboard"]],
)
def test_serve_goes_beyond_loopback_with_a_token_or_an_explicit_choice(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, allowed: list[str]
) -> None:
    # Past the access check, the next thing serve needs is a DSN: its absence is what stops it.
    monkeypatch.delenv("UNIMAILTRACK_DSN", raising=False)
    monkeypatch.delenv("UNIMAILTRACK_API_TOKEN", raising=False)
    assert main(["serve", "--host", "0.0.0.0", *allowed]) == Exit.CONFIG
    err = capsys.readouterr().err
    assert "no DSN" in err
    assert "beyond this machine" not in err
