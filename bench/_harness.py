"""Shared benchmark helpers: timing, and tables of rates with ratios to a reference.

Every figure a benchmark prints is a ratio against a reference measured in the same run, on
the same machine, so that the numbers mean something wherever they are run.
"""

from __future__ import annotations

import timeit
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Row:
    """One measured line: ``rate`` items per second of ``unit``."""

    label: str
    rate: float
    unit: str = "events/s"


def seconds_per_call(fn: Callable[[], object], *, repeat: int = 5, min_time: float = 0.2) -> float:
    """Best-of-``repeat`` seconds one call of ``fn`` takes (auto-ranged to ``min_time``)."""
    timer = timeit.Timer(fn)
    number = 1
    while True:
        elapsed = timer.timeit(number)
        if elapsed >= min_time:
            break
        number *= 2 if elapsed == 0 else max(2, int(min_time / elapsed) + 1)
    return min(timer.repeat(repeat=repeat, number=number)) / number


def rate(fn: Callable[[], object], items: int, **kwargs: float) -> float:
    """Items per second when one call of ``fn`` handles ``items`` items."""
    return items / seconds_per_call(fn, **kwargs)  # type: ignore[arg-type]


def print_table(title: str, rows: Sequence[Row], *, reference: str) -> None:
    """Print ``rows`` with each rate as a ratio of the row labelled ``reference``."""
    ref = next(r for r in rows if r.label == reference)
    width = max(len(r.label) for r in rows)
    print(f"\n{title}")
    print(f"  {'':{width}}  {'rate':>14}  {'vs ' + reference:>}")
    for r in rows:
        print(f"  {r.label:{width}}  {r.rate:>10,.0f} {r.unit:<3}  {r.rate / ref.rate:>6.2f}x")


def setup_django() -> None:
    """Configure a minimal Django so that django-anymail's webhook views can be used."""
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="bench",
            INSTALLED_APPS=["anymail"],
            ANYMAIL={
                "WEBHOOK_SECRET": "bench:bench",
                "MAILGUN_WEBHOOK_SIGNING_KEY": "bench",
                "AMAZON_SES_AUTO_CONFIRM_SNS_SUBSCRIPTIONS": False,
            },
            USE_TZ=True,
        )
        django.setup()
