"""The first full recompute of tenants whose history predates the worker.

An app that already holds years of matches gets its statistics on the first
``migrate``: migration 0007 lists the tenants whose counted matches are not all
in the statistics, and this works through them one tenant per transaction.
Only the ``stats`` tables are written, so the app keeps reading and writing its
own tables meanwhile; replicas share the list (``FOR UPDATE SKIP LOCKED``).
Each tenant's transaction also owes the app its cache tags, sent by the
worker's invalidator.

``stats-worker migrate`` backfills before it returns. ``run`` migrates without
it and backfills in the background instead (:func:`backfill_in_background`):
bulk work, one tenant at a time beside the consumers, so live matches are read
from the start and wait at most for the one tenant's recompute that holds
their tenant's locks, not for years of history.
"""

from __future__ import annotations

import asyncio
import logging
import time

from worker.core.database import DATABASE_ERRORS, Connection, Pool
from worker.core.errors import error_text
from worker.core.queries import query
from worker.stats.aggregations import refresh_in_one_transaction
from worker.stats.handler import cache_tags
from worker.stats.maintenance import full_scope

log = logging.getLogger(__name__)

RETRY_SECONDS = 5.0
"""After a database error, the background backfill tries again this much later."""


async def backfill_pending(connection: Connection) -> int:
    """Recompute every waiting tenant; return how many this call did."""
    done = await _backfill_all(connection, 0)
    if done:
        log.info("backfill finished", extra={"tenants": done})
    return done


async def backfill_in_background(pool: Pool) -> int:
    """:func:`backfill_pending` on one pool connection at a time, beside the consumers.

    A database error (a restart, a failover) rolls back the tenant in hand,
    which stays listed, and the backfill goes on ``RETRY_SECONDS`` later.
    """
    done = 0
    while True:
        try:
            async with pool.acquire() as connection:
                done = await _backfill_all(connection, done)
            break
        except DATABASE_ERRORS as exc:
            log.warning(
                "backfill interrupted; trying again",
                extra={"error": error_text(exc), "retry_in_s": RETRY_SECONDS},
            )
            await asyncio.sleep(RETRY_SECONDS)
    if done:
        log.info("backfill finished", extra={"tenants": done})
    return done


async def _backfill_all(connection: Connection, done: int) -> int:
    """Tenants backfilled in all, counting on from ``done``."""
    while await _backfill_one(connection, done):
        done += 1
    return done


async def _backfill_one(connection: Connection, done: int) -> bool:
    started = time.perf_counter()
    async with connection.transaction():
        claimed = await connection.fetchrow(query("claim_backfill"))
        if claimed is None:
            return False
        tenant = claimed["tenant_id"]
        if done == 0:
            log.info(
                "backfilling statistics of an existing history",
                extra={"tenants_waiting": claimed["waiting"]},
            )
        await refresh_in_one_transaction(connection, await full_scope(connection, tenant))
        await connection.execute(query("finish_backfill"), tenant)
        await connection.fetchval(query("owe_invalidation"), cache_tags([tenant]))
    log.info(
        "backfilled tenant",
        extra={
            "tenant_id": str(tenant),
            "counted_matches": claimed["counted_matches"],
            "tenants_left": claimed["waiting"] - 1,
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        },
    )
    return True
