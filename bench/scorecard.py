"""One scorecard of every performance target: what each benchmark recorded, met or not met.

Each benchmark writes its targets (median ratio within rounds, min and max over the rounds,
the threshold) to ``bench/.results/<benchmark>.json``; this prints them all, in the order
below, and says which benchmark has not run. ``make bench`` runs it last.

Run with ``.venv-bench/bin/python bench/scorecard.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _harness import RESULTS, Target

BENCHMARKS = (
    "import_time",
    "parse_stdlib",
    "parse",
    "send",
    "verify",
    "ingest",
    "webhook",
    "queue_drain",
    "queue_partitions",
)


def main() -> int:
    print("\nScorecard (each value: the median over rounds of a ratio taken within a round)")
    width = 78
    missing = []
    met = total = 0
    for name in BENCHMARKS:
        path = RESULTS / f"{name}.json"
        if not path.exists():
            missing.append(name)
            continue
        for item in json.loads(path.read_text()):
            t = Target(**item)
            total += 1
            met += t.met
            sign = ">=" if t.at_least else "<="
            figure = f"{t.value:6.3f}{t.unit} [{t.low:.2f}..{t.high:.2f}] {sign} {t.threshold:g}"
            status = "met" if t.met else "NOT MET"
            print(f"  {name:<11} {t.target:<{width}} {figure:<30} {status}")
            if t.note:
                print(f"  {'':<11}   {t.note}")
    for name in missing:
        print(f"  {name:<11} {'(not run)':<{width}}")
    print(
        f"\n  {met} of {total} targets met"
        + (f"; not run: {', '.join(missing)}" if missing else "")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
