"""How long ``import unimailtrack`` takes, against ``import pydantic`` and a bare interpreter.

Each figure is the median of fresh interpreters, measured with ``-X importtime``.
"""

from __future__ import annotations

import statistics
import subprocess
import sys

RUNS = 15


def import_us(module: str) -> float:
    samples = []
    for _ in range(RUNS):
        out = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", f"import {module}"],
            capture_output=True,
            text=True,
            check=True,
        ).stderr
        line = next(x for x in reversed(out.splitlines()) if x.rstrip().endswith(f"| {module}"))
        samples.append(int(line.split("|")[1]))
    return statistics.median(samples)


def main() -> None:
    ours = import_us("unimailtrack")
    pydantic = import_us("pydantic")
    httpx = import_us("httpx")
    print(f"import unimailtrack  {ours / 1000:7.1f} ms")
    print(
        f"import pydantic      {pydantic / 1000:7.1f} ms  (unimailtrack is {ours / pydantic:.2f}x)"
    )
    print(f"import httpx         {httpx / 1000:7.1f} ms  (unimailtrack is {ours / httpx:.2f}x)")


if __name__ == "__main__":
    main()
