"""``stats-worker migrate``: pgmq, the schema, the queue, the app's indexes, the backfill.

Safe to run on every start, from several replicas at once and through a
transaction pooler: the schema part is one transaction under a
transaction-scoped advisory lock (a session lock would stay with whichever
server connection a pooler handed out). pgmq is installed only when absent and
never upgraded; each migration applies once, recorded in
``stats_worker.schema_migrations``; then each file of ``sql/stats`` (the
statistics' functions) whose checksum differs from the one recorded in
``stats_worker.stat_definitions`` is applied again. Then, outside that transaction, the indexes
the statistics need on the app's tables are built ``CONCURRENTLY`` (the app
keeps writing), and tenants whose completed matches have no statistics yet are
backfilled one at a time.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from worker.core.database import Connection
from worker.core.queries import migrations, query, stat_definitions
from worker.queue.priorities import bulk_queue_name
from worker.stats.backfill import backfill_pending

log = logging.getLogger(__name__)


class MigrateError(Exception):
    """migrate cannot go on; the message is one line that says how to fix it."""


@dataclass
class MigrationReport:
    pgmq: str = ""
    """How pgmq got here: 'present (…)', 'extension …' or 'sql-only …'."""
    queue_created: bool = False
    applied: list[str] = field(default_factory=list)
    definitions: list[str] = field(default_factory=list)
    """The files of ``sql/stats`` applied because they were new or had changed."""
    indexes_created: list[str] = field(default_factory=list)
    backfilled_tenants: int = 0
    moved_from_queue: str | None = None
    """The queue the triggers sent to before ``--move-queue`` re-pointed them."""


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


async def apply_migrations(connection: Connection) -> list[str]:
    await connection.execute(query("create_migrations_table"))
    applied = {row["version"] for row in await connection.fetch(query("applied_migrations"))}
    newly_applied = []
    for migration in migrations():
        if migration.version in applied:
            continue
        await connection.execute(migration.sql)
        await connection.execute(query("record_migration"), migration.version, migration.name)
        newly_applied.append(migration.name)
    return newly_applied


async def apply_stat_definitions(connection: Connection) -> list[str]:
    await connection.execute(query("create_stat_definitions_table"))
    rows = await connection.fetch(query("stat_definition_checksums"))
    recorded: dict[str, str] = {row["name"]: row["checksum"] for row in rows}
    newly_applied = []
    for definition in stat_definitions():
        if recorded.get(definition.name) == definition.checksum:
            continue
        await connection.execute(definition.sql)
        await connection.execute(
            query("record_stat_definition"), definition.name, definition.checksum
        )
        newly_applied.append(definition.name)
    return newly_applied


async def ensure_queue(connection: Connection, queue_name: str) -> bool:
    """Create the queue if missing and install the worker's insert NOTIFY; True when created."""
    created = False
    if not await connection.fetchval(query("queue_exists"), queue_name):
        await connection.execute(query("create_queue"), queue_name)
        created = True
    await connection.execute(query("install_queue_notify"), queue_name)
    return created


async def grant_read_roles(connection: Connection, roles: Sequence[str]) -> None:
    for role in roles:
        if not await connection.fetchval(query("role_exists"), role):
            raise MigrateError(f"STATS_READ_ROLES: role {role!r} does not exist")
        await connection.execute(query("grant_stats_read"), role)


async def check_queue_identity(connection: Connection, queue_name: str, move: bool) -> str | None:
    """The queue the app's triggers send to now, if ``queue_name`` is another one.

    A worker started with another ``QUEUE_NAME`` must not silently re-point the
    app's triggers (the workers on the old queue would starve): that takes
    ``migrate --move-queue``.
    """
    if not await connection.fetchval(query("config_exists")):
        return None  # not migrated yet
    current = await connection.fetchval(query("configured_queue"))
    if current is None or current == queue_name:
        return None
    if not move:
        raise MigrateError(
            f"QUEUE_NAME is {queue_name!r} but this database's triggers send to {current!r}: "
            f"run `stats-worker migrate --move-queue` with QUEUE_NAME={queue_name} to re-point "
            f"them (messages already in {current!r} stay there), or set QUEUE_NAME={current}"
        )
    return str(current)


async def _migrate_schema(
    connection: Connection,
    queue_name: str,
    read_roles: Sequence[str],
    report: MigrationReport,
    move_queue: bool,
) -> None:
    async with connection.transaction():
        await connection.execute(query("migrate_xact_lock"))
        report.moved_from_queue = await check_queue_identity(connection, queue_name, move_queue)
        report.pgmq = await install_pgmq(connection)
        report.applied = await apply_migrations(connection)
        report.definitions = await apply_stat_definitions(connection)
        report.queue_created = await ensure_queue(connection, queue_name)
        await ensure_queue(connection, bulk_queue_name(queue_name))
        await grant_read_roles(connection, read_roles)
        await connection.execute(query("set_config"), "queue_name", queue_name)
    for name in report.applied:  # once committed: a refused migrate applied nothing
        log.info("applied migration", extra={"migration": name})
    for name in report.definitions:
        log.info("applied statistics definition", extra={"definition": f"sql/stats/{name}.sql"})


