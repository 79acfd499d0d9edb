"""The engine under faults: timeouts, renewals, rival workers, kills, lost connections."""

from __future__ import annotations

import asyncio
import signal
import time

import asyncpg
import pytest

from tests.support import (
    prepare_engine_table,
    running_worker,
    start_worker_process,
    stop_process,
    wait_for,
    worker_settings,
)
from worker.queue import jobs
from worker.queue.pgmq import send

QUEUE = "stats_updates"
PGMQ_MATRIX = True  # every pgmq flavour (tests/conftest.py)


async def _finished(conn: asyncpg.Connection, job: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM engine_runs WHERE job = $1 AND finished_at IS NOT NULL ORDER BY id", job
    )


async def test_a_message_read_but_never_settled_comes_back_after_its_timeout(
    database_url, conn, pool
):
    await prepare_engine_table(database_url)
    msg_id = await send(pool, QUEUE, {"job": "orphan"})
    # A consumer that read the message and then vanished.
    claimed = await conn.fetch("SELECT msg_id FROM pgmq.read($1, 1, 10)", QUEUE)
    assert [r["msg_id"] for r in claimed] == [msg_id]
    async with running_worker(worker_settings(database_url)):
        await asyncio.sleep(0.5)
        assert await _finished(conn, "orphan") == []  # still invisible
        await wait_for(lambda: _has_finished(conn, "orphan"), timeout=10)
    job = await jobs.get_job(pool, QUEUE, msg_id)
    # The vanished reader's lapsed timeout was not a failure: this is attempt 1.
    assert job is not None and job.status == "succeeded" and job.attempts == 1


async def _has_finished(conn: asyncpg.Connection, job: str) -> bool:
    return bool(await _finished(conn, job))


async def test_renewal_keeps_a_long_job_invisible_to_other_readers(database_url, conn, pool):
    await prepare_engine_table(database_url)
    await send(pool, QUEUE, {"job": "long", "sleep": 3.0})
    settings = worker_settings(database_url, visibility_timeout_seconds=1)
    async with running_worker(settings):
        await wait_for(lambda: _has_started(conn, "long"))
        stolen = []
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            stolen += await conn.fetch("SELECT msg_id FROM pgmq.read($1, 30, 1)", QUEUE)
            await asyncio.sleep(0.1)
        assert stolen == [], "a second reader got the message while it was still running"
        await wait_for(lambda: _has_finished(conn, "long"))
    assert await conn.fetchval("SELECT count(*) FROM engine_runs WHERE job = 'long'") == 1


async def _has_started(conn: asyncpg.Connection, job: str) -> bool:
    return bool(await conn.fetchval("SELECT count(*) FROM engine_runs WHERE job = $1", job))


async def test_two_worker_processes_never_run_one_message_twice(database_url, conn, pool):
    await prepare_engine_table(database_url)
    for i in range(60):
        await send(pool, QUEUE, {"job": f"j{i}", "sleep": 0.2})
    processes = [start_worker_process(database_url, CONCURRENCY="4") for _ in range(2)]
    try:
        await wait_for(
            lambda: _count(
                conn, "SELECT count(*) FROM engine_runs WHERE finished_at IS NOT NULL", 60
            ),
            timeout=60,
        )
    finally:
        codes = [stop_process(p) for p in processes]
    assert codes == [0, 0]
    per_job = await conn.fetch("SELECT job, count(*) AS n FROM engine_runs GROUP BY job")
    assert len(per_job) == 60
    assert {r["n"] for r in per_job} == {1}
    pids = await conn.fetchval("SELECT count(DISTINCT pid) FROM engine_runs")
    assert pids == 2, "both workers should have taken a share"
    assert await conn.fetchval("SELECT queue_length FROM pgmq.metrics($1)", QUEUE) == 0


async def _count(conn: asyncpg.Connection, sql: str, expected: int) -> bool:
    return bool(await conn.fetchval(sql) == expected)


async def test_a_worker_killed_mid_job_loses_nothing(database_url, conn, pool):
    await prepare_engine_table(database_url)
    msg_id = await send(pool, QUEUE, {"job": "victim", "sleep": 1.0})
    first = start_worker_process(database_url, VISIBILITY_TIMEOUT_SECONDS="2")
    try:
        await wait_for(lambda: _has_started(conn, "victim"), timeout=20)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    assert await _finished(conn, "victim") == []
    second = start_worker_process(database_url, VISIBILITY_TIMEOUT_SECONDS="2")
    try:
        await wait_for(lambda: _has_finished(conn, "victim"), timeout=20)
        await wait_for(lambda: _status_is(pool, msg_id, "succeeded"))
    finally:
        assert stop_process(second) == 0
    finished = await _finished(conn, "victim")
    assert finished[0]["pid"] == second.pid


