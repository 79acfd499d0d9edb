"""Throughput: draining a backlog, and what the queue alone costs.

Backlog: the app completes matches while no worker runs (the triggers enqueue
one message each), then a worker starts and drains the queue (``until_empty``)
— once with coalescing on, once with it off (``coalesce=False``), each on
matches of its own. The clock runs from the worker being ready to it finding
the queue empty.

Queue overhead: messages that a no-op handler takes, against a loop that
reads and deletes them with pgmq on one connection, at the same batch size.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from worker.bench.harness import (
    MATCHES_PER_FETCH,
    HandlerFactory,
    StatsHandlers,
    drain,
    noop_handlers,
    pending_matches,
)
from worker.bench.samples import TableTimings
from worker.core.database import Pool
from worker.core.metrics import REGISTRY
from worker.core.queries import query
from worker.core.settings import Settings
from worker.queue.pgmq import Queue
from worker.stats.league import Match, complete_match

Tick = Callable[[int], None]
"""Told how many more messages are done."""
PROGRESS_SECONDS = 0.25
APP_CONNECTIONS = 4
"""Connections the app completes matches on while the worker is stopped."""


@dataclass(frozen=True)
class Drained:
    messages: int
    seconds: float
    recomputes: int | None = None
    """Handler runs (None for the raw loop and the no-op handler)."""
    tables: TableTimings | None = None
    """The stats handler's timings during the drain."""

    @classmethod
    def none(cls) -> Drained:
        return cls(0, 0.0)

    @property
    def per_second(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0


async def enqueue_matches(pool: Pool, queue_name: str, phase: str, tick: Tick) -> int:
    """Complete the matches of ``phase`` the app's way; return the queue's length after.

    As the users of several tenants would: a tenant's matches are completed in
    order on one connection, and the tenants share ``APP_CONNECTIONS`` of them.
    """
    chunk: list[Match] = []
    async for match in pending_matches(pool, phase):
        chunk.append(match)
        if len(chunk) == MATCHES_PER_FETCH:
            await _complete(pool, chunk, tick)
            chunk = []
    await _complete(pool, chunk, tick)
    return (await Queue(pool, queue_name).depth()).length


async def _complete(pool: Pool, matches: list[Match], tick: Tick) -> None:
    lanes: dict[int, list[Match]] = defaultdict(list)
    for match in matches:
        lanes[match.tenant_id.int % APP_CONNECTIONS].append(match)

    async def complete_in_order(lane: list[Match]) -> None:
        async with pool.acquire() as app:
            for match in lane:
                await complete_match(app, match)
                tick(1)

    await asyncio.gather(*(complete_in_order(lane) for lane in lanes.values()))


async def drain_backlog(
    settings: Settings, dsn: str, pool: Pool, *, coalesce: bool, tick: Tick
) -> Drained:
    """Drain what is queued with the stats handler, coalescing or not."""
    messages = (await Queue(pool, settings.queue_name).depth()).length
    handlers = StatsHandlers(keep_runs=False)
    worker_settings = settings.model_copy(update={"coalesce": coalesce})
    async with _ticking(settings.queue_name, tick):
        seconds = await drain(worker_settings, dsn, handlers)
    return Drained(messages, seconds, recomputes=handlers.count(), tables=handlers.tables())


async def send_noop_messages(pool: Pool, queue_name: str, count: int) -> None:
    """Queue ``count`` messages for no one in particular, on a freshly vacuumed queue."""
    await pool.execute(query("bench_vacuum_queue").format(table=f'"q_{queue_name}"'))
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute(query("disable_enqueue_triggers"))
        await connection.fetchval(query("bench_send_noop_messages"), queue_name, count)


async def drain_noop(settings: Settings, dsn: str, pool: Pool, count: int, tick: Tick) -> Drained:
    """``count`` messages through the worker with a handler that does nothing."""
    await send_noop_messages(pool, settings.queue_name, count)
    factory: HandlerFactory = noop_handlers
    async with _ticking(settings.queue_name, tick):
        seconds = await drain(settings, dsn, factory)
    return Drained(count, seconds)


async def raw_pgmq_loop(settings: Settings, pool: Pool, count: int, tick: Tick) -> Drained:
    """``count`` messages read and deleted by pgmq alone, ``batch_size`` at a time."""
    await send_noop_messages(pool, settings.queue_name, count)
    queue, batch = settings.queue_name, settings.batch_size
    taken = 0
    async with pool.acquire() as connection:
        started = time.perf_counter()
        while True:
            rows = await connection.fetch(
                query("read_messages"),
                queue,
                settings.visibility_timeout_seconds,
                batch,
                None,
                None,
            )
            if not rows:
                break
            await connection.fetchval(
                query("bench_delete_messages"), queue, [row["msg_id"] for row in rows]
            )
            taken += len(rows)
            tick(len(rows))
        seconds = time.perf_counter() - started
    return Drained(taken, seconds)


def _succeeded(queue_name: str) -> float:
    value = REGISTRY.get_sample_value(
        "stats_worker_messages_total", {"queue": queue_name, "outcome": "succeeded"}
    )
    return value or 0.0


@contextlib.asynccontextmanager
async def _ticking(queue_name: str, tick: Tick) -> AsyncIterator[None]:
    """Report messages finished while the block runs (from the worker's own counter)."""

    async def follow() -> None:
        reported = _succeeded(queue_name)
        while True:
            await asyncio.sleep(PROGRESS_SECONDS)
            now = _succeeded(queue_name)
            tick(int(now - reported))
            reported = now

    task = asyncio.create_task(follow())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
