"""``stats-worker soak``: steady load for a while, and proof that nothing grows.

A league is played through the real worker while the app keeps correcting
scores (a steady stream of messages) and the cache endpoint fails a third of
its requests at random (so invalidations retry all the time). Every few
seconds the process's resident memory, open file descriptors and asyncio tasks
are sampled. After a warm-up, each must stay within 10 % of its value at the
end of the warm-up (a few descriptors or tasks of slack for work in flight);
the statistics must be exact at the end. Exit 0 when both hold.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil
from rich.console import Console
from rich.table import Table

from worker import app
from worker.bench.receiver import receiving
from worker.core import database, servers
from worker.core.database import Pool
from worker.core.queries import query
from worker.core.settings import Settings
from worker.schema.migrate import migrate
from worker.stats import maintenance
from worker.stats.league import (
    League,
    complete_match,
    generate_league,
    write_clubs,
    write_scheduled,
)

WARM_UP_SHARE = 0.25
TOLERANCE = 0.10
SLACK = {"fds": 4, "tasks": 6}
"""Absolute slack: connections and groups in flight come and go."""
FLAKY_SHARE = 1 / 3
CORRECTIONS_PER_SECOND = 20


@dataclass(frozen=True)
class Sample:
    seconds: float
    rss_mb: float
    fds: int
    tasks: int
    messages_settled: int


@dataclass
class SoakReport:
    minutes: float
    samples: list[Sample] = field(default_factory=list)
    corrections: int = 0
    callbacks_refused: int = 0
    drift: int = 0
    flat: dict[str, bool] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.drift == 0 and all(self.flat.values())


def judge(samples: list[Sample]) -> dict[str, bool]:
    """Each measure at the end within TOLERANCE (or its slack) of where the warm-up left it.

    "At the end" is the median of the last quarter of the samples: a burst of
    work in flight is not growth, a level that keeps rising is.
    """
    end = samples[-1].seconds if samples else 0.0
    settled = [s for s in samples if s.seconds >= end * WARM_UP_SHARE]
    if len(settled) < 4:
        return {"enough samples": False}
    start, last = settled[0], settled[-max(2, len(settled) // 4) :]
    verdict = {}
    for measure in ("rss_mb", "fds", "tasks"):
        base = float(getattr(start, measure))
        allowed = max(base * TOLERANCE, SLACK.get(measure, 0))
        verdict[measure] = (
            statistics.median(float(getattr(s, measure)) for s in last) <= base + allowed
        )
    return verdict


SOAK_DATABASE = "stats_worker_soak"
"""The database the soak creates (dropped first if it exists) on the server."""


async def run_soak(
    settings: Settings,
    minutes: float,
    console: Console,
    json_path: Path | None = None,
    *,
    database_name: str = SOAK_DATABASE,
) -> int:
    report = SoakReport(minutes)
    with servers.database_dsn(settings, allow_embedded=True) as server_dsn:
        dsn = await servers.recreate_database(server_dsn, database_name)
        league = generate_league(seed=5, tenants=4, players=16, matches=30)
        async with (
            receiving(failure_rate=FLAKY_SHARE, keep_arrivals=False) as receiver,
            database.open_pool(dsn, settings) as pool,
        ):
            await _prepare(pool, settings, league)
            under_test = settings.model_copy(
                update={
                    "port": 0,
                    "host": "127.0.0.1",
                    "cache_invalidation_url": receiver.url,
                    "callback_retry_base_seconds": 0.2,
                    "callback_retry_max_seconds": 2.0,
                    "migrate_on_start": False,
                }
            )
            async with app.running_worker(under_test, dsn):
                console.print(f"soaking for {minutes:g} min: steady corrections, flaky app")
                await _soak(pool, league, minutes * 60, report)
                await _drained(pool)
            report.callbacks_refused = receiver.refused
            for tenant in league.tenants:
                report.drift += len(await maintenance.verify(pool, tenant.id))
    report.flat = judge(report.samples)
    _print(console, report)
    if json_path is not None:
        await asyncio.to_thread(json_path.write_text, json.dumps(asdict(report), indent=2) + "\n")
    return 0 if report.passed else 1


async def _prepare(pool: Pool, settings: Settings, league: League) -> None:
    async with pool.acquire() as connection:
        await migrate(connection, settings.queue_name)
        await write_clubs(connection, league)
        await write_scheduled(connection, list(league.matches()))
        for match in league.matches():
            await complete_match(connection, match)


async def _soak(pool: Pool, league: League, seconds: float, report: SoakReport) -> None:
    process = psutil.Process()
    matches = [m.id for m in league.matches() if m.status == "completed"]
    rng = random.Random(7)
    started = time.monotonic()
    next_sample = started
    interval = max(1.0, seconds / 30)
    while (now := time.monotonic()) - started < seconds:
        await pool.execute(query("soak_correct_score"), rng.choice(matches), rng.randrange(6))
        report.corrections += 1
        if now >= next_sample:
            settled = await pool.fetchval(query("soak_settled"))
            report.samples.append(
                Sample(
                    round(now - started, 1),
                    round(process.memory_info().rss / 2**20, 1),
                    process.num_fds(),
                    len(asyncio.all_tasks()),
                    int(settled),
                )
            )
            next_sample += interval
        await asyncio.sleep(1 / CORRECTIONS_PER_SECOND)


async def _drained(pool: Pool) -> None:
    deadline = time.monotonic() + 60
    while await pool.fetchval(query("soak_pending")) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)


def _print(console: Console, report: SoakReport) -> None:
    table = Table("s", "RSS MB", "fds", "tasks", "settled", title="soak samples")
    for s in report.samples:
        table.add_row(
            f"{s.seconds:g}", f"{s.rss_mb:g}", str(s.fds), str(s.tasks), str(s.messages_settled)
        )
    console.print(table)
    verdict = ", ".join(f"{m}: {'flat' if ok else 'GREW'}" for m, ok in report.flat.items())
    console.print(
        f"{report.corrections} corrections, {report.callbacks_refused} callbacks refused by the "
        f"flaky app, drift: {report.drift} row(s); {verdict}"
    )
    console.print("soak passed" if report.passed else "soak FAILED")
