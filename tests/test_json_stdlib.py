"""The standard library's decoder as unimailtrack uses it without the fast extra.

The test environment installs orjson, so ``_json.loads`` is orjson's here; these tests call
``stdlib_loads`` directly, the decoder every installation without ``unimailtrack[fast]``
parses webhooks with. Its shortcut (the C scanner called straight away) must accept and
refuse exactly the texts ``json.JSONDecoder.decode`` does, and decode what orjson decodes to
the same values.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unimailtrack._json import UntrustedJSONError, load_untrusted, stdlib_loads

REFERENCE = json.JSONDecoder(parse_constant=lambda name: _refuse(name))


def _refuse(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _outcome(decode: Any, text: str | bytes) -> tuple[str, Any]:
    try:
        return "value", decode(text)
    except ValueError:
        return "refused", None


SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
)
VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=30,
)
WHITESPACE = st.text(alphabet=" \t\n\r", max_size=3)


@settings(max_examples=400, deadline=None)
@given(value=VALUES, before=WHITESPACE, after=WHITESPACE, indent=st.none() | st.integers(0, 2))
def test_it_decodes_what_orjson_decodes_to_the_same_value(
    value: Any, before: str, after: str, indent: int | None
) -> None:
    body = (before + json.dumps(value, indent=indent) + after).encode()
    assert stdlib_loads(body) == orjson.loads(body) == value


# Texts near JSON: values cut short or followed by more, stray characters, constants.
NEAR_JSON = st.text(alphabet='{}[]":,0123456789.eE+-truefalsnNIiy \t\r\n\\ux', max_size=24)


@settings(max_examples=1000, deadline=None)
@given(
    text=NEAR_JSON | VALUES.map(json.dumps).flatmap(lambda t: st.just(t) | NEAR_JSON.map(t.__add__))
)
def test_it_accepts_and_refuses_exactly_what_the_decoder_does(text: str) -> None:
    assert _outcome(stdlib_loads, text) == _outcome(REFERENCE.decode, text)
    assert _outcome(stdlib_loads, text.encode()) == _outcome(REFERENCE.decode, text)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"   ",
        b'{"a": 1} {"b": 2}',
        b'{"a": 1}x',
        b"[1, 2",
        b"NaN",
        b"[Infinity]",
        b'{"a": -Infinity}',
        b"\xef\xbb\xbf{}",  # a UTF-8 byte order mark
        b'{"a": "\xff"}',  # not UTF-8
        b"'single'",
    ],
)
def test_what_is_not_json_is_a_value_error(body: bytes) -> None:
    with pytest.raises(
        ValueError, match=r"Expecting|Extra data|is not a JSON number|BOM|codec can't decode"
    ):
        stdlib_loads(body)


def test_whitespace_around_the_value_is_json() -> None:
    assert stdlib_loads(b'[{"event": "delivered"}]\r\n') == [{"event": "delivered"}]
    assert stdlib_loads(b' \t\n{"a": 1}') == {"a": 1}
    assert stdlib_loads("\n 7 \n") == 7


def test_extra_data_is_refused_with_the_decoders_own_message() -> None:
    with pytest.raises(json.JSONDecodeError, match="Extra data"):
        stdlib_loads(b'{"a": 1}\r\n{"b": 2}')


def test_every_kind_of_buffer_is_read() -> None:
    body = b'{"a": [1, "\xc3\xa9"]}'
    for given_as in (body, bytearray(body), memoryview(body), body.decode()):
        assert stdlib_loads(given_as) == {"a": [1, "é"]}


def test_the_bounds_hold_around_it() -> None:
    with pytest.raises(UntrustedJSONError):
        load_untrusted(b"[" * 65 + b"]" * 65, decode=stdlib_loads)
    assert load_untrusted(b"[" * 64 + b"]" * 64, decode=stdlib_loads) is not None
    with pytest.raises(UntrustedJSONError):
        load_untrusted(b'"' + b"a" * 100 + b'"', decode=stdlib_loads, max_bytes=50)
