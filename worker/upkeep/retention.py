"""Retention: old job runs, dead letters and failed invalidations, purged in small batches.

Each batch is one short autocommitted ``DELETE`` of at most
``RETENTION_BATCH_SIZE`` rows that skips rows other transactions hold
(``FOR UPDATE SKIP LOCKED``), with a pause between batches: the purge never
waits on a settle, never blocks one for longer than a batch, and yields the
database to live work. What is still owed is never purged: the record of a
message still in the queue (running or retrying), a dead letter's record while
the archive holds its message, a pending invalidation.

Run by the scheduler (``RETENTION_SCHEDULE``) and by ``stats-worker purge``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from worker.core import metrics
from worker.core.database import DATABASE_ERRORS, Pool
from worker.core.settings import Settings
from worker.queue.jobs import queue_query
from worker.queue.priorities import bulk_queue_name

log = logging.getLogger(__name__)

PAUSE_BETWEEN_BATCHES_SECONDS = 0.05
"""Room for live work between two batches of a long purge."""
MAX_BATCHES_PER_TABLE = 10_000
"""A bound on one run, whatever happens meanwhile; the next run goes on."""
TABLE_SIZES_REFRESH_SECONDS = 60.0


def queue_names(settings: Settings) -> list[str]:
    """The queues whose records and dead letters retention keeps small."""
    return [settings.queue_name, bulk_queue_name(settings.queue_name)]


@dataclass(frozen=True)
class Target:
    """One table's purge: its label, its queries, the age past which rows go."""

    table: str
    purge_sql: str
    count_sql: str
    days: float
    queue_name: str | None = None
    """For the job runs, which are kept per queue."""

    def arguments(self) -> tuple[object, ...]:
        return (self.queue_name, self.days) if self.queue_name else (self.days,)


def targets(settings: Settings, queue_names: Sequence[str]) -> list[Target]:
    """What retention purges, for these queues."""
    found = []
    for name in queue_names:
        found.append(
            Target(
                "stats_worker.job_runs",
                queue_query("purge_job_runs", name),
                queue_query("count_purgeable_job_runs", name),
                settings.job_runs_retention_days,
                queue_name=name,
            )
        )
        found.append(
            Target(
                f"pgmq.a_{name}",
                queue_query("purge_archive", name),
                queue_query("count_purgeable_archive", name),
                settings.archive_retention_days,
            )
        )
    found.append(
        Target(
            "stats_worker.callbacks",
            queue_query("purge_callbacks", queue_names[0]),
            queue_query("count_purgeable_callbacks", queue_names[0]),
            settings.callbacks_retention_days,
        )
    )
    return found


@dataclass
class PurgeReport:
    dry_run: bool
    rows: dict[str, int] = field(default_factory=dict)
    """Rows deleted (or, with ``dry_run``, that would be), by table."""
    batches: int = 0
    seconds: float = 0.0
    longest_batch_seconds: float = 0.0
    """The longest one statement took: about how long a row lock was held."""

    @property
    def total(self) -> int:
        return sum(self.rows.values())


async def purge(
    pool: Pool, settings: Settings, queue_names: Sequence[str], *, dry_run: bool = False
) -> PurgeReport:
    """Delete (or, with ``dry_run``, count) every row past its retention."""
    report = PurgeReport(dry_run)
    started = time.perf_counter()
    for target in targets(settings, queue_names):
        if dry_run:
            count = await pool.fetchval(target.count_sql, *target.arguments())
            report.rows[target.table] = report.rows.get(target.table, 0) + count
            continue
        deleted = await _purge_table(pool, target, settings.retention_batch_size, report)
        report.rows[target.table] = report.rows.get(target.table, 0) + deleted
    report.seconds = time.perf_counter() - started
    log.info(
        "retention purge finished" if not dry_run else "retention purge (dry run)",
        extra={
            "rows": report.rows,
            "batches": report.batches,
            "duration_ms": round(report.seconds * 1000, 1),
        },
    )
    return report


async def _purge_table(pool: Pool, target: Target, batch_size: int, report: PurgeReport) -> int:
    deleted = 0
    purged = metrics.purged_rows_total.labels(table=target.table)
    for _ in range(MAX_BATCHES_PER_TABLE):
        began = time.perf_counter()
        status = await pool.execute(target.purge_sql, *target.arguments(), batch_size)
        report.longest_batch_seconds = max(
            report.longest_batch_seconds, time.perf_counter() - began
        )
        count = int(status.rsplit(" ", 1)[-1])  # "DELETE n"
        report.batches += 1
        deleted += count
        purged.inc(count)
        if count < batch_size:
            break
        await asyncio.sleep(PAUSE_BETWEEN_BATCHES_SECONDS)
    return deleted


async def record_table_sizes(pool: Pool, queue_names: Sequence[str]) -> None:
    """Set the size gauges of the tables retention keeps small."""
    rows = await pool.fetch(queue_query("table_sizes", queue_names[0]), list(queue_names))
    for row in rows:
        metrics.table_bytes.labels(table=row["name"]).set(row["bytes"])
        metrics.table_rows.labels(table=row["name"]).set(row["rows"])


async def refresh_table_sizes(pool: Pool, queue_names: Sequence[str]) -> None:
    """The size gauges, every minute for the worker's life; errors keep the last values."""
    failing = False
    while True:
        try:
            await record_table_sizes(pool, queue_names)
        except DATABASE_ERRORS as exc:
            if not failing:
                log.warning("cannot read the table sizes", extra={"error": repr(exc)})
            failing = True
        else:
            failing = False
        await asyncio.sleep(TABLE_SIZES_REFRESH_SECONDS)
