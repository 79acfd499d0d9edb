"""Gauges that are read, not counted: queue depth and pool size, refreshed on a timer.

The latest queue depths are also kept in :class:`QueueSnapshots` so ``/health``
can report them without querying ``pgmq.metrics`` on every probe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import asyncpg

from worker.core import metrics
from worker.core.database import Pool
from worker.core.status import WorkerView
from worker.queue.pgmq import Queue, QueueDepth

log = logging.getLogger(__name__)

REFRESH_TIMEOUT_SECONDS = 10.0
_DATABASE_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


@dataclass(frozen=True)
class QueueSnapshot:
    depth: QueueDepth
    taken_at: float
    """Unix time of the read."""


@dataclass
class QueueSnapshots:
    """The latest ``pgmq.metrics`` of each queue, shared by the refresher and ``/health``."""

    latest: dict[str, QueueSnapshot] = field(default_factory=dict)

    def record(self, queue_name: str, depth: QueueDepth) -> None:
        self.latest[queue_name] = QueueSnapshot(depth, time.time())

    def fresh(self, queue_name: str, max_age_seconds: float) -> QueueDepth | None:
        """The queue's depth if it was read at most ``max_age_seconds`` ago."""
        snapshot = self.latest.get(queue_name)
        if snapshot is None or time.time() - snapshot.taken_at > max_age_seconds:
            return None
        return snapshot.depth


def record_pool_gauges(pool: Pool) -> None:
    metrics.pool_connections.labels(state="open").set(pool.get_size())
    metrics.pool_connections.labels(state="idle").set(pool.get_idle_size())
    metrics.pool_connections.labels(state="max").set(pool.get_max_size())


def record_queue_gauges(queue_name: str, depth: QueueDepth) -> None:
    metrics.queue_messages.labels(queue=queue_name, state="total").set(depth.length)
    metrics.queue_messages.labels(queue=queue_name, state="visible").set(depth.visible)
    metrics.queue_oldest_message_age_seconds.labels(queue=queue_name).set(
        depth.oldest_age_seconds or 0
    )


async def refresh_once(worker: WorkerView, snapshots: QueueSnapshots) -> str | None:
    """Read every gauge once; the database error that got in the way, if any."""
    record_pool_gauges(worker.pool)
    error = None
    for name in worker.queue_names():
        try:
            async with asyncio.timeout(REFRESH_TIMEOUT_SECONDS):
                depth = await Queue(worker.pool, name).depth()
        except _DATABASE_ERRORS as exc:
            error = f"{type(exc).__name__}: {exc}"
            continue
        snapshots.record(name, depth)
        record_queue_gauges(name, depth)
    return error


async def refresh_gauges(worker: WorkerView, snapshots: QueueSnapshots) -> None:
    """Refresh the gauges every ``METRICS_REFRESH_SECONDS``, for the worker's whole life.

    Database errors never end it: the first one of an outage is logged as a
    warning, the recovery as info, and the gauges keep their last values.
    """
    failing = False
    while True:
        error = await refresh_once(worker, snapshots)
        if error is not None and not failing:
            log.warning(
                "metrics refresh cannot read the queue; will keep trying", extra={"error": error}
            )
        elif error is None and failing:
            log.info("metrics refresh reads the queue again")
        failing = error is not None
        await asyncio.sleep(worker.settings.metrics_refresh_seconds)