_RACING_INDEX_BUILDS = (
    asyncpg.DeadlockDetectedError,
    asyncpg.InternalServerError,  # "tuple concurrently updated" of two DDLs on one table
    asyncpg.ObjectInUseError,
)
INDEX_BUILD_TRIES = 6
"""Two concurrent index builds on one table deadlock (each waits for the other's
transaction); PostgreSQL cancels one, which tries again once the other is done."""


async def ensure_app_indexes(connection: Connection) -> list[str]:
    """Build the indexes the statistics need on the app's tables, without blocking it.

    ``CREATE INDEX CONCURRENTLY`` cannot run in a transaction, so each is its
    own statement; an index whose columns an existing valid index already leads
    with is not built again, and an invalid one (an interrupted build) is
    rebuilt unless a build of it is running right now. Replicas that migrate
    together may collide; the one PostgreSQL cancels tries again.
    """
    created: list[str] = []
    for attempt in range(1, INDEX_BUILD_TRIES + 1):
        try:
            await _build_missing_indexes(connection, created)
            return created
        except _RACING_INDEX_BUILDS:
            if attempt == INDEX_BUILD_TRIES:
                raise
            log.info("another migrate is building an index; trying again")
            await asyncio.sleep(0.2 * 2**attempt * random.uniform(0.5, 1.0))
    return created


async def _build_missing_indexes(connection: Connection, created: list[str]) -> None:
    for wanted in await connection.fetch(query("missing_app_indexes")):
        name = wanted["name"]
        if wanted["invalid"]:
            if wanted["building"]:
                continue  # another migrate is building it
            log.warning("rebuilding an invalid index", extra={"index": name})
            await connection.execute(wanted["drop_sql"])
        log.info("creating index concurrently", extra={"index": name})
        try:
            await connection.execute(wanted["create_sql"])
        except asyncpg.InsufficientPrivilegeError:
            log.warning(
                "cannot create an index on the app's table (only its owner can); "
                "statistics stay right but slower. Ask the owner to run: "
                f"{wanted['create_sql']}",
                extra={"index": name},
            )
            continue
        except asyncpg.DuplicateTableError:
            continue  # another migrate created it at the same moment
        created.append(name)


async def migrate(
    connection: Connection,
    queue_name: str,
    *,
    read_roles: Sequence[str] = (),
    backfill: bool = True,
    move_queue: bool = False,
) -> MigrationReport:
    """Bring the database up to date for a worker on ``queue_name``."""
    report = MigrationReport()
    role = await connection.fetchval(query("current_role"))
    try:
        await _migrate_schema(connection, queue_name, read_roles, report, move_queue)
        report.indexes_created = await ensure_app_indexes(connection)
    except asyncpg.InsufficientPrivilegeError as exc:
        raise MigrateError(privilege_hint(str(exc), role, queue_name)) from None
    if backfill:
        report.backfilled_tenants = await backfill_pending(connection)
    return report


_OBJECT = re.compile(r"(?:permission denied for|must be owner of) (\w+) ([\w.\"]+)")


def privilege_hint(error: str, role: str, queue_name: str) -> str:
    """One line: what was refused, and the GRANT (run by its owner) that fixes it."""
    match = _OBJECT.search(error)
    kind, name = (match.group(1), match.group(2)) if match else ("", "")
    if kind == "extension" or (kind == "schema" and name == "pgmq") or "pgmq" in name:
        fix = (
            f"pgmq belongs to another role: as a superuser (or the extension's owner) run "
            f"SELECT pgmq.create('{queue_name}'); "
            f"SELECT pgmq.create('{bulk_queue_name(queue_name)}'); "
            f"GRANT USAGE ON SCHEMA pgmq TO {role}; "
            f"GRANT SELECT, INSERT, UPDATE, DELETE, TRIGGER ON ALL TABLES IN SCHEMA pgmq "
            f"TO {role}; GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA pgmq TO {role}"
        )
    elif kind == "database":
        fix = f"GRANT CREATE ON DATABASE {name} TO {role}"
    elif kind == "schema":
        fix = f"GRANT USAGE, CREATE ON SCHEMA {name} TO {role}"
    elif kind == "table" and error.startswith("must be owner"):
        fix = (
            f"run migrate as the owner of {name}, or have it run ALTER TABLE {name} OWNER TO {role}"
        )
    elif kind == "table":
        fix = f"GRANT SELECT, INSERT, UPDATE, DELETE, TRIGGER ON {name} TO {role}"
    else:
        fix = "see README, 'Database rights'"
    return f"migrate as role {role}: {error}. Fix: {fix}"
