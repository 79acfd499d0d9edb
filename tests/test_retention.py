"""Retention: old rows go in small batches; what a running job or the app is owed stays."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import httpx
import pytest

from tests.support import (
    prepare_engine_table,
    run_cli,
    running_worker,
    wait_for,
    worker_settings,
)
from worker.queue.pgmq import send
from worker.upkeep import retention

QUEUE = "stats_updates"
OLD = "now() - interval '60 days'"


async def _old_finished_runs(conn: asyncpg.Connection, count: int, first_id: int = 1) -> None:
    """Records of messages long gone from the queue, as a season of work leaves them."""
    await conn.execute(
        "INSERT INTO stats_worker.job_runs (queue_name, msg_id, status, attempts, updated_at) "
        f"SELECT $1, i, 'succeeded', 1, {OLD} FROM generate_series($2::bigint, $3::bigint) AS i",
        QUEUE,
        first_id,
        first_id + count - 1,
    )


async def _dead_letter(conn: asyncpg.Connection, archived_days_ago: int) -> int:
    msg_id: int = await send(conn, QUEUE, {"job": "dead"})
    await conn.execute("SELECT pgmq.archive($1, $2::bigint)", QUEUE, msg_id)
    await conn.execute(
        "UPDATE pgmq.a_stats_updates SET archived_at = now() - make_interval(days => $2) "
        "WHERE msg_id = $1",
        msg_id,
        archived_days_ago,
    )
    await conn.execute(
        "INSERT INTO stats_worker.job_runs (queue_name, msg_id, status, attempts, updated_at) "
        f"VALUES ($1, $2, 'dead', 5, {OLD})",
        QUEUE,
        msg_id,
    )
    return msg_id


@pytest.mark.pgmq_matrix
async def test_purge_deletes_only_what_is_past_its_retention_in_batches(conn, database_url):
    await _old_finished_runs(conn, 1200, first_id=1_000_000)
    await conn.execute(
        "INSERT INTO stats_worker.job_runs (queue_name, msg_id, status, attempts) "
        "VALUES ($1, 2000000, 'succeeded', 1)",
        QUEUE,
    )
    still_queued: int = await send(conn, QUEUE, {"job": "waiting"})
    await conn.execute(
        "INSERT INTO stats_worker.job_runs (queue_name, msg_id, status, attempts, failures, "
        f"updated_at) VALUES ($1, $2, 'retrying', 3, 2, {OLD})",
        QUEUE,
        still_queued,
    )
    expired_dead = await _dead_letter(conn, archived_days_ago=60)
    recent_dead = await _dead_letter(conn, archived_days_ago=1)
    await conn.execute(
        "INSERT INTO stats_worker.callbacks (msg_ids, tags, created_at, next_attempt_at, status) "
        f"VALUES ('{{1}}', '{{a}}', {OLD}, now(), 'failed'), "
        f"('{{2}}', '{{b}}', {OLD}, now(), 'pending'), ('{{3}}', '{{c}}', now(), now(), 'failed')"
    )
    settings = worker_settings(database_url, retention_batch_size=500)
    async with asyncpg.create_pool(database_url, min_size=1, max_size=2) as pool:
        dry = await retention.purge(pool, settings, [QUEUE], dry_run=True)
        assert await conn.fetchval("SELECT count(*) FROM stats_worker.job_runs") == 1204
        report = await retention.purge(pool, settings, [QUEUE])

    # The archived message expired with the archive; its record with it (the job runs
    # go after the archive, so a dead letter's record outlives its message by one run).
    assert report.rows == {
        "stats_worker.job_runs": 1200,
        f"pgmq.a_{QUEUE}": 1,
        "stats_worker.callbacks": 1,
    }
    assert dry.rows == report.rows
    assert report.batches >= 3  # 1200 rows at 500 a batch, never one long delete
    kept = await conn.fetch("SELECT msg_id, status FROM stats_worker.job_runs ORDER BY msg_id")
    assert {(r["msg_id"], r["status"]) for r in kept} == {
        (still_queued, "retrying"),
        (expired_dead, "dead"),
        (recent_dead, "dead"),
        (2000000, "succeeded"),
    }
    archived = await conn.fetch("SELECT msg_id FROM pgmq.a_stats_updates")
    assert [r["msg_id"] for r in archived] == [recent_dead]
    callbacks = await conn.fetch("SELECT tags FROM stats_worker.callbacks ORDER BY id")
    assert [r["tags"] for r in callbacks] == [["b"], ["c"]]

    async with asyncpg.create_pool(database_url, min_size=1, max_size=2) as pool:
        again = await retention.purge(pool, settings, [QUEUE])
    # Now the dead letter's record goes too: its message left the archive.
    assert again.rows["stats_worker.job_runs"] == 1


async def test_a_running_jobs_records_are_never_purged(conn, database_url):
    """A job in its second run: its record (which counts the first failure) and its
    write-ahead invalidation survive a purge that keeps nothing older than a second."""
    await prepare_engine_table(database_url)
    settings = worker_settings(
        database_url,
        job_runs_retention_days=1 / 86400,
        archive_retention_days=1 / 86400,
        callbacks_retention_days=1 / 86400,
    )
    async with running_worker(settings) as worker:
        msg_id = await send(worker.pool, QUEUE, {"job": "slow", "sleep": 2.5, "fail_times": 1})

        async def running_again() -> bool:
            row = await conn.fetchrow(
                "SELECT status, failures FROM stats_worker.job_runs WHERE msg_id = $1", msg_id
            )
            return row is not None and row["status"] == "running" and row["failures"] == 1

        await wait_for(running_again, timeout=30)
        await conn.execute(f"UPDATE stats_worker.job_runs SET updated_at = {OLD}")
        await conn.execute(f"UPDATE stats_worker.callbacks SET created_at = {OLD}")
        owed_before = await conn.fetchval("SELECT count(*) FROM stats_worker.callbacks")
        assert owed_before >= 1  # the write-ahead row of the running recompute
        report = await retention.purge(worker.pool, settings, [QUEUE])
        assert report.rows["stats_worker.job_runs"] == 0
        assert report.rows["stats_worker.callbacks"] == 0
        assert await conn.fetchval("SELECT count(*) FROM stats_worker.callbacks") == owed_before

        async def succeeded() -> bool:
            row = await conn.fetchrow(
                "SELECT status, attempts FROM stats_worker.job_runs WHERE msg_id = $1", msg_id
            )
            return row is not None and row["status"] == "succeeded"

        await wait_for(succeeded, timeout=30)
    row = await conn.fetchrow(
        "SELECT attempts FROM stats_worker.job_runs WHERE msg_id = $1", msg_id
    )
    assert row["attempts"] == 2  # the failure before the purge still counted


async def test_purging_while_the_worker_is_busy_never_holds_it_up(conn, database_url):
    await prepare_engine_table(database_url)
    await _old_finished_runs(conn, 6000, first_id=10_000_000)
    settings = worker_settings(database_url, retention_batch_size=200, concurrency=4)
    async with running_worker(settings) as worker:
        for i in range(300):
            await send(worker.pool, QUEUE, {"job": f"load-{i}", "sleep": 0.01})
        started = time.monotonic()
        report = await retention.purge(worker.pool, settings, [QUEUE])
        purge_seconds = time.monotonic() - started

        async def drained() -> bool:
            return (
                await conn.fetchval(
                    "SELECT count(*) FROM stats_worker.job_runs WHERE status = 'succeeded' "
                    "AND msg_id < 10000000"
                )
                == 300
            )

        await wait_for(drained, timeout=60)
        assert worker.status.stopping is False
    assert report.rows["stats_worker.job_runs"] == 6000
    assert report.batches >= 30
    assert report.longest_batch_seconds < 2.0, report.longest_batch_seconds
    assert purge_seconds < 60
    errors = await conn.fetchval(
        "SELECT count(*) FROM stats_worker.job_runs WHERE status <> 'succeeded'"
    )
    assert errors == 0


async def test_table_sizes_are_in_metrics(database_url):
    await prepare_engine_table(database_url)
    async with running_worker(worker_settings(database_url, host="127.0.0.1")) as worker:

        async def port() -> bool:
            return worker.http_port is not None

        await wait_for(port)
        url = f"http://127.0.0.1:{worker.http_port}/metrics"
        async with httpx.AsyncClient() as client:
            text = (await client.get(url)).text
    for table in ("stats_worker.job_runs", "stats_worker.callbacks", f"pgmq.a_{QUEUE}"):
        line = next(
            line for line in text.splitlines()
            if line.startswith(f'stats_worker_table_bytes{{table="{table}"}}')
        )  # fmt: skip
        assert float(line.split()[-1]) > 0


async def test_purge_command_dry_run_counts_and_deletes_nothing(conn, database_url):
    await _old_finished_runs(conn, 7)
    result = await asyncio.to_thread(run_cli, database_url, "purge", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "stats_worker.job_runs: would purge 7 row(s)" in result.stdout
    assert await conn.fetchval("SELECT count(*) FROM stats_worker.job_runs") == 7
    result = await asyncio.to_thread(run_cli, database_url, "purge")
    assert result.returncode == 0, result.stderr
    assert "stats_worker.job_runs: purged 7 row(s)" in result.stdout
    assert await conn.fetchval("SELECT count(*) FROM stats_worker.job_runs") == 0
