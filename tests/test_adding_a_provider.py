"""docs/adding-a-provider.md runs as written: its adapter passes the contract suite."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).parent.parent / "docs" / "adding-a-provider.md"
BLOCK = re.compile(r"```python\n# (\w+\.py): [^\n]*\n(.*?)```", re.DOTALL)


def files() -> dict[str, str]:
    found: dict[str, str] = dict(BLOCK.findall(DOC.read_text(encoding="utf-8")))
    assert set(found) == {"acme_adapter.py", "test_acme_adapter.py"}
    return found


def test_the_guides_adapter_passes_the_contract(tmp_path: Path) -> None:
    for name, code in files().items():
        (tmp_path / name).write_text(code, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_acme_adapter.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    passed = re.search(r"(\d+) passed", done.stdout)
    assert passed is not None and int(passed.group(1)) >= 20, done.stdout
    assert "failed" not in done.stdout


def test_the_guides_adapter_lints_and_types_clean(tmp_path: Path) -> None:
    code = files()["acme_adapter.py"]
    (tmp_path / "acme_adapter.py").write_text(code, encoding="utf-8")
    bin_dir = Path(sys.executable).parent
    ruff = subprocess.run(
        [
            str(bin_dir / "ruff"),
            "check",
            "--select",
            "E,F,B",
            "--ignore",
            "E501",
            "acme_adapter.py",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert ruff.returncode == 0, ruff.stdout
    mypy = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "acme_adapter.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert mypy.returncode == 0, mypy.stdout
