"""Message ownership, forced deterministically: stale settles, renewal under a full pool,
a message lost to another reader, and a message the same process reads twice.

A worker owns a message from its read until another read hands it out again
(``read_ct``, see ``sql/migrations/0008_message_ownership.sql``). Each test makes
the situation happen on purpose instead of hoping a load test stumbles on it:
a second read taken by the test itself, every job-pool connection held by the
test, the renewer held behind the settler's lock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from tests.support import prepare_engine_table, running_worker, wait_for, worker_settings
from worker.core.metrics import REGISTRY
from worker.queue import jobs
from worker.queue.outcomes import Settler
from worker.queue.pgmq import Queue, send
from worker.queue.runs import JobRun

QUEUE = "stats_updates"
LOST = "message lost: another worker read it after its visibility timeout lapsed"
"""What groups.forget_lost logs; the settler's refusal says more after a semicolon."""


def _lost_count() -> float:
    labels = {"queue": QUEUE}
    return REGISTRY.get_sample_value("stats_worker_messages_lost_total", labels) or 0.0


async def _in_queue(conn: asyncpg.Connection, msg_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT read_ct, vt FROM pgmq.q_{QUEUE} WHERE msg_id = $1", msg_id)


async def _archived(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval(f"SELECT count(*) FROM pgmq.a_{QUEUE}"))


def _warnings(
    caplog: pytest.LogCaptureFixture, logger: str, message: str
) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == logger and r.levelno == logging.WARNING and r.getMessage() == message
    ]


@pytest.mark.pgmq_matrix
async def test_a_stale_read_settles_nothing_ack_retry_or_archive(database_url, conn, pool, caplog):
    """The settle path (Settler → settle_messages → lock_owned) with a read another took over."""
    caplog.set_level(logging.WARNING)
    queue = Queue(pool, QUEUE)
    ids = [await send(pool, QUEUE, {"job": f"j{i}"}) for i in range(4)]
    first = {m.msg_id: m for m in await queue.read(30, 4)}
    assert sorted(first) == ids and {m.read_ct for m in first.values()} == {1}
    # The first reader's timeout lapses for three of them and a second reader takes them.
    stale = ids[:3]
    for msg_id in stale:
        await conn.execute("SELECT msg_id FROM pgmq.set_vt($1::text, $2::bigint, 0)", QUEUE, msg_id)
    second = {m.msg_id: m for m in await queue.read(60, 3)}
    assert sorted(second) == stale and {m.read_ct for m in second.values()} == {2}

    now = datetime.now(UTC)
    runs = {
        msg_id: JobRun(msg_id, "succeeded", 1, m.enqueued_at, now, read_ct=m.read_ct)
        for msg_id, m in first.items()
    }
    lost_before = _lost_count()
    settler = Settler(pool, QUEUE)
    flusher = asyncio.create_task(settler.run())
    try:
        settler.succeeded([runs[stale[0]]], ["job:j0"])
        runs[stale[1]].status = "retrying"
        settler.retry(runs[stale[1]], 0.0)  # would make it visible at once
        runs[stale[2]].status = "dead"
        settler.dead(runs[stale[2]])  # would dead-letter it
        settler.succeeded([runs[ids[3]]], ["job:j3"])  # still owned: the control
        await asyncio.wait_for(settler.drained(), timeout=10)
    finally:
        flusher.cancel()
        await asyncio.gather(flusher, return_exceptions=True)

    for msg_id in stale:  # untouched: the second reader's read_ct and timeout
        row = await _in_queue(conn, msg_id)
        assert row is not None, f"message {msg_id} was settled by a reader that lost it"
        assert (row["read_ct"], row["vt"]) == (2, second[msg_id].vt)
    assert await _archived(conn) == 0
    assert await _in_queue(conn, ids[3]) is None  # the owned ack went through
    recorded = await conn.fetch("SELECT msg_id, status FROM stats_worker.job_runs")
    assert [(r["msg_id"], r["status"]) for r in recorded] == [(ids[3], "succeeded")]
    assert _lost_count() == lost_before + 3
    refused = [
        r
        for r in caplog.records
        if r.name == "worker.queue.outcomes" and r.getMessage().startswith(LOST)
    ]
    assert sorted(r.__dict__["msg_id"] for r in refused) == stale


async def _started(conn: asyncpg.Connection, job: str) -> bool:
    return bool(await conn.fetchval("SELECT count(*) FROM engine_runs WHERE job = $1", job))


async def _still_running(conn: asyncpg.Connection, job: str) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT count(*) FROM engine_runs WHERE job = $1 AND finished_at IS NULL", job
        )
    )


