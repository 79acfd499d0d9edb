"""Recurring jobs on cron schedules (UTC), run by the leader only (``worker/upkeep/leader.py``).

Each job's last slot is in ``stats_worker.recurring_jobs``. At every wake-up
the leader takes each job's latest slot at or before now and claims it with one
``UPDATE`` that only moves ``last_slot`` forward: a slot runs once, whichever
replica leads and even if two briefly both think they do. After downtime the
missed slots collapse into that one claim: a job catches up at most once. A
job seen for the first time starts from its latest slot, so a fresh install
does not run everything at once.

Jobs run one after another, never two at a time, on the job pool; each one's
outcome is a metric, a log line and the job's row. One-off delayed jobs are
not here: they are queue messages with a visibility time (``enqueue --delay``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cronsim import CronSim

from worker.core import metrics
from worker.core.database import Pool
from worker.core.queries import query
from worker.core.settings import SCHEDULE_OFF

log = logging.getLogger(__name__)

MAX_SLEEP_SECONDS = 60.0
"""Look again at least this often: a clock step or a long job never oversleeps a slot."""

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class RecurringJob:
    name: str
    schedule: str
    """A cron expression (UTC), or ``off``."""
    run: Callable[[], Awaitable[str]]
    """Does the work; returns its result for the metric (``succeeded``, ``drift``…)."""

    def latest_slot(self, now: datetime) -> datetime:
        """The latest time at or before ``now`` the schedule names."""
        probe = now.replace(microsecond=0) + timedelta(seconds=1)
        return next(CronSim(self.schedule, probe, reverse=True))

    def next_slot(self, now: datetime) -> datetime:
        return next(CronSim(self.schedule, now))


class Scheduler:
    """Claims and runs due slots; :meth:`run` is the leader's work."""

    def __init__(self, pool: Pool, jobs: Sequence[RecurringJob], clock: Clock = utcnow) -> None:
        self._pool = pool
        self.jobs = [job for job in jobs if job.schedule != SCHEDULE_OFF]
        self._clock = clock

    async def run(self) -> None:
        """Register the jobs, then run each slot as it comes, until cancelled."""
        await self.register()
        while True:
            await self.run_due()
            await asyncio.sleep(self.seconds_until_next())

    async def register(self) -> None:
        now = self._clock()
        for job in self.jobs:
            await self._pool.execute(
                query("register_recurring_job"), job.name, job.schedule, job.latest_slot(now)
            )

    async def run_due(self) -> list[str]:
        """Run every job whose latest slot has not run yet; return their names."""
        ran = []
        for job in self.jobs:
            slot = job.latest_slot(self._clock())
            if await self._pool.fetchval(query("claim_recurring_slot"), job.name, slot) is None:
                continue
            await self._run_one(job, slot)
            ran.append(job.name)
        return ran

    def seconds_until_next(self) -> float:
        now = self._clock()
        if not self.jobs:
            return MAX_SLEEP_SECONDS
        soonest = min(job.next_slot(now) for job in self.jobs)
        return min(MAX_SLEEP_SECONDS, max(0.05, (soonest - now).total_seconds()))

    async def _run_one(self, job: RecurringJob, slot: datetime) -> None:
        fields: dict[str, object] = {"job": job.name, "slot": slot.isoformat()}
        log.info("recurring job started", extra=fields)
        started = time.perf_counter()
        error = None
        try:
            result = await job.run()
        except asyncio.CancelledError:
            await self._record(job, "interrupted", "the leader stopped leading")
            raise
        # A recurring job that fails is reported and tried at its next slot;
        # it never takes the leader (or the worker) down.
        except Exception as exc:
            result, error = "failed", f"{type(exc).__name__}: {exc}"[:2000]
        fields["duration_ms"] = round((time.perf_counter() - started) * 1000, 1)
        fields["result"] = result
        await self._record(job, result, error)
        metrics.recurring_runs_total.labels(job=job.name, result=result).inc()
        if error is None:
            metrics.recurring_last_success.labels(job=job.name).set(time.time())
            log.info("recurring job finished", extra=fields)
        else:
            log.error("recurring job failed", extra={**fields, "error": error})

    async def _record(self, job: RecurringJob, result: str, error: str | None) -> None:
        await self._pool.execute(query("record_recurring_result"), job.name, result, error)
