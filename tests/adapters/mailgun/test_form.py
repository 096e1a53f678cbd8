"""Reading a legacy form body: ``form_pairs`` gives exactly what ``parse_qsl`` gives.

The fast path decodes percent escapes with ``binascii.a2b_qp``; these tests hold it to the
standard library's reading on every kind of text that could tell them apart: escapes cut
short or not hexadecimal, a literal ``=`` inside a value, ``+`` for a space, line breaks,
NUL, underscores (which quoted-printable headers read as spaces), and text that is not ASCII.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, quote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unimailtrack import PayloadError
from unimailtrack.adapters.mailgun.body import MAX_FORM_FIELDS, decode_body, form_pairs

ESCAPES = ["%2", "%20", "%3D", "%3d", "%C3%A9", "%c3", "%zz", "%%", "=%41", "%0A", "%0D%0A"]
PIECES = st.sampled_from([*"%=&+_ \t\r\n\x00aAfF09gGz;é☃", *ESCAPES, "%E2%98", "%ff", "=="])


def standard(text: str) -> list[tuple[str, str]]:
    return parse_qsl(text, keep_blank_values=True)


@settings(max_examples=3000, deadline=None)
@given(st.lists(PIECES, max_size=40).map("".join))
def test_any_text_reads_as_parse_qsl_reads_it(text: str) -> None:
    assert form_pairs(text) == standard(text)


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=12), st.text(max_size=40)), max_size=8))
def test_encoded_fields_come_back_as_they_were(fields: list[tuple[str, str]]) -> None:
    text = "&".join(f"{quote_plus(k)}={quote_plus(v)}" for k, v in fields)
    assert form_pairs(text) == standard(text) == fields


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a=1%3D2", [("a", "1=2")]),  # an encoded = in a value
        ("a=b==&c", [("a", "b=="), ("c", "")]),  # a literal = and a name with no value
        ("a=b=%41=", [("a", "b=A=")]),  # a literal = beside an escape
        ("a=%zz%41", [("a", "%zzA")]),  # an escape that is not one stays as it is
        ("a=%4", [("a", "%4")]),  # an escape cut short at the end
        ("x_y=a_b+c", [("x_y", "a_b c")]),  # an underscore is itself, a plus a space
        ("a=%C3", [("a", "\ufffd")]),  # half a UTF-8 character: the replacement character
        ("a=%E2%98%83&&b=%0D%0A", [("a", "☃"), ("b", "\r\n")]),
        ("", []),
    ],
)
def test_edge_cases(text: str, expected: list[tuple[str, str]]) -> None:
    assert form_pairs(text) == standard(text) == expected


def test_a_form_of_too_many_fields_is_refused_before_it_is_read() -> None:
    assert len(form_pairs("&".join(["a=1"] * MAX_FORM_FIELDS))) == MAX_FORM_FIELDS
    with pytest.raises(PayloadError, match="more than 1000 fields"):
        form_pairs("&".join(["a=%41"] * (MAX_FORM_FIELDS + 1)))
    with pytest.raises(PayloadError, match="more than 1000 fields"):  # empty fields count too
        decode_body(b"&" * MAX_FORM_FIELDS, {"Content-Type": "application/x-www-form-urlencoded"})
