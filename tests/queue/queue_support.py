"""Webhook bodies for the queue tests, and a tracker that refuses one recipient for real."""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from typing import Any

import pytest

from unimailtrack.queue import Envelope
from unimailtrack.tracking import Tracker

REDIS_URL = os.environ.get("UNIMAILTRACK_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get(
    "UNIMAILTRACK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "eu-west-1",
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def require_redis() -> None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis is required at {REDIS_URL}: {exc}")


def require_postgres() -> None:
    import psycopg

    try:
        psycopg.connect(POSTGRES_URL, connect_timeout=3).close()
    except psycopg.Error as exc:
        pytest.fail(f"PostgreSQL is required at {POSTGRES_URL}: {exc}")


def drop_schema(schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def with_option(url: str, option: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{option}"


def sqs_client(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name="eu-west-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


POISON = "poison@example.com"
KINDS = ("processed", "delivered", "open", "click", "bounce", "deferred")


def sendgrid_event(tracking_id: str, kind: str, *, recipient: str | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {
        "email": recipient or f"{tracking_id[:8]}@example.com",
        "timestamp": int(time.time()) - 60,
        "event": kind,
        "sg_event_id": uuid.uuid4().hex,
        "sg_message_id": f"{tracking_id[:12]}.filter0001.1.0",
        "unimailtrack_id": tracking_id,
    }
    if kind == "bounce":
        event |= {"type": "bounce", "status": "5.1.1", "reason": "550 5.1.1 user unknown"}
    if kind == "click":
        event["url"] = "https://example.com/x"
    return event


def sendgrid_body(events: list[dict[str, Any]]) -> bytes:
    return json.dumps(events).encode()


def envelope_of(events: list[dict[str, Any]]) -> Envelope:
    return Envelope.of("sendgrid", sendgrid_body(events), {"Content-Type": "application/json"})


def refuse_poison(store_url: str) -> None:
    """A trigger that makes the store itself refuse every event for ``POISON``, on SQLite and
    on PostgreSQL alike (the tracker's own tables, created by opening it first)."""
    Tracker.open(store_url).close()
    if store_url.startswith("sqlite"):
        import sqlite3

        path = store_url.removeprefix("sqlite:///")
        with sqlite3.connect(path) as conn:
            conn.execute(
                f"CREATE TRIGGER refuse_poison BEFORE INSERT ON events "
                f"WHEN NEW.recipient = '{POISON}' BEGIN SELECT RAISE(ABORT, 'poisoned'); END"
            )
        return
    import psycopg

    from unimailtrack.tracking._postgres import parse_postgres_url

    conninfo, options = parse_postgres_url(store_url)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"SET search_path = {options['schema']}")
        conn.execute(
            f"""
            CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.recipient = '{POISON}' THEN
                    RAISE EXCEPTION 'poisoned';
                END IF;
                RETURN NEW;
            END $$
            """
        )
        conn.execute(
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON events "
            "FOR EACH ROW EXECUTE FUNCTION refuse_poison()"
        )
