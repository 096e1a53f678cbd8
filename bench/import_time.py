"""How long ``import unimailtrack`` takes, against ``import httpx, pydantic`` in one process.

Each round starts a fresh interpreter per contender (in rotating order) and times the import
statement inside it by the process's CPU time (importing is CPU work once the files are cached,
and CPU time does not count the waits of a busy machine), so interpreter start-up is left
out; the ratio is taken within the round. ``import httpx, pydantic`` is the reference: the two
libraries every send builds on. The table shows min / median / max of the per-round ratios.

Both import from bytecode, as installed packages do: pip compiles a wheel's modules when it
installs them, so httpx and pydantic arrive with their ``.pyc`` files, while a checkout of
unimailtrack (an editable install) has them only once an import has written them, which
``PYTHONDONTWRITEBYTECODE`` prevents. So the package is compiled first (``compileall``, which
writes whatever that variable says); otherwise every round would time compiling its modules
from source, which no installed copy does.

Run with ``.venv-bench/bin/python bench/import_time.py`` (``--rounds N``, default 21).
"""

from __future__ import annotations

import compileall
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _harness import print_table, record_targets, rounds, target_from_row

ROUNDS = 21
REFERENCE = "import httpx, pydantic"
OURS = "import unimailtrack"


def imports_per_second(statement: str) -> float:
    """1 / seconds the ``statement`` takes in a fresh interpreter."""
    code = (
        "import time\n"
        "started = time.process_time()\n"
        f"{statement}\n"
        "print(time.process_time() - started)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return 1 / float(out.stdout)


def _compile_package() -> None:
    """Write the package's bytecode, as installing it from a wheel does."""
    found = subprocess.run(
        [sys.executable, "-c", "import unimailtrack; print(unimailtrack.__path__[0])"],
        capture_output=True,
        text=True,
        check=True,
    )
    if not compileall.compile_dir(found.stdout.strip(), quiet=1):
        raise SystemExit("the package did not compile")


def main() -> None:
    count = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else ROUNDS
    _compile_package()
    rows = rounds(
        {
            REFERENCE: lambda: imports_per_second("import httpx, pydantic"),
            OURS: lambda: imports_per_second("import unimailtrack"),
        },
        reference=REFERENCE,
        count=count,
        unit="/s",
    )
    print_table(
        f"Import time in a fresh interpreter, {count} rounds (rate: imports per second)",
        rows,
        reference=REFERENCE,
    )
    ours = next(r for r in rows if r.label == OURS)
    for row in rows:
        print(f"  {row.label}: {1000 / row.rate:.1f} ms (median)")
    record_targets(
        "import_time",
        [
            # a time ratio: the reference's rate over ours
            target_from_row(
                "import unimailtrack / import httpx, pydantic (time)",
                type(ours)(ours.label, ours.rate, ours.unit, tuple(1 / r for r in ours.ratios)),
                1.15,
                at_least=False,
            )
        ],
    )


if __name__ == "__main__":
    main()
