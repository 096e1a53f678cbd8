"""An ASGI app served by uvicorn on a free port of 127.0.0.1, in a background thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import uvicorn

_STARTUP_LIMIT = 10.0


@contextmanager
def running(app: Any) -> Iterator[str]:
    """Serve ``app`` while the block runs; yields its base URL (``http://127.0.0.1:PORT``)."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="off",
        http="h11",
        ws="none",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    give_up = time.monotonic() + _STARTUP_LIMIT
    while not server.started:
        if not thread.is_alive() or time.monotonic() > give_up:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join()


def raw_exchange(base_url: str, head: bytes, body_parts: Sequence[bytes] = ()) -> bytes:
    """Send ``head`` and ``body_parts`` on a plain socket, then read the answer's head: for
    requests no HTTP client sends, such as a body that is never finished."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        with suppress(BrokenPipeError, ConnectionResetError):  # the server may hang up early
            conn.sendall(head)
            for part in body_parts:
                conn.sendall(part)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = conn.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer
