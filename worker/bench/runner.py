"""``stats-worker bench``: load the reference league, measure, report.

The bench has a database of its own (``stats_worker_bench`` by default),
dropped and created again on each run, on the embedded server or on
``DATABASE_URL``'s. Loading the history needs a superuser (it switches the
enqueue triggers off), as the embedded server's is.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from uuid import UUID

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from worker.app import running_worker
from worker.bench import during_backfill, latency, scale_out, tenant_count, throughput
from worker.bench.child import load_in_child
from worker.bench.harness import StatsHandlers, phase_size
from worker.bench.latency import RawLatency
from worker.bench.loader import BACKLOG, GROWTH_LARGE, GROWTH_SMALL, LATENCY, ONE_BY_ONE
from worker.bench.options import BenchOptions
from worker.bench.receiver import CallbackReceiver, receiving
from worker.bench.render import render
from worker.bench.report import Results, as_json
from worker.bench.samples import current_rss_mb, peak_rss_mb
from worker.core import database, servers
from worker.core.database import Pool
from worker.core.settings import Settings


async def run_bench(
    settings: Settings, options: BenchOptions, console: Console, json_path: Path | None = None
) -> int:
    """Run every measurement, print the report, write it as JSON to ``json_path``."""
    options.validate()
    started = time.perf_counter()
    server = "DATABASE_URL" if settings.database_url is not None else "embedded"
    results = Results(options, settings, server)
    with servers.database_dsn(settings, allow_embedded=True) as server_dsn:
        dsn = await servers.recreate_database(server_dsn, options.database)
        with _progress(console) as progress:
            stages = _Stages(progress)
            results.load = await load_in_child(settings, dsn, options, stages)
            stages.finish()
            async with receiving() as receiver, database.open_pool(dsn, settings) as pool:
                under_test = settings.model_copy(
                    update={
                        "port": 0,
                        "host": "127.0.0.1",
                        "cache_invalidation_url": receiver.url,
                        "alert_webhook_url": None,
                        "migrate_on_start": False,
                    }
                )
                results.settings = under_test
                bench = _Bench(results, under_test, dsn, pool, receiver, progress)
                results.peak_rss_after_mb["load"] = peak_rss_mb()
                phases = (
                    bench.latency,
                    bench.during_backfill,
                    bench.backlog,
                    bench.queue_overhead,
                    bench.scale_out,
                )
                for phase in phases:
                    await phase()
                    results.peak_rss_after_mb[phase.__name__] = peak_rss_mb()
                results.tenant_count = await tenant_count.measure(
                    under_test, server_dsn, options, receiver, progress, _Stages(progress)
                )
                results.peak_rss_after_mb["tenant_count"] = peak_rss_mb()
    results.peak_rss_mb = peak_rss_mb()
    results.rss_at_end_mb = current_rss_mb()
    results.seconds = time.perf_counter() - started
    report = as_json(results)
    render(report, console)
    if json_path is not None:
        text = json.dumps(report, indent=2, allow_nan=False) + "\n"
        await asyncio.to_thread(json_path.write_text, text)
        console.print(f"report written to {json_path}")
    return 0


def _progress(console: Console) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


class _Stages:
    """The loader's progress (stage, done, total) as one progress bar per stage."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._bars: dict[str, tuple[TaskID, int]] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self._bars:
            self.finish()
            self._bars[stage] = (self._progress.add_task(stage, total=total), total)
        bar, _ = self._bars[stage]
        self._bars[stage] = (bar, total)
        self._progress.update(bar, completed=done, total=total)

    def finish(self) -> None:
        """Show every stage so far as done."""
        for bar, total in self._bars.values():
            self._progress.update(bar, completed=total)


@dataclass
class _Bench:
    """One run's measurements, sharing the worker's settings, the pool and the receiver."""

    results: Results
    settings: Settings
    dsn: str
    pool: Pool
    receiver: CallbackReceiver
    progress: Progress

    def _task(self, description: str, total: int) -> Callable[..., None]:
        """A progress bar; the returned function advances it (by 1 or by its argument)."""
        return partial(self.progress.advance, self.progress.add_task(description, total=total))

    async def latency(self) -> None:
        handlers = StatsHandlers()
        async with running_worker(self.settings, self.dsn, handlers) as (worker, _):
            measure = partial(
                latency.measure,
                worker=worker,
                handlers=handlers,
                pool=self.pool,
                receiver=self.receiver,
            )
            tick = self._task(
                "latency: worker, then raw SQL, per match", await phase_size(self.pool, LATENCY)
            )
            self.results.raw = RawLatency()
            self.results.latency = await measure(phase=LATENCY, tick=tick, raw=self.results.raw)
            phases = {"small": GROWTH_SMALL, "large": GROWTH_LARGE}
            sizes = " and ".join(
                f"{getattr(self.results.options, f'growth_{size}'):,}" for size in phases
            )
            appended = [await phase_size(self.pool, phase) for phase in phases.values()]
            tick = self._task(f"growth: appending to {sizes} matches in turn", sum(appended))
            self.results.growth.update(
                await latency.measure_interleaved(
                    worker=worker,
                    handlers=handlers,
                    pool=self.pool,
                    receiver=self.receiver,
                    phases=phases,
                    tick=tick,
                )
            )

    async def during_backfill(self) -> None:
        options, load = self.results.options, self.results.load
        handlers = StatsHandlers(keep_runs=False)
        async with running_worker(self.settings, self.dsn, handlers) as (worker, _):
            self.results.during_backfill = await during_backfill.measure(
                worker=worker,
                pool=self.pool,
                receiver=self.receiver,
                live_tenant=UUID(load.growth_tenants[GROWTH_SMALL]),
                backfill_tenant=UUID(load.growth_tenants[GROWTH_LARGE]),
                backfill_messages=options.backfill_messages,
                matches=options.backfill_live_matches,
                tick=self._task(
                    "live matches: idle, during a backfill, behind a flood",
                    3 * options.backfill_live_matches,
                ),
            )

    async def backlog(self) -> None:
        for phase, coalesce in ((BACKLOG, True), (ONE_BY_ONE, False)):
            label = "coalescing" if coalesce else "one by one"
            tick = self._task(f"backlog ({label}): enqueue", await phase_size(self.pool, phase))
            queued = await throughput.enqueue_matches(
                self.pool, self.settings.queue_name, phase, tick
            )
            drained = await throughput.drain_backlog(
                self.settings,
                self.dsn,
                self.pool,
                coalesce=coalesce,
                tick=self._task(f"backlog ({label}): drain", queued),
            )
            if coalesce:
                self.results.backlog = drained
            else:
                self.results.one_by_one = drained

    async def scale_out(self) -> None:
        count = self.results.options.scale_out_messages
        tick = self._task("scale-out: 1, 2 and 4 worker processes", len(scale_out.PROCESS_COUNTS))
        self.results.scale_out = []
        for processes in scale_out.PROCESS_COUNTS:
            self.results.scale_out.append(
                await scale_out.one_round(self.settings, self.dsn, self.pool, processes, count)
            )
            tick()

    async def queue_overhead(self) -> None:
        """The no-op worker may read a whole batch: its concurrency is the batch size."""
        count = self.results.options.noop_messages
        noop = self.settings.model_copy(update={"concurrency": self.settings.batch_size})
        self.results.noop = await throughput.drain_noop(
            noop, self.dsn, self.pool, count, self._task("queue: no-op handler", count)
        )
        self.results.raw_loop = await throughput.raw_pgmq_loop(
            noop, self.pool, count, self._task("queue: raw pgmq read+delete", count)
        )
