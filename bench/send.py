"""Sending speed through SendGrid's API shape, against the official ``sendgrid`` package.

A stub on 127.0.0.1, in a process of its own, answers every request as SendGrid's Mail Send
does (``202 Accepted`` with an ``X-Message-Id``) over keep-alive connections. 1,000 individual
sends (one recipient each) go through ``AsyncMailer`` with the httpx and the aiohttp transport
at 50 in flight, through ``Mailer`` one after the other, and through the official SDK one after
the other (its reference row). Then a 10,000-recipient bulk send shows how many requests it
takes. The stub serves a fixed number of requests and stops by itself, also when the benchmark
dies (it stops after a few idle seconds).

Every row sends the same message to the same stub: the SDK's ``Mail`` carries the same sender
and display name, the metadata as a custom arg and tracking explicitly off, as the library
sends them. Every row is warmed up with 50 sends first, and each row's figure is its best of
five runs, the rows taking turns so that a busy spell on the machine hits all of them. The
concurrent rows keep 50 sends in flight with 50 workers, each taking the next e-mail when its
send is done, so that the harness spends no task and no semaphore of its own on each send.

Run with ``.venv-bench/bin/python bench/send.py``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _harness import Row, print_table
from unimailtrack import Email
from unimailtrack.mailer import AsyncMailer, Mailer

SENDS = 1000
IN_FLIGHT = 50
RUNS = 5
WARMUP = IN_FLIGHT
BULK = 10_000
API_KEY = "SG.bench.key"
REFERENCE = "official sendgrid SDK, sequential"

# --------------------------------------------------------------------------- the stub


class _MailSendStub(asyncio.Protocol):
    """Answers each HTTP/1.1 request on a connection with 202 and a fresh X-Message-Id."""

    served = 0

    def __init__(self, budget: int, done: asyncio.Event) -> None:
        self.budget = budget
        self.done = done
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end].lower()
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name == b"content-length":
                    length = int(value)
            end = head_end + 4 + length
            if len(self.buffer) < end:
                return
            self.buffer = self.buffer[end:]
            self.respond(close=b"connection: close" in head)

    def respond(self, *, close: bool) -> None:
        assert self.transport is not None
        _MailSendStub.served += 1
        message_id = f"stub{_MailSendStub.served:018d}".encode()
        self.transport.write(
            b"HTTP/1.1 202 Accepted\r\nX-Message-Id: "
            + message_id
            + b"\r\nContent-Length: 0\r\n"
            + (b"Connection: close\r\n\r\n" if close else b"\r\n")
        )
        if close:
            self.transport.close()
        if _MailSendStub.served >= self.budget:
            self.done.set()


async def _serve(budget: int, idle_seconds: float, ready: Connection) -> None:
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    server = await loop.create_server(
        lambda: _MailSendStub(budget, done), "127.0.0.1", 0, backlog=1024
    )
    ready.send(server.sockets[0].getsockname()[1])
    last = -1
    while not done.is_set():  # stop when the budget is spent or nothing came for a while
        try:
            await asyncio.wait_for(done.wait(), idle_seconds)
        except TimeoutError:
            if _MailSendStub.served == last:
                break
            last = _MailSendStub.served
    server.close()


def _run_stub(budget: int, idle_seconds: float, ready: Connection) -> None:
    asyncio.run(_serve(budget, idle_seconds, ready))


def start_stub(budget: int, idle_seconds: float = 5.0) -> tuple[multiprocessing.Process, int]:
    """A stub serving ``budget`` requests, in its own process; returns it and its port."""
    receive, send = multiprocessing.Pipe(duplex=False)
    process = multiprocessing.Process(
        target=_run_stub, args=(budget, idle_seconds, send), daemon=True
    )
    process.start()
    port: int = receive.recv()
    return process, port


# --------------------------------------------------------------------------- the senders


def emails(count: int) -> list[Email]:
    return [
        Email(
            sender="Bench <bench@example.com>",
            to=[f"user{i}@example.com"],
            subject="Your order",
            text="Thanks for your order.",
            metadata={"order_ref": f"ORD-{i}"},
        )
        for i in range(count)
    ]


async def _in_flight(mailer: AsyncMailer, batch: list[Email]) -> None:
    """Send ``batch`` with ``IN_FLIGHT`` sends always in flight: one worker per slot, each
    taking the next e-mail when its send is done (as a queue consumer would), so that the
    harness adds no task or semaphore of its own per send."""
    pending = iter(batch)

    async def worker() -> None:
        for email in pending:
            await mailer.send(email)

    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))


def timed_async(dsn: str, batch: list[Email]) -> float:
    """Seconds for ``batch`` through one AsyncMailer, ``IN_FLIGHT`` sends at a time."""

    async def main() -> float:
        async with AsyncMailer(dsn) as mailer:
            await _in_flight(mailer, batch[:WARMUP])  # open the connections
            start = time.perf_counter()
            await _in_flight(mailer, batch)
            return time.perf_counter() - start

    return asyncio.run(main())


def timed_sync(dsn: str, batch: list[Email]) -> float:
    with Mailer(dsn) as mailer:
        for email in batch[:WARMUP]:
            mailer.send(email)
        start = time.perf_counter()
        for email in batch:
            mailer.send(email)
        return time.perf_counter() - start


def timed_official(port: int, count: int) -> float:
    from sendgrid import SendGridAPIClient
    from sendgrid.helpers.mail import (
        ClickTracking,
        CustomArg,
        From,
        Mail,
        OpenTracking,
        TrackingSettings,
    )

    def sdk_mail(i: int) -> Mail:
        """The message ``emails()`` sends, built with the SDK: the same sender and display
        name, metadata as a custom arg, and tracking explicitly off."""
        mail = Mail(
            from_email=From("bench@example.com", "Bench"),
            to_emails=f"user{i}@example.com",
            subject="Your order",
            plain_text_content="Thanks for your order.",
        )
        mail.custom_arg = CustomArg("order_ref", f"ORD-{i}")
        mail.tracking_settings = TrackingSettings(
            click_tracking=ClickTracking(False, False), open_tracking=OpenTracking(False)
        )
        return mail

    client = SendGridAPIClient(API_KEY, host=f"http://127.0.0.1:{port}")
    messages = [sdk_mail(i) for i in range(count + WARMUP)]
    for message in messages[:WARMUP]:
        client.send(message)
    start = time.perf_counter()
    for message in messages[WARMUP:]:
        client.send(message)
    return time.perf_counter() - start


def bulk_send(dsn: str) -> tuple[int, float]:
    """Requests and seconds a 10,000-recipient send takes (one request per X-Message-Id)."""
    email = Email(
        sender="bench@example.com",
        to=[f"user{i}@example.com" for i in range(BULK)],
        subject="Newsletter",
        text="News.",
    )

    async def main() -> tuple[int, float]:
        async with AsyncMailer(dsn) as mailer:
            start = time.perf_counter()
            result = await mailer.send(email)
            elapsed = time.perf_counter() - start
        return len({r.message_id for r in result.recipients}), elapsed

    return asyncio.run(main())


def main() -> None:
    per_run = SENDS + WARMUP
    budget = 4 * RUNS * per_run + 10  # four senders, and the bulk send's ten requests
    stub, port = start_stub(budget)
    base = f"sendgrid://{API_KEY}@default?base_url=http://127.0.0.1:{port}"
    async_dsn = f"{base}&max_concurrency={IN_FLIGHT}&max_retries=0"
    batch = emails(SENDS)
    measured: list[tuple[str, Callable[[], float]]] = [
        (
            "AsyncMailer, aiohttp, 50 in flight",
            lambda: timed_async(f"{async_dsn}&transport=aiohttp", batch),
        ),
        ("AsyncMailer, httpx, 50 in flight", lambda: timed_async(async_dsn, batch)),
        ("Mailer, httpx, sequential", lambda: timed_sync(f"{base}&max_retries=0", batch)),
        (REFERENCE, lambda: timed_official(port, SENDS)),
    ]
    try:
        best = dict.fromkeys((label for label, _ in measured), float("inf"))
        for _ in range(RUNS):  # interleaved, so that a busy spell on the machine hits every row
            for label, fn in measured:
                best[label] = min(best[label], fn())
        rows = [Row(label, SENDS / seconds, "sends/s") for label, seconds in best.items()]
        requests, seconds = bulk_send(f"{async_dsn}&transport=aiohttp")
    finally:
        stub.join(timeout=10)
        if stub.is_alive():
            stub.terminate()
    print_table(
        f"SendGrid Mail Send: {SENDS:,} sends of one recipient to a local stub "
        f"(best of {RUNS} interleaved runs)",
        rows,
        reference=REFERENCE,
    )
    print(
        f"\n  a {BULK:,}-recipient bulk send went out in {requests} requests "
        f"({seconds:.2f} s through AsyncMailer with aiohttp)"
    )


if __name__ == "__main__":
    main()
