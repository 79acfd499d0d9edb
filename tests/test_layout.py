"""The package layout: import-linter's contracts (pyproject.toml) hold, and they bite.

The layers are STYLE.md's habit 1 made checkable: cli > demo, soak, bench > app >
web | upkeep | schema > callback > queue | stats > core, with no cycle anywhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "worker"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
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
