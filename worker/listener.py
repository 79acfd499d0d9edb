"""Waking on insert: a LISTEN connection on pgmq's insert NOTIFY for one queue.

Polling stays on as the fallback, so the listener is an accelerator: when its
connection is lost it reconnects with backoff, and its state is shown in
/health and the ``stats_worker_listener_up`` gauge.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from worker import database, metrics
from worker.database import DATABASE_ERRORS
from worker.queries import query
from worker.settings import Settings
from worker.status import WorkerStatus

log = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 15.0
"""How often an idle listener proves its connection is still there."""


async def listen_forever(
    dsn: str,
    settings: Settings,
    queue_name: str,
    wake: Callable[[], None],
    status: WorkerStatus,
) -> None:
    """Call ``wake`` on every insert into ``queue_name``, reconnecting as needed."""
    channel = f"pgmq.q_{queue_name}.INSERT"
    gauge = metrics.listener_up.labels(queue=queue_name)
    failures = 0
    while True:
        try:
            connection = await database.connect(dsn, settings)
            failures = 0
            await _listen(connection, channel, wake, status, gauge.set)
        except DATABASE_ERRORS as exc:
            failures += 1
            log.warning("listener connection lost", extra={"error": f"{type(exc).__name__}: {exc}"})
        finally:
            status.listener_connected = False
            gauge.set(0)
        await asyncio.sleep(min(0.2 * 2**failures, 10.0))


async def _listen(
    connection: database.RawConnection,
    channel: str,
    wake: Callable[[], None],
    status: WorkerStatus,
    set_up: Callable[[float], None],
) -> None:
    lost = asyncio.Event()
    try:
        connection.add_termination_listener(lambda _: lost.set())
        await connection.add_listener(channel, lambda *_: wake())
        status.listener_connected = True
        set_up(1)
        wake()  # anything sent while nobody was listening
        while not lost.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), KEEPALIVE_SECONDS)
            if not lost.is_set():
                await connection.fetchval(query("ping"), timeout=5)
    finally:
        if not connection.is_closed():
            await connection.close(timeout=2)
