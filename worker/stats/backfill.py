"""The first full recompute of tenants whose history predates the worker.

An app that already holds years of matches gets its statistics on the first
``migrate`` (which ``run`` does on start): migration 0007 lists the tenants
whose counted matches are not all in the statistics, and this works through
them one tenant per transaction. Only the ``stats`` tables are written, so the
app keeps reading and writing its own tables meanwhile; replicas that migrate
at once share the list (``FOR UPDATE SKIP LOCKED``). Each tenant's transaction
also owes the app its cache tags, sent by the worker's invalidator.
"""

from __future__ import annotations

import logging
import time

from worker.core.database import Connection
from worker.core.queries import query
from worker.stats.aggregations import refresh_in_one_transaction
from worker.stats.handler import cache_tags
from worker.stats.maintenance import full_scope

log = logging.getLogger(__name__)


async def backfill_pending(connection: Connection) -> int:
    """Recompute every waiting tenant; return how many this call did."""
    done = 0
    while await _backfill_one(connection, done):
        done += 1
    if done:
        log.info("backfill finished", extra={"tenants": done})
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
