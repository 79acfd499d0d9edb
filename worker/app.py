"""Wiring: settings → pool → migrate → consumers (+ settler, listener) → shutdown.

The one place that knows every part. Signals only set the stop flag; the first
SIGTERM/SIGINT stops reading and lets in-flight work finish within
``SHUTDOWN_GRACE_SECONDS``, a second one cancels at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from worker.callback.invalidator import CacheInvalidator
from worker.callback.posting import http_client
from worker.core import database
from worker.core.database import Pool
from worker.core.handlers import HandlerRegistry
from worker.core.settings import Settings
from worker.core.status import WorkerStatus
from worker.core.watchdog import Watchdog
from worker.queue.consumer import Consumer
from worker.queue.control import Pause
from worker.queue.leftovers import send_leftover_messages, sweep_leftover_messages
from worker.queue.outcomes import Settler
from worker.queue.priorities import bulk_queue_name, settings_for
from worker.schema.migrate import migrate_for
from worker.stats.backfill import backfill_in_background
from worker.stats.handler import StatsHandler
from worker.upkeep.alerts import DeadLetterAlerter
from worker.upkeep.leader import Leadership
from worker.upkeep.recurring import builtin_jobs
from worker.upkeep.retention import refresh_table_sizes
from worker.upkeep.scheduler import Scheduler
from worker.web.http import create_app
from worker.web.refresher import QueueSnapshots, refresh_gauges
from worker.web.server import serve

log = logging.getLogger(__name__)


class BackgroundTaskDied(RuntimeError):
    """A task that should run for the worker's whole life returned or failed."""


@dataclass
class Worker:
    """A running worker's parts, for tests; the HTTP layer and the refresher see it only
    as a :class:`~worker.core.status.WorkerView`."""

    settings: Settings
    pool: Pool
    status: WorkerStatus
    invalidator: CacheInvalidator
    alerter: DeadLetterAlerter
    leadership: Leadership | None = None
    """Who runs the recurring jobs (``scheduler``) among the replicas."""
    scheduler: Scheduler | None = None
    consumers: list[Consumer] = field(default_factory=list)
    settlers: list[Settler] = field(default_factory=list)
    http_port: int | None = None
    """The port /health and /metrics listen on, once they do (``PORT=0`` picks one)."""

    def queue_names(self) -> list[str]:
        """The queues the worker consumes (its configured queue when it has no consumer)."""
        return [consumer.queue.name for consumer in self.consumers] or [self.settings.queue_name]

    def set_http_port(self, port: int) -> None:
        self.http_port = port

    def callbacks_due(self) -> None:
        self.invalidator.wake()

    def stop(self) -> None:
        self.status.stopping = True
        for consumer in self.consumers:
            consumer.stop()


async def _for_life(name: str, coroutine: Coroutine[Any, Any, None]) -> None:
    """Run a task that must never end; ending at all is a failure."""
    await coroutine
    raise BackgroundTaskDied(f"background task {name!r} stopped")


def default_handlers(settings: Settings, pool: Pool) -> HandlerRegistry:
    # Bulk work refreshes one statistic at a time: it leaves the cores to live matches.
    return {
        settings.queue_name: StatsHandler(pool),
        bulk_queue_name(settings.queue_name): StatsHandler(pool, concurrent=False),
    }


async def run_worker(
    settings: Settings,
    dsn: str,
    *,
    handlers: Callable[[Settings, Pool], HandlerRegistry] = default_handlers,
    until_empty: bool = False,
    install_signal_handlers: bool = True,
    on_ready: Callable[[Worker], Awaitable[None] | None] | None = None,
) -> None:
    """Run until stopped by a signal (or the queue drains, with ``until_empty``)."""
    async with database.open_pool(dsn, settings) as pool, http_client(settings) as client:
        if settings.migrate_on_start:
            # The backfill of an existing history is bulk work: in the background (_run).
            await migrate_for(settings, dsn, backfill=False)
        worker = Worker(
            settings,
            pool,
            WorkerStatus.now(),
            invalidator=CacheInvalidator(pool, settings, client),
            alerter=DeadLetterAlerter(settings, client),
            leadership=Leadership(settings.session_dsn(dsn), settings.leader_lease_seconds),
        )
        # One pause for every consumer of the worker, the bulk queue's too.
        pause = Pause(
            pool, settings.queue_name, worker.status, fresh_for=settings.poll_interval_seconds
        )
        for queue_name, handler in handlers(settings, pool).items():
            settler = Settler(pool, queue_name)
            settler.on_invalidation = worker.invalidator.submit
            settler.on_dead_letter = worker.alerter.dead_lettered
            worker.settlers.append(settler)
            worker.consumers.append(
                Consumer(
                    pool=pool,
                    dsn=settings.session_dsn(dsn),
                    settings=settings_for(settings, queue_name),
                    queue_name=queue_name,
                    handler=handler,
                    settler=settler,
                    status=worker.status,
                    pause=pause,
                    until_empty=until_empty,
                )
            )
        worker.scheduler = Scheduler(
            pool, builtin_jobs(settings, pool, client, worker.queue_names())
        )
        await send_leftover_messages(pool)
        with _signals_stop(worker, enabled=install_signal_handlers):
            await _run(worker, on_ready)


