"""The package layout: import-linter's contracts (pyproject.toml) hold, and they bite.

The layers are STYLE.md's habit 1 made checkable: cli > demo, soak, bench > app >
web | upkeep | schema > callback > queue | stats > core, with no cycle anywhere.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "worker"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
README = ROOT / "README.md"
WORKER_PATH = re.compile(r"(?<![\w-])worker/(?:\w+/)*(?:\w+\.py\b)?")
"""A module or package path as the docs write it: worker/queue/consumer.py, worker/cli/."""
BOX = re.compile(r"^\s*\w+\[\"(.*?)\"\]", re.MULTILINE)
"""A Mermaid node with a quoted label: ``consumer["worker/queue/consumer.py<br/>..."]``."""
MODULE_LINES_LIMIT = 300
"""STYLE.md says near 250; past this a module is surely two."""


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the ``worker`` package under ``root`` (no cache: a fresh graph)."""
    environment = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"],
        cwd=root,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_import_contracts_hold():
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def _copy_of_the_package(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(WORKER, tmp_path / "worker", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_a_function_local_upward_import_breaks_the_layers(tmp_path):
    """Hidden inside a function or not, core reaching up for the worker is refused."""
    root = _copy_of_the_package(tmp_path)
    waits = root / "worker" / "core" / "waits.py"
    waits.write_text(
        waits.read_text()
        + "\n\ndef _upward() -> object:\n    from worker.app import Worker\n\n    return Worker\n"
    )
    result = _lint_imports(root)
    assert result.returncode != 0
    assert "worker.core.waits -> worker.app" in result.stdout, result.stdout


def test_a_cycle_between_the_queue_and_the_statistics_is_refused(tmp_path):
    root = _copy_of_the_package(tmp_path)
    handler = root / "worker" / "stats" / "handler.py"
    handler.write_text(handler.read_text() + "\n\nfrom worker.queue import jobs  # noqa: E402\n")
    result = _lint_imports(root)
    assert result.returncode != 0
    assert "worker.stats.handler -> worker.queue.jobs" in result.stdout, result.stdout


def test_no_module_is_much_past_250_lines():
    long = {
        str(path.relative_to(ROOT)): lines
        for path in sorted(WORKER.rglob("*.py"))
        if (lines := len(path.read_text().splitlines())) > MODULE_LINES_LIMIT
    }
    assert long == {}, f"split these by responsibility: {long}"


def _diagram() -> str:
    """The Mermaid block of README's "How it works"."""
    section = README.read_text().split("\n## How it works\n", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"```mermaid\n(.*?)```", section, re.DOTALL)
    assert found is not None, "README's 'How it works' has no mermaid block"
    return found.group(1)


def test_every_module_the_diagram_names_exists():
    named = set(WORKER_PATH.findall(_diagram()))
    assert len(named) > 10
    assert sorted(path for path in named if not (ROOT / path).exists()) == []


def test_each_module_of_the_diagram_has_one_box():
    boxes = [WORKER_PATH.findall(label) for label in BOX.findall(_diagram())]
    paths = [path for box in boxes for path in box]
    assert sorted({path for path in paths if paths.count(path) > 1}) == []


def test_every_top_level_package_and_module_is_in_the_diagram():
    named = set(WORKER_PATH.findall(_diagram()))
    top = [
        f"worker/{entry.name}/" if entry.is_dir() else f"worker/{entry.name}"
        for entry in sorted(WORKER.iterdir())
        if (entry / "__init__.py").is_file() or (entry.suffix == ".py" and entry.stem != "__init__")
    ]
    missing = [entry for entry in top if not any(path.startswith(entry) for path in named)]
    assert missing == [], f"add these to README's diagram: {missing}"


def test_every_worker_path_the_docs_name_exists():
    docs = [README, *sorted((ROOT / "docs").glob("*.md"))]
    named = {(doc.name, path) for doc in docs for path in WORKER_PATH.findall(doc.read_text())}
    assert sorted((doc, path) for doc, path in named if not (ROOT / path).exists()) == []
