"""What refusing a hostile Mailgun body costs, beside verifying a genuine one.

A multipart body without a boundary (or with a hostile one) used to go through the standard
library's MIME parser before the signature was checked, whose header parsing is super-linear:
32 KB cost seconds of CPU. The adapter now refuses it from its first line, with a scanner
bounded in boundary length, parts and part header size.

Each row is the time ``MailgunAdapter.verify_webhook`` takes on one request, as a ratio to the
reference measured in the same round: verifying a genuine signed JSON request (the default
configuration, replay store in memory). Rounds interleave every row and repeat; the table
shows each ratio's min / median / max over the rounds (lower is cheaper; the target for the
refusals is at most a few times the reference).

Run with ``.venv/bin/python bench/mailgun_refusal.py``.
"""

from __future__ import annotations

import logging
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _harness import seconds_per_call
from unimailtrack.adapters.mailgun import MailgunAdapter, MailgunWebhookSigner
from unimailtrack.errors import SignatureError

ROUNDS = 5
KEY = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
REFERENCE = "verify a signed JSON request"

EVENT = {
    "event": "delivered",
    "id": "G9Bn5sl1TC6nu79C8C0bwg",
    "timestamp": 1705311003.626182,
    "recipient": "alice@example.com",
    "message": {"headers": {"message-id": "20240115093001.abc@mg.example.com"}},
    "delivery-status": {"code": 250, "message": "OK", "attempt-no": 1},
    "user-variables": {"unimailtrack_id": "0190a1b2c3d4e5f60718293a4b5c6d7e"},
}


def multipart(fields: dict[str, str], boundary: str = "b0und4ry") -> bytes:
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields.items()
    ]
    return ("".join(parts) + f"--{boundary}--\r\n").encode()


def cases(signer: MailgunWebhookSigner) -> dict[str, tuple[bytes, dict[str, str], bool]]:
    """``label -> (body, headers, accepted?)``."""
    block = signer.signature_block()
    legacy = {"event": "delivered", "recipient": "alice@example.com", **block}
    boundaryless = b"--" + b"a" * 32 * 1024 + b"\r\n"
    return {
        REFERENCE: (signer.json_body(EVENT), {"Content-Type": "application/json"}, True),
        "verify a signed legacy multipart request": (
            multipart(legacy),
            {"Content-Type": "multipart/form-data; boundary=b0und4ry"},
            True,
        ),
        "refuse 32 KB multipart, no boundary": (
            boundaryless,
            {"Content-Type": "multipart/form-data"},
            False,
        ),
        "refuse 32 KB multipart, no content type": (boundaryless, {}, False),
        "refuse 32 KB multipart, 32 KB boundary": (
            boundaryless,
            {"Content-Type": 'multipart/form-data; boundary="' + "a" * 32 * 1024 + '"'},
            False,
        ),
        "refuse 1,001 tiny parts": (
            multipart({**{f"v{i}": "x" for i in range(1001)}, **block}),
            {"Content-Type": "multipart/form-data; boundary=b0und4ry"},
            False,
        ),
    }


def verifier(
    adapter: MailgunAdapter, body: bytes, headers: dict[str, str], accepted: bool
) -> Callable[[], None]:
    def verify() -> None:
        try:
            adapter.verify_webhook(body, headers)
        except SignatureError:
            if accepted:
                raise
        else:
            if not accepted:
                raise AssertionError("a hostile body was accepted")

    return verify


def main() -> None:
    logging.getLogger("unimailtrack").setLevel(logging.ERROR)  # each refusal logs a warning
    signer = MailgunWebhookSigner(KEY)
    adapter = MailgunAdapter(webhook_keys=KEY)
    calls = {
        label: verifier(adapter, body, headers, accepted)
        for label, (body, headers, accepted) in cases(signer).items()
    }
    ratios: dict[str, list[float]] = {label: [] for label in calls}
    reference_seconds: list[float] = []
    started = time.perf_counter()
    for _ in range(ROUNDS):
        timings = {
            label: seconds_per_call(call, repeat=3, min_time=0.05) for label, call in calls.items()
        }
        reference_seconds.append(timings[REFERENCE])
        for label, seconds in timings.items():
            ratios[label].append(seconds / timings[REFERENCE])
    width = max(len(label) for label in calls)
    reference_us = statistics.median(reference_seconds) * 1e6
    print(
        f"\nMailgun verify_webhook: time per request as a ratio to {REFERENCE!r} "
        f"(median {reference_us:.1f} us), {ROUNDS} interleaved rounds"
    )
    print(f"  {'':{width}}  {'min':>7}  {'median':>7}  {'max':>7}")
    for label, values in ratios.items():
        print(
            f"  {label:{width}}  {min(values):>6.2f}x  {statistics.median(values):>6.2f}x  "
            f"{max(values):>6.2f}x"
        )
    print(f"  ({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
