"""The indexes the statistics need on the app's tables, built ``CONCURRENTLY``."""

from __future__ import annotations

import asyncio
import logging
import random

import asyncpg

from worker.core.database import Connection
from worker.core.queries import query

log = logging.getLogger(__name__)


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
