"""``unimailtrack serve --queue URL`` over real HTTP: a signed request is answered 200 once the
envelope is in the Redis stream, stored by nobody until ``unimailtrack worker`` runs; a forged
one is answered 401 and never queued."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
from queue_support import REDIS_URL, require_redis, with_option

import webhook_kits
from unimailtrack.adapters.sendgrid import SendGridWebhookSigner
from unimailtrack.cli import main
from unimailtrack.tracking import Tracker

ANN = "0190a1b2c3d4e5f60718293a4b5c6d7e"


def test_serve_with_a_queue_enqueues_and_the_worker_stores(tmp_path: Path) -> None:
    import secrets

    import redis

    require_redis()
    stream = f"test-{secrets.token_hex(6)}"
    queue_url = with_option(REDIS_URL, f"stream={stream}")
    store = f"sqlite:///{tmp_path / 'track.sqlite3'}"
    signer = SendGridWebhookSigner()
    env = {
        **os.environ,
        "UNIMAILTRACK_DSN": "sendgrid://default",
        "UNIMAILTRACK_SENDGRID_WEBHOOK_KEY": signer.public_key,
    }
    command = [sys.executable, "-m", "unimailtrack.cli", "serve", "--port", "0", "--no-api"]
    process = subprocess.Popen(
        [*command, "--queue", queue_url, "--store", store, "--log-level", "warning"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    client = redis.Redis.from_url(REDIS_URL)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("unimailtrack: serving "), line
        base = line.split()[-1]
        kit = webhook_kits.sendgrid()
        assert kit.batch is not None
        body = kit.batch([(ANN, "ann@example.com", "delivered")])[0]
        headers = {"Content-Type": "application/json", **signer.sign(body)}
        with httpx.Client(base_url=base, timeout=30) as http:
            answer = http.post("/webhooks/sendgrid", content=body, headers=headers)
            assert answer.status_code == 200 and answer.json()["queued"] is True
            forged = http.post("/webhooks/sendgrid", content=body + b" ", headers=headers)
            assert forged.status_code == 401
        assert client.xlen(stream) == 1
        with Tracker.open(store) as tracker:
            assert tracker.count_events() == 0
        assert main(["worker", "--queue", queue_url, "--store", store, "--until-empty"]) == 0
        with Tracker.open(store) as tracker:
            assert tracker.count_events() == 1
            assert tracker.state(ANN).status == "delivered"
        assert client.xlen(stream) == 0
    finally:
        process.terminate()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()
        client.delete(stream)
        client.close()
