"""Outbound webhooks: the tracker's changes and alerts, re-emitted to the application's own
endpoints, signed with the Standard Webhooks scheme, at least once.

Give the tracker its endpoints (``Tracker.open(url, webhooks=[WebhookEndpoint(...)])``): every
transaction that changes a badge, and every alert evaluation that opens, moves or closes an
alert, writes the messages for the endpoints that want them into the store's outbox, in the
same transaction. An :class:`OutboxDispatcher` (in any process: a worker, a cron job running
``unimailtrack outbox --deliver``, a thread of the web app) posts what is due::

    POST <endpoint url>
    content-type: application/json
    webhook-id: msg_...           (the same on every retry: the receiver can deduplicate)
    webhook-timestamp: 1767225600
    webhook-signature: v1,...     (one entry per configured secret, for rotation)

    {"type": "message.delivered", "timestamp": "...", "data": {...}}

A 2xx answer settles the message; anything else (or no answer) is retried with exponential
backoff, up to the endpoint's ``max_age`` after the change, then marked failed, to be replayed
with ``unimailtrack outbox --replay``. A message posted but not settled (the store stopped in
between, the process died) is posted again after its lease: at least once, never lost.
Verify with ``unimailtrack.standard_webhooks.StandardWebhooks(secret).verify(body, headers)``.

Endpoints can also come from ``UNIMAILTRACK_WEBHOOK_ENDPOINTS``: a JSON list of objects with
``name``, ``url``, ``secrets`` and optionally ``events``, ``max_age_seconds``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx

from unimailtrack.errors import ConfigurationError
from unimailtrack.standard_webhooks import StandardWebhooks
from unimailtrack.tracking._outbox import (
    DELIVERED,
    FAILED,
    PENDING,
    OutboxEntry,
    WebhookEndpoint,
    claim,
    settle,
)
from unimailtrack.tracking._records import to_micros

if TYPE_CHECKING:
    from unimailtrack.tracking import Tracker

__all__ = ["ENDPOINTS_ENV", "DispatchReport", "OutboxDispatcher", "WebhookEndpoint", "endpoints"]

log = logging.getLogger("unimailtrack.outbox")

ENDPOINTS_ENV = "UNIMAILTRACK_WEBHOOK_ENDPOINTS"
_MICROSECOND = timedelta(microseconds=1)


def endpoints(env: Mapping[str, str]) -> list[WebhookEndpoint]:
    """The endpoints ``UNIMAILTRACK_WEBHOOK_ENDPOINTS`` configures (none when unset)."""
    text = env.get(ENDPOINTS_ENV, "").strip()
    if not text:
        return []
    try:
        items = json.loads(text)
        if not isinstance(items, list):
            raise TypeError
        found = []
        for item in items:
            secrets = item["secrets"]
            found.append(
                WebhookEndpoint(
                    name=str(item["name"]),
                    url=str(item["url"]),
                    secrets=(secrets,) if isinstance(secrets, str) else tuple(secrets),
                    events=tuple(item.get("events", ())),
                    max_age=timedelta(seconds=float(item.get("max_age_seconds", 3 * 86400))),
                )
            )
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigurationError(
            f"{ENDPOINTS_ENV} must be a JSON list of objects with name, url and secrets"
        ) from exc
    return found


@dataclass(frozen=True, slots=True)
class DispatchReport:
    """What one pass did: messages delivered, to be retried, and given up."""

    delivered: int = 0
    retried: int = 0
    failed: int = 0


class OutboxDispatcher:
    """Posts the tracker's due outbox messages to their endpoints.

    ``client``/``async_client`` replace the HTTP clients (their transports: tests, proxies);
    ``lease`` is how long a claimed message is kept from other dispatchers (longer than the
    longest attempt); ``batch`` how many are claimed at a time; ``clock`` the time.
    """

    def __init__(
        self,
        tracker: Tracker,
        *,
        client: httpx.Client | None = None,
        async_client: httpx.AsyncClient | None = None,
        lease: timedelta = timedelta(minutes=2),
        batch: int = 100,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if not tracker.webhooks:
            raise ConfigurationError("the tracker has no outbound webhook endpoints")
        self.tracker = tracker
        self._endpoints = {endpoint.name: endpoint for endpoint in tracker.webhooks}
        self._signers = {
            endpoint.name: [StandardWebhooks(secret) for secret in endpoint.secrets]
            for endpoint in tracker.webhooks
        }
        if not all(self._signers.values()):
            raise ConfigurationError("every outbound webhook endpoint needs a whsec_ secret")
        self._client = client
        self._async_client = async_client
        self.lease = lease
        self.batch = max(1, batch)
        self._now = clock or (lambda: datetime.now(UTC))

    # ------------------------------------------------------------------ one message

    def _request(self, entry: OutboxEntry, now: datetime) -> tuple[str, bytes, dict[str, str]]:
        endpoint = self._endpoints[entry.endpoint]
        body = json.dumps(entry.payload, separators=(",", ":"), ensure_ascii=False).encode()
        stamp = int(now.timestamp())
        signature = " ".join(
            s.sign(entry.msg_id, stamp, body) for s in self._signers[entry.endpoint]
        )
        headers = {
            "content-type": "application/json",
            "user-agent": "unimailtrack-webhooks",
            "webhook-id": entry.msg_id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": signature,
        }
        return endpoint.url, body, headers

    def _outcome(
        self, entry: OutboxEntry, error: str | None, now: datetime
    ) -> tuple[str, int, int, str | None]:
        """(status, attempts, next attempt in µs, error) after an attempt."""
        attempts = entry.attempts + 1
        now_us = to_micros(now)
        if error is None:
            return DELIVERED, attempts, now_us, None
        endpoint = self._endpoints.get(entry.endpoint)
        if endpoint is None:
            return FAILED, attempts, now_us, "the endpoint is no longer configured"
        retry_at = now + endpoint.delay(attempts)
        if retry_at - entry.created_at > endpoint.max_age:
            return FAILED, attempts, now_us, error
        return PENDING, attempts, to_micros(retry_at), error

    @staticmethod
    def _error(response: httpx.Response) -> str | None:
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"

    def _settle_op(self, entry: OutboxEntry, error: str | None, report: list[int]) -> Any:
        now = self._now()
        status, attempts, next_us, error = self._outcome(entry, error, now)
        report[(DELIVERED, PENDING, FAILED).index(status)] += 1
        if status != DELIVERED:
            log.warning("webhook %s to %s: %s", entry.msg_id, entry.endpoint, error)
        now_us = to_micros(now)
        return _write(lambda: settle(entry.id, status, attempts, next_us, error, now_us))

    def _claim_op(self) -> Any:
        now = self._now()
        now_us, until, batch = to_micros(now), to_micros(now + self.lease), self.batch
        return _write(lambda: claim(now_us, until, batch))

    def _prepared(self, entry: OutboxEntry) -> tuple[str, bytes, dict[str, str], float] | None:
        endpoint = self._endpoints.get(entry.endpoint)
        if endpoint is None:
            return None
        url, body, headers = self._request(entry, self._now())
        return url, body, headers, endpoint.timeout

    # ------------------------------------------------------------------ passes

    def run_once(self) -> DispatchReport:
        """Post every message due now, once each; a store failure raises ``StoreError``
        (what was posted and not settled is posted again after its lease)."""
        report = [0, 0, 0]
        client = self._client or httpx.Client()
        try:
            while True:
                claimed: list[OutboxEntry] = self.tracker._run(self._claim_op())
                for entry in claimed:
                    self.tracker._run(self._settle_op(entry, self._post(client, entry), report))
                if len(claimed) < self.batch:
                    return DispatchReport(*report)
        finally:
            if self._client is None:
                client.close()

    def _post(self, client: httpx.Client, entry: OutboxEntry) -> str | None:
        prepared = self._prepared(entry)
        if prepared is None:
            return "the endpoint is no longer configured"
        url, body, headers, timeout = prepared
        try:
            response = client.post(url, content=body, headers=headers, timeout=timeout)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        return self._error(response)

    async def _apost(self, client: httpx.AsyncClient, entry: OutboxEntry) -> str | None:
        prepared = self._prepared(entry)
        if prepared is None:
            return "the endpoint is no longer configured"
        url, body, headers, timeout = prepared
        try:
            response = await client.post(url, content=body, headers=headers, timeout=timeout)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        return self._error(response)

    async def arun_once(self) -> DispatchReport:
        """The async twin of :meth:`run_once`: a claimed batch is posted concurrently."""
        report = [0, 0, 0]
        client = self._async_client or httpx.AsyncClient()
        try:
            while True:
                claimed: list[OutboxEntry] = await self.tracker._arun(self._claim_op())
                errors = await asyncio.gather(*(self._apost(client, e) for e in claimed))
                for entry, error in zip(claimed, errors, strict=True):
                    await self.tracker._arun(self._settle_op(entry, error, report))
                if len(claimed) < self.batch:
                    return DispatchReport(*report)
        finally:
            if self._async_client is None:
                await client.aclose()


def _write(program: Callable[[], Any]) -> Any:
    from unimailtrack.tracking._tracker import _Op

    return _Op(program, write=True)
