"""Webhook receiving end to end: signed 1,000-event SendGrid batches posted to ``serve``.

``unimailtrack serve`` runs in its own process on 127.0.0.1 with a fresh SQLite store and the
SendGrid adapter holding a freshly generated verification key. Thirty bodies of 1,000 mixed
events each (the generator of ``parse_sendgrid.py``, every event id unique) are signed with
ECDSA as SendGrid signs them and posted over loopback, one after another on one keep-alive
connection, then from four connections at once against a fresh server and store (every event
is new, so every batch is verified, parsed, stored in one transaction and answered 200).

The reference is the bare parse of the same bodies in this process, no verification and no
store: what a request costs beyond reading its events. Also shown, in process: verify +
parse, and ``WebhookReceiver.handle`` over an SQLite tracker (verify, parse, store), which
tells the store's share from the HTTP server's.

Run with ``.venv/bin/python bench/webhook.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))

from _harness import Row, print_table, rate
from parse_sendgrid import batch
from unimailtrack.adapters.sendgrid import SendGridAdapter, SendGridWebhookSigner
from unimailtrack.tracking import Tracker
from unimailtrack.webhooks import WebhookReceiver

BODIES = 30
EVENTS_PER_BODY = 1000
CLIENTS = 4
REFERENCE = "parse only (in process)"

Request = tuple[bytes, dict[str, str]]


@contextmanager
def serving(public_key: str, store: Path) -> Iterator[str]:
    """``unimailtrack serve`` in a child process; yields its base URL."""
    env = {
        **os.environ,
        "UNIMAILTRACK_DSN": "sendgrid://default",
        "UNIMAILTRACK_SENDGRID_WEBHOOK_KEY": public_key,
        "UNIMAILTRACK_STORE": f"sqlite:///{store}",
    }
    command = [sys.executable, "-m", "unimailtrack.cli", "serve", "--port", "0"]
    process = subprocess.Popen(
        [*command, "--log-level", "warning"], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("unimailtrack: serving "):
            raise RuntimeError(f"serve did not start: {line!r}")
        yield line.split()[-1]
    finally:
        process.terminate()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


def signed(signer: SendGridWebhookSigner, seeds: range) -> list[Request]:
    requests = []
    for seed in seeds:
        body = batch(EVENTS_PER_BODY, seed=seed)
        requests.append((body, {"Content-Type": "application/json", **signer.sign(body)}))
    return requests


def post_all(url: str, requests: Sequence[Request], clients: int) -> float:
    """Seconds to post every request, spread over ``clients`` keep-alive connections."""
    shares = [requests[i::clients] for i in range(clients)]

    def post(share: Sequence[Request]) -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            for body, headers in share:
                answer = client.post("/webhooks/sendgrid", content=body, headers=headers)
                if answer.status_code != 200 or answer.json()["new"] != EVENTS_PER_BODY:
                    raise RuntimeError(f"unexpected answer {answer.status_code}: {answer.text}")

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(post, shares))
    return time.perf_counter() - started


def handle_all(adapter: SendGridAdapter, store: Path, requests: Sequence[Request]) -> float:
    """Seconds for ``WebhookReceiver.handle`` to verify, parse and store every request but
    the first (a warm-up: the schema, the first pages of the indexes)."""
    (warm_body, warm_headers), *timed = requests
    with Tracker.open(f"sqlite:///{store}") as tracker:
        receiver = WebhookReceiver({"sendgrid": adapter}, tracker)
        receiver.handle("sendgrid", warm_headers, warm_body)
        started = time.perf_counter()
        for body, headers in timed:
            if receiver.handle("sendgrid", headers, body).status != 200:
                raise RuntimeError("a batch was not stored")
        return time.perf_counter() - started


def main() -> None:
    signer = SendGridWebhookSigner()
    adapter = SendGridAdapter(webhook_keys=signer.public_key)
    sample_body, sample_headers = signed(signer, range(1))[0]
    rows = [
        Row(REFERENCE, rate(lambda: adapter.parse_webhook(sample_body), EVENTS_PER_BODY)),
        Row(
            "verify + parse (in process)",
            rate(lambda: adapter.unwrap(sample_body, sample_headers), EVENTS_PER_BODY),
        ),
    ]
    with tempfile.TemporaryDirectory() as scratch:
        requests = signed(signer, range(999, 1000 + BODIES))
        seconds = handle_all(adapter, Path(scratch) / "bench.sqlite3", requests)
    label = "receiver.handle (in process, SQLite)"
    rows.append(Row(label, BODIES * EVENTS_PER_BODY / seconds))
    requests_per_second = {label: BODIES / seconds}
    for clients in (1, CLIENTS):
        with (
            tempfile.TemporaryDirectory() as scratch,
            serving(signer.public_key, Path(scratch) / "bench.sqlite3") as url,
        ):
            post_all(url, signed(signer, range(1000, 1002)), 1)  # warm up: imports, schema
            seconds = post_all(url, signed(signer, range(2000, 2000 + BODIES)), clients)
        label = f"serve over loopback, {clients} client{'s' if clients > 1 else ''}"
        requests_per_second[label] = BODIES / seconds
        rows.append(Row(label, BODIES * EVENTS_PER_BODY / seconds))
    print_table(
        f"Signed SendGrid webhooks, {EVENTS_PER_BODY:,} events a request, SQLite store",
        rows,
        reference=REFERENCE,
    )
    for label, value in requests_per_second.items():
        print(f"  {label}: {value:,.1f} requests/s")


if __name__ == "__main__":
    main()
