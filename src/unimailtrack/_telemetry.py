"""Metrics, traces and one log line per request, for every part of the path.

Nothing here is imported by ``import unimailtrack``; the first webhook, send or ingest loads
this module, which then looks once for the optional packages:

- ``opentelemetry-api`` (the ``otel`` extra): spans and metrics through the global tracer
  and meter providers. Only the API is used; the application installs the SDK and its
  exporters. Without an SDK the API's own no-op providers make each call cost next to nothing.
- ``prometheus-client`` (the ``prometheus`` extra): the same counters in a registry of their
  own, rendered by :func:`prometheus_text` (``GET /metrics`` of the web app).

When neither is installed every function below returns at once. ``configure`` turns either
off (or on again) at run time; ``UNIMAILTRACK_TELEMETRY=off`` turns both off from the start.

The instruments (Prometheus names; OpenTelemetry uses the dotted form, ``unimailtrack.``
then the same words, and seconds as the unit):

==========================================  ================================================
``webhook_requests_total``                  provider, status: every answer a webhook got
``webhook_signature_failures_total``        provider, cause: a :class:`SignatureCause` value
``events_ingested_total``                   provider: events stored new
``event_duplicates_total``                  provider: events stored before (retries)
``dead_letters_total``                      provider: bodies kept because they were unreadable
``ingest_duration_seconds``                 histogram: one ``Tracker.ingest`` transaction
``sends_total``                             provider, outcome: each provider request's end
``queue_lag_seconds``                       queue: age of the oldest message a worker took
``orphan_events``                           gauge: events no send has claimed after a while
``provider_healthy``                        provider: 1 healthy, 0 silent while sending
``provider_last_event_age_seconds``         provider: since the last event arrived
==========================================  ================================================

Logs never hold a full address, key or body: :func:`redact` keeps the first letter and the
domain of an address unless ``UNIMAILTRACK_LOG_SENSITIVE=1`` asks for everything.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

__all__ = [
    "WebhookWatch",
    "configure",
    "count",
    "enabled",
    "gauge",
    "observe",
    "prometheus_text",
    "redact",
    "request_log",
    "span",
]

request_log = logging.getLogger("unimailtrack.requests")
"""One line per webhook request and per provider request, as ``key=value`` pairs (and the
same fields under ``record.unimailtrack`` for structured formatters), all at INFO: turn the
logger on to see them; refusals and failures are also logged on their own loggers."""

COUNTERS: Mapping[str, tuple[str, tuple[str, ...]]] = {
    "webhook_requests": ("Webhook requests by provider and answer", ("provider", "status")),
    "webhook_signature_failures": (
        "Webhook requests refused by the signature check, by cause",
        ("provider", "cause"),
    ),
    "events_ingested": ("Events stored new", ("provider",)),
    "event_duplicates": ("Events already stored (a provider's retry)", ("provider",)),
    "dead_letters": ("Webhook bodies kept as dead letters", ("provider",)),
    "sends": ("Provider send requests by outcome", ("provider", "outcome")),
}
HISTOGRAMS: Mapping[str, tuple[str, tuple[str, ...]]] = {
    "ingest_duration": ("Seconds one ingest transaction took", ()),
    "queue_lag": ("Seconds between a webhook's arrival and its ingestion", ("queue",)),
}
GAUGES: Mapping[str, tuple[str, tuple[str, ...]]] = {
    "orphan_events": ("Events still unmatched to a send after the grace period", ()),
    "provider_healthy": ("1 while a provider's webhooks arrive as expected, else 0", ("provider",)),
    "provider_last_event_age": ("Seconds since a provider's last event", ("provider",)),
}


class _Otel:
    """The OpenTelemetry API's tracer and instruments."""

    def __init__(self, tracer_provider: Any = None, meter_provider: Any = None) -> None:
        from opentelemetry import metrics, trace

        from unimailtrack import __version__

        self.tracer = trace.get_tracer("unimailtrack", __version__, tracer_provider)
        meter = metrics.get_meter("unimailtrack", __version__, meter_provider)
        # Until the application installs an SDK, the global providers are proxies whose
        # spans and instruments do nothing: skip the calls altogether while that lasts.
        self._tracing = (
            _always
            if tracer_provider is not None
            else _installed(trace.get_tracer_provider, trace.ProxyTracerProvider)
        )
        self._measuring = (
            _always
            if meter_provider is not None
            else _installed(metrics.get_meter_provider, _proxy_meter_provider())
        )
        self.counters = {
            name: meter.create_counter(f"unimailtrack.{name}", description=text)
            for name, (text, _) in COUNTERS.items()
        }
        self.histograms = {
            name: meter.create_histogram(f"unimailtrack.{name}", unit="s", description=text)
            for name, (text, _) in HISTOGRAMS.items()
        }
        self.gauges = {
            name: meter.create_gauge(f"unimailtrack.{name}", description=text)
            for name, (text, _) in GAUGES.items()
        }

    @property
    def tracing(self) -> bool:
        return self._tracing()

    @property
    def measuring(self) -> bool:
        return self._measuring()