async def _run(worker: Worker, on_ready: Callable[[Worker], Awaitable[None] | None] | None) -> None:
    async with asyncio.TaskGroup() as group:
        background = [
            group.create_task(_for_life(f"settler:{i}", settler.run()))
            for i, settler in enumerate(worker.settlers)
        ]
        snapshots = QueueSnapshots()
        lifetime = {
            "invalidator": worker.invalidator.run(),
            "alerter": worker.alerter.run(),
            "leftovers": sweep_leftover_messages(worker.pool),
            "metrics": refresh_gauges(worker, snapshots),
            "table_sizes": refresh_table_sizes(worker.pool, worker.queue_names()),
            "http": serve(create_app(worker, snapshots), worker.settings, worker.set_http_port),
        }
        if worker.leadership is not None and worker.scheduler is not None:
            lifetime["leader"] = worker.leadership.run(worker.scheduler.run)
        background += [group.create_task(_for_life(n, c)) for n, c in lifetime.items()]
        backfill = group.create_task(backfill_in_background(worker.pool), name="backfill")
        if on_ready is not None:
            ready = on_ready(worker)
            if ready is not None:
                await ready
        log.info(
            "worker started",
            extra={
                "queues": [c.queue.name for c in worker.consumers],
                "concurrency": worker.settings.concurrency,
            },
        )
        await asyncio.gather(*(consumer.run() for consumer in worker.consumers))
        if not worker.status.stopping:  # an empty queue (until_empty): the history too
            await backfill
        # The last batch's invalidation goes out now rather than when its lease ends.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(worker.settings.callback_timeout_seconds + 1):
                await worker.invalidator.drained()
        for task in [*background, backfill]:
            task.cancel()
    log.info("worker stopped")


@contextlib.asynccontextmanager
async def running_worker(
    settings: Settings,
    dsn: str,
    handlers: Callable[[Settings, Pool], HandlerRegistry] = default_handlers,
    *,
    until_empty: bool = False,
) -> AsyncIterator[tuple[Worker, asyncio.Task[None]]]:
    """A worker running in this event loop, ready; stopped (and awaited) after the block.

    For the demo, the benchmark and tests: the caller owns signals.
    """
    ready: asyncio.Future[Worker] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run_worker(
            settings,
            dsn,
            handlers=handlers,
            until_empty=until_empty,
            install_signal_handlers=False,
            on_ready=ready.set_result,
        ),
        name="worker",
    )
    waiters: set[asyncio.Future[Any]] = {task, ready}
    done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    if task in done and not ready.done():
        task.result()
        raise RuntimeError("the worker stopped before it was ready")
    worker = ready.result()
    try:
        yield worker, task
    finally:
        worker.stop()
        await task


@contextlib.contextmanager
def _signals_stop(worker: Worker, *, enabled: bool) -> Any:
    if not enabled:
        yield
        return
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    signals = (signal.SIGTERM, signal.SIGINT)

    def on_signal(signum: int) -> None:
        if worker.status.stopping and main_task is not None:
            log.warning("second signal: cancelling in-flight work")
            main_task.cancel()
            return
        log.info(
            "stopping: finishing in-flight messages", extra={"signal": signal.Signals(signum).name}
        )
        worker.stop()

    for signum in signals:
        loop.add_signal_handler(signum, on_signal, signum)
    settings = worker.settings
    watchdog = Watchdog(
        worker.status,
        stall_seconds=settings.watchdog_seconds,
        grace_seconds=settings.shutdown_grace_seconds,
    )
    watchdog.watch_signals(signals)
    try:
        with watchdog:
            yield
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
