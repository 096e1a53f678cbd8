"""Sending speed through SendGrid's API shape, against the official ``sendgrid`` package.

A stub on 127.0.0.1, in a process of its own, answers every request as SendGrid's Mail Send
does (``202 Accepted`` with an ``X-Message-Id``) over keep-alive connections. 1,000 individual
sends (one recipient each) go through the official SDK one after the other (the reference),
through ``Mailer`` one after the other, through ``AsyncMailer`` on the default configuration
(the httpx transport, no optional extra) at 1, 2, 10 and 50 in flight, and through
``AsyncMailer`` with the aiohttp transport at 50 in flight, and, as the floor of that row, a
bare ``aiohttp.ClientSession`` posting the same bodies (encoded beforehand) at 50 in flight.
Then a 10,000-recipient bulk send shows how many requests it takes. The stub serves requests
until nothing comes for a few seconds, so it also stops when the benchmark dies.

Every row sends the same message to the same stub: the SDK's ``Mail`` carries the same sender
and display name, the metadata as a custom arg and tracking explicitly off, as the library
sends them, and both encode the body with the standard json module unless orjson is installed
(the SDK always uses the standard json module; the row says which the library used). Every
run warms up with 50 sends first. Each round runs every row once, in an order that rotates
from round to round, and takes each row's ratio to the SDK's rate of that same round; the
table shows min / median / max of those ratios. The concurrent rows keep N sends in flight
with N workers, each taking the next e-mail when its send is done, so that the harness spends
no task and no semaphore of its own on each send.

Run with ``.venv-bench/bin/python bench/send.py`` (``--rounds N``, default 7).
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

from _harness import Row, print_table, record_targets, rounds, target_from_row
from unimailtrack import Email
from unimailtrack.mailer import AsyncMailer, Mailer

SENDS = 1000
IN_FLIGHT = 50
ROUNDS = 7
WARMUP = IN_FLIGHT
BULK = 10_000
API_KEY = "SG.bench.key"
REFERENCE = "official sendgrid SDK, sequential"
BARE_AIOHTTP = f"floor: bare aiohttp, {IN_FLIGHT} in flight, bodies encoded beforehand"

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


def start_stub(
    budget: int = 1 << 62, idle_seconds: float = 5.0
) -> tuple[multiprocessing.Process, int]:
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


async def _in_flight(mailer: AsyncMailer, batch: list[Email], in_flight: int) -> None:
    """Send ``batch`` with ``in_flight`` sends always in flight: one worker per slot, each
    taking the next e-mail when its send is done (as a queue consumer would), so that the
    harness adds no task or semaphore of its own per send."""
    pending = iter(batch)

    async def worker() -> None:
        for email in pending:
            await mailer.send(email)

    await asyncio.gather(*(worker() for _ in range(in_flight)))


def timed_async(dsn: str, batch: list[Email], in_flight: int) -> float:
    """Seconds for ``batch`` through one AsyncMailer, ``in_flight`` sends at a time."""

    async def main() -> float:
        async with AsyncMailer(dsn) as mailer:
            await _in_flight(mailer, batch[:WARMUP], in_flight)  # open the connections
            start = time.perf_counter()
            await _in_flight(mailer, batch, in_flight)
            return time.perf_counter() - start

    return asyncio.run(main())


def timed_bare_aiohttp(port: int, batch: list[Email], in_flight: int) -> float:
    """Seconds for the same requests through a bare ``aiohttp.ClientSession``: each body
    built by the library's own SendGrid mapping and encoded beforehand (not timed), posted with
    the same headers, the answer's status and ``X-Message-Id`` read; ``in_flight`` workers on
    one connection pool of ``in_flight`` connections. The floor of the aiohttp rows: what
    aiohttp's own request path costs, with no mapping, no result and no error handling."""
    import json

    import aiohttp

    from unimailtrack.adapters.sendgrid.send import mail_send_message

    url = f"http://127.0.0.1:{port}/v3/mail/send"
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    bodies = [json.dumps(mail_send_message(email)).encode() for email in batch]

    async def post_all(session: aiohttp.ClientSession, items: list[bytes]) -> None:
        pending = iter(items)

        async def worker() -> None:
            for body in pending:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status != 202 or not response.headers.get("X-Message-Id"):
                        raise RuntimeError(f"the stub answered {response.status}")

        await asyncio.gather(*(worker() for _ in range(in_flight)))

    async def main() -> float:
        connector = aiohttp.TCPConnector(limit=in_flight)
        async with aiohttp.ClientSession(connector=connector) as session:
            await post_all(session, bodies[:WARMUP])
            start = time.perf_counter()
            await post_all(session, bodies)
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


