"""The shared vocabulary shape and the one JSON reader every adapter uses."""

from __future__ import annotations

import pytest

from unimailtrack import BounceKind, EventType, PayloadError
from unimailtrack.adapters import _vocabulary
from unimailtrack.adapters._vocabulary import UNMAPPED, Term, lookup, read_json, vocabulary


def test_a_vocabulary_is_read_only_and_its_lookup_a_plain_dict() -> None:
    table = vocabulary({"delivered": Term(EventType.DELIVERED)})
    with pytest.raises(TypeError):
        table["x"] = UNMAPPED  # type: ignore[index]
    fast = lookup(table)
    assert type(fast) is dict
    assert fast == dict(table)
    assert fast.get("nothing", UNMAPPED) is UNMAPPED


def test_terms_are_frozen_and_slotted() -> None:
    term = Term(EventType.BOUNCED, bounce=BounceKind.HARD)
    with pytest.raises(AttributeError):
        term.type = EventType.DELIVERED  # type: ignore[misc]
    assert not hasattr(term, "__dict__")


@pytest.mark.parametrize(
    ("term", "text"),
    [
        (Term(EventType.DELIVERED), "delivered"),
        (Term(EventType.BOUNCED, bounce=BounceKind.HARD), "bounced (hard)"),
        (Term(EventType.OPENED, machine=True), "opened (machine)"),
        (Term(EventType.UNKNOWN, recipient=False), "unknown (no recipient)"),
    ],
)
def test_describe_writes_the_docs_form(term: Term, text: str) -> None:
    assert term.describe() == text


def test_a_term_that_cannot_happen_is_refused() -> None:
    with pytest.raises(ValueError, match="bounce kind"):
        Term(EventType.OPENED, bounce=BounceKind.HARD)
    with pytest.raises(ValueError, match="person or a machine"):
        Term(EventType.CLICKED, machine=True)
    with pytest.raises(ValueError, match="no recipient"):
        Term(EventType.DELIVERED, recipient=False)


def test_a_table_with_a_bad_entry_is_refused() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        vocabulary({"": UNMAPPED})
    with pytest.raises(TypeError, match="Term"):
        vocabulary({"x": EventType.DELIVERED})  # type: ignore[dict-item]


@pytest.mark.parametrize("body", [b"", b"{", b"\xff", b"[1,]", b"nan", "{"])
def test_read_json_turns_every_failure_into_a_payload_error(body: bytes | str) -> None:
    with pytest.raises(PayloadError) as caught:
        read_json(body, provider="resend")
    assert caught.value.provider == "resend"


def test_read_json_refuses_deep_nesting_as_a_payload_error() -> None:
    with pytest.raises(PayloadError):
        read_json(b"[" * 100_000 + b"]" * 100_000, provider="brevo")


def test_read_json_goes_through_the_shared_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bytes | str] = []

    def bounded(body: bytes | str) -> object:
        seen.append(body)
        raise PayloadError("the body is nested too deeply")

    # The bounded reader, whichever name this version of _json gives it.
    monkeypatch.setattr(_vocabulary._json, "load_untrusted", bounded, raising=False)
    monkeypatch.setattr(_vocabulary._json, "loads", bounded)
    with pytest.raises(PayloadError) as caught:
        read_json(b"[]", provider="postmark")
    assert seen == [b"[]"]
    assert caught.value.provider == "postmark"


def test_read_json_decodes() -> None:
    assert read_json(b'{"a": [1, "2"]}', provider="x") == {"a": [1, "2"]}
