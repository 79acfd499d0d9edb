"""Waking on insert: a LISTEN connection on the worker's own NOTIFY for one queue.

Polling stays on as the fallback, so the listener is an accelerator. It is
called connected only once it has heard its own NOTIFY come back, and it asks
again every ``KEEPALIVE_SECONDS``: behind a transaction pooler a LISTEN lands
on some server connection that is then handed to other clients, and nothing
is ever heard. Such a deaf listener reports ``polling`` (in /health and the
``stats_worker_listener_up`` gauge) and tries again later; a lost connection
reconnects with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable

from worker.core import database, metrics
from worker.core.database import DATABASE_ERRORS
from worker.core.queries import query
from worker.core.settings import Settings
from worker.core.status import WorkerStatus
from worker.core.waits import wait_event

log = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 15.0
"""How often an idle listener proves it still hears its channel."""
PROBE_TIMEOUT_SECONDS = 3.0
"""How long a probe NOTIFY may take to come back before the listener counts as deaf."""
DEAF_RETRY_SECONDS = 60.0
"""How long a deaf listener waits before it tries again (polling meanwhile)."""
PROBE_PREFIX = "probe:"


class DeafListener(Exception):
    """LISTEN succeeded but the listener's own NOTIFY never arrived."""


def channel_name(queue_name: str) -> str:
    """The channel the queue table's trigger notifies (``stats_worker.notify_channel``)."""
    return f"stats_worker_{queue_name}"


async def listen_forever(
    dsn: str,
    settings: Settings,
    queue_name: str,
    wake: Callable[[], None],
    status: WorkerStatus,
) -> None:
    """Call ``wake`` on every insert into ``queue_name``, reconnecting as needed."""
    gauge = metrics.listener_up.labels(queue=queue_name)
    failures = 0
    deaf_reported = False
    while True:
        delay = min(0.2 * 2**failures, 10.0)
        try:
            if await database.behind_transaction_pooler(dsn):
                # A LISTEN there lands on a server connection others get next;
                # even its own probe may come back by luck. Don't pretend.
                raise DeafListener
            connection = await database.connect(dsn, settings)
            try:
                await _listen(connection, channel_name(queue_name), wake, status, gauge.set)
            finally:
                if not connection.is_closed():
                    await connection.close(timeout=2)
        except DeafListener:
            delay = DEAF_RETRY_SECONDS
            if not deaf_reported:
                deaf_reported = True
                log.warning(
                    "listener cannot hear NOTIFY (a transaction pooler?): polling every "
                    f"{settings.poll_interval_seconds:g} s; set DIRECT_DATABASE_URL to a direct "
                    "or session-pooler address for instant wake-ups"
                )
        except DATABASE_ERRORS as exc:
            failures += 1
            log.warning("listener connection lost", extra={"error": f"{type(exc).__name__}: {exc}"})
        finally:
            status.listener_connected = False
            gauge.set(0)
        await asyncio.sleep(delay)


async def _listen(
    connection: database.RawConnection,
    channel: str,
    wake: Callable[[], None],
    status: WorkerStatus,
    set_up: Callable[[float], None],
) -> None:
    lost = asyncio.Event()
    heard: dict[str, asyncio.Event] = {}

    def on_notify(_connection: object, _pid: int, _channel: str, payload: object) -> None:
        if isinstance(payload, str) and payload.startswith(PROBE_PREFIX):
            if (event := heard.get(payload)) is not None:
                event.set()
            return
        wake()

    connection.add_termination_listener(lambda _: lost.set())
    await connection.add_listener(channel, on_notify)
    await _prove_hearing(connection, channel, heard)
    status.listener_connected = True
    set_up(1)
    wake()  # anything sent while nobody was listening
    while not lost.is_set():
        if not await wait_event(lost, KEEPALIVE_SECONDS):
            await _prove_hearing(connection, channel, heard)


async def _prove_hearing(
    connection: database.RawConnection, channel: str, heard: dict[str, asyncio.Event]
) -> None:
    """NOTIFY our own channel and wait for it to come back; raise DeafListener if not."""
    token = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
    event = heard[token] = asyncio.Event()
    try:
        await connection.fetchval(query("notify_probe"), channel, token, timeout=5)
    except BaseException:
        heard.pop(token, None)
        raise
    try:
        if not await wait_event(event, PROBE_TIMEOUT_SECONDS):
            raise DeafListener
    finally:
        heard.pop(token, None)
