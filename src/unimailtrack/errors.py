"""The exceptions unimailtrack raises.

Every exception derives from :class:`UnimailtrackError`, so one ``except`` clause catches them
all. The tree::

    UnimailtrackError
    ├── ConfigurationError          a DSN, option or key is missing or malformed
    │   ├── MissingDependency       an optional extra is not installed
    │   └── NotSupported            the provider (or its adapter) has no such feature
    ├── InvalidAddress (ValueError) an e-mail address cannot be used
    ├── InvalidQuery (ValueError)   a cursor, limit, sort or filter cannot be used
    ├── SendError                   a provider did not take a send request
    │   ├── InvalidRequest          the provider refused the request as malformed (4xx)
    │   │   └── PayloadTooLarge     the request was over the provider's size limit (413)
    │   ├── AuthenticationError     the credentials were refused (401/403)
    │   ├── NotPermitted            the account or domain may not send (402/403, suspended)
    │   ├── RateLimited             the provider asked us to slow down (429); retryable
    │   ├── ProviderUnavailable     5xx, timeouts, connection errors; retryable
    │   ├── RecipientSuppressed     the address is on the suppression list
    │   └── AllProvidersFailed      every configured provider failed
    ├── WebhookError                a webhook request cannot be trusted or read
    │   ├── SignatureError          not authentic, not fresh, or replayed
    │   └── PayloadError            the body cannot be read
    ├── QueueError                  a webhook queue could not take or hand out a message
    ├── StoreError                  the tracking store could not complete an operation
    │   └── StoreContentError       the store refused what it was given (never retried)
    └── UnsubscribeTokenError       a one-click unsubscribe token is forged or expired

Every error carries ``provider`` (which adapter raised it), ``status`` (the HTTP status, when
there was a response) and ``detail`` (the provider's own error text), and its message says
what to do next.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

__all__ = [
    "AllProvidersFailed",
    "AuthenticationError",
    "ConfigurationError",
    "FieldError",
    "InvalidAddress",
    "InvalidQuery",
    "InvalidRequest",
    "MissingDependency",
    "NotPermitted",
    "NotSupported",
    "PayloadError",
    "PayloadTooLarge",
    "ProviderUnavailable",
    "QueueError",
    "RateLimited",
    "RecipientSuppressed",
    "SendError",
    "SignatureCause",
    "SignatureError",
    "StoreContentError",
    "StoreError",
    "UnimailtrackError",
    "UnsubscribeTokenError",
    "WebhookError",
]


class UnimailtrackError(Exception):
    """Base class of every error raised by unimailtrack."""

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        status: int | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.status = status
        self.detail = detail

    def __str__(self) -> str:
        parts = [self.message]
        if self.provider:
            parts.append(f"provider={self.provider}")
        if self.status is not None:
            parts.append(f"status={self.status}")
        if self.detail:
            parts.append(f"detail={self.detail!r}")
        return parts[0] if len(parts) == 1 else f"{parts[0]} ({', '.join(parts[1:])})"


class ConfigurationError(UnimailtrackError):
    """A DSN, option or key is missing or malformed. Fix the configuration and retry."""


class MissingDependency(ConfigurationError):
    """An optional dependency is not installed; the message names the extra to install."""

    def __init__(self, package: str, extra: str, *, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the {package!r} package: pip install 'unimailtrack[{extra}]'"
        )
        self.package = package
        self.extra = extra


class NotSupported(ConfigurationError):
    """The provider, or its adapter, offers no such feature (e.g. a suppression-list API)."""

    def __init__(self, provider: str, feature: str) -> None:
        super().__init__(f"{provider} does not support {feature}", provider=provider)


class InvalidAddress(UnimailtrackError, ValueError):
    """An e-mail address is malformed. ``address`` is what was given, ``problem`` why."""

    def __init__(self, address: str, problem: str) -> None:
        super().__init__(f"invalid e-mail address {address!r}: {problem}")
        self.address = address
        self.problem = problem


class InvalidQuery(UnimailtrackError, ValueError):
    """A question to the tracker cannot be asked as given: a cursor that is not one this
    listing handed out (tampered, cut short, from another listing, out of range), a limit, sort
    key, status or time that cannot be used. ``parameter`` names it, ``problem`` says why; the
    web app answers it 400."""

    def __init__(self, parameter: str, problem: str) -> None:
        super().__init__(f"{parameter} {problem}")
        self.parameter = parameter
        self.problem = problem


class SendError(UnimailtrackError):
    """A provider did not take a send request.

    ``retryable`` tells whether sending the same request again later may succeed.
    """

    retryable: bool = False


@dataclass(frozen=True, slots=True)
class FieldError:
    """One field-level complaint from a provider (``field`` may be None)."""

    message: str
    field: str | None = None

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class InvalidRequest(SendError):
    """The provider refused the request as malformed. Correct the e-mail; do not retry as is."""

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        status: int | None = None,
        detail: str | None = None,
        field_errors: Sequence[FieldError] = (),
    ) -> None:
        super().__init__(message, provider=provider, status=status, detail=detail)
        self.field_errors: tuple[FieldError, ...] = tuple(field_errors)

    def __str__(self) -> str:
        base = super().__str__()
        if not self.field_errors:
            return base
        return base + "; " + "; ".join(str(f) for f in self.field_errors)


class PayloadTooLarge(InvalidRequest):
    """The request was over the provider's size limit: send fewer or smaller attachments."""


