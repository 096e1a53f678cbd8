"""The cost of instrumentation: webhook handling and sends with telemetry on, beside off.

Webhook rows: ``WebhookReceiver.handle`` of signed 1,000-event SendGrid batches (the generator
of ``parse_sendgrid.py``, every event id unique) over an SQLite tracker: verify, parse, store in
one transaction, answer. Send rows: 200 one-recipient sends through ``Mailer`` and the SendGrid
adapter over ``httpx.MockTransport`` answering 202 in process, so that the figure is the
library's own CPU with no network to hide the instrumentation behind (the strictest case).

Rows, each one configuration of ``unimailtrack._telemetry`` in this one process:

- ``off`` (the reference): neither package, exactly as when the extras are not installed;
- ``otel SDK, no exporter``: an SDK tracer and meter provider with nothing attached;
- ``otel SDK, in-memory exporter``: every span exported to memory, metrics to a reader;
- ``prometheus``: the prometheus-client counters alone;
- ``default with [all]``: OpenTelemetry's API without an SDK (its no-op providers) and
  prometheus-client, what an application gets from ``pip install 'unimailtrack[all]'``.

Each round times every row in turn (best of three calls each, in CPU seconds of this process:
the machine may be shared, and instrumentation costs CPU, not waiting), and a ratio is taken
against the reference within the round; rounds repeat and the table shows min/median/max of each
row's ratio. Run with ``.venv/bin/python bench/otel.py`` (about a minute).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

sys.path.insert(0, str(Path(__file__).parent))

from parse_sendgrid import batch
from unimailtrack import Email
from unimailtrack import _telemetry as telemetry
from unimailtrack._http import HttpxTransport
from unimailtrack.adapters.sendgrid import SendGridAdapter, SendGridWebhookSigner
from unimailtrack.mailer import Mailer
from unimailtrack.tracking import Tracker
from unimailtrack.webhooks import WebhookReceiver

EVENTS = 1000
SENDS = 200
ROUNDS = 9
CALLS = 3
REFERENCE = "off"

_exported = InMemorySpanExporter()
_exporting = TracerProvider()
_exporting.add_span_processor(SimpleSpanProcessor(_exported))

CONFIGURATIONS: dict[str, Callable[[], None]] = {
    "off": lambda: telemetry.configure(otel=False, prometheus=False),
    "otel SDK, no exporter": lambda: telemetry.configure(
        otel=True,
        prometheus=False,
        tracer_provider=TracerProvider(),
        meter_provider=MeterProvider(),
    ),
    "otel SDK, in-memory exporter": lambda: telemetry.configure(
        otel=True,
        prometheus=False,
        tracer_provider=_exporting,
        meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]),
    ),
    "prometheus": lambda: telemetry.configure(otel=False, prometheus=True),
    "default with [all]": lambda: telemetry.configure(otel=True, prometheus=True),
}


class Webhooks:
    """Fresh signed batches for every call, one SQLite store per configuration."""

    def __init__(self, directory: Path) -> None:
        signer = SendGridWebhookSigner()
        self.adapter = SendGridAdapter(webhook_keys=signer.public_key)
        self.signer = signer
        self.directory = directory
        self.seed = 0
        self.trackers: dict[str, Tracker] = {}

    def request(self) -> tuple[bytes, dict[str, str]]:
        self.seed += 1
        body = batch(EVENTS, seed=self.seed)
        return body, {"Content-Type": "application/json", **self.signer.sign(body)}

    def receiver(self, label: str) -> WebhookReceiver:
        if label not in self.trackers:
            path = self.directory / f"{len(self.trackers)}.sqlite3"
            self.trackers[label] = Tracker.open(f"sqlite:///{path}")
        return WebhookReceiver({"sendgrid": self.adapter}, self.trackers[label])

    def time(self, label: str) -> float:
        receiver = self.receiver(label)
        best = float("inf")
        for _ in range(CALLS):
            body, headers = self.request()  # outside the timing
            started = time.process_time()
            answer = receiver.handle("sendgrid", headers, body)
            best = min(best, time.process_time() - started)
            assert answer.status == 200, answer
            assert answer.json()["new"] == EVENTS, answer
        return best

    def close(self) -> None:
        for tracker in self.trackers.values():
            tracker.close()


class Sends:
    def __init__(self) -> None:
        def answer(request: httpx.Request) -> httpx.Response:
            return httpx.Response(202, headers={"X-Message-Id": "bench-message-id"})

        client = httpx.Client(transport=httpx.MockTransport(answer))
        adapter = SendGridAdapter("SG.bench", transport=HttpxTransport(client))
        self.mailer = Mailer(adapter)
        self.email = Email(
            sender="Events <events@example.com>", to=["ann@example.com"], subject="s", text="t"
        )

    def time(self, label: str) -> float:
        best = float("inf")
        for _ in range(CALLS):
            started = time.process_time()
            for _ in range(SENDS):
                self.mailer.send(self.email)
            best = min(best, time.process_time() - started)
        return best


def measure(name: str, timer: Callable[[str], float], items: int, unit: str) -> None:
    ratios: dict[str, list[float]] = {label: [] for label in CONFIGURATIONS}
    seconds: dict[str, list[float]] = {label: [] for label in CONFIGURATIONS}
    for label, turn_on in CONFIGURATIONS.items():  # warm-up: every row once
        turn_on()
        timer(label)
    for round_number in range(ROUNDS):
        order = list(CONFIGURATIONS)
        if round_number % 2:
            order.reverse()  # interleave: no row always runs first or last
        taken: dict[str, float] = {}
        for label in order:
            CONFIGURATIONS[label]()
            taken[label] = timer(label)
        for label in CONFIGURATIONS:
            ratios[label].append(taken[label] / taken[REFERENCE])
            seconds[label].append(taken[label])
    print(f"\n{name}: cost relative to {REFERENCE!r} within each round ({ROUNDS} rounds)")
    width = max(len(label) for label in CONFIGURATIONS)
    print(f"  {'':{width}}  {'median rate':>16}  {'min':>7} {'median':>7} {'max':>7}")
    for label in CONFIGURATIONS:
        rate = items / statistics.median(seconds[label])
        low, mid, high = min(ratios[label]), statistics.median(ratios[label]), max(ratios[label])
        print(
            f"  {label:{width}}  {rate:>10,.0f} {unit:<5}  "
            f"{low - 1:>+7.1%} {mid - 1:>+7.1%} {high - 1:>+7.1%}"
        )


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        webhooks = Webhooks(Path(directory))
        try:
            measure(f"webhook handling, {EVENTS:,}-event batches", webhooks.time, EVENTS, "ev/s")
        finally:
            webhooks.close()
    sends = Sends()
    measure(f"sends, {SENDS} one-recipient sends", sends.time, SENDS, "/s")
    telemetry.configure(otel=False, prometheus=False)
    print(f"\n{len(_exported.get_finished_spans()):,} spans exported to memory")


if __name__ == "__main__":
    main()
