"""Webhook parsing speed, per provider, against django-anymail and the JSON decoder alone.

Run with ``make bench`` (which installs django-anymail into a separate environment). Each
``bench/parse_<provider>.py`` module exposes ``measure() -> (title, rows, reference)``, its
rows measured in interleaved rounds with their ratio to django-anymail taken within each round.

The tables run twice: in a child process where orjson cannot be imported, so that both
libraries decode with the standard json module (the like-for-like rows), then in this process
with whatever is installed (orjson with the ``fast`` extra). The scorecard reads, per provider,
unimailtrack's parse as a multiple of django-anymail's in both, and prints the floor (the
decoder alone: the standard library's, and orjson's for the orjson targets) beside it.

Run with ``.venv-bench/bin/python bench/parse.py``.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

STDLIB = "--stdlib-json" in sys.argv
if STDLIB:
    sys.modules["orjson"] = None  # type: ignore[assignment]  # import orjson now fails

sys.path.insert(0, str(Path(__file__).parent))

from _harness import (  # noqa: E402 - after orjson is blocked
    JSON_LIBRARY,
    Target,
    print_table,
    record_targets,
    target_from_row,
)

PROVIDERS = ("sendgrid", "mailgun", "ses", "resend", "postmark", "brevo")
OURS = ("unimailtrack parse_webhook", f"unimailtrack parse, {JSON_LIBRARY}")
FLOOR = ("decode only", "json.loads alone")
FAST_FLOOR = ("decode only (orjson", "orjson.loads alone")
"""The floor of an orjson target: the same bodies decoded by orjson alone."""


def main() -> None:
    if not STDLIB:
        subprocess.run([sys.executable, __file__, "--stdlib-json"], check=True)
    targets: list[Target] = []
    for provider in PROVIDERS:
        try:
            module = importlib.import_module(f"parse_{provider}")
        except ModuleNotFoundError as exc:
            if exc.name != f"parse_{provider}":
                raise
            continue
        title, rows, reference = module.measure()
        print_table(title, rows, reference=reference)
        spread = getattr(module, "spread", None)
        if spread is not None:
            print(spread())
        ours = next(r for r in rows if r.label in OURS)
        fast = [r for r in rows if r.label.startswith(FAST_FLOOR)]
        floor = fast[0] if fast else next(r for r in rows if r.label.startswith(FLOOR))
        to_floor = tuple(f / o for f, o in zip(floor.ratios, ours.ratios, strict=True))
        note = (
            f"parse takes {sorted(to_floor)[len(to_floor) // 2]:.2f}x the time of decoding "
            f"the same body alone ({floor.label})"
        )
        least = next((r for r in rows if r.label.startswith("lower bound")), None)
        if least is not None:
            note += f"; {least.summary()} django-anymail"
        if JSON_LIBRARY == "stdlib json":
            wanted, what = 2.0, "both on stdlib json"
        else:
            wanted, what = 3.0, f"unimailtrack on {JSON_LIBRARY} (fast extra)"
        targets.append(
            target_from_row(f"{provider} parse / django-anymail, {what}", ours, wanted, note=note)
        )
    record_targets("parse_stdlib" if STDLIB else "parse", targets)


if __name__ == "__main__":
    main()
