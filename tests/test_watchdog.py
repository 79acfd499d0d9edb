"""A stuck worker process ends itself, so the platform can restart it.

Real processes whose event loop is blocked for good (a stand-in for a
statement that never returns): the watchdog thread exits 70 after
WATCHDOG_SECONDS without progress, or once the shutdown grace and the settle
window have passed after SIGTERM. The message comes back for another worker.
"""

from __future__ import annotations

import signal
import time

from tests.support import (
    prepare_engine_table,
    process_log,
    start_worker_process,
    wait_for,
)
from worker.core.watchdog import EXIT_STUCK, SETTLE_WINDOW_SECONDS
from worker.queue.pgmq import send

QUEUE = "stats_updates"


async def _started(conn, job: str) -> bool:
    return bool(await conn.fetchval("SELECT count(*) FROM engine_runs WHERE job = $1", job))


async def test_a_worker_that_makes_no_progress_exits_for_a_restart(database_url, conn, pool):
    await prepare_engine_table(database_url)
    await send(pool, QUEUE, {"job": "stuck", "block": 120})
    process = start_worker_process(database_url, WATCHDOG_SECONDS="2")
    try:
        await wait_for(lambda: _started(conn, "stuck"), timeout=20)
        code = process.wait(timeout=30)
    finally:
        process.kill()
    assert code == EXIT_STUCK
    assert "no progress for 2 s" in process_log(process)


async def test_sigterm_has_a_hard_deadline_even_when_the_loop_is_stuck(database_url, conn, pool):
    await prepare_engine_table(database_url)
    msg_id = await send(pool, QUEUE, {"job": "stuck", "block": 120})
    process = start_worker_process(database_url, SHUTDOWN_GRACE_SECONDS="1")
    try:
        await wait_for(lambda: _started(conn, "stuck"), timeout=20)
        stopped = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=40)
        took = time.monotonic() - stopped
    finally:
        process.kill()
    assert code == EXIT_STUCK
    assert took < 1 + SETTLE_WINDOW_SECONDS + 3
    assert "shutdown overran" in process_log(process)
    # Nothing is lost: the message is still in the queue for the next worker.
    assert await conn.fetchval(f"SELECT count(*) FROM pgmq.q_{QUEUE} WHERE msg_id = $1", msg_id)
