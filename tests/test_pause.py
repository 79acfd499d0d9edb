"""Pause and resume: stored in the database, obeyed by every replica within one poll."""

from __future__ import annotations

import asyncio
import logging
import time

from tests.support import (
    prepare_engine_table,
    running_worker,
    start_worker_process,
    stop_process,
    wait_for,
    worker_settings,
)
from tests.test_cli import cli
from worker.app import default_handlers
from worker.queue.pgmq import send
from worker.queue.priorities import bulk_queue_name

QUEUE = "stats_updates"
BULK = bulk_queue_name(QUEUE)
TENANT = "00000000-0000-0000-0000-0000000000b1"
TRANSITIONS = ("consuming paused", "consuming resumed")
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


async def test_worker_processes_each_stop_reading_within_a_poll_of_a_pause(database_url, pool):
    await prepare_engine_table(database_url)
    workers = [start_worker_process(database_url) for _ in range(2)]
    try:
        await wait_for(lambda: _replicas(pool, paused=False, count=2), timeout=30)
        assert cli(database_url, "pause").returncode == 0
        # each process records itself the poll it first sees the pause
        await wait_for(lambda: _replicas(pool, paused=True, count=2), timeout=2)
        held = await send(pool, QUEUE, {"job": "held"})
        await asyncio.sleep(1.0)  # five polls of 0.2 s
        assert await _status(pool, held) is None
        assert cli(database_url, "resume").returncode == 0
        await wait_for(lambda: _is(pool, held, "succeeded"))
    finally:
        for process in workers:
            assert stop_process(process) == 0


async def _replicas(pool, *, paused: bool, count: int) -> bool:
    found = await pool.fetchval(
        "SELECT count(*) FROM stats_worker.replicas"
        " WHERE paused = $1 AND seen_at > now() - interval '1 minute'",
        paused,
    )
    return bool(found == count)


async def test_a_pause_stops_the_bulk_queue_too_and_is_logged_once_per_change(
    database_url, pool, caplog
):
    """The worker's two consumers (live and bulk) obey one pause and show one state."""
    caplog.set_level(logging.INFO)
    settings = worker_settings(database_url, poll_interval_seconds=POLL_SECONDS)
    async with running_worker(settings, default_handlers) as worker:
        assert worker.queue_names() == [QUEUE, BULK]
        await wait_for(lambda: _seen(pool, {QUEUE: False, BULK: False}))
        assert cli(database_url, "pause").returncode == 0
        held = {
            name: await send(pool, name, {"tenant_id": TENANT, "match_id": n})
            for n, name in enumerate((QUEUE, BULK), start=1)
        }
        # within one poll every consumer has seen the pause, and from then on the
        # state the worker shows stays put: sampled over five more polls
        await asyncio.sleep(POLL_SECONDS * 1.5)
        samples = []
        until = time.monotonic() + 5 * POLL_SECONDS
        while time.monotonic() < until:
            samples.append(worker.status.paused)
            await asyncio.sleep(POLL_SECONDS / 4)
        assert set(samples) == {True}
        for name, msg_id in held.items():
            assert await _read_count(pool, name, msg_id) == 0, name
        assert await _seen(pool, {QUEUE: True, BULK: True})
        assert _transitions(caplog) == ["consuming paused"]

        assert cli(database_url, "resume").returncode == 0
        for name, msg_id in held.items():
            await wait_for(lambda n=name, m=msg_id: _run_is(pool, n, m, "succeeded"))
        await asyncio.sleep(2 * POLL_SECONDS)
        assert not worker.status.paused
    assert _transitions(caplog) == ["consuming paused", "consuming resumed"]


def _transitions(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage() in TRANSITIONS]


async def _read_count(pool, queue: str, msg_id: int) -> int:
    return int(await pool.fetchval(f"SELECT read_ct FROM pgmq.q_{queue} WHERE msg_id = $1", msg_id))


async def _run_is(pool, queue: str, msg_id: int, status: str) -> bool:
    found = await pool.fetchval(
        "SELECT status FROM stats_worker.job_runs WHERE queue_name = $1 AND msg_id = $2",
        queue,
        msg_id,
    )
    return bool(found == status)


async def _seen(pool, paused: dict[str, bool]) -> bool:
    """Each queue's consumer recorded itself as a replica with this paused state."""
    rows = await pool.fetch(
        "SELECT queue_name, paused FROM stats_worker.replicas"
        " WHERE seen_at > now() - interval '1 minute'"
    )
    return sorted((r["queue_name"], r["paused"]) for r in rows) == sorted(paused.items())