class AuthenticationError(SendError):
    """The provider refused the credentials: check the API key in the DSN."""


class NotPermitted(SendError):
    """The account or sending domain may not send (unverified, suspended, paused, unpaid)."""


class RateLimited(SendError):
    """The provider asked to slow down. ``retry_after`` is in seconds, when it said."""

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        status: int | None = 429,
        detail: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, provider=provider, status=status, detail=detail)
        self.retry_after = retry_after


class ProviderUnavailable(SendError):
    """The provider failed or could not be reached (5xx, timeout, connection). Retry later."""

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        status: int | None = None,
        detail: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, provider=provider, status=status, detail=detail)
        self.retry_after = retry_after


class RecipientSuppressed(SendError):
    """The address is on the suppression list; correct it or un-suppress it to send again."""

    def __init__(self, address: str, *, reason: str | None, since: datetime | None) -> None:
        when = f" since {since.isoformat()}" if since else ""
        super().__init__(
            f"{address} is suppressed{when} ({reason or 'no reason recorded'}); "
            "correct the address or call tracker.unsuppress() to send to it again"
        )
        self.address = address
        self.reason = reason
        self.since = since


class AllProvidersFailed(SendError):
    """Every configured provider failed; ``errors`` holds each provider's error in order."""

    def __init__(self, errors: Sequence[SendError]) -> None:
        summary = "; ".join(f"{e.provider or '?'}: {e.message}" for e in errors)
        super().__init__(f"every provider failed to send ({summary})")
        self.errors: tuple[SendError, ...] = tuple(errors)
        self.retryable = bool(errors) and all(e.retryable for e in errors)


class WebhookError(UnimailtrackError):
    """A webhook request cannot be trusted or read."""


class SignatureCause(StrEnum):
    """Why a webhook request was refused: a closed set, so that metrics and monitors can
    count refusals by cause without reading log text."""

    NO_KEY = "no_key"
    """No key or secret is configured for the provider: every request is refused."""
    MISSING_HEADER = "missing_header"
    """A signature, timestamp, token or id the scheme needs is absent."""
    MALFORMED = "malformed"
    """A signed field or the envelope is not in the shape the scheme allows."""
    BAD_SIGNATURE = "bad_signature"
    """The signature matches no configured key."""
    STALE = "stale"
    """The timestamp is outside the tolerance (too old, or in the future)."""
    REPLAY = "replay"
    """The request's single-use token or message was seen before."""
    UNTRUSTED_SOURCE = "untrusted_source"
    """The sender is not one this endpoint accepts (an SNS topic or certificate URL)."""
    CERTIFICATE = "certificate"
    """The signing certificate cannot be loaded or is not valid."""


class SignatureError(WebhookError):
    """The webhook request is not authentic, not fresh, or was seen before.

    The message is the same for every cause so that a caller learns nothing about which check
    failed; the cause is logged on the ``unimailtrack.webhooks`` logger for the operator, and
    ``cause`` (a :class:`SignatureCause`) names it for metrics.
    """

    def __init__(
        self,
        *,
        provider: str | None = None,
        cause: SignatureCause = SignatureCause.BAD_SIGNATURE,
    ) -> None:
        super().__init__(
            "webhook signature verification failed: check the webhook signing key configured "
            "for this provider",
            provider=provider,
        )
        self.cause = SignatureCause(cause)


class PayloadError(WebhookError):
    """The webhook body cannot be read as a whole (not JSON, wrong shape, missing a field)."""


class QueueError(UnimailtrackError):
    """A webhook queue (Redis Streams, Amazon SQS, a PostgreSQL outbox) could not take a
    message, hand one out or acknowledge one. A receiver answers 503, exactly as for a store
    failure, so that the provider retries; a worker waits and tries again."""


class StoreError(UnimailtrackError):
    """The tracking store could not complete an operation, and nothing of it was written.

    Usually the database is unreachable, full or locked for too long. The operation can be
    retried as a whole; a webhook receiver answers 5xx so that the provider retries.
    """

    retryable: bool = True


class StoreContentError(StoreError):
    """The store refused the content of an operation, not for an outage: a value it cannot
    hold (a NUL character, a number out of range, a key too long for its index). The same
    content is refused every time, so retrying is pointless; a webhook receiver keeps such a
    batch as a dead letter and answers 400. Nothing of the operation was written."""

    retryable = False


class UnsubscribeTokenError(UnimailtrackError, ValueError):
    """A one-click unsubscribe token is forged, re-cut, malformed or expired; ``why`` says
    which, for the operator's log (the web app answers every cause with the same 400)."""

    def __init__(self, why: str) -> None:
        super().__init__(f"invalid unsubscribe token: {why}")
        self.why = why
