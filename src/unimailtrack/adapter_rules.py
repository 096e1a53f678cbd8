"""The tracker's provider rules, asked of the registered adapters.

``Tracker.open(url)`` uses :data:`REGISTERED` unless it is given other rules: each provider's
``message_key`` and ``list_change`` are the adapter class's registered under the provider's
name (built in, registered at run time, or from an entry point), looked up when the tracker
first meets the provider. A name with no adapter gets the plain rules: message ids as they are,
no list changes. The adapters are imported only then, so a tracker that never stores an event
never imports one.
"""

from __future__ import annotations

from typing import Final

from unimailtrack.tracking._providers import ListChange, MessageKey, ProviderRules

__all__ = ["REGISTERED", "RegisteredAdapters"]


class RegisteredAdapters:
    """:class:`~unimailtrack.tracking.ProviderRules` read from the adapter registry."""

    def message_key(self, provider: str) -> MessageKey:
        from unimailtrack.adapters import get_adapter_class
        from unimailtrack.errors import ConfigurationError

        try:
            return get_adapter_class(provider).message_key
        except (ConfigurationError, ImportError):
            return str

    def list_change(self, provider: str) -> ListChange | None:
        from unimailtrack.adapters import get_adapter_class
        from unimailtrack.adapters.base import Adapter
        from unimailtrack.errors import ConfigurationError

        try:
            found = getattr(get_adapter_class(provider), "list_change", None)
        except (ConfigurationError, ImportError, AttributeError):
            return None
        if getattr(found, "__func__", None) is Adapter.list_change.__func__:  # type: ignore[attr-defined]
            return None  # the default says no event ever changes the list: skip asking
        return found


REGISTERED: Final[ProviderRules] = RegisteredAdapters()
"""The rules of every registered adapter."""
