"""pgmq, installed only when absent and never upgraded: the extension where the server
has it, otherwise the SQL-only install script the ``pgmq`` package ships."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from worker.core.database import Connection
from worker.core.queries import query


def pgmq_sql_path() -> Path:
    """The SQL-only pgmq install script shipped by the ``pgmq`` package on PyPI.

    Found without importing the package, whose client needs libpq.
    """
    spec = importlib.util.find_spec("pgmq")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the pgmq package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "sql" / "pgmq.sql"


def pgmq_sql_version() -> str:
    return (pgmq_sql_path().parent / "VERSION").read_text().strip()


async def install_pgmq(connection: Connection) -> str:
    installed = await connection.fetchval(query("pgmq_installed_version"))
    if installed is not None:
        return f"present ({installed})"
    if await connection.fetchval(query("pgmq_extension_available")):
        await connection.execute(query("create_pgmq_extension"))
        version = await connection.fetchval(query("pgmq_installed_version"))
        return f"extension {version}"
    await connection.execute(pgmq_sql_path().read_text())
    return f"sql-only {pgmq_sql_version()}"