def _always() -> bool:
    return True


_RECHECK = 1.0
"""Seconds between two looks at the global provider while it is still the API's proxy."""


def _installed(current: Callable[[], object], proxy: type[Any] | None) -> Callable[[], bool]:
    """True once the global provider is a real one (an SDK's), not the API's proxy.

    The API reads an environment variable on every ``get_tracer_provider()`` until an SDK is
    set, a cost paid on each span and each ingest; an SDK, once set, is never unset. So a
    real provider is remembered, and a proxy looked at again at most once a ``_RECHECK``."""
    if proxy is None:
        return _always
    real = False
    looked = -_RECHECK

    def installed() -> bool:
        nonlocal real, looked
        if real:
            return True
        now = time.monotonic()
        if now - looked < _RECHECK:
            return False
        looked = now
        real = not isinstance(current(), proxy)
        return real

    return installed


def _proxy_meter_provider() -> type[Any] | None:
    """The API's stand-in meter provider class (not public: None when it moved)."""
    from opentelemetry import metrics

    internal = getattr(metrics, "_internal", None)
    proxy: type[Any] | None = getattr(internal, "_ProxyMeterProvider", None)
    return proxy


class _Prometheus:
    """The same instruments in a registry of their own (never the global one, so that two
    apps in one process, or a test suite, do not collide)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.counters = {
            name: Counter(f"unimailtrack_{name}", text, labels, registry=self.registry)
            for name, (text, labels) in COUNTERS.items()
        }
        self.histograms = {
            name: Histogram(f"unimailtrack_{name}_seconds", text, labels, registry=self.registry)
            for name, (text, labels) in HISTOGRAMS.items()
        }
        self.gauges = {
            name: Gauge(
                f"unimailtrack_{name}" + ("_seconds" if name.endswith("_age") else ""),
                text,
                labels,
                registry=self.registry,
            )
            for name, (text, labels) in GAUGES.items()
        }
        self._children: dict[tuple[str, str, tuple[str, ...]], Any] = {}

    def child(self, kind: str, name: str, labels: Mapping[str, str]) -> Any:
        """The labelled series, looked up once (``labels()`` validates and locks each time)."""
        key = (kind, name, tuple(labels.values()))
        found = self._children.get(key)
        if found is None:
            metric = getattr(self, kind)[name]
            found = self._children[key] = metric.labels(**labels) if labels else metric
        return found


class _State:
    def __init__(self) -> None:
        self.loaded = False
        self.otel: _Otel | None = None
        self.prometheus: _Prometheus | None = None
        self.sensitive = False

    def load(self) -> None:
        self.loaded = True
        self.sensitive = os.environ.get("UNIMAILTRACK_LOG_SENSITIVE", "") == "1"
        if os.environ.get("UNIMAILTRACK_TELEMETRY", "").lower() in ("0", "off", "false", "no"):
            return
        self.otel = _make(_Otel)
        self.prometheus = _make(_Prometheus)


def _make(kind: type[Any], *args: Any) -> Any:
    try:
        return kind(*args)
    except ImportError:
        return None


_state = _State()


def _loaded() -> _State:
    if not _state.loaded:
        _state.load()
    return _state


def configure(
    *,
    otel: bool | None = None,
    prometheus: bool | None = None,
    tracer_provider: Any = None,
    meter_provider: Any = None,
) -> None:
    """Turn OpenTelemetry or Prometheus off (False) or on again (True, when installed); None
    leaves it as it is. The instruments are made afresh when turned on, from the given
    OpenTelemetry providers or else the global ones."""
    state = _loaded()
    if otel is not None:
        state.otel = _make(_Otel, tracer_provider, meter_provider) if otel else None
    if prometheus is not None:
        state.prometheus = _make(_Prometheus) if prometheus else None


def enabled() -> dict[str, bool]:
    """Which of the two is recording."""
    state = _loaded()
    return {"otel": state.otel is not None, "prometheus": state.prometheus is not None}


def span(name: str, **attributes: Any) -> AbstractContextManager[Any]:
    """A span named ``unimailtrack.<name>`` around a block (exceptions are recorded on it);
    a context that does nothing without OpenTelemetry."""
    otel = _loaded().otel
    if otel is None or not otel.tracing:
        return nullcontext()
    return otel.tracer.start_as_current_span(f"unimailtrack.{name}", attributes=attributes)


def count(name: str, value: float = 1, **labels: str) -> None:
    """Add ``value`` to the counter ``name`` (one of ``COUNTERS``)."""
    state = _loaded()
    if state.otel is not None and state.otel.measuring:
        state.otel.counters[name].add(value, labels)
    if state.prometheus is not None and value:
        state.prometheus.child("counters", name, labels).inc(value)


def observe(name: str, value: float, **labels: str) -> None:
    """Record ``value`` (seconds) in the histogram ``name`` (one of ``HISTOGRAMS``)."""
    state = _loaded()
    if state.otel is not None and state.otel.measuring:
        state.otel.histograms[name].record(value, labels)
    if state.prometheus is not None:
        state.prometheus.child("histograms", name, labels).observe(value)


def gauge(name: str, value: float, **labels: str) -> None:
    """Set the gauge ``name`` (one of ``GAUGES``) to ``value``."""
    state = _loaded()
    if state.otel is not None and state.otel.measuring:
        state.otel.gauges[name].set(value, labels)
    if state.prometheus is not None:
        state.prometheus.child("gauges", name, labels).set(value)


def prometheus_text() -> tuple[bytes, str] | None:
    """The counters in Prometheus' text exposition format and its content type; None when
    ``prometheus-client`` is not installed (or turned off)."""
    prometheus = _loaded().prometheus
    if prometheus is None:
        return None
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(prometheus.registry), CONTENT_TYPE_LATEST


def ingesting() -> AbstractContextManager[None]:
    """An ``ingest`` span around the block, and its duration in ``ingest_duration`` when it
    ends without an exception; nothing at all with neither OpenTelemetry nor Prometheus."""
    state = _loaded()
    if state.otel is None and state.prometheus is None:
        return _UNTIMED
    return _Ingesting()


_UNTIMED: AbstractContextManager[None] = nullcontext()


class _Ingesting:
    """:func:`ingesting` with telemetry on: a class, not a generator, since it wraps every
    ``ingest``, and a generator's context costs several times a class's."""

    __slots__ = ("_span", "_started")

    def __enter__(self) -> None:
        self._span = span("ingest")
        self._span.__enter__()
        self._started = time.perf_counter()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: Any
    ) -> None:
        elapsed = time.perf_counter() - self._started
        self._span.__exit__(kind, error, trace)
        if kind is None:
            observe("ingest_duration", elapsed)


def redact(address: str) -> str:
    """``a…@example.com`` for ``ann@example.com``: enough to tell recipients apart in a log,
    not enough to mail them. The whole address when the operator set
    ``UNIMAILTRACK_LOG_SENSITIVE=1``."""
    if _loaded().sensitive:
        return address
    local, at, domain = address.rpartition("@")
    if not at:
        return "…" if address else ""
    return f"{local[:1]}…@{domain}"


def log_line(kind: str, fields: Mapping[str, Any]) -> None:
    """One ``kind key=value ...`` line on :data:`request_log`; values are what the caller
    chose to show (counts, statuses, causes, redacted addresses), never bodies or keys."""
    if not request_log.isEnabledFor(logging.INFO):
        return
    text = " ".join(f"{key}={_value(value)}" for key, value in fields.items())
    request_log.info("%s %s", kind, text, extra={"unimailtrack": {"kind": kind, **fields}})


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return f'"{text}"' if (" " in text or not text) else text


def sent(provider: str, call: Any, outcome: Any) -> None:
    """Count one provider request's end (``outcome``: its results, or the ``SendError`` that
    ended its retries) and log it; addresses only redacted."""
    state = _loaded()
    if isinstance(outcome, list):
        result, status, detail = "accepted", None, None
    else:
        result = _snake(type(outcome).__name__)
        status, detail = getattr(outcome, "status", None), getattr(outcome, "message", None)
    if state.otel is not None or state.prometheus is not None:
        count("sends", provider=provider, outcome=result)
    if not request_log.isEnabledFor(logging.INFO):
        return
    recipients: Sequence[Any] = getattr(call, "recipients", ())
    log_line(
        "send",
        {
            "provider": provider,
            "outcome": result,
            "recipients": len(recipients),
            "to": redact(recipients[0].address.email) if len(recipients) == 1 else None,
            "status": status,
            "error": detail,
        },
    )


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def health(report: Any) -> None:
    """Set the health gauges from a ``tracking.HealthReport``."""
    state = _loaded()
    if state.otel is None and state.prometheus is None:
        return
    gauge("orphan_events", report.orphans)
    for provider in report.providers:
        gauge("provider_healthy", 1 if provider.healthy else 0, provider=provider.provider)
        if provider.last_event_at is not None:
            age = (report.checked_at - provider.last_event_at).total_seconds()
            gauge("provider_last_event_age", max(age, 0.0), provider=provider.provider)


_STEP_SPANS = {
    "_Unwrap": "webhook.unwrap",
    "_Confirm": "webhook.confirm",
    "_Ingest": "webhook.store",
    "_IngestOnce": "webhook.store",
    "_DeadLetter": "webhook.dead_letter",
    "_Notify": "webhook.notify",
}


class WebhookWatch:
    """What the webhook receiver's driver reports of one request: a root span, a child span
    per step the flow waits on, and once answered, the counters and one log line.

    A 401 is counted under the cause its ``SignatureError`` carried, or ``replay`` when the
    receiver refused a spent token itself.
    """

    __slots__ = ("bytes", "cause", "dead_letter", "provider", "result", "root", "started")

    def __init__(self, provider: str, size: int) -> None:
        self.provider = provider
        self.bytes = size
        self.started = time.perf_counter()
        self.cause: str | None = None
        self.result: Any = None
        self.dead_letter = False
        self.root = span("webhook", provider=provider)

    def __enter__(self) -> WebhookWatch:
        self.root.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.root.__exit__(*exc)

    def step(self, step: object) -> AbstractContextManager[Any]:
        kind = type(step).__name__
        return span(_STEP_SPANS.get(kind, "webhook." + kind.strip("_").lower()))

    def took(self, step: object, result: Any) -> None:
        kind = type(step).__name__
        if kind in ("_Ingest", "_IngestOnce"):
            self.result = result
        elif kind == "_DeadLetter":
            self.dead_letter = True

    def failed(self, error: BaseException) -> None:
        cause = getattr(error, "cause", None)
        if cause is not None and type(error).__name__ == "SignatureError":
            self.cause = str(cause)

    def answered(self, status: int) -> None:
        provider = self.provider
        count("webhook_requests", provider=provider, status=str(status))
        new = duplicates = None
        if status == 401:
            self.cause = self.cause or "replay"
            count("webhook_signature_failures", provider=provider, cause=self.cause)
        else:
            self.cause = None
        if self.result is not None and status < 300:
            new, duplicates = self.result.new, self.result.duplicates
            count("events_ingested", new, provider=provider)
            count("event_duplicates", duplicates, provider=provider)
        if self.dead_letter and status < 500:
            count("dead_letters", provider=provider)
        log_line(
            "webhook",
            {
                "provider": provider,
                "status": status,
                "new": new,
                "duplicates": duplicates,
                "cause": self.cause,
                "bytes": self.bytes,
                "ms": (time.perf_counter() - self.started) * 1000,
            },
        )
