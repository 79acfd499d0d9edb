"""Tenant-count growth: one tenant's appended-match latency alone, then among many.

A database of its own (the bench's name plus ``_tenants``) is loaded with one
tenant of the reference size. Half of its scheduled matches are completed and
measured with the tenant alone in the database; then its rows, statistics
included, are copied under new ids until the database holds ``many_tenants``
tenants of the same size (``bench.copy_tenant``, in SQL: far cheaper than
generating and rebuilding them), with the copies' dates spread from decades
before to decades after the original's, so the other tenants' matches sort on
both sides of it. The other half is measured there. A recompute whose
statements are all driven from the tenant's keys costs the same in both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial

from rich.progress import Progress

from worker.app import running_worker
from worker.bench import latency
from worker.bench.child import load_in_child
from worker.bench.harness import StatsHandlers, phase_size
from worker.bench.latency import RawLatency, WorkerLatency
from worker.bench.loader import ALONE, AMONG_MANY, LoadReport, ProgressSink, load_lone_tenant
from worker.bench.options import BenchOptions
from worker.bench.receiver import CallbackReceiver
from worker.core import database, servers
from worker.core.database import Pool
from worker.core.queries import query
from worker.core.settings import Settings

COPY_STEP = timedelta(days=61)
"""Between the dates of consecutive copies: 200 copies span about 33 years."""


@dataclass
class TenantCount:
    """The lone tenant's latency with 1 and with ``many`` tenants in the database."""

    many: int = 0
    copied_rows: int = 0
    copy_seconds: float = 0.0
    load: LoadReport = field(default_factory=LoadReport)
    alone: WorkerLatency = field(default_factory=WorkerLatency)
    alone_raw: RawLatency = field(default_factory=RawLatency)
    among_many: WorkerLatency = field(default_factory=WorkerLatency)
    among_many_raw: RawLatency = field(default_factory=RawLatency)


async def measure(  # noqa: PLR0917 - the bench's parts, passed on as they are
    settings: Settings,
    server_dsn: str,
    options: BenchOptions,
    receiver: CallbackReceiver,
    progress: Progress,
    stages: ProgressSink,
) -> TenantCount:
    """Load the lone tenant, measure it alone, copy it, measure it among the copies."""
    measured = TenantCount(many=options.many_tenants)
    dsn = await servers.recreate_database(server_dsn, f"{options.database}_tenants")
    measured.load = await load_in_child(settings, dsn, options, stages, load_lone_tenant)
    handlers = StatsHandlers()
    async with (
        database.open_pool(dsn, settings) as pool,
        running_worker(settings, dsn, handlers) as (worker, _),
    ):

        async def appended(phase: str, raw: RawLatency) -> WorkerLatency:
            task = progress.add_task(
                f"tenant count: appending ({phase})", total=await phase_size(pool, phase)
            )
            return await latency.measure(
                worker=worker,
                handlers=handlers,
                pool=pool,
                receiver=receiver,
                phase=phase,
                tick=partial(progress.advance, task),
                raw=raw,
            )

        measured.alone = await appended(ALONE, measured.alone_raw)
        await _copy(pool, options, measured, progress)
        measured.among_many = await appended(AMONG_MANY, measured.among_many_raw)
    return measured


async def _copy(
    pool: Pool, options: BenchOptions, measured: TenantCount, progress: Progress
) -> None:
    """Copy the lone tenant until the database holds ``many_tenants``; vacuum, analyze."""
    task = progress.add_task(f"tenant count: copying to {options.many_tenants} tenants", total=1)
    started = time.perf_counter()
    async with pool.acquire() as connection:
        tenant = await connection.fetchval(query("bench_only_tenant"))
        async with connection.transaction():
            await connection.execute(query("disable_enqueue_triggers"))
            measured.copied_rows = await connection.fetchval(
                query("bench_copy_tenant"), tenant, options.many_tenants - 1, COPY_STEP
            )
        await connection.execute(query("bench_vacuum_analyze"))
        await connection.execute(query("bench_checkpoint"))
    measured.copy_seconds = time.perf_counter() - started
    progress.advance(task)
