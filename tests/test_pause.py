"""Pause and resume: stored in the database, obeyed by every replica within one poll."""

from __future__ import annotations

import asyncio

from tests.support import prepare_engine_table, running_worker, wait_for, worker_settings
from tests.test_cli import cli
from worker.queue import send

QUEUE = "stats_updates"
POLL_SECONDS = 0.2


async def _status(pool, msg_id: int) -> str | None:
    return await pool.fetchval("SELECT status FROM stats_worker.job_runs WHERE msg_id = $1", msg_id)


async def test_a_paused_queue_is_read_by_no_replica_until_resumed(database_url, pool):
    await prepare_engine_table(database_url)
    settings = worker_settings(database_url, poll_interval_seconds=POLL_SECONDS)
    async with running_worker(settings) as first, running_worker(settings) as second:
        paused = cli(database_url, "pause")
        assert paused.returncode == 0, paused.stderr
        assert "paused" in paused.stdout
        await wait_for(lambda: _both(first, second, paused=True))

        ids = [await send(pool, QUEUE, {"job": f"held {n}"}) for n in range(4)]
        await asyncio.sleep(5 * POLL_SECONDS)
        assert [await _status(pool, msg_id) for msg_id in ids] == [None] * 4
        seen = await pool.fetch(
            "SELECT paused FROM stats_worker.replicas WHERE seen_at > now() - interval '1 minute'"
        )
        assert [row["paused"] for row in seen] == [True, True]

        assert cli(database_url, "pause").stdout.strip() == f"queue {QUEUE} was already paused"
        assert cli(database_url, "resume").stdout.strip() == f"queue {QUEUE} resumed"
        for msg_id in ids:
            await wait_for(lambda m=msg_id: _is(pool, m, "succeeded"))
        assert not first.status.paused and not second.status.paused


async def _both(first, second, *, paused: bool) -> bool:
    return first.status.paused is paused and second.status.paused is paused


async def _is(pool, msg_id: int, status: str) -> bool:
    return await _status(pool, msg_id) == status
