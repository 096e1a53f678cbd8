"""Telemetry: every refusal counted under its cause, spans for each step of a webhook, a send
and an ingest, the same counters at /metrics, one log line per request with no address, key
or body in it, and nothing at all when the optional packages are absent."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import webhook_kits
from live_server import running
from unimailtrack import (
    Email,
    EmailEvent,
    EventType,
    Mailer,
    SignatureCause,
    SignatureError,
    StoreError,
)
from unimailtrack import _telemetry as telemetry
from unimailtrack.adapters import MailgunAdapter, SendGridAdapter
from unimailtrack.adapters.mailgun import MailgunWebhookSigner
from unimailtrack.adapters.memory import MemoryAdapter
from unimailtrack.tracking import Tracker
from unimailtrack.web import create_app
from unimailtrack.webhooks import WebhookReceiver

TID = "0190a1b2c3d4e5f60718293a4b5c6d7e"
ROOT = Path(__file__).resolve().parents[1]

_SPANS = InMemorySpanExporter()
_READER = InMemoryMetricReader()
_installed = False


@pytest.fixture
def otel() -> Iterator[tuple[InMemorySpanExporter, InMemoryMetricReader]]:
    """The OpenTelemetry SDK with in-memory exporters (the global providers can be set once
    per process), and fresh unimailtrack instruments."""
    global _installed
    if not _installed:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_SPANS))
        trace.set_tracer_provider(provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[_READER]))
        _installed = True
    telemetry.configure(otel=True, prometheus=True)
    _SPANS.clear()
    yield _SPANS, _READER
    _SPANS.clear()


def _points(reader: InMemoryMetricReader, name: str) -> dict[tuple[tuple[str, Any], ...], Any]:
    found: dict[tuple[tuple[str, Any], ...], Any] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == f"unimailtrack.{name}":
                    for point in metric.data.data_points:
                        value = getattr(point, "value", None)
                        if value is None:
                            value = point.count
                        found[tuple(sorted(point.attributes.items()))] = value
    return found


def _delta(before: dict[Any, Any], after: dict[Any, Any]) -> dict[Any, Any]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


# --------------------------------------------------------------------------- causes


def _refusal(adapter: Any, body: bytes, headers: dict[str, str], **kw: Any) -> SignatureCause:
    with pytest.raises(SignatureError) as caught:
        adapter.verify_webhook(body, headers, **kw)
    return caught.value.cause


@pytest.mark.parametrize("provider", sorted(webhook_kits.ALL))
def test_every_adapter_names_the_cause_of_a_refusal(provider: str) -> None:
    kit = webhook_kits.ALL[provider]()
    body, headers = kit.request(TID, "ann@example.com", "delivered")
    future = datetime.now(UTC) + timedelta(days=3)
    assert _refusal(kit.adapter, body, headers, now=future) is SignatureCause.STALE
    other = webhook_kits.ALL[provider]()  # its own keys: everything it signs is a forgery here
    forged, forged_headers = other.request(TID, "ann@example.com", "delivered")
    if provider != "ses":  # SNS signs with a certificate the adapter loads per URL
        assert _refusal(kit.adapter, forged, forged_headers) is SignatureCause.BAD_SIGNATURE
    if provider == "mailgun":  # the signature travels in the body
        unsigned = json.dumps({"event-data": json.loads(body)["event-data"]}).encode()
        assert _refusal(kit.adapter, unsigned, headers) is SignatureCause.MISSING_HEADER
    else:
        assert _refusal(kit.adapter, body, {}) is SignatureCause.MISSING_HEADER


def test_no_key_configured_is_its_own_cause() -> None:
    assert _refusal(SendGridAdapter(), b"[]", {}) is SignatureCause.NO_KEY
    signed = MailgunWebhookSigner("k").json_body({"event": "delivered"})
    assert _refusal(MailgunAdapter(), signed, {}) is SignatureCause.NO_KEY


def test_an_ses_topic_not_allowed_is_an_untrusted_source() -> None:
    kit = webhook_kits.ses()
    body, headers = kit.request(TID, "ann@example.com", "delivered")
    body = body.replace(webhook_kits.TOPIC.encode(), b"arn:aws:sns:eu-west-1:999999999999:x")
    headers = {**headers, "x-amz-sns-topic-arn": "arn:aws:sns:eu-west-1:999999999999:x"}
    assert _refusal(kit.adapter, body, headers) is SignatureCause.UNTRUSTED_SOURCE


def test_a_cause_outside_the_closed_set_is_refused() -> None:
    with pytest.raises(ValueError, match="not a valid SignatureCause"):
        SignatureError(cause="because")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- receiver


def test_a_webhook_request_is_one_trace_and_counted_by_answer(
    otel: tuple[InMemorySpanExporter, InMemoryMetricReader], tmp_path: Path
) -> None:
    spans, reader = otel
    kit = webhook_kits.sendgrid()
    with Tracker.open(f"sqlite:///{tmp_path / 't.sqlite3'}") as tracker:
        receiver = WebhookReceiver({"sendgrid": kit.adapter}, tracker)
        before = _points(reader, "webhook_requests")
        before_failures = _points(reader, "webhook_signature_failures")
        body, headers = kit.request(TID, "ann@example.com", "delivered")
        assert receiver.handle("sendgrid", headers, body).status == 200
        assert receiver.handle("sendgrid", headers, body).status == 200  # the retry
        assert receiver.handle("sendgrid", {}, body).status == 401
        assert receiver.handle("sendgrid", headers, b"[{").status == 401  # re-cut body
    assert _delta(before, _points(reader, "webhook_requests")) == {
        (("provider", "sendgrid"), ("status", "200")): 2,
        (("provider", "sendgrid"), ("status", "401")): 2,
    }
    first = [s for s in spans.get_finished_spans() if s.context.trace_id == _root_ids(spans)[0]]
    names = sorted(s.name for s in first)
    assert names == sorted(
        [
            "unimailtrack.webhook",
            "unimailtrack.webhook.unwrap",
            "unimailtrack.webhook.verify",
            "unimailtrack.webhook.parse",
            "unimailtrack.webhook.store",
            "unimailtrack.ingest",
        ]
    )
    root = next(s for s in first if s.name == "unimailtrack.webhook")
    assert root.attributes is not None and root.attributes["provider"] == "sendgrid"
    assert all(s.parent is not None for s in first if s is not root)
    failures = _delta(before_failures, _points(reader, "webhook_signature_failures"))
    assert failures == {
        (("cause", "missing_header"), ("provider", "sendgrid")): 1,
        (("cause", "bad_signature"), ("provider", "sendgrid")): 1,
    }
    assert _points(reader, "events_ingested")[(("provider", "sendgrid"),)] >= 1
    assert _points(reader, "event_duplicates")[(("provider", "sendgrid"),)] >= 1
    assert _points(reader, "ingest_duration")[()] >= 2


def test_a_failed_ingest_is_an_errored_span_and_no_duration(
    otel: tuple[InMemorySpanExporter, InMemoryMetricReader], tmp_path: Path
) -> None:
    spans, reader = otel
    event = EmailEvent(
        provider="sendgrid",
        type=EventType.DELIVERED,
        provider_event="delivered",
        recipient="ann@example.com",
        event_id="e1",
        timestamp=datetime(2024, 1, 15, tzinfo=UTC),
        tracking_id=TID,
    )
    with Tracker.open(f"sqlite:///{tmp_path / 't.sqlite3'}") as tracker:
        tracker.ingest([event])
        timed = _points(reader, "ingest_duration")[()]
    with pytest.raises(StoreError):
        tracker.ingest([event])  # closed: the store refuses
    ingests = [s for s in spans.get_finished_spans() if s.name == "unimailtrack.ingest"]
    assert [s.status.status_code for s in ingests] == [StatusCode.UNSET, StatusCode.ERROR]
    assert [e.name for e in ingests[1].events] == ["exception"]
    assert _points(reader, "ingest_duration")[()] == timed  # only the ingest that ended well


def _root_ids(spans: InMemorySpanExporter) -> list[int]:
    return [s.context.trace_id for s in spans.get_finished_spans() if s.parent is None]


def test_a_mailgun_replay_refused_by_the_receiver_counts_as_replay(
    otel: tuple[InMemorySpanExporter, InMemoryMetricReader], tmp_path: Path
) -> None:
    _, reader = otel
    kit = webhook_kits.mailgun()
    with Tracker.open(f"sqlite:///{tmp_path / 't.sqlite3'}") as tracker:
        receiver = WebhookReceiver({"mailgun": kit.adapter}, tracker)
        body, headers = kit.request(TID, "ann@example.com", "delivered")
        assert receiver.handle("mailgun", headers, body).status == 200
        recut = json.loads(body)
        recut["event-data"]["recipient"] = "eve@example.com"  # same token, other content
        before = _points(reader, "webhook_signature_failures")
        again = receiver.handle("mailgun", headers, json.dumps(recut).encode())
    assert again.status == 401
    assert _delta(before, _points(reader, "webhook_signature_failures")) == {
        (("cause", "replay"), ("provider", "mailgun")): 1
    }


def test_sends_are_spans_and_counted_by_outcome(
    otel: tuple[InMemorySpanExporter, InMemoryMetricReader],
) -> None:
    spans, reader = otel
    before = _points(reader, "sends")
    with Mailer(MemoryAdapter()) as mailer:
        mailer.send(Email(sender="a@example.com", to=["b@example.com"], subject="s", text="t"))
    assert _delta(before, _points(reader, "sends")) == {
        (("outcome", "accepted"), ("provider", "memory")): 1
    }
    (span,) = [s for s in spans.get_finished_spans() if s.name == "unimailtrack.send"]
    assert span.attributes is not None and span.attributes["provider"] == "memory"


def test_metrics_endpoint_shows_the_same_counters(
    otel: tuple[InMemorySpanExporter, InMemoryMetricReader], tmp_path: Path
) -> None:
    kit = webhook_kits.memory()
    with Tracker.open(f"sqlite:///{tmp_path / 't.sqlite3'}") as tracker:
        receiver = WebhookReceiver({"memory": kit.adapter}, tracker)
        with running(create_app(receiver)) as url, httpx.Client(base_url=url) as client:
            body, headers = kit.request(TID, "ann@example.com", "delivered")
            assert client.post("/webhooks/memory", content=body, headers=headers).status_code == 200
            assert client.post("/webhooks/memory", content=body).status_code == 401
            answer = client.get("/metrics")
            ready = client.get("/readyz")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    text = answer.text
    assert 'unimailtrack_webhook_requests_total{provider="memory",status="200"} 1.0' in text
    assert (
        'unimailtrack_webhook_signature_failures_total{cause="missing_header",provider="memory"}'
        " 1.0" in text
    )
    assert 'unimailtrack_events_ingested_total{provider="memory"} 1.0' in text
    assert "unimailtrack_orphan_events 0.0" in text
    assert 'unimailtrack_provider_healthy{provider="memory"} 1.0' in text
    assert ready.status_code == 200
    assert ready.json()["providers"]["memory"]["healthy"] is True
    assert ready.json()["store"] == "reachable"


def test_metrics_without_prometheus_client_name_the_extra(tmp_path: Path) -> None:
    telemetry.configure(prometheus=False)
    try:
        receiver = WebhookReceiver({"memory": MemoryAdapter()})
        with running(create_app(receiver)) as url:
            answer = httpx.get(f"{url}/metrics")
    finally:
        telemetry.configure(prometheus=True)
    assert answer.status_code == 404
    assert "unimailtrack[prometheus]" in answer.text


def test_readyz_answers_503_while_the_store_is_down(tmp_path: Path) -> None:
    tracker = Tracker.open(f"sqlite:///{tmp_path / 't.sqlite3'}")
    receiver = WebhookReceiver({"memory": MemoryAdapter()}, tracker)
    tracker.close()
    (tmp_path / "t.sqlite3").unlink()
    (tmp_path / "t.sqlite3").mkdir()  # nothing can open it now
    import asyncio

    status, details = asyncio.run(receiver.areadiness())
    assert (status, details["store"]) == (503, "unreachable")


# --------------------------------------------------------------------------- logs


def test_one_log_line_per_request_without_addresses_keys_or_bodies(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    kit = webhook_kits.mailgun()
    with Tracker.open(f"sqlite:///{tmp_path / 't.sqlite3'}") as tracker:
        receiver = WebhookReceiver({"mailgun": kit.adapter}, tracker)
        body, headers = kit.request(TID, "secret.person@example.com", "delivered")
        with caplog.at_level(logging.INFO, logger="unimailtrack.requests"):
            receiver.handle("mailgun", headers, body)
            with Mailer(MemoryAdapter()) as mailer:
                mailer.send(
                    Email(sender="a@example.com", to=["hidden@example.org"], subject="s", text="t")
                )
    lines = [r for r in caplog.records if r.name == "unimailtrack.requests"]
    assert [r.getMessage().split()[0] for r in lines] == ["webhook", "send"]
    webhook_line, send_line = (r.getMessage() for r in lines)
    assert "provider=mailgun status=200 new=1 duplicates=0" in webhook_line
    assert "to=h…@example.org" in send_line
    everything = caplog.text
    for secret in ("secret.person@", "hidden@", body.decode()[:40], TID):
        assert secret not in everything
    assert lines[0].unimailtrack["status"] == 200  # type: ignore[attr-defined]


def test_redact_keeps_everything_when_the_operator_asks(monkeypatch: pytest.MonkeyPatch) -> None:
    assert telemetry.redact("ann@example.com") == "a…@example.com"
    monkeypatch.setattr(telemetry._state, "sensitive", True)
    assert telemetry.redact("ann@example.com") == "ann@example.com"


# --------------------------------------------------------------------------- absent


def test_without_the_packages_nothing_is_imported_and_everything_works(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys

        class Absent:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("opentelemetry", "prometheus_client"):
                    raise ImportError(name)
                return None

        sys.meta_path.insert(0, Absent())
        from unimailtrack import Email, Mailer
        from unimailtrack import _telemetry
        from unimailtrack.adapters import MemoryAdapter
        from unimailtrack.webhooks import WebhookReceiver

        adapter = MemoryAdapter()
        with Mailer(adapter) as mailer:
            mailer.send(Email(sender="a@example.com", to=["b@example.com"], text="t"))
        body, headers = adapter.webhook([{"event": "delivered", "id": "1",
            "recipient": "b@example.com", "timestamp": 1700000000}])
        assert WebhookReceiver({"memory": adapter}).handle("memory", headers, body).ok
        assert _telemetry.enabled() == {"otel": False, "prometheus": False}
        assert _telemetry.prometheus_text() is None
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert done.stdout.strip() == "ok", done.stderr


def test_importing_the_package_loads_neither() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, unimailtrack, unimailtrack.webhooks; "
            "print(any(m.split('.')[0] in ('opentelemetry', 'prometheus_client') "
            "for m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "False"
