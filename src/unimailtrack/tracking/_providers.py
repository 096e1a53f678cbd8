"""What the tracker needs to know of each provider, handed to it by whoever builds it.

The tracker never imports the adapters. Two things it needs are a provider's own: how an
event's message id joins the message id its send returned (SendGrid decorates its event ids),
and which of its events say that the provider's own suppression list changed. A
:class:`ProviderRules` answers both, by provider name; ``Tracker(store, providers=...)`` and
``Tracker.open(url, providers=...)`` take one. Without one the tracker asks the registered
adapters (``unimailtrack.adapter_rules``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Protocol

from unimailtrack.model import EventType

__all__ = ["PLAIN", "ListChange", "MessageKey", "ProviderRules"]

MessageKey = Callable[[str], str]
"""An event's message id -> the part of it that equals the send's message id."""

ListChange = Callable[[str, EventType], "str | None"]
"""``(provider event, canonical type)`` -> ``"added"`` or ``"lifted"`` when the event says the
provider's own suppression list changed, else None."""


class ProviderRules(Protocol):
    """A provider's rules, by provider name (``"sendgrid"``, ``"ses"``, ...)."""

    def message_key(self, provider: str) -> MessageKey:
        """How ``provider``'s event message ids join their send's (``str`` when as they are)."""
        ...

    def list_change(self, provider: str) -> ListChange | None:
        """How to tell which of ``provider``'s events change its own list; None when none do."""
        ...


class _Plain:
    """Every message id as it is, and no event that changes a provider's list."""

    def message_key(self, provider: str) -> MessageKey:
        del provider
        return str

    def list_change(self, provider: str) -> ListChange | None:
        del provider
        return None


PLAIN: Final[ProviderRules] = _Plain()
"""The rules of providers that decorate nothing: for a tracker that stores events of no
registered adapter."""
