"""unimailtrack: send e-mail through any provider and track every recipient.

The public surface is exactly what this module exports (``__all__``); everything else is
internal. Heavier parts (the mailer, the tracker, adapters) are imported on first use.
"""

from __future__ import annotations

import typing

from unimailtrack._version import __version__
from unimailtrack.errors import (
    AllProvidersFailed,
    AuthenticationError,
    ConfigurationError,
    FieldError,
    InvalidAddress,
    InvalidQuery,
    InvalidRequest,
    MissingDependency,
    NotPermitted,
    PayloadError,
    PayloadTooLarge,
    ProviderUnavailable,
    RateLimited,
    RecipientSuppressed,
    SendError,
    SignatureCause,
    SignatureError,
    StoreContentError,
    StoreError,
    UnimailtrackError,
    WebhookError,
)
from unimailtrack.lifecycle import MessageState, fold
from unimailtrack.model import (
    Address,
    Attachment,
    BounceKind,
    DeliveryStatus,
    Email,
    EmailEvent,
    EventType,
    RecipientResult,
    SendResult,
    Suppression,
)

if typing.TYPE_CHECKING:
    from unimailtrack.mailer import AsyncMailer, Mailer
    from unimailtrack.tracking import Tracker

__all__ = [
    "Address",
    "AllProvidersFailed",
    "AsyncMailer",
    "Attachment",
    "AuthenticationError",
    "BounceKind",
    "ConfigurationError",
    "DeliveryStatus",
    "Email",
    "EmailEvent",
    "EventType",
    "FieldError",
    "InvalidAddress",
    "InvalidQuery",
    "InvalidRequest",
    "Mailer",
    "MessageState",
    "MissingDependency",
    "NotPermitted",
    "PayloadError",
    "PayloadTooLarge",
    "ProviderUnavailable",
    "RateLimited",
    "RecipientResult",
    "RecipientSuppressed",
    "SendError",
    "SendResult",
    "SignatureCause",
    "SignatureError",
    "StoreContentError",
    "StoreError",
    "Suppression",
    "Tracker",
    "UnimailtrackError",
    "WebhookError",
    "__version__",
    "fold",
    "parse_webhook",
]

_LAZY = {
    "Mailer": "unimailtrack.mailer",
    "AsyncMailer": "unimailtrack.mailer",
    "Tracker": "unimailtrack.tracking",
}


def parse_webhook(
    provider: str, body: bytes, headers: typing.Mapping[str, str] | None = None
) -> list[EmailEvent]:
    """Parse a webhook body from ``provider`` into canonical events, without verifying it and
    without credentials (contract). Raises ``PayloadError`` on a body it cannot read."""
    from unimailtrack.adapters import get_adapter_class

    return get_adapter_class(provider).parse_webhook_body(body, headers)


def __getattr__(name: str) -> typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'unimailtrack' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
