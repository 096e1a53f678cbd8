"""The adapter registry: names, lazy loading, and no silent replacement."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from unimailtrack import ConfigurationError
from unimailtrack.adapters import (
    MemoryAdapter,
    available,
    get_adapter_class,
    register,
    unregister,
)

NEW_PROVIDERS = ("resend", "postmark", "brevo")


class OtherMemory(MemoryAdapter):
    name = "memory"


@pytest.fixture
def scratch() -> Iterator[str]:
    name = "contract-scratch"
    yield name
    unregister(name)
    unregister("memory")


def test_every_built_in_provider_is_known() -> None:
    for name in ("sendgrid", "ses", "mailgun", *NEW_PROVIDERS, "memory"):
        assert name in available()
        assert get_adapter_class(name).name == name


def test_the_new_adapters_are_importable_from_the_package() -> None:
    import unimailtrack.adapters as adapters

    for cls_name in ("ResendAdapter", "PostmarkAdapter", "BrevoAdapter"):
        assert cls_name in adapters.__all__
        assert getattr(adapters, cls_name).__name__ == cls_name


def test_a_new_name_registers(scratch: str) -> None:
    register(scratch, OtherMemory)
    assert get_adapter_class(scratch) is OtherMemory
    assert scratch in available()


def test_a_taken_name_is_refused_unless_replace_is_said(scratch: str) -> None:
    register(scratch, OtherMemory)
    with pytest.raises(ConfigurationError, match="replace=True"):
        register(scratch, MemoryAdapter)
    assert get_adapter_class(scratch) is OtherMemory
    register(scratch, MemoryAdapter, replace=True)
    assert get_adapter_class(scratch) is MemoryAdapter


def test_a_built_in_name_is_refused_unless_replace_is_said(scratch: str) -> None:
    del scratch
    with pytest.raises(ConfigurationError, match="already registered"):
        register("memory", OtherMemory)
    assert get_adapter_class("memory") is MemoryAdapter
    register("memory", OtherMemory, replace=True)
    assert get_adapter_class("memory") is OtherMemory
    unregister("memory")
    assert get_adapter_class("memory") is MemoryAdapter


def test_loading_a_built_in_is_not_a_registration(scratch: str) -> None:
    del scratch
    get_adapter_class("resend")  # imported and cached, not registered
    with pytest.raises(ConfigurationError):
        register("resend", OtherMemory)


def test_a_string_target_loads_lazily_and_is_checked(scratch: str) -> None:
    register(scratch, "unimailtrack.adapters.memory:MemoryAdapter")
    assert get_adapter_class(scratch) is MemoryAdapter
    register(scratch, "unimailtrack.errors:SendError", replace=True)
    with pytest.raises(ConfigurationError, match="not an unimailtrack Adapter"):
        get_adapter_class(scratch)


@pytest.mark.parametrize("bad", ["", None])
def test_a_name_is_required(bad: Any) -> None:
    with pytest.raises(ConfigurationError):
        register(bad, MemoryAdapter)
