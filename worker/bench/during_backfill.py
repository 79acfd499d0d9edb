"""Live-match latency while a large backfill of another tenant drains from the bulk queue.

The live tenant's latest matches are sent again, one at a time, as live
messages (the recompute is the same work as for a new match: idempotent, same
scope), and the clock runs from the send to the cache invalidation arriving.
First with the worker idle, then again while every history match of another
tenant (the large growth tenant, up to ``backfill_messages``) waits on
``<QUEUE_NAME>_bulk``. The target: the p99 during the backfill within 2x the
idle p99.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from uuid import UUID

from worker.app import Worker
from worker.bench.receiver import CallbackReceiver
from worker.core.database import Pool
from worker.core.queries import query
from worker.queue.pgmq import Queue, send
from worker.queue.priorities import bulk_queue_name

CALLBACK_TIMEOUT_SECONDS = 60.0


@dataclass
class DuringBackfill:
    idle: list[float] = field(default_factory=list)
    during: list[float] = field(default_factory=list)
    backfill_messages: int = 0
    bulk_left_at_end: int = 0
    """Bulk messages still queued when the last live match was measured."""


async def measure(
    *,
    worker: Worker,
    pool: Pool,
    receiver: CallbackReceiver,
    live_tenant: UUID,
    backfill_tenant: UUID,
    backfill_messages: int,
    matches: int,
    tick: Callable[[], None],
) -> DuringBackfill:
    measured = DuringBackfill()
    queue_name = worker.settings.queue_name
    live = [r["id"] for r in await pool.fetch(query("bench_latest_matches"), live_tenant, matches)]

    async def one(match_id: int) -> float:
        """Send the match as a live message; seconds until its invalidation arrives."""
        receiver.forget()
        sent = time.perf_counter()
        await send(pool, queue_name, {"tenant_id": str(live_tenant), "match_id": match_id})
        arrival = await receiver.wait_for_tag(f"tenant:{live_tenant}", CALLBACK_TIMEOUT_SECONDS)
        await worker.invalidator.drained()
        return arrival.at - sent

    for match_id in live:
        measured.idle.append(await one(match_id))
        tick()
    bulk = bulk_queue_name(queue_name)
    measured.backfill_messages = await pool.fetchval(
        query("bench_enqueue_tenant_matches"), bulk, backfill_tenant, backfill_messages
    )
    for match_id in live:
        measured.during.append(await one(match_id))
        tick()
    measured.bulk_left_at_end = (await Queue(pool, bulk).depth()).length
    await pool.execute(query("bench_purge_queue"), bulk)
    return measured
