"""A stuck PostgreSQL fails ingestion fast: a lock held by another connection on the events
table makes ``ingest`` raise ``StoreError`` within ``lock_timeout``, and the receiver answers
503 in about that time instead of waiting with every connection of the pool."""

from __future__ import annotations

import secrets
import time

import psycopg
import pytest
from tracking_support import POSTGRES_URL, drop_schema, require_postgres, with_schema

import webhook_kits
from unimailtrack import ConfigurationError, StoreError
from unimailtrack.tracking import Tracker
from unimailtrack.webhooks import WebhookReceiver

ANN = "0190a1b2c3d4e5f60718293a4b5c6d7e"


def test_a_lock_held_elsewhere_fails_ingestion_within_the_lock_timeout() -> None:
    require_postgres()
    schema = f"t_{secrets.token_hex(6)}"
    url = with_schema(POSTGRES_URL, schema) + "&lock_timeout=300ms&statement_timeout=5s"
    kit = webhook_kits.sendgrid()
    try:
        with Tracker.open(url) as tracker, psycopg.connect(POSTGRES_URL) as holder:
            receiver = WebhookReceiver({"sendgrid": kit.adapter}, tracker)
            holder.execute(f"LOCK TABLE {schema}.events IN ACCESS EXCLUSIVE MODE")
            body, headers = kit.request(ANN, "ann@example.com", "delivered")
            started = time.monotonic()
            answer = receiver.handle("sendgrid", headers, body)
            took = time.monotonic() - started
            assert answer.status == 503
            assert took < 2.0, f"a held lock stalled the request for {took:.1f}s"
            started = time.monotonic()
            with pytest.raises(StoreError, match="lock timeout"):
                tracker.ingest(kit.adapter.parse_webhook(body, headers))
            assert time.monotonic() - started < 2.0
            holder.rollback()  # the lock is gone: the provider's retry is stored
            assert receiver.handle("sendgrid", headers, body).status == 200
            assert tracker.count_events() == 1
    finally:
        drop_schema(schema)


def test_a_statement_that_runs_too_long_is_cancelled() -> None:
    require_postgres()
    schema = f"t_{secrets.token_hex(6)}"
    url = with_schema(POSTGRES_URL, schema) + "&statement_timeout=200ms"
    try:
        with Tracker.open(url) as tracker:
            from unimailtrack.tracking._store import Query

            def sleeper():  # type: ignore[no-untyped-def]
                yield Query("SELECT pg_sleep(3)")

            started = time.monotonic()
            with pytest.raises(StoreError, match="statement timeout"):
                tracker._store.run(sleeper, write=False)
            assert time.monotonic() - started < 2.0
    finally:
        drop_schema(schema)


@pytest.mark.parametrize("value", ["soon", "-1s", "10 s", "1e3"])
def test_a_timeout_that_is_not_a_duration_is_refused(value: str) -> None:
    require_postgres()
    with pytest.raises(ConfigurationError, match="duration"):
        Tracker.open(with_schema(POSTGRES_URL, "t_never") + f"&lock_timeout={value}")
