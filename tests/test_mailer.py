from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import pytest

from unimailtrack import (
    AllProvidersFailed,
    AsyncMailer,
    ConfigurationError,
    DeliveryStatus,
    Email,
    EventType,
    InvalidRequest,
    Mailer,
    ProviderUnavailable,
    SendResult,
    Suppression,
)
from unimailtrack._http import RetryPolicy
from unimailtrack.adapters import MemoryAdapter
from unimailtrack.model import suppression_key

NO_RETRY = RetryPolicy.none()


def bulk(*to: str, tracked: bool = True) -> Email:
    return Email(
        sender="events@example.com", to=list(to), subject="Invite", text="Come", tracked=tracked
    )


class FakeLog:
    """A SendLog with a fixed suppression list that remembers what it was asked to record."""

    def __init__(self, suppressed: Sequence[str] = ()) -> None:
        self.suppressed = {
            suppression_key(a): Suppression(
                address=a,
                reason="550 5.1.1 user unknown",
                cause=EventType.BOUNCED,
                created_at=datetime(2024, 1, 1, tzinfo=UTC),
            )
            for a in suppressed
        }
        self.recorded: list[tuple[Email, SendResult]] = []

    def suppressions_for(self, addresses: Sequence[str]) -> Mapping[str, Suppression]:
        keys = {suppression_key(a) for a in addresses}
        return {k: v for k, v in self.suppressed.items() if k in keys}

    def record_send(self, email: Email, result: SendResult) -> None:
        self.recorded.append((email, result))

    async def asuppressions_for(self, addresses: Sequence[str]) -> Mapping[str, Suppression]:
        return self.suppressions_for(addresses)

    async def arecord_send(self, email: Email, result: SendResult) -> None:
        self.record_send(email, result)


def test_bulk_send_tracks_each_recipient_and_flags_duplicates() -> None:
    memory = MemoryAdapter()
    result = Mailer(memory).send(bulk("a@example.com", "b@example.com", "A@EXAMPLE.com"))
    assert [r.status for r in result.recipients] == [
        DeliveryStatus.ACCEPTED,
        DeliveryStatus.ACCEPTED,
        DeliveryStatus.DUPLICATE,
    ]
    assert len({r.tracking_id for r in result.recipients}) == 3
    assert len(memory.outbox) == 2


def test_suppressed_recipients_are_refused_before_the_provider() -> None:
    memory = MemoryAdapter()
    log = FakeLog(suppressed=["gone@Example.org"])
    result = Mailer(memory, tracker=log).send(bulk("ok@example.com", "gone@EXAMPLE.org"))
    assert [r.status for r in result.recipients] == [
        DeliveryStatus.ACCEPTED,
        DeliveryStatus.SUPPRESSED,
    ]
    assert "550 5.1.1" in (result.recipients[1].error or "")
    assert [m.recipient for m in memory.outbox] == ["ok@example.com"]
    assert log.recorded == [(log.recorded[0][0], result)]


def test_untracked_sends_are_not_recorded() -> None:
    log = FakeLog()
    Mailer(MemoryAdapter(), tracker=log).send(bulk("a@example.com", tracked=False))
    assert log.recorded == []


def test_failover_moves_failed_recipients_to_the_next_provider() -> None:
    primary, backup = MemoryAdapter(retry=NO_RETRY), MemoryAdapter()
    primary.fail_next(503)
    result = Mailer([primary, backup]).send(bulk("a@example.com", "b@example.com"))
    assert all(r.status is DeliveryStatus.ACCEPTED for r in result.recipients)
    assert primary.outbox == []
    assert len(backup.outbox) == 2


def test_all_providers_failing_raises_with_every_error() -> None:
    primary, backup = MemoryAdapter(retry=NO_RETRY), MemoryAdapter(retry=NO_RETRY)
    primary.fail_next(503)
    backup.fail_next(400)
    log = FakeLog()
    with pytest.raises(AllProvidersFailed) as caught:
        Mailer([primary, backup], tracker=log).send(bulk("a@example.com"))
    assert [type(e) for e in caught.value.errors] == [ProviderUnavailable, InvalidRequest]
    assert caught.value.retryable is False
    assert log.recorded[0][1].recipients[0].status is DeliveryStatus.FAILED


def test_one_provider_failing_raises_its_own_error() -> None:
    memory = MemoryAdapter(retry=NO_RETRY)
    memory.fail_next(401)
    with pytest.raises(Exception, match="credentials") as caught:
        Mailer(memory).send(bulk("a@example.com"))
    assert caught.value.__class__.__name__ == "AuthenticationError"


def test_roundrobin_alternates_providers() -> None:
    first, second = MemoryAdapter(), MemoryAdapter()
    mailer = Mailer([first, second], strategy="roundrobin")
    for _ in range(4):
        mailer.send(bulk("a@example.com"))
    assert (len(first.outbox), len(second.outbox)) == (2, 2)


def test_mailer_from_env_and_dsn() -> None:
    mailer = Mailer.from_env(env={"UNIMAILTRACK_DSN": "failover(memory:// memory://)"})
    assert len(mailer._adapters) == 2
    with pytest.raises(ConfigurationError, match="UNIMAILTRACK_DSN is not set"):
        Mailer.from_env(env={})
    with pytest.raises(ConfigurationError, match="no adapter named 'nope'"):
        Mailer("nope://x@default")
    with pytest.raises(ConfigurationError, match="unknown option"):
        Mailer("memory://default?colour=blue")


def test_async_mailer_matches_the_sync_one() -> None:
    memory = MemoryAdapter()
    log = FakeLog(suppressed=["gone@example.org"])

    async def run() -> SendResult:
        async with AsyncMailer(memory, tracker=log) as mailer:
            return await mailer.send(bulk("a@example.com", "gone@example.org", "a@example.com"))

    result = asyncio.run(run())
    assert [r.status for r in result.recipients] == [
        DeliveryStatus.ACCEPTED,
        DeliveryStatus.SUPPRESSED,
        DeliveryStatus.DUPLICATE,
    ]
    assert len(log.recorded) == 1


def test_async_bulk_send_runs_concurrently_within_the_limit() -> None:
    memory = MemoryAdapter(max_concurrency=4)
    recipients = [f"user{i}@example.com" for i in range(50)]

    async def run() -> SendResult:
        return await AsyncMailer(memory).send(bulk(*recipients))

    result = asyncio.run(run())
    assert [r.recipient for r in result.recipients] == recipients
