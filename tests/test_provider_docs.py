"""Every Python example of the Resend, Postmark and Brevo guides runs as written and prints
what the guide says it prints."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).parent.parent / "docs" / "providers"
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)
EXAMPLES = [
    (path.name, index, code)
    for path in (DOCS / "resend.md", DOCS / "postmark.md", DOCS / "brevo.md")
    for index, code in enumerate(BLOCK.findall(path.read_text(encoding="utf-8")))
]


@pytest.mark.parametrize(("doc", "index", "code"), EXAMPLES, ids=lambda v: str(v)[:20])
def test_the_example_runs_and_prints_what_it_says(doc: str, index: int, code: str) -> None:
    promised = [line[2:] for line in code.splitlines() if line.startswith("# ")]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, f"{doc}[{index}]", "exec"), {"__name__": f"doc_{index}"})  # noqa: S102
    assert out.getvalue().splitlines() == promised


def test_each_guide_has_runnable_examples() -> None:
    assert {doc for doc, _, _ in EXAMPLES} == {"resend.md", "postmark.md", "brevo.md"}