def _json_library() -> str:
    from unimailtrack.adapters.sendgrid import send

    return "orjson" if send._dumps is not send._stdlib_dumps else "stdlib json"


def main() -> None:
    count = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else ROUNDS
    stub, port = start_stub()
    base = f"sendgrid://{API_KEY}@default?base_url=http://127.0.0.1:{port}&max_retries=0"
    async_dsn = f"{base}&max_concurrency={IN_FLIGHT}"
    batch = emails(SENDS)
    encoder = _json_library()
    default = f"AsyncMailer, default (asyncio), {IN_FLIGHT} in flight, {encoder}"
    aiohttp_row = f"AsyncMailer, aiohttp, {IN_FLIGHT} in flight, {encoder}"
    sequential = f"Mailer, httpx, sequential, {encoder}"
    contenders: dict[str, Callable[[], float]] = {
        REFERENCE: lambda: SENDS / timed_official(port, SENDS),
        sequential: lambda: SENDS / timed_sync(base, batch),
    }
    for flight in (1, 2, 10):
        label = f"AsyncMailer, default (asyncio), {flight} in flight, {encoder}"
        contenders[label] = lambda n=flight: SENDS / timed_async(async_dsn, batch, n)  # type: ignore[misc]
    contenders[default] = lambda: SENDS / timed_async(async_dsn, batch, IN_FLIGHT)
    contenders[aiohttp_row] = lambda: (
        SENDS / timed_async(f"{async_dsn}&transport=aiohttp", batch, IN_FLIGHT)
    )
    contenders[BARE_AIOHTTP] = lambda: SENDS / timed_bare_aiohttp(port, batch, IN_FLIGHT)
    try:
        rows = rounds(contenders, reference=REFERENCE, count=count, unit="sends/s")
        requests, seconds = bulk_send(async_dsn)
    finally:
        stub.terminate()
        stub.join(timeout=10)
    print_table(
        f"SendGrid Mail Send: {SENDS:,} sends of one recipient to a local stub "
        f"({count} interleaved rounds; the SDK uses stdlib json)",
        rows,
        reference=REFERENCE,
    )
    print(
        f"\n  a {BULK:,}-recipient bulk send went out in {requests} requests "
        f"({seconds:.2f} s through AsyncMailer on the default transport)"
    )
    by_label = {row.label: row for row in rows}
    mailer = by_label[sequential]
    targets = [
        target_from_row(
            f"async send, default transport, {IN_FLIGHT} in flight / official SDK sequential",
            by_label[default],
            5.0,
        ),
        target_from_row(
            f"async send, aiohttp, {IN_FLIGHT} in flight / official SDK sequential",
            by_label[aiohttp_row],
            8.0,
            note=by_label[BARE_AIOHTTP].summary(),
        ),
    ]
    for row in rows:
        if row.label.startswith("AsyncMailer, default"):
            flight = row.label.split(", ")[2]
            ratios = tuple(a / b for a, b in zip(row.ratios, mailer.ratios, strict=True))
            targets.append(
                target_from_row(
                    f"async send, default transport, {flight} / sequential Mailer",
                    Row(row.label, row.rate, row.unit, ratios),
                    1.0,
                )
            )
    record_targets("send", targets)


if __name__ == "__main__":
    main()
