"""Webhook parsing speed, per provider, against django-anymail and ``json.loads``.

Run with ``make bench`` (which installs django-anymail into a separate environment). Each
``bench/parse_<provider>.py`` module exposes ``measure() -> (title, rows, reference)``.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _harness import print_table

PROVIDERS = ("sendgrid", "mailgun", "ses", "resend", "postmark", "brevo")


def main() -> None:
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


if __name__ == "__main__":
    main()
