"""Shared benchmark helpers: rounds of interleaved contenders, ratios within each round, and
the scorecard every benchmark adds its targets to.

Every figure a benchmark prints is a ratio against a reference measured in the same round, on
the same machine: each round runs every contender once, in an order that rotates from round to
round, and divides each contender's rate by the reference's rate of that same round. A busy
spell on a shared machine then slows a round's contenders alike instead of one row's best.
The tables print the median rate and the min / median / max of the per-round ratios.

Targets go to the scorecard (``record_target``): one JSON file per benchmark under
``bench/.results/`` (or ``$UNIMAILTRACK_BENCH_RESULTS``), which ``bench/scorecard.py`` prints
as one table with met / not met.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import time
import timeit
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path


def _json_library() -> str:
    from unimailtrack import _json

    return "orjson" if getattr(_json.loads, "__module__", None) == "orjson" else "stdlib json"


JSON_LIBRARY = _json_library()
"""The decoder unimailtrack's webhook parsing uses in this process."""

RESULTS = Path(os.environ.get("UNIMAILTRACK_BENCH_RESULTS", Path(__file__).parent / ".results"))


@dataclass(frozen=True, slots=True)
class Row:
    """One measured line: ``rate`` items per second of ``unit`` (the median over rounds), and
    its ratio to the reference in each round."""

    label: str
    rate: float
    unit: str = "events/s"
    ratios: tuple[float, ...] = field(default=())

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    def summary(self) -> str:
        """``label: median x [min..max]`` of the ratios, for a target's note."""
        return f"{self.label}: {self.ratio:.2f}x [{min(self.ratios):.2f}..{max(self.ratios):.2f}]"


def seconds_per_call(fn: Callable[[], object], *, repeat: int = 3, min_time: float = 0.1) -> float:
    """Best-of-``repeat`` seconds one call of ``fn`` takes (auto-ranged to ``min_time``): one
    contender's measurement within a round.

    With the cyclic garbage collector on, as an application runs it: ``timeit`` turns it off
    unless its setup turns it on again, and a parser that builds many objects would then be
    timed without the collections they cause."""
    timer = timeit.Timer(fn, setup="gc.enable()", globals={"gc": gc})
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


def rounds(
    contenders: Mapping[str, Callable[[], float]],
    *,
    reference: str,
    count: int,
    unit: str = "events/s",
) -> list[Row]:
    """Run ``count`` rounds of every contender (each returns its rate in that run), the order
    rotating every round; each row carries its ratio to ``reference`` per round."""
    labels = list(contenders)
    measured: dict[str, list[float]] = {label: [] for label in labels}
    ratios: dict[str, list[float]] = {label: [] for label in labels}
    for number in range(count):
        shift = number % len(labels)
        order = labels[shift:] + labels[:shift]
        if number % 2:
            order.reverse()  # rotate and alternate direction: no row always follows another
        got = {label: contenders[label]() for label in order}
        for label in labels:
            measured[label].append(got[label])
            ratios[label].append(got[label] / got[reference])
    return [
        Row(label, statistics.median(measured[label]), unit, tuple(ratios[label]))
        for label in labels
    ]


def timed_rate(fn: Callable[[], object], items: int, **kwargs: float) -> Callable[[], float]:
    """A contender for ``rounds``: the rate of ``fn`` handling ``items`` items."""
    return lambda: rate(fn, items, **kwargs)


def once_rate(fn: Callable[[], object], items: int) -> Callable[[], float]:
    """A contender for ``rounds`` whose one call is long enough to time by itself."""

    def run() -> float:
        started = time.perf_counter()
        fn()
        return items / (time.perf_counter() - started)

    return run


def print_table(title: str, rows: Sequence[Row], *, reference: str) -> None:
    """Print ``rows``: the median rate, and the min / median / max of each row's per-round
    ratio to ``reference`` (rows measured without rounds show their ratio of rates)."""
    ref = next(r for r in rows if r.label == reference)
    width = max(len(r.label) for r in rows)
    rounds_done = max((len(r.ratios) for r in rows), default=0)
    print(f"\n{title}")
    what = f"ratio to {reference!r}" + (
        f": min / median / max over {rounds_done} rounds" if rounds_done else ""
    )
    print(f"  {'':{width}}  {'median rate':>16}  {what}")
    for r in rows:
        if r.ratios:
            spread = f"{min(r.ratios):6.2f}x {r.ratio:6.2f}x {max(r.ratios):6.2f}x"
        else:
            spread = f"{'':8}{r.rate / ref.rate:6.2f}x"
        print(f"  {r.label:{width}}  {r.rate:>10,.0f} {r.unit:<5}  {spread}")


@dataclass(frozen=True, slots=True)
class Target:
    """One target of the scorecard: ``value`` (a median ratio) against ``threshold``."""

    target: str
    value: float
    low: float
    high: float
    threshold: float
    at_least: bool = True
    unit: str = "x"
    note: str = ""

    @property
    def met(self) -> bool:
        return self.value >= self.threshold if self.at_least else self.value <= self.threshold


def target_from_row(
    target: str, row: Row, threshold: float, *, at_least: bool = True, note: str = ""
) -> Target:
    """A target read from a row's per-round ratios."""
    return Target(
        target, row.ratio, min(row.ratios), max(row.ratios), threshold, at_least, note=note
    )


def inverse_target(
    target: str, row: Row, threshold: float, *, at_least: bool = False, note: str = ""
) -> Target:
    """A target on how many times the reference's time ``row`` takes (1 / its ratio)."""
    times = [1 / r for r in row.ratios]
    return Target(
        target,
        statistics.median(times),
        min(times),
        max(times),
        threshold,
        at_least,
        note=note,
    )


def record_targets(benchmark: str, targets: Sequence[Target]) -> None:
    """Write ``benchmark``'s targets for ``bench/scorecard.py`` (replacing its last ones)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{benchmark}.json"
    path.write_text(json.dumps([asdict(t) for t in targets], indent=1) + "\n")
    for t in targets:
        print(
            f"  target: {t.target}: {t.value:.2f}{t.unit} (min {t.low:.2f}, max {t.high:.2f}) "
            f"{'>=' if t.at_least else '<='} {t.threshold:g}{t.unit}: "
            f"{'met' if t.met else 'NOT MET'}"
        )


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
