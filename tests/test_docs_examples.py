"""The applications in docs/integrations.md run as written: each is saved as ``app.py``, driven
through its framework's test client with the in-process provider, and must send an invitation,
take its signed webhook and show the new badge."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

from unimailtrack.adapters import MemoryAdapter

DOC = Path(__file__).parent.parent / "docs" / "integrations.md"
BLOCK = re.compile(r"```python\n(# app\.py: [^\n]+\n.*?)```", re.DOTALL)
FRAMEWORKS = ("fastapi", "starlette", "flask", "django")


def example(framework: str) -> str:
    """The complete example for ``framework`` (the document gives them in FRAMEWORKS order)."""
    blocks = [m[1] for m in BLOCK.finditer(DOC.read_text(encoding="utf-8"))]
    assert len(blocks) == len(FRAMEWORKS)
    found = blocks[FRAMEWORKS.index(framework)]
    assert f"from {framework}" in found or f"import {framework}" in found
    return found


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("UNIMAILTRACK_DSN", "memory://")
    return tmp_path


@pytest.fixture
def load(workdir: Path) -> Iterator[Callable[[str], ModuleType]]:
    """Import an example as a module of its own; its tracker is closed afterwards."""
    loaded: list[ModuleType] = []

    def load(framework: str) -> ModuleType:
        path = workdir / f"app_{framework}.py"
        path.write_text(example(framework), encoding="utf-8")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        loaded.append(module)
        return module

    yield load
    for module in loaded:
        module.tracker.close()


def delivered_webhook(module: ModuleType, tracking_id: str) -> tuple[bytes, dict[str, str]]:
    memory: MemoryAdapter = module.mailer.adapters["memory"]
    return memory.webhook(memory.scenario(tracking_id, "delivered"))


def test_the_fastapi_example(load: Callable[[str], ModuleType]) -> None:
    from fastapi.testclient import TestClient

    module = load("fastapi")
    with TestClient(module.app) as client:
        tid = client.post("/invitations", params={"address": "ann@example.com"}).json()[
            "tracking_id"
        ]
        assert client.get(f"/invitations/{tid}").status_code == 404
        body, headers = delivered_webhook(module, tid)
        assert client.post("/email/webhooks/memory", content=body, headers=headers).is_success
        assert client.get(f"/invitations/{tid}").json()["status"] == "delivered"
        assert "/email/webhooks/{provider}" in client.get("/openapi.json").json()["paths"]


def test_the_starlette_example(load: Callable[[str], ModuleType]) -> None:
    from starlette.testclient import TestClient

    module = load("starlette")
    with TestClient(module.app) as client:
        tid = client.post("/invite/ann@example.com").json()["tracking_id"]
        body, headers = delivered_webhook(module, tid)
        assert client.post("/email/webhooks/memory", content=body, headers=headers).is_success
        assert client.get(f"/email/api/sends/{tid}").json()["status"] == "delivered"


def test_the_flask_example(load: Callable[[str], ModuleType]) -> None:
    module = load("flask")
    client = module.app.test_client()
    tid = client.post("/invite/ann@example.com").get_json()["tracking_id"]
    body, headers = delivered_webhook(module, tid)
    assert client.post("/email/webhooks/memory", data=body, headers=headers).status_code == 200
    assert client.get(f"/invite/{tid}").get_json()["status"] == "delivered"


DJANGO_DRIVER = """
import json, sys
sys.path.insert(0, ".")
import app
from django.test import Client
from unimailtrack import Email

memory = app.receiver.adapters["memory"]
tid = memory.send(Email(sender="e@example.com", to=["ann@example.com"], text="x")).recipients[0]
body, headers = memory.webhook(memory.scenario(tid.tracking_id, "delivered"))
client = Client(enforce_csrf_checks=True)
posted = client.post("/email/webhooks/memory", data=body, content_type="application/json",
                     headers=headers)
badge = client.get(f"/invitations/{tid.tracking_id}").json()
app.tracker.close()
print(json.dumps([posted.status_code, badge["status"]]))
"""


def test_the_django_example(workdir: Path) -> None:
    (workdir / "app.py").write_text(example("django"), encoding="utf-8")
    run = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(DJANGO_DRIVER)],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == '[200, "delivered"]'
    check = subprocess.run(
        [sys.executable, "app.py", "check"], cwd=workdir, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr


SUPPRESSION_DOC = Path(__file__).parent.parent / "docs" / "suppression.md"


def test_the_suppression_guide_examples_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every python block of docs/suppression.md that is not marked as a fragment runs."""
    import runpy

    monkeypatch.chdir(tmp_path)
    text = SUPPRESSION_DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    runnable = [b for b in blocks if not b.startswith("# fragment")]
    assert len(runnable) >= 2
    for number, block in enumerate(runnable):
        path = tmp_path / f"suppression_example_{number}.py"
        path.write_text(block, encoding="utf-8")
        runpy.run_path(str(path), run_name="__doc_example__")
