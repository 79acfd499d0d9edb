"""Live-match latency while a large backlog of another tenant drains.

The live tenant's latest matches are sent again, one at a time, as live
messages (the recompute is the same work as for a new match: idempotent, same
scope), and the clock runs from the send to the cache invalidation arriving.
First with the worker idle; then while every history match of another tenant
(the large growth tenant, up to ``backfill_messages``) waits on
``<QUEUE_NAME>_bulk`` (a backfill: priorities); then while the same backlog
waits on the live queue itself, filled up again before each live match so
each is sent behind all of it (a tenant flooding the live queue: fairness).
The targets: the p99 of each within 2x the idle p99.
"""

from __future__ import annotations

import asyncio
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
CLEAR_TIMEOUT_SECONDS = 600.0
CLEAR_POLL_SECONDS = 0.5


@dataclass
class DuringBackfill:
    idle: list[float] = field(default_factory=list)
    during: list[float] = field(default_factory=list)
    """During the backfill on the bulk queue."""
    during_flood: list[float] = field(default_factory=list)
    """During the same backlog on the live queue, ahead of each live match."""
    backfill_messages: int = 0
    bulk_left_at_end: int = 0
    """Bulk messages still queued when the last live match was measured."""
    flood_left_at_end: int = 0
    """Messages of the flooding tenant still queued (or held) after the last live match."""


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

    async def behind_backlog_on(queue: str, into: list[float], *, topped_up: bool) -> int:
        """Live matches measured while the backlog waits on ``queue``; what was left of it.

        ``topped_up``: before each live match the backlog is filled up again to
        its full size, so every one of them is sent behind all of it (on the
        live queue, coalescing drains it within a few live matches otherwise).
        """
        await pool.fetchval(
            query("bench_enqueue_tenant_matches"), queue, backfill_tenant, backfill_messages
        )
        for match_id in live:
            if topped_up:
                missing = backfill_messages - (await Queue(pool, queue).depth()).length
                if missing > 0:  # pgmq refuses an empty batch
                    await pool.fetchval(
                        query("bench_enqueue_tenant_matches"), queue, backfill_tenant, missing
                    )
            into.append(await one(match_id))
            tick()
        left = (await Queue(pool, queue).depth()).length
        await _clear(pool, queue)
        return left

    for match_id in live:
        measured.idle.append(await one(match_id))
        tick()
    measured.backfill_messages = await pool.fetchval(
        query("bench_count_tenant_matches"), backfill_tenant, backfill_messages
    )
    bulk = bulk_queue_name(queue_name)
    measured.bulk_left_at_end = await behind_backlog_on(bulk, measured.during, topped_up=False)
    measured.flood_left_at_end = await behind_backlog_on(
        queue_name, measured.during_flood, topped_up=True
    )
    return measured


async def _clear(pool: Pool, queue: str) -> None:
    """Empty ``queue`` for the next measurement, under the running worker.

    What the worker holds it finishes and settles (a purge would delete those
    messages under it, each logged as lost); the rest is deleted.
    """
    deadline = time.monotonic() + CLEAR_TIMEOUT_SECONDS
    while (await Queue(pool, queue).depth()).length > 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{queue} did not empty within {CLEAR_TIMEOUT_SECONDS:.0f} s")
        await pool.fetchval(query("bench_delete_unread").format(queue=queue))
        await asyncio.sleep(CLEAR_POLL_SECONDS)
