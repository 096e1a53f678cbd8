"""Provider adapters, registered by name (contract).

Built in: ``"sendgrid"``, ``"ses"``, ``"mailgun"`` and ``"memory"``. Third-party adapters
register through the entry-point group ``unimailtrack.adapters`` (name -> ``module:Class``),
or at run time with :func:`register`. Adapter modules are imported on first use, so importing
unimailtrack never imports a provider's optional dependency.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from unimailtrack.adapters.base import Adapter
from unimailtrack.errors import ConfigurationError

if TYPE_CHECKING:
    from unimailtrack.adapters.mailgun import MailgunAdapter
    from unimailtrack.adapters.memory import MemoryAdapter
    from unimailtrack.adapters.sendgrid import SendGridAdapter
    from unimailtrack.adapters.ses import SESAdapter

__all__ = [
    "Adapter",
    "MailgunAdapter",
    "MemoryAdapter",
    "SESAdapter",
    "SendGridAdapter",
    "available",
    "get_adapter_class",
    "register",
]

ENTRY_POINT_GROUP = "unimailtrack.adapters"

_BUILTIN: dict[str, str] = {
    "sendgrid": "unimailtrack.adapters.sendgrid:SendGridAdapter",
    "ses": "unimailtrack.adapters.ses:SESAdapter",
    "mailgun": "unimailtrack.adapters.mailgun:MailgunAdapter",
    "memory": "unimailtrack.adapters.memory:MemoryAdapter",
}
_CLASS_NAMES = {path.rsplit(":", 1)[1]: name for name, path in _BUILTIN.items()}
_registered: dict[str, type[Adapter] | str] = {}


def register(name: str, adapter: type[Adapter] | str) -> None:
    """Register an adapter class (or ``"module:Class"``) under ``name``."""
    _registered[name] = adapter


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
    target = _registered.get(name) or _BUILTIN.get(name)
    if target is None:
        target = _entry_point_targets().get(name)
    if target is None:
        raise ConfigurationError(
            f"no adapter named {name!r}; known adapters: {', '.join(available())}"
        )
    if isinstance(target, str):
        cls = _load(target)
        _registered[name] = cls
        return cls
    return target


def __getattr__(attr: str) -> Any:
    if attr in _CLASS_NAMES:
        return get_adapter_class(_CLASS_NAMES[attr])
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
