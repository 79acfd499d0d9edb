"""``stats-worker migrate``: pgmq, the queue, and the project's numbered migrations.

Safe to run on every start and from several replicas at once: everything happens
under one advisory lock, pgmq is installed only when absent, and each migration
applies once, recorded in ``stats_worker.schema_migrations``.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, field
from pathlib import Path

from worker.database import Connection
from worker.queries import migrations, query

log = logging.getLogger(__name__)


@dataclass
class MigrationReport:
    pgmq: str = ""
    """How pgmq got here: 'present (…)', 'extension' or 'sql-only …'."""
    queue_created: bool = False
    applied: list[str] = field(default_factory=list)


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
        return "extension"
    async with connection.transaction():
        await connection.execute(pgmq_sql_path().read_text())
    return f"sql-only {pgmq_sql_version()}"


async def ensure_queue(connection: Connection, queue_name: str) -> bool:
    """Create the queue and its insert NOTIFY if missing; True when created."""
    created = False
    async with connection.transaction():
        if not await connection.fetchval(query("queue_exists"), queue_name):
            await connection.execute(query("create_queue"), queue_name)
            created = True
        if not await connection.fetchval(query("notify_insert_enabled"), queue_name):
            await connection.execute(query("enable_notify_insert"), queue_name)
    return created


async def apply_migrations(connection: Connection) -> list[str]:
    await connection.execute(query("create_migrations_table"))
    applied = {row["version"] for row in await connection.fetch(query("applied_migrations"))}
    newly_applied = []
    for migration in migrations():
        if migration.version in applied:
            continue
        async with connection.transaction():
            await connection.execute(migration.sql)
            await connection.execute(query("record_migration"), migration.version, migration.name)
        log.info("applied migration", extra={"migration": migration.name})
        newly_applied.append(migration.name)
    return newly_applied


async def migrate(connection: Connection, queue_name: str) -> MigrationReport:
    """Bring the database up to date for a worker on ``queue_name``."""
    await connection.execute(query("migrate_lock"))
    try:
        report = MigrationReport(pgmq=await install_pgmq(connection))
        report.queue_created = await ensure_queue(connection, queue_name)
        report.applied = await apply_migrations(connection)
        await connection.execute(query("set_config"), "queue_name", queue_name)
    finally:
        await connection.execute(query("migrate_unlock"))
    return report