async def _status_is(pool: asyncpg.Pool, msg_id: int, status: str) -> bool:
    job = await jobs.get_job(pool, QUEUE, msg_id)
    return job is not None and job.status == status


async def test_renewal_keeps_a_message_invisible_while_every_pool_connection_is_held(
    database_url, conn, pool, caplog
):
    caplog.set_level(logging.WARNING)
    await prepare_engine_table(database_url)
    msg_id = await send(pool, QUEUE, {"job": "long", "sleep": 1.0})
    settings = worker_settings(
        database_url,
        visibility_timeout_seconds=3,
        pool_min_size=1,
        pool_max_size=2,
        concurrency=1,
        coalesce=False,
    )
    async with running_worker(settings) as worker:
        await wait_for(lambda: _started(conn, "long"))
        held = [
            await asyncio.wait_for(worker.pool.acquire(), timeout=15)
            for _ in range(settings.pool_max_size)
        ]
        try:
            # The job now waits for the pool to finish, and so does the settler,
            # which takes its connection before the lock it shares with the renewer.
            worker.settlers[0].owe(["job:while-the-pool-is-full"])
            row = await _in_queue(conn, msg_id)
            assert row is not None and row["read_ct"] == 1
            held_since_vt = row["vt"]
            # Past the timeout the message had when the pool filled up, a second
            # reader still finds nothing: the renewer did not wait for the pool.
            while not await conn.fetchval(
                "SELECT clock_timestamp() > $1", held_since_vt + timedelta(seconds=1)
            ):
                stolen = await conn.fetch("SELECT msg_id FROM pgmq.read($1, 30, 1)", QUEUE)
                assert stolen == [], "a second reader got the message while the pool was full"
                await asyncio.sleep(0.1)
            row = await _in_queue(conn, msg_id)
            assert row is not None and row["read_ct"] == 1
            assert row["vt"] > held_since_vt, "no renewal while the pool was full"
            assert await _still_running(conn, "long")
        finally:
            for connection in held:
                await worker.pool.release(connection)
        await wait_for(lambda: _status_is(pool, msg_id, "succeeded"))
    assert await conn.fetchval("SELECT count(*) FROM engine_runs WHERE job = 'long'") == 1
    job = await jobs.get_job(pool, QUEUE, msg_id)
    assert job is not None and job.attempts == 1
    assert not [r for r in caplog.records if r.getMessage().startswith("message lost")]


async def test_a_late_renewal_says_so_and_a_message_lost_meanwhile_is_forgotten(
    database_url, conn, pool, caplog
):
    """The renewer held behind the settler's lock past the timeout; a rival read in the gap."""
    caplog.set_level(logging.WARNING)
    await prepare_engine_table(database_url)
    msg_id = await send(pool, QUEUE, {"job": "lost", "sleep": 6.0})
    timeout = 2
    # Without coalescing and with one slot, the worker reads nothing while its job runs.
    settings = worker_settings(
        database_url, visibility_timeout_seconds=timeout, concurrency=1, coalesce=False
    )
    lost_before = _lost_count()
    async with running_worker(settings) as worker:
        settler = worker.settlers[0]
        await wait_for(lambda: _started(conn, "lost"))
        await settler.lock.acquire()
        held_from = time.monotonic()
        try:
            await wait_for(
                lambda: conn.fetchval(
                    f"SELECT vt <= clock_timestamp() FROM pgmq.q_{QUEUE} WHERE msg_id = $1",
                    msg_id,
                )
            )
            [rival] = await conn.fetch(
                "SELECT msg_id, read_ct, vt FROM pgmq.read($1, 60, 1)", QUEUE
            )
            assert (rival["msg_id"], rival["read_ct"]) == (msg_id, 2)
        finally:
            settler.lock.release()
            held_for = time.monotonic() - held_from
        await wait_for(lambda: _forgotten(worker))
        assert await _still_running(conn, "lost"), "forgotten only once the job had ended"
        # The renewer last renewed before the lock was taken: it is at least that late.
        warned = _warnings(caplog, "worker.queue.renewal", "visibility renewal is late")
        late = [r.__dict__["late_s"] for r in warned]
        assert late and max(late) >= max(held_for - 0.01, 2 * timeout / 3), late
        [forgotten] = _warnings(caplog, "worker.queue.groups", LOST)
        assert forgotten.__dict__["msg_id"] == msg_id
        # The job runs to its end; its ack is refused, not applied.
        await wait_for(lambda: _refused(caplog, "succeeded"), timeout=20)
    row = await _in_queue(conn, msg_id)
    assert row is not None and (row["read_ct"], row["vt"]) == (2, rival["vt"])
    assert await _archived(conn) == 0
    status = await conn.fetchval(
        "SELECT status FROM stats_worker.job_runs WHERE msg_id = $1", msg_id
    )
    assert status in (None, "running")  # a 'running' record written while it was owned
    assert _lost_count() >= lost_before + 2  # forgotten, then the ack refused


