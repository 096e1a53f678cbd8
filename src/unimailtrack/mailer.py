"""Sending: ``Mailer`` and ``AsyncMailer`` (contract).

A mailer owns one or more adapters (from a DSN, ``failover(...)`` or ``roundrobin(...)``) and an
optional tracker. For every send it gives each recipient a tracking id, marks an address that
appears twice as ``duplicate``, refuses suppressed addresses before any provider is called,
delivers through the adapters (retrying what is retryable, moving recipients that failed on one
provider to the next), and records the outcome. Sync and async share all of it but the calls
that wait.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Protocol, Self

from unimailtrack.adapters import get_adapter_class
from unimailtrack.adapters.base import Adapter, Delivery, Recipient
from unimailtrack.config import CombinedDsn, Dsn, parse_dsn
from unimailtrack.errors import AllProvidersFailed, ConfigurationError, SendError
from unimailtrack.model import (
    DeliveryStatus,
    Email,
    RecipientResult,
    SendResult,
    Suppression,
    dedupe_key,
    new_tracking_id,
    suppression_key,
)
from unimailtrack.unsubscribe import DEFAULT_EXPIRY, OneClickUnsubscribe, email_stream

__all__ = ["AsyncMailer", "Mailer", "SendLog", "build_adapters"]

DSN_ENV = "UNIMAILTRACK_DSN"


class SendLog(Protocol):
    """What a mailer needs of a tracker: the suppression list and a place to record sends."""

    def suppressions_for(
        self, addresses: Sequence[str], *, stream: str | None = None
    ) -> Mapping[str, Suppression]:
        """The suppressions that refuse ``addresses`` on ``stream``, keyed by
        ``suppression_key(address)``: one look-up for the whole send."""
        ...

    def record_send(self, email: Email, result: SendResult) -> None: ...

    async def asuppressions_for(
        self, addresses: Sequence[str], *, stream: str | None = None
    ) -> Mapping[str, Suppression]: ...

    async def arecord_send(self, email: Email, result: SendResult) -> None: ...


def build_adapters(
    dsn: str | Dsn | CombinedDsn, *, env: Mapping[str, str] | None = None
) -> tuple[list[Adapter], str]:
    """The adapters a DSN names and the strategy that combines them."""
    parsed = parse_dsn(dsn) if isinstance(dsn, str) else dsn
    if isinstance(parsed, Dsn):
        return [_adapter_from_dsn(parsed, env)], "failover"
    members: list[Adapter] = []
    for member in parsed.members:
        if isinstance(member, CombinedDsn):
            raise ConfigurationError(
                f"{parsed.strategy}(...) cannot contain another {member.strategy}(...): "
                f"{parsed.redacted()}"
            )
        members.append(_adapter_from_dsn(member, env))
    return members, parsed.strategy


def _adapter_from_dsn(dsn: Dsn, env: Mapping[str, str] | None) -> Adapter:
    cls = get_adapter_class(dsn.scheme)
    dsn.check_options(cls.dsn_options | _COMMON_OPTIONS)
    return cls.from_dsn(dsn, env=env if env is not None else os.environ)


_COMMON_OPTIONS = frozenset(
    {"transport", "timeout", "max_retries", "max_concurrency", "verify_webhooks"}
)


def _stream(email: Email) -> dict[str, str]:
    """The stream argument of the suppression look-up: left out for the default stream, so
    that a send log written before streams existed still serves default-stream sends."""
    return {} if email.stream is None else {"stream": email.stream}


class _MailerBase:
    def __init__(
        self,
        adapters: str | Adapter | Sequence[Adapter],
        *,
        tracker: SendLog | None = None,
        strategy: str = "failover",
        env: Mapping[str, str] | None = None,
        unsubscribe_secret: str | Sequence[str] | None = None,
        public_url: str | None = None,
        unsubscribe_streams: str | Sequence[str] | None = None,
        unsubscribe_expiry: timedelta = DEFAULT_EXPIRY,
        unsubscribe_mailto: str | None = None,
    ) -> None:
        if isinstance(adapters, str):
            built, strategy = build_adapters(adapters, env=env)
            self._adapters: list[Adapter] = built
        elif isinstance(adapters, Adapter):
            self._adapters = [adapters]
        else:
            self._adapters = list(adapters)
        if not self._adapters:
            raise ConfigurationError("a mailer needs at least one adapter")
        if strategy not in ("failover", "roundrobin"):
            raise ConfigurationError(f"unknown strategy {strategy!r}; use failover or roundrobin")
        self.strategy = strategy
        self.tracker = tracker
        self._turn = itertools.count()
        self.one_click = OneClickUnsubscribe.configured(
            env,
            secret=unsubscribe_secret,
            public_url=public_url,
            streams=unsubscribe_streams,
            expiry=unsubscribe_expiry,
            mailto=unsubscribe_mailto,
        )
        """RFC 8058 headers for sends in the configured streams (None: no secret, none)."""

    @classmethod
    def from_env(
        cls, *, tracker: SendLog | None = None, env: Mapping[str, str] | None = None
    ) -> Self:
        """A mailer from ``UNIMAILTRACK_DSN`` (contract), with one-click unsubscribe from
        ``UNIMAILTRACK_UNSUBSCRIBE_SECRET``, ``UNIMAILTRACK_PUBLIC_URL`` and
        ``UNIMAILTRACK_UNSUBSCRIBE_STREAMS`` when a secret is set."""
        environ = env if env is not None else os.environ
        dsn = environ.get(DSN_ENV)
        if not dsn:
            raise ConfigurationError(
                f"{DSN_ENV} is not set: set it to e.g. sendgrid://API_KEY@default or memory://"
            )
        return cls(dsn, tracker=tracker, env=environ)

    @property
    def adapters(self) -> dict[str, Adapter]:
        """The configured adapters by provider name (the first of each name)."""
        result: dict[str, Adapter] = {}
        for adapter in self._adapters:
            result.setdefault(adapter.name, adapter)
        return result

    def _order(self) -> list[Adapter]:
        if self.strategy == "roundrobin" and len(self._adapters) > 1:
            start = next(self._turn) % len(self._adapters)
            return self._adapters[start:] + self._adapters[:start]
        return list(self._adapters)

    def _one_click(self, email: Email, pending: Sequence[Recipient]) -> list[Email] | None:
        """One copy of ``email`` per recipient, each with its own RFC 8058 headers, when
        its stream carries them (and the application set no List-Unsubscribe of its own);
        None when it sends as it is."""
        stream = email_stream(email)
        one_click = self.one_click
        if one_click is None or stream is None or not one_click.applies(stream):
            return None
        if any(name.lower() == "list-unsubscribe" for name in email.headers):
            return None
        return [
            email.model_copy(
                update={
                    "headers": {
                        **email.headers,
                        **one_click.headers(r.address.email, stream, r.tracking_id),
                    }
                }
            )
            for r in pending
        ]

    @staticmethod
    def _merged(deliveries: Sequence[Delivery]) -> Delivery:
        merged = Delivery()
        for delivery in deliveries:
            merged.results.extend(delivery.results)
            merged.errors.extend(delivery.errors)
        return merged

    @staticmethod
    def _plan(email: Email) -> tuple[list[Recipient], dict[int, RecipientResult], list[int]]:
        """Tracking ids for every recipient; duplicates settled at once. Returns the recipients
        to send to, the results already known (by position) and the positions to send."""
        seen: set[str] = set()
        to_send: list[Recipient] = []
        known: dict[int, RecipientResult] = {}
        positions: list[int] = []
        for index, address in enumerate(email.recipients()):
            tracking_id = new_tracking_id()
            key = dedupe_key(address.email)
            if key in seen:
                known[index] = RecipientResult(
                    recipient=address.email,
                    tracking_id=tracking_id,
                    status=DeliveryStatus.DUPLICATE,
                    error="address appears earlier in this send",
                )
                continue
            seen.add(key)
            to_send.append(Recipient(address, tracking_id))
            positions.append(index)
        return to_send, known, positions

    @staticmethod
    def _apply_suppressions(
        to_send: list[Recipient],
        positions: list[int],
        known: dict[int, RecipientResult],
        suppressions: Mapping[str, Suppression],
    ) -> tuple[list[Recipient], list[int]]:
        if not suppressions:
            return to_send, positions
        kept: list[Recipient] = []
        kept_positions: list[int] = []
        for recipient, position in zip(to_send, positions, strict=True):
            found = suppressions.get(suppression_key(recipient.address.email))
            if found is None:
                kept.append(recipient)
                kept_positions.append(position)
                continue
            known[position] = RecipientResult(
                recipient=recipient.address.email,
                tracking_id=recipient.tracking_id,
                status=DeliveryStatus.SUPPRESSED,
                error=f"suppressed since {found.created_at.isoformat()}: "
                f"{found.reason or found.cause}"
                + ("" if found.scope is None else f" (stream {found.scope})"),
            )
        return kept, kept_positions

    @staticmethod
    def _absorb(
        delivery: Delivery,
        pending: list[Recipient],
        results: dict[str, RecipientResult],
        errors: list[SendError],
    ) -> list[Recipient]:
        """Take a provider's results; return the recipients still to try elsewhere."""
        errors.extend(delivery.errors)
        for result in delivery.results:
            results[result.tracking_id] = result
        return [r for r in pending if results[r.tracking_id].status is DeliveryStatus.FAILED]

    @staticmethod
    def _finish(
        to_send: list[Recipient],
        positions: list[int],
        known: dict[int, RecipientResult],
        results: dict[str, RecipientResult],
    ) -> SendResult:
        for recipient, position in zip(to_send, positions, strict=True):
            known[position] = results[recipient.tracking_id]
        ordered = [known[i] for i in sorted(known)]
        return SendResult(bulk_id=new_tracking_id(), recipients=ordered)

    @staticmethod
    def _raise_if_nothing_sent(result: SendResult, errors: list[SendError]) -> None:
        if not errors or any(r.status is DeliveryStatus.ACCEPTED for r in result.recipients):
            return
        if len(errors) == 1:
            raise errors[0]
        raise AllProvidersFailed(errors)


