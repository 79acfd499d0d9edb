"""``./dev``, the project's one entry point: without a command, its help and nothing else."""

from __future__ import annotations

import subprocess

import pytest

from tests.support import ROOT

DEV = ROOT / "dev"
EXIT_USAGE = 2
"""What ``./dev`` exits with when it is not told a command it knows: a usage error."""


def _help_as_written() -> list[str]:
    """The comment block under the shebang, without its ``# ``: the script's help."""
    shown = []
    for line in DEV.read_text().splitlines()[1:]:
        if not line.startswith("#"):
            break
        shown.append(line.removeprefix("#").removeprefix(" "))
    return shown


@pytest.mark.parametrize("argv", [[], ["no-such-command"]], ids=["no-argument", "unknown"])
def test_dev_without_a_known_command_prints_its_help_and_nothing_else(argv):
    result = subprocess.run(
        ["bash", str(DEV), *argv],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == EXIT_USAGE, result.stderr
    help_text = _help_as_written()
    assert help_text[0].startswith("The project's one entry point.")
    assert any(line.lstrip().startswith("./dev check") for line in help_text)
    assert result.stdout.splitlines() == help_text
    assert result.stderr == ""