async def _status_is(pool: asyncpg.Pool, msg_id: int, status: str) -> bool:
    job = await jobs.get_job(pool, QUEUE, msg_id)
    return job is not None and job.status == status


async def test_sigterm_finishes_in_flight_work_then_exits_zero(database_url, conn, pool):
    await prepare_engine_table(database_url)
    msg_id = await send(pool, QUEUE, {"job": "graceful", "sleep": 1.5})
    process = start_worker_process(database_url)
    await wait_for(lambda: _has_started(conn, "graceful"), timeout=20)
    assert stop_process(process, signal.SIGTERM) == 0
    assert len(await _finished(conn, "graceful")) == 1
    job = await jobs.get_job(pool, QUEUE, msg_id)
    assert job is not None and job.status == "succeeded"
    assert await conn.fetchval("SELECT queue_length FROM pgmq.metrics($1)", QUEUE) == 0


async def test_work_past_the_grace_period_is_released_not_lost(database_url, conn, pool):
    await prepare_engine_table(database_url)
    msg_id = await send(pool, QUEUE, {"job": "slowpoke", "sleep": 30})
    process = start_worker_process(database_url, SHUTDOWN_GRACE_SECONDS="0.5")
    await wait_for(lambda: _has_started(conn, "slowpoke"), timeout=20)
    assert stop_process(process, signal.SIGTERM) == 0
    job = await jobs.get_job(pool, QUEUE, msg_id)
    assert job is not None and job.status == "retrying"
    assert "interrupted by shutdown" in (job.last_error or "")
    # Released at once, not after the visibility timeout.
    visible = await conn.fetchval("SELECT visible FROM stats_worker.queue_depth($1)", QUEUE)
    assert visible == 1


async def test_terminated_database_connections_are_survived(database_url, conn, pool):
    await prepare_engine_table(database_url)
    async with running_worker(worker_settings(database_url)) as worker:
        await wait_for(lambda: _listener_connected(worker))
        for i in range(10):
            await send(pool, QUEUE, {"job": f"before-{i}", "sleep": 0.2})
        await wait_for(lambda: _has_started(conn, "before-0"))
        killed = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'stats-worker' AND datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )
        assert killed >= 2  # the pool's and the listener's
        for i in range(10):
            await send(pool, QUEUE, {"job": f"after-{i}"})
        await wait_for(
            lambda: _count(
                conn,
                "SELECT count(DISTINCT job) FROM engine_runs WHERE finished_at IS NOT NULL",
                20,
            ),
            timeout=30,
        )
        await wait_for(lambda: _listener_connected(worker), timeout=15)
        await wait_for(
            lambda: _count(conn, "SELECT queue_length FROM pgmq.metrics('stats_updates')", 0)
        )


async def _listener_connected(worker) -> bool:
    return bool(worker.status.listener_connected)


async def test_notify_wakes_an_idle_worker_before_its_poll_interval(database_url, conn, pool):
    await prepare_engine_table(database_url)
    settings = worker_settings(database_url, poll_interval_seconds=30)
    async with running_worker(settings) as worker:
        await wait_for(lambda: _listener_connected(worker))
        await asyncio.sleep(0.3)  # let the first (empty) read go to sleep
        started = time.monotonic()
        await send(pool, QUEUE, {"job": "wake-up"})
        await wait_for(lambda: _has_finished(conn, "wake-up"), timeout=10)
        assert time.monotonic() - started < 5, "the insert NOTIFY did not wake the worker"


async def test_a_background_task_that_dies_stops_the_worker_loudly(database_url, monkeypatch):
    from tests.support import engine_handlers
    from worker.app import run_worker

    async def broken_listener(*_: object) -> None:
        raise RuntimeError("listener bug")

    monkeypatch.setattr("worker.queue.consumer.listen_forever", broken_listener)
    await prepare_engine_table(database_url)
    run = run_worker(
        worker_settings(database_url),
        database_url,
        handlers=engine_handlers,
        install_signal_handlers=False,
    )
    with pytest.raises(ExceptionGroup) as stopped:
        await asyncio.wait_for(run, timeout=10)
    assert stopped.group_contains(RuntimeError, match="listener bug", depth=None)