class Mailer(_MailerBase):
    """Sends e-mail and records it (contract). ``Mailer.from_env()`` reads the DSN."""

    def send(self, email: Email) -> SendResult:
        """Send ``email``: one tracked copy per recipient. Raises the provider's error (or
        ``AllProvidersFailed``) when no recipient could be sent to."""
        to_send, known, positions = self._plan(email)
        if self.tracker is not None and to_send:
            found = self.tracker.suppressions_for(
                [r.address.email for r in to_send], **_stream(email)
            )
            to_send, positions = self._apply_suppressions(to_send, positions, known, found)
        results: dict[str, RecipientResult] = {}
        errors: list[SendError] = []
        pending = to_send
        for adapter in self._order():
            if not pending:
                break
            pending = self._absorb(self._deliver(adapter, email, pending), pending, results, errors)
        result = self._finish(to_send, positions, known, results)
        if self.tracker is not None and email.tracked:
            self.tracker.record_send(email, result)
        self._raise_if_nothing_sent(result, errors)
        return result

    def _deliver(self, adapter: Adapter, email: Email, pending: list[Recipient]) -> Delivery:
        copies = self._one_click(email, pending)
        if copies is None:
            return adapter.deliver(email, pending)
        return self._merged(
            [adapter.deliver(copy, [r]) for copy, r in zip(copies, pending, strict=True)]
        )

    def close(self) -> None:
        for adapter in self._adapters:
            adapter.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncMailer(_MailerBase):
    """The async twin of ``Mailer`` (contract): a bulk send's requests run concurrently."""

    async def send(self, email: Email) -> SendResult:
        to_send, known, positions = self._plan(email)
        if self.tracker is not None and to_send:
            found = await self.tracker.asuppressions_for(
                [r.address.email for r in to_send], **_stream(email)
            )
            to_send, positions = self._apply_suppressions(to_send, positions, known, found)
        results: dict[str, RecipientResult] = {}
        errors: list[SendError] = []
        pending = to_send
        for adapter in self._order():
            if not pending:
                break
            delivery = await self._adeliver(adapter, email, pending)
            pending = self._absorb(delivery, pending, results, errors)
        result = self._finish(to_send, positions, known, results)
        if self.tracker is not None and email.tracked:
            await self.tracker.arecord_send(email, result)
        self._raise_if_nothing_sent(result, errors)
        return result

    async def _adeliver(self, adapter: Adapter, email: Email, pending: list[Recipient]) -> Delivery:
        copies = self._one_click(email, pending)
        if copies is None:
            return await adapter.adeliver(email, pending)
        import asyncio  # here, so that a sync send never loads the event loop machinery

        gate = asyncio.Semaphore(adapter.max_concurrency)

        async def one(copy: Email, recipient: Recipient) -> Delivery:
            async with gate:
                return await adapter.adeliver(copy, [recipient])

        found = await asyncio.gather(*(one(c, r) for c, r in zip(copies, pending, strict=True)))
        return self._merged(found)

    async def aclose(self) -> None:
        for adapter in self._adapters:
            await adapter.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
