"""One leader among the replicas: a session advisory lock on a connection of its own.

The replica whose connection holds the lock runs the leader's work (the
recurring jobs); the others try again every third of ``LEADER_LEASE_SECONDS``.
The lock lives exactly as long as that connection, so when the leader's process
dies the server ends its session and releases the lock at once; when its host
or network dies instead, the session's TCP keepalives and ``idle_session_timeout``
(both set from the lease, the leader pings every third of it) end it within one
lease. A leader whose ping fails stops its work before it tries to lead again.

The connection goes to ``DIRECT_DATABASE_URL`` when set: a transaction pooler
would hand a session lock to whichever client it serves next.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Coroutine
from typing import Any

import asyncpg

from worker.core import metrics
from worker.core.database import DATABASE_ERRORS, RawConnection, connect_kwargs, keepalive_settings
from worker.core.queries import query

log = logging.getLogger(__name__)

LOCK_NAME = "stats_worker:recurring_jobs"


def session_settings(lease_seconds: float) -> dict[str, str]:
    """Server settings of the leader's session: the server ends it within one lease."""
    return {
        "idle_session_timeout": f"{int(lease_seconds * 1000)}ms",
        **keepalive_settings(lease_seconds),
    }


class Leadership:
    """Runs ``work`` while this replica leads; cancels it the moment it may not."""

    def __init__(self, dsn: str, lease_seconds: float, lock_name: str = LOCK_NAME) -> None:
        self._dsn = dsn
        self._lease = lease_seconds
        self._lock_name = lock_name
        self.leading = False
        self._gauge = metrics.leader
        self._gauge.set(0)

    @property
    def interval(self) -> float:
        return self._lease / 3

    async def run(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """For the worker's whole life: try to lead, lead, hand over, try again."""
        while True:
            connection: RawConnection | None = None
            try:
                connection = await self._connect()
                if await connection.fetchval(query("try_lead"), self._lock_name):
                    await self._lead(connection, work)
            except DATABASE_ERRORS as exc:
                log.warning("leader election: database error", extra={"error": repr(exc)})
            finally:
                self._step_down()
                if connection is not None and not connection.is_closed():
                    with contextlib.suppress(*DATABASE_ERRORS):
                        await connection.close(timeout=2)
            await asyncio.sleep(self.interval)

    async def _connect(self) -> RawConnection:
        options = connect_kwargs(0)
        options["server_settings"] = {
            **options["server_settings"],
            **session_settings(self._lease),
            # Which process leads, for operators (pg_stat_activity) and tests.
            "application_name": f"stats-worker leader {os.getpid()}",
        }
        connection: RawConnection = await asyncpg.connect(
            self._dsn, timeout=self.interval, **options
        )
        return connection

    async def _lead(
        self, connection: RawConnection, work: Callable[[], Coroutine[Any, Any, None]]
    ) -> None:
        self.leading = True
        self._gauge.set(1)
        log.info("this replica leads: it runs the recurring jobs")
        task = asyncio.create_task(work(), name="leader-work")
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=self.interval)
                if task.done():
                    break
                async with asyncio.timeout(self.interval):
                    await connection.fetchval(query("leader_heartbeat"))
            task.result()  # the leader's work never ends by itself: that is a failure
            raise RuntimeError("the leader's work stopped")
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def _step_down(self) -> None:
        if self.leading:
            log.info("this replica no longer leads")
        self.leading = False
        self._gauge.set(0)
