"""The consumer engine on a real PostgreSQL and real pgmq, with a test handler."""

from __future__ import annotations

import asyncio
import itertools

import asyncpg

from tests.receiver import receiving
from tests.support import prepare_engine_table, running_worker, wait_for, worker_settings
from worker.queue import jobs
from worker.queue.pgmq import send

QUEUE = "stats_updates"
PGMQ_MATRIX = True  # every pgmq flavour (tests/conftest.py)


async def _runs(conn: asyncpg.Connection, job: str) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM engine_runs WHERE job = $1 ORDER BY id", job)


async def _queue_length(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT queue_length FROM pgmq.metrics($1)", QUEUE))


async def test_a_message_is_processed_acked_recorded_and_invalidated(database_url, conn, pool):
    await prepare_engine_table(database_url)
    msg_id = await send(pool, QUEUE, {"job": "one"})
    async with receiving() as receiver:
        settings = worker_settings(
            database_url, cache_invalidation_url=receiver.url, internal_secret="s3cret"
        )
        async with running_worker(settings):
            await wait_for(lambda: _is_status(pool, msg_id, "succeeded"))
            [request] = await receiver.wait_for_requests(1)
    assert await _queue_length(conn) == 0
    assert len(await _runs(conn, "one")) == 1
    job = await jobs.get_job(pool, QUEUE, msg_id)
    assert job is not None
    assert job.attempts == 1
    assert job.duration_ms is not None and job.duration_ms >= 0
    assert job.started_at is not None and job.finished_at is not None
    assert request.body == {"tags": ["job:one"]}
    assert request.headers["authorization"] == "Bearer s3cret"
    assert await conn.fetchval("SELECT count(*) FROM stats_worker.callbacks") == 0


async def _is_status(pool: asyncpg.Pool, msg_id: int, status: str) -> bool:
    job = await jobs.get_job(pool, QUEUE, msg_id)
    return job is not None and job.status == status


async def test_a_malformed_message_is_dead_at_once_with_its_reason(database_url, conn, pool):
    await prepare_engine_table(database_url)
    msg_id = await send(pool, QUEUE, {"job": ["not", "a", "string"]})
    async with running_worker(worker_settings(database_url)):
        await wait_for(lambda: _is_status(pool, msg_id, "dead"))
    job = await jobs.get_job(pool, QUEUE, msg_id)
    assert job is not None
    assert job.attempts == 1
    assert "not an engine job" in (job.last_error or "")
    archived = await conn.fetchval(f"SELECT message FROM pgmq.a_{QUEUE} WHERE msg_id = $1", msg_id)
    assert archived == {"job": ["not", "a", "string"]}
    assert await _queue_length(conn) == 0


async def test_failures_back_off_then_succeed(database_url, conn, pool):
    await prepare_engine_table(database_url)
    msg_id = await send(pool, QUEUE, {"job": "flaky", "fail_times": 2})
    settings = worker_settings(database_url, retry_base_seconds=0.4, max_attempts=5)
    async with running_worker(settings):
        await wait_for(lambda: _is_status(pool, msg_id, "succeeded"))
    runs = await _runs(conn, "flaky")
    assert len(runs) == 3
    gaps = [
        (b["started_at"] - a["finished_at"]).total_seconds() for a, b in itertools.pairwise(runs)
    ]
    # Equal jitter: attempt n waits between half and all of base * 2**(n-1).
    assert 0.2 <= gaps[0] <= 0.4 + 0.5
    assert 0.4 <= gaps[1] <= 0.8 + 0.5
    job = await jobs.get_job(pool, QUEUE, msg_id)
    assert job is not None and job.attempts == 3


async def test_dead_after_max_attempts_then_retry_brings_it_back(database_url, conn, pool):
    await prepare_engine_table(database_url)
    msg_id = await send(pool, QUEUE, {"job": "doomed", "fail_times": 3})
    settings = worker_settings(database_url, retry_base_seconds=0.05, max_attempts=3)
    async with running_worker(settings):
        await wait_for(lambda: _is_status(pool, msg_id, "dead"))
        job = await jobs.get_job(pool, QUEUE, msg_id)
        assert job is not None
        assert job.attempts == 3
        assert "attempts exhausted (3/3)" in (job.last_error or "")
        assert "planned failure 3 of 3" in (job.last_error or "")
        assert len(await _runs(conn, "doomed")) == 3

        new_id = await jobs.retry_dead(pool, QUEUE, msg_id)
        assert new_id is not None and new_id != msg_id
        await wait_for(lambda: _is_status(pool, new_id, "succeeded"))
    old = await jobs.get_job(pool, QUEUE, msg_id)
    assert old is not None and old.retried_as == new_id
    assert await jobs.retry_dead(pool, QUEUE, msg_id) is None  # no longer a dead letter
    assert await conn.fetchval(f"SELECT count(*) FROM pgmq.a_{QUEUE}") == 0


async def test_queued_messages_are_listed_before_anyone_reads_them(database_url, pool):
    first = await send(pool, QUEUE, {"job": "a"})
    second = await send(pool, QUEUE, {"job": "b"})
    listed = await jobs.list_jobs(pool, QUEUE, "queued", 10)
    assert [job.msg_id for job in listed] == [second, first]
    assert {job.status for job in listed} == {"queued"}


async def test_until_empty_returns_when_the_queue_has_drained(database_url, conn, pool):
    await prepare_engine_table(database_url)
    for i in range(20):
        await send(pool, QUEUE, {"job": f"bulk-{i}"})
    from tests.support import engine_handlers
    from worker.app import run_worker

    await asyncio.wait_for(
        run_worker(
            worker_settings(database_url),
            database_url,
            handlers=engine_handlers,
            until_empty=True,
            install_signal_handlers=False,
        ),
        timeout=30,
    )
    assert await _queue_length(conn) == 0
    assert await conn.fetchval("SELECT count(*) FROM engine_runs") == 20


async def test_a_long_job_shows_as_running_then_succeeded(database_url, pool):
    await prepare_engine_table(database_url)
    msg_id = await send(pool, QUEUE, {"job": "long", "sleep": 1.5})
    async with running_worker(worker_settings(database_url)):
        await wait_for(lambda: _is_status(pool, msg_id, "running"))
        await wait_for(lambda: _is_status(pool, msg_id, "succeeded"))


async def test_messages_of_a_running_group_merge_into_its_next_run(database_url, conn, pool):
    await prepare_engine_table(database_url)
    await send(pool, QUEUE, {"job": "first", "group": "tenant-1", "sleep": 1.0})
    async with running_worker(worker_settings(database_url, concurrency=4)):
        await wait_for(lambda: _started(conn, "first"))
        for i in range(5):
            await send(pool, QUEUE, {"job": f"later-{i}", "group": "tenant-1"})
        await send(pool, QUEUE, {"job": "other", "group": "tenant-2"})
        await wait_for(lambda: _all_finished(conn, 7))
    sizes = dict(await conn.fetch("SELECT job, group_size FROM engine_runs"))
    assert sizes["first"] == 1
    assert {sizes[f"later-{i}"] for i in range(5)} == {5}, "one recompute for the five"
    assert sizes["other"] == 1
    # The other tenant did not wait for tenant-1's long run.
    order = [r["job"] for r in await conn.fetch("SELECT job FROM engine_runs ORDER BY finished_at")]
    assert order.index("other") < order.index("first")


async def test_without_coalescing_every_message_runs_alone(database_url, conn, pool):
    await prepare_engine_table(database_url)
    for i in range(6):
        await send(pool, QUEUE, {"job": f"solo-{i}", "group": "tenant-1"})
    async with running_worker(worker_settings(database_url, coalesce=False)):
        await wait_for(lambda: _all_finished(conn, 6))
    assert await conn.fetchval("SELECT max(group_size) FROM engine_runs") == 1


async def _started(conn: asyncpg.Connection, job: str) -> bool:
    return bool(await conn.fetchval("SELECT count(*) FROM engine_runs WHERE job = $1", job))


async def _all_finished(conn: asyncpg.Connection, count: int) -> bool:
    done = await conn.fetchval("SELECT count(*) FROM engine_runs WHERE finished_at IS NOT NULL")
    return bool(done == count)
