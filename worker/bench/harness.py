"""The worker under test, in this process, and the matches it is given.

The worker is the real one (:func:`~worker.app.run_worker`). Its stats handler
is :class:`TimedStatsHandler`, which does exactly what
:meth:`StatsHandler.run <worker.stats.handler.StatsHandler.run>` does and also
keeps the :class:`~worker.stats.aggregations.Timings` of each recompute.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from worker.app import running_worker
from worker.bench.samples import TableTimings
from worker.core.database import Pool
from worker.core.handlers import HandlerRegistry, Subject
from worker.core.queries import query
from worker.core.settings import Settings
from worker.queue.priorities import bulk_queue_name
from worker.stats.handler import StatsHandler, cache_tags
from worker.stats.league import Line, Match
from worker.stats.message import StatsMessage

HandlerFactory = Callable[[Settings, Pool], HandlerRegistry]
MATCHES_PER_FETCH = 100


@dataclass(frozen=True)
class HandlerRun:
    """One recompute as the worker ran it (perf_counter times)."""

    started: float
    finished: float
    messages: int
    seconds: dict[str, float]
    """``scope`` and each aggregation."""


class TimedStatsHandler(StatsHandler):
    """The stats handler, keeping each run's timings.

    Every run adds to :attr:`tables` (compact); with ``keep_runs`` each is also
    kept whole in :attr:`runs`, which a long drain leaves off so as not to add
    the bench's bookkeeping to the memory the worker is measured by.
    """

    def __init__(self, pool: Pool, *, keep_runs: bool = True, concurrent: bool = True) -> None:
        super().__init__(pool, concurrent=concurrent)
        self._keep_runs = keep_runs
        self.count = 0
        self.tables = TableTimings()
        self.runs: list[HandlerRun] = []

    async def run(
        self, payloads: Sequence[StatsMessage], before_changes: Callable[[], Awaitable[None]]
    ) -> Sequence[str]:
        started = time.perf_counter()
        scope = await self.scope_before_changes(payloads, before_changes)
        if scope is None:
            return []
        scoped = time.perf_counter()
        timings = await self.refresh(scope)
        seconds = {"scope": scoped - started, **timings.seconds}
        self.count += 1
        self.tables.add(seconds)
        if self._keep_runs:
            self.runs.append(HandlerRun(started, time.perf_counter(), len(payloads), seconds))
        return cache_tags([p.tenant_id for p in payloads])


class NoopHandler:
    """Takes any message and does nothing: what is left is the queue's cost."""

    def parse(self, body: Any) -> Any:
        return body

    def subject(self, payload: Any) -> Subject:
        return Subject()

    def group_key(self, payload: Any) -> Hashable | None:
        return None

    def group_field(self) -> str | None:
        return None

    async def run(
        self, payloads: Sequence[Any], before_changes: Callable[[], Awaitable[None]]
    ) -> Sequence[str]:
        return ()  # changes nothing, owes nothing

    def owed_tags(self, payloads: Sequence[Any]) -> Sequence[str]:
        return ()


@dataclass
class StatsHandlers:
    """A handler factory for :func:`run_worker` that remembers what it made."""

    keep_runs: bool = True
    made: TimedStatsHandler | None = None

    def __call__(self, settings: Settings, pool: Pool) -> HandlerRegistry:
        """The live queue's handler is the one measured; bulk work runs as the worker's does."""
        self.made = TimedStatsHandler(pool, keep_runs=self.keep_runs)
        bulk = TimedStatsHandler(pool, keep_runs=False, concurrent=False)
        return {settings.queue_name: self.made, bulk_queue_name(settings.queue_name): bulk}

    def runs(self) -> list[HandlerRun]:
        return self.made.runs if self.made is not None else []

    def count(self) -> int:
        return self.made.count if self.made is not None else 0

    def tables(self) -> TableTimings:
        return self.made.tables if self.made is not None else TableTimings()


def noop_handlers(settings: Settings, pool: Pool) -> HandlerRegistry:
    return {settings.queue_name: NoopHandler()}


async def drain(settings: Settings, dsn: str, handlers: HandlerFactory) -> float:
    """Seconds from a worker being ready until it found the queue empty and stopped."""
    async with running_worker(settings, dsn, handlers, until_empty=True) as (_, task):
        started = time.perf_counter()
        await asyncio.shield(task)
        return time.perf_counter() - started


async def phase_size(pool: Pool, phase: str) -> int:
    size: int = await pool.fetchval(query("bench_phase_size"), phase)
    return size


async def pending_matches(pool: Pool, phase: str) -> AsyncIterator[Match]:
    """The matches of ``phase`` in order, with their results, a few at a time."""
    ordinal = 0
    while True:
        rows = await pool.fetch(query("bench_pending_matches"), phase, ordinal, MATCHES_PER_FETCH)
        if not rows:
            return
        for row in rows:
            yield Match(
                row["match_id"],
                row["tenant_id"],
                row["season_id"],
                row["played_at"],
                row["status"],
                row["team_a_score"],
                row["team_b_score"],
                [Line(*line) for line in row["lines"]],
            )
        ordinal = rows[-1]["ordinal"] + 1
