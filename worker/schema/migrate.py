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

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg

from worker.core import database
from worker.core.database import Connection
from worker.core.queries import query
from worker.core.settings import Settings
from worker.queue.priorities import bulk_queue_name
from worker.schema.apply import apply_migrations, apply_stat_definitions, ensure_queue
from worker.schema.indexes import ensure_app_indexes
from worker.schema.pgmq_install import install_pgmq
from worker.schema.privileges import privilege_hint
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


async def migrate_for(
    settings: Settings, dsn: str, *, move_queue: bool = False, backfill: bool = True
) -> MigrationReport:
    """``migrate`` on its own connection, the session one where there is one."""
    connection = await database.connect(settings.session_dsn(dsn), settings)
    try:
        report = await migrate(
            connection,
            settings.queue_name,
            read_roles=settings.read_roles,
            backfill=backfill,
            move_queue=move_queue,
        )
    finally:
        await connection.close()
    log.info(
        "database ready",
        extra={
            "pgmq": report.pgmq,
            "applied": report.applied,
            "indexes_created": report.indexes_created,
            "backfilled_tenants": report.backfilled_tenants,
        },
    )
    return report
