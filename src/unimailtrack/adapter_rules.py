"""The tracker's provider rules, asked of the registered adapters.

``Tracker.open(url)`` uses :data:`REGISTERED` unless it is given other rules: each provider's
``message_key`` and ``list_change`` are the adapter class's registered under the provider's
name (built in, registered at run time, or from an entry point), looked up when the tracker
first meets the provider. A name with no adapter gets the plain rules: message ids as they are,
no list changes. The adapters are imported only then, so a tracker that never stores an event
never imports one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from unimailtrack.errors import ConfigurationError
from unimailtrack.tracking._providers import ListChange, MessageKey, ProviderRules

if TYPE_CHECKING:
    from unimailtrack.adapters.base import Adapter

__all__ = ["REGISTERED", "RegisteredAdapters"]


class RegisteredAdapters:
    """:class:`~unimailtrack.tracking.ProviderRules` read from the adapter registry."""

    def message_key(self, provider: str) -> MessageKey:
        adapter_class, _ = _registry()
        try:
            return adapter_class(provider).message_key
        except (ConfigurationError, ImportError):
            return str

    def list_change(self, provider: str) -> ListChange | None:
        adapter_class, default = _registry()
        try:
            found = getattr(adapter_class(provider), "list_change", None)
        except (ConfigurationError, ImportError, AttributeError):
            return None
        if getattr(found, "__func__", None) is default:
            return None  # the default says no event ever changes the list: skip asking
        return found


@functools.cache
def _registry() -> tuple[Callable[[str], type[Adapter]], object]:
    """The registry's lookup and the default ``list_change``, imported on first use. Cached:
    both rules are asked on every batch, and importing a name from a package runs importlib's
    Python each time."""
    from unimailtrack.adapters import get_adapter_class
    from unimailtrack.adapters.base import Adapter

    return get_adapter_class, Adapter.list_change.__func__  # type: ignore[attr-defined]


REGISTERED: Final[ProviderRules] = RegisteredAdapters()
"""The rules of every registered adapter."""
