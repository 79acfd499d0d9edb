"""Pausing a queue's consumers, stored in the database so every replica obeys.

The consumer asks :func:`is_paused` before each read; a paused consumer reads
nothing (what it holds still finishes) and asks again after one poll interval.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from worker.core.database import Pool
from worker.core.queries import query

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
    """Pause every consumer of ``queue_name``; False when it already was paused."""
    return bool(await pool.fetchval(query("pause_queue"), queue_name))


async def resume(pool: Pool, queue_name: str) -> bool:
    """Let consumers read again; False when it was not paused."""
    return bool(await pool.fetchval(query("resume_queue"), queue_name))


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
