"""The schema's parts applied inside ``migrate``'s transaction: numbered migrations
(once each), the statistics' definitions (again when their checksum changes), the queue."""

from __future__ import annotations

from worker.core.database import Connection
from worker.core.queries import migrations, query, stat_definitions


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
