"""Pausing a worker's consumers, stored in the database so every replica obeys.

Each consumer asks its worker's :class:`Pause` before each read (the database
at most once a poll interval); a paused consumer reads nothing (what it holds
still finishes) and asks again after one poll interval.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from worker.core.database import Pool
from worker.core.queries import query
from worker.core.status import WorkerStatus

log = logging.getLogger(__name__)

REPLICA_SEEN_SECONDS = 5.0
"""How often a consumer records that it is alive (not on every read: busy replicas
read many times a second)."""
RECENT_REPLICA_SECONDS = 60.0


def replica_name() -> str:
    """Host and pid, and a suffix: two consumers in one process are two replicas."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


async def is_paused(pool: Pool, queue_name: str) -> bool:
    return bool(await pool.fetchval(query("is_paused"), queue_name))


async def pause(pool: Pool, queue_name: str) -> bool:
    """Pause every worker of ``queue_name`` (its bulk queue too); False when it already was."""
    return bool(await pool.fetchval(query("pause_queue"), queue_name))


async def resume(pool: Pool, queue_name: str) -> bool:
    """Let consumers read again; False when it was not paused."""
    return bool(await pool.fetchval(query("resume_queue"), queue_name))


class Pause:
    """A worker's pause as its consumers see it: one row, one state, a log line per change.

    The pause belongs to the worker, not to each queue: its row is named after
    the live queue (``QUEUE_NAME``) and the bulk consumer obeys that row too.
    An operator pauses to stop the worker recomputing (a restore, an incident);
    a bulk consumer reading on would defeat that, and one row per queue could
    leave half a worker running, or show two states for one worker. Consumers
    ask one at a time, so answers land in the order the database gave them and
    the shared ``status.paused`` never goes back to a stale answer.
    """

    def __init__(
        self, pool: Pool, queue_name: str, status: WorkerStatus, *, fresh_for: float
    ) -> None:
        self.queue_name = queue_name
        self._pool = pool
        self._status = status
        self._fresh_for = fresh_for
        self._asked_at: float | None = None
        self._asking = asyncio.Lock()

    async def check(self) -> bool:
        """The pause as the database had it at most ``fresh_for`` seconds ago.

        A poll interval: a pause still reaches every replica within one poll,
        and a read woken by a new message does not wait for a round trip first.
        """
        async with self._asking:
            now = time.monotonic()
            if self._asked_at is not None and now - self._asked_at < self._fresh_for:
                return self._status.paused
            paused = await is_paused(self._pool, self.queue_name)
            self._asked_at = now
            if paused != self._status.paused:
                self._status.paused = paused
                message = "consuming paused" if paused else "consuming resumed"
                log.warning(message, extra={"queue": self.queue_name})
            return paused


async def replica_seen(pool: Pool, queue_name: str, replica: str, paused: bool) -> None:
    await pool.execute(query("replica_seen"), queue_name, replica, paused)


@dataclass(frozen=True)
class Replica:
    replica: str
    seen_at: datetime
    paused: bool
    seen_seconds_ago: float

    def as_json(self) -> dict[str, Any]:
        return {**self.__dict__, "seen_at": self.seen_at.isoformat()}


async def recent_replicas(pool: Pool, queue_name: str) -> list[Replica]:
    rows = await pool.fetch(query("recent_replicas"), queue_name, RECENT_REPLICA_SECONDS)
    return [Replica(**dict(row)) for row in rows]
