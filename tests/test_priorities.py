"""Live matches before bulk work: a deep bulk queue never takes a live message's slot."""

from __future__ import annotations

import time

from tests.support import EngineHandler, prepare_engine_table, running_worker, wait_for
from tests.support import worker_settings as settings_for_test
from worker.core.database import Pool
from worker.core.handlers import HandlerRegistry
from worker.core.settings import Settings
from worker.queue.pgmq import send
from worker.queue.priorities import bulk_queue_name

QUEUE = "stats_updates"
BULK = bulk_queue_name(QUEUE)
BULK_JOB_SECONDS = 0.3


def both_queues(settings: Settings, pool: Pool) -> HandlerRegistry:
    handler = EngineHandler(pool)
    return {settings.queue_name: handler, bulk_queue_name(settings.queue_name): handler}


async def test_migrate_creates_the_bulk_queue(conn):
    queues = {
        r["queue_name"] for r in await conn.fetch("SELECT queue_name FROM pgmq.list_queues()")
    }
    assert {QUEUE, BULK} <= queues


async def test_a_live_message_runs_at_once_while_a_deep_bulk_queue_drains(database_url, conn):
    await prepare_engine_table(database_url)
    settings = settings_for_test(database_url, concurrency=2, bulk_concurrency=2, coalesce=False)
    for i in range(200):  # 200 x 0.3 s on 2 slots: half a minute of bulk work
        await send(conn, BULK, {"job": f"backfill-{i}", "sleep": BULK_JOB_SECONDS})
    async with running_worker(settings, both_queues) as worker:

        async def bulk_running() -> bool:
            return await conn.fetchval("SELECT count(*) FROM engine_runs") >= 4

        await wait_for(bulk_running)
        latencies = []
        for i in range(5):
            sent = time.monotonic()
            await send(worker.pool, QUEUE, {"job": f"live-{i}"})

            async def finished(name: str = f"live-{i}") -> bool:
                return bool(
                    await conn.fetchval(
                        "SELECT count(*) FROM engine_runs WHERE job = $1 "
                        "AND finished_at IS NOT NULL",
                        name,
                    )
                )

            await wait_for(finished, interval=0.01)
            latencies.append(time.monotonic() - sent)
        bulk_left = await conn.fetchval(f"SELECT count(*) FROM pgmq.q_{BULK}")
    assert bulk_left > 100  # the bulk backlog was there the whole time
    # Never behind the backlog: well under one bulk job's time, let alone 200 of them.
    assert max(latencies) < BULK_JOB_SECONDS, latencies
