"""One HTTP/1.1 exchange's messages, as the default async transport writes and reads them,
beside h11 doing the same work.

An exchange is what the transport does for each send, without the socket: write a SendGrid
Mail Send request (the headers the adapter sets, a 300-byte JSON body) and read the answer,
``202 Accepted`` with an ``X-Message-Id``, whole. h11's row drives a client connection
through one cycle (``Request``, ``Data``, ``EndOfMessage`` sent; the response's events read;
the next cycle started), as the transport did before it had ``_http1``. Each round times both
in rotating order and takes the ratio within the round; the table shows min / median / max.

Run with ``.venv-bench/bin/python bench/http1.py`` (``--rounds N``, default 15).
"""

from __future__ import annotations

import sys
from pathlib import Path

import h11

sys.path.insert(0, str(Path(__file__).parent))

from _harness import print_table, rounds, timed_rate
from unimailtrack._http1 import ResponseReader, write_request

EXCHANGES = 1000
ROUNDS = 15
HEADERS = [
    (b"Host", b"api.sendgrid.com"),
    (b"Accept", b"*/*"),
    (b"Accept-Encoding", b"gzip, deflate"),
    (b"Connection", b"keep-alive"),
    (b"User-Agent", b"unimailtrack/0.1"),
    (b"Authorization", b"Bearer SG.bench.key"),
    (b"Content-Type", b"application/json"),
    (b"Content-Length", b"300"),
]
BODY = b"{" + b'"x":' + b'"' + b"a" * 292 + b'"}'
ANSWER = (
    b"HTTP/1.1 202 Accepted\r\nServer: nginx\r\nDate: Thu, 03 Dec 2026 09:00:00 GMT\r\n"
    b"Content-Length: 0\r\nConnection: keep-alive\r\nX-Message-Id: 4xb9pKvSR2uVfB0Tq1qg3w\r\n"
    b"Access-Control-Allow-Origin: https://sendgrid.api-docs.io\r\n\r\n"
)
OURS = "unimailtrack _http1 (the default transport)"
REFERENCE = "h11 client connection"


def ours() -> ResponseReader:
    reader = ResponseReader()
    for _ in range(EXCHANGES):
        write_request("POST", b"/v3/mail/send", HEADERS, BODY)
        reader = ResponseReader()
        reader.feed(ANSWER)
    return reader


def theirs() -> h11.Connection:
    connection = h11.Connection(h11.CLIENT)
    for _ in range(EXCHANGES):
        connection.send(h11.Request(method=b"POST", target=b"/v3/mail/send", headers=HEADERS))
        connection.send(h11.Data(data=BODY))
        connection.send(h11.EndOfMessage())
        connection.receive_data(ANSWER)
        while type(connection.next_event()) is not h11.EndOfMessage:
            pass
        connection.start_next_cycle()
    return connection


def main() -> None:
    count = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else ROUNDS
    reader, connection = ours(), theirs()
    if not (reader.status == 202 and reader.keep_alive and connection.our_state is h11.IDLE):
        raise RuntimeError("the two did not read the same answer")
    rows = rounds(
        {
            REFERENCE: timed_rate(theirs, EXCHANGES),
            OURS: timed_rate(ours, EXCHANGES),
        },
        reference=REFERENCE,
        count=count,
        unit="exchanges/s",
    )
    print_table(
        f"Writing a Mail Send request and reading its answer, {count} rounds (no socket)",
        rows,
        reference=REFERENCE,
    )


if __name__ == "__main__":
    main()