async def _forgotten(worker: object) -> bool:
    return worker.status.in_flight == 0  # type: ignore[attr-defined]


async def _refused(caplog: pytest.LogCaptureFixture, status: str) -> bool:
    return any(
        r.name == "worker.queue.outcomes"
        and r.getMessage().startswith(LOST)
        and getattr(r, "status", None) == status
        for r in caplog.records
    )


async def test_a_message_read_twice_by_one_process_runs_once(database_url, conn, pool, caplog):
    """Its timeout lapses while it runs and the same worker reads it again (groups.reread)."""
    caplog.set_level(logging.WARNING)
    await prepare_engine_table(database_url)
    msg_id = await send(pool, QUEUE, {"job": "twice", "sleep": 5.0})
    settings = worker_settings(database_url, visibility_timeout_seconds=2, concurrency=1)
    async with running_worker(settings) as worker:
        settler = worker.settlers[0]
        await wait_for(lambda: _started(conn, "twice"))
        await settler.lock.acquire()  # the renewer waits: the timeout lapses
        try:
            # Nobody else reads this queue: the second read is the worker's own.
            await wait_for(lambda: _read_ct_is(conn, msg_id, 2))
            assert await _still_running(conn, "twice"), "re-read only after the run had ended"
        finally:
            settler.lock.release()
        await wait_for(lambda: _status_is(pool, msg_id, "succeeded"), timeout=20)
    assert await conn.fetchval("SELECT count(*) FROM engine_runs WHERE job = 'twice'") == 1
    job = await jobs.get_job(pool, QUEUE, msg_id)
    assert job is not None and job.attempts == 1
    assert await _in_queue(conn, msg_id) is None
    assert not [r for r in caplog.records if r.getMessage().startswith("message lost")]


async def _read_ct_is(conn: asyncpg.Connection, msg_id: int, read_ct: int) -> bool:
    row = await _in_queue(conn, msg_id)
    return row is not None and row["read_ct"] == read_ct


async def test_a_message_given_up_as_lost_that_comes_back_while_it_runs_is_not_run_twice(
    database_url, conn, pool, caplog
):
    """The renewer gives a running message up (a rival read it), the rival lets it go,
    and this worker reads it again while its first run still goes on: that read
    is adopted by the run (groups.holds), not queued as a second run."""
    caplog.set_level(logging.WARNING)
    await prepare_engine_table(database_url)
    msg_id = await send(pool, QUEUE, {"job": "back", "sleep": 8.0})
    # A free slot while the job runs, so the worker reads the message again.
    settings = worker_settings(
        database_url, visibility_timeout_seconds=2, concurrency=2, coalesce=False
    )
    async with running_worker(settings) as worker:
        settler = worker.settlers[0]
        await wait_for(lambda: _started(conn, "back"))
        await settler.lock.acquire()
        try:
            # The rival reads it as if its timeout had lapsed, in one transaction:
            # the row stays locked from the lapse to the read, so the worker's own
            # reads (it has a free slot) cannot take it in between.
            async with conn.transaction():
                await conn.execute(
                    f"UPDATE pgmq.q_{QUEUE} SET vt = clock_timestamp() WHERE msg_id = $1", msg_id
                )
                [rival] = await conn.fetch(
                    "SELECT msg_id, read_ct FROM pgmq.read($1, 60, 1)", QUEUE
                )
            assert rival["msg_id"] == msg_id and rival["read_ct"] >= 2
        finally:
            settler.lock.release()
        await wait_for(lambda: _forgotten(worker))
        # The rival gives the message back at once; the worker reads it again.
        await conn.execute(
            f"UPDATE pgmq.q_{QUEUE} SET vt = clock_timestamp() WHERE msg_id = $1", msg_id
        )
        await wait_for(lambda: _read_ct_is(conn, msg_id, rival["read_ct"] + 1))
        assert await _still_running(conn, "back"), "read again only after the run had ended"
        await wait_for(lambda: _done_running(conn, "back"), timeout=20)
        assert await conn.fetchval("SELECT count(*) FROM engine_runs WHERE job = 'back'") == 1
        await wait_for(lambda: _status_is(pool, msg_id, "succeeded"), timeout=20)
    assert await _in_queue(conn, msg_id) is None  # the adopted read settled it


async def _done_running(conn: asyncpg.Connection, job: str) -> bool:
    return not await _still_running(conn, job)
