"""Recurring jobs: one run per slot whatever the replicas, one catch-up, one leader."""

from __future__ import annotations

import asyncio
import signal
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from tests.receiver import receiving
from tests.support import (
    drain_stats,
    play_league,
    prepare_engine_table,
    process_log,
    start_worker_process,
    stop_process,
    worker_settings,
)
from worker.callback.posting import http_client
from worker.core.database import init_connection
from worker.core.metrics import REGISTRY
from worker.stats.league import generate_league
from worker.upkeep.recurring import verify_and_alert
from worker.upkeep.scheduler import RecurringJob, Scheduler

NIGHTLY = "30 3 * * *"
T0 = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def counting_job(runs: list[str], name: str = "verify") -> RecurringJob:
    async def run() -> str:
        runs.append(name)
        await asyncio.sleep(0.05)
        return "succeeded"

    return RecurringJob(name, NIGHTLY, run)


async def test_a_slot_runs_once_however_many_replicas_try(database_url):
    runs: list[str] = []
    clock = Clock(T0)
    async with (
        asyncpg.create_pool(database_url, min_size=1, max_size=2) as one,
        asyncpg.create_pool(database_url, min_size=1, max_size=2) as two,
    ):
        replicas = [Scheduler(pool, [counting_job(runs)], clock) for pool in (one, two)]
        for replica in replicas:
            await replica.register()
        # First sight: the slot before start is not run at once.
        assert await asyncio.gather(*(r.run_due() for r in replicas)) == [[], []]
        clock.now = T0 + timedelta(days=1)  # past the next night's 03:30
        done = await asyncio.gather(*(r.run_due() for r in replicas))
        assert sorted(done) == [[], ["verify"]]
        assert runs == ["verify"]
        assert await asyncio.gather(*(r.run_due() for r in replicas)) == [[], []]


async def test_after_downtime_a_job_catches_up_once(database_url, conn):
    runs: list[str] = []
    clock = Clock(T0)
    async with asyncpg.create_pool(database_url, min_size=1, max_size=2) as pool:
        scheduler = Scheduler(pool, [counting_job(runs)], clock)
        await scheduler.register()
        clock.now = T0 + timedelta(days=5)  # five nights missed
        assert await scheduler.run_due() == ["verify"]
        assert await scheduler.run_due() == []
    assert runs == ["verify"]
    row = await conn.fetchrow("SELECT last_slot, last_result FROM stats_worker.recurring_jobs")
    assert row["last_slot"] == datetime(2026, 11, 7, 3, 30, tzinfo=UTC)
    assert row["last_result"] == "succeeded"


async def test_a_failing_job_is_recorded_and_the_scheduler_goes_on(database_url, conn):
    async def broken() -> str:
        raise RuntimeError("no luck tonight")

    clock = Clock(T0)
    async with asyncpg.create_pool(database_url, min_size=1, max_size=2) as pool:
        scheduler = Scheduler(pool, [RecurringJob("verify", NIGHTLY, broken)], clock)
        await scheduler.register()
        clock.now = T0 + timedelta(days=1)
        assert await scheduler.run_due() == ["verify"]
    row = await conn.fetchrow("SELECT last_result, last_error FROM stats_worker.recurring_jobs")
    assert (row["last_result"], row["last_error"]) == ("failed", "RuntimeError: no luck tonight")


async def _leader_pid(conn: asyncpg.Connection) -> int | None:
    name = await conn.fetchval(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND a.application_name LIKE "
        "'stats-worker leader %'"
    )
    return int(name.rsplit(" ", 1)[1]) if name else None


async def _until(condition, timeout: float) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    while not await condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout}s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


@pytest.mark.timeout(90)
async def test_two_replicas_verify_once_and_the_survivor_takes_over_within_a_lease(
    database_url, conn
):
    """Two worker processes; the nightly verify was missed (downtime): it runs once."""
    await prepare_engine_table(database_url)
    await conn.execute(
        "INSERT INTO stats_worker.recurring_jobs (name, schedule, last_slot) "
        "VALUES ('verify', $1, '2026-01-01T00:00:00Z')",
        NIGHTLY,
    )
    lease = 3.0
    env = {"LEADER_LEASE_SECONDS": str(lease), "VERIFY_SCHEDULE": NIGHTLY}
    processes = [start_worker_process(database_url, **env) for _ in range(2)]
    try:

        async def verified() -> bool:
            result = await conn.fetchval(
                "SELECT last_result FROM stats_worker.recurring_jobs WHERE name = 'verify'"
            )
            return result == "succeeded"

        await _until(verified, 45)
        leader = await _leader_pid(conn)
        assert leader in {p.pid for p in processes}
        await asyncio.sleep(lease)  # the other replica has had its chances to lead
        assert await conn.fetchval(
            "SELECT runs FROM stats_worker.recurring_jobs WHERE name = 'verify'"
        ) == 1  # fmt: skip
        [killed] = [p for p in processes if p.pid == leader]
        [survivor] = [p for p in processes if p.pid != leader]
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=10)

        async def survivor_leads() -> bool:
            return await _leader_pid(conn) == survivor.pid

        took = await _until(survivor_leads, 2 * lease)
        assert took <= lease, took
        logs = [process_log(p) for p in processes]
        assert sum(log.count('"recurring job started"') for log in logs) == 1
        assert '"this replica leads' in process_log(survivor)
        assert (
            await conn.fetchval(
                "SELECT runs FROM stats_worker.recurring_jobs WHERE name = 'verify'"
            )
            == 1
        )  # fmt: skip: the new leader does not run the claimed slot again
    finally:
        for process in processes:
            if process.poll() is None:
                stop_process(process)


async def test_the_nightly_verify_alerts_on_drift_and_sets_the_metric(database_url, conn):
    league = generate_league(seed=5, tenants=2, players=8, matches=6, side_min=3, side_max=4)
    await play_league(conn, league)
    await drain_stats(database_url)
    async with receiving() as receiver:
        settings = worker_settings(database_url, alert_webhook_url=receiver.url)
        async with (
            asyncpg.create_pool(database_url, min_size=1, max_size=4, init=init_connection) as pool,
            http_client(settings) as client,
        ):
            assert await verify_and_alert(settings, pool, client) == "succeeded"
            assert REGISTRY.get_sample_value("stats_worker_drift_rows") == 0
            tenant = league.tenants[0].id
            await conn.execute(
                "UPDATE stats.player_totals SET goals = goals + 3 WHERE tenant_id = $1", tenant
            )
            assert await verify_and_alert(settings, pool, client) == "drift"
            [request] = await receiver.wait_for_requests(1)
    drifted = REGISTRY.get_sample_value("stats_worker_drift_rows")
    assert drifted is not None and drifted > 0
    text = request.body["text"]
    assert f"tenant {tenant}: player_totals" in text
    assert "differ from a recompute in 1 tenant(s)" in text
