"""Provider adapters, registered by name (contract).

Built in: ``"sendgrid"``, ``"ses"``, ``"mailgun"``, ``"resend"``, ``"postmark"``, ``"brevo"``
and ``"memory"``. Third-party adapters register through the entry-point group
``unimailtrack.adapters`` (name -> ``module:Class``), or at run time with :func:`register`, which
refuses to replace an adapter already known under a name unless told to. Adapter modules are
imported on first use, so importing unimailtrack never imports a provider's optional dependency.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from unimailtrack.adapters.base import Adapter
from unimailtrack.errors import ConfigurationError

if TYPE_CHECKING:
    from unimailtrack.adapters.brevo import BrevoAdapter
    from unimailtrack.adapters.mailgun import MailgunAdapter
    from unimailtrack.adapters.memory import MemoryAdapter
    from unimailtrack.adapters.postmark import PostmarkAdapter
    from unimailtrack.adapters.resend import ResendAdapter
    from unimailtrack.adapters.sendgrid import SendGridAdapter
    from unimailtrack.adapters.ses import SESAdapter

__all__ = [
    "Adapter",
    "BrevoAdapter",
    "MailgunAdapter",
    "MemoryAdapter",
    "PostmarkAdapter",
    "ResendAdapter",
    "SESAdapter",
    "SendGridAdapter",
    "available",
    "get_adapter_class",
    "register",
    "unregister",
]

ENTRY_POINT_GROUP = "unimailtrack.adapters"

_BUILTIN: dict[str, str] = {
    "sendgrid": "unimailtrack.adapters.sendgrid:SendGridAdapter",
    "ses": "unimailtrack.adapters.ses:SESAdapter",
    "mailgun": "unimailtrack.adapters.mailgun:MailgunAdapter",
    "resend": "unimailtrack.adapters.resend:ResendAdapter",
    "postmark": "unimailtrack.adapters.postmark:PostmarkAdapter",
    "brevo": "unimailtrack.adapters.brevo:BrevoAdapter",
    "memory": "unimailtrack.adapters.memory:MemoryAdapter",
}
_CLASS_NAMES = {path.rsplit(":", 1)[1]: name for name, path in _BUILTIN.items()}
_registered: dict[str, type[Adapter] | str] = {}
"""Adapters registered at run time, by name."""
_loaded: dict[str, type[Adapter]] = {}
"""Classes already imported, by name: a cache, never a registration."""


def register(name: str, adapter: type[Adapter] | str, *, replace: bool = False) -> None:
    """Register an adapter class (or ``"module:Class"``) under ``name``.

    A name already taken (built in, registered, or from an entry point) is refused with
    ``ConfigurationError`` unless ``replace=True``: an adapter is never swapped silently.
    """
    if not (isinstance(name, str) and name):
        raise ConfigurationError("an adapter is registered under a non-empty name")
    taken = name in _registered or name in _BUILTIN or name in _entry_point_targets()
    if taken and not replace:
        raise ConfigurationError(
            f"an adapter is already registered as {name!r}; pass replace=True to replace it"
        )
    _registered[name] = adapter
    _loaded.pop(name, None)


def unregister(name: str) -> None:
    """Forget an adapter registered at run time under ``name`` (built-in adapters and entry
    points stay); nothing happens when there is none."""
    _registered.pop(name, None)
    _loaded.pop(name, None)


def _entry_point_targets() -> dict[str, str]:
    from importlib.metadata import entry_points  # a tenth of a second: only when needed

    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available() -> list[str]:
    """Every adapter name known: built in, registered and from entry points."""
    return sorted({*_BUILTIN, *_registered, *_entry_point_targets()})


def _load(target: str) -> type[Adapter]:
    module_name, _, attr = target.partition(":")
    cls: Any = getattr(importlib.import_module(module_name), attr)
    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        raise ConfigurationError(f"{target} is not an unimailtrack Adapter")
    return cls


def get_adapter_class(name: str) -> type[Adapter]:
    """The adapter class registered as ``name``; ``ConfigurationError`` when there is none."""
    cached = _loaded.get(name)
    if cached is not None:
        return cached
    target = _registered.get(name) or _BUILTIN.get(name)
    if target is None:
        target = _entry_point_targets().get(name)
    if target is None:
        raise ConfigurationError(
            f"no adapter named {name!r}; known adapters: {', '.join(available())}"
        )
    cls = _load(target) if isinstance(target, str) else target
    _loaded[name] = cls
    return cls


def __getattr__(attr: str) -> Any:
    if attr in _CLASS_NAMES:
        return get_adapter_class(_CLASS_NAMES[attr])
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
