"""The pgmq queue, through pgmq's own functions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from worker.database import Connection, Pool
from worker.queries import query


@dataclass(frozen=True)
class Message:
    msg_id: int
    read_ct: int
    """Reads so far, this one included: the attempt number."""
    enqueued_at: datetime
    vt: datetime
    body: Any


@dataclass(frozen=True)
class QueueDepth:
    length: int
    visible: int
    oldest_age_seconds: int | None
    total_sent: int


@dataclass(frozen=True)
class Queue:
    pool: Pool
    name: str

    async def read(self, visibility_timeout: int, limit: int) -> list[Message]:
        rows = await self.pool.fetch(query("read_messages"), self.name, visibility_timeout, limit)
        return [Message(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    async def extend_visibility(self, msg_ids: Sequence[int], seconds: int) -> None:
        if msg_ids:
            await self.pool.fetchval(query("extend_visibility"), self.name, list(msg_ids), seconds)

    async def send(self, body: Any, run_at: datetime | None = None) -> int:
        return await send(self.pool, self.name, body, run_at)

    async def depth(self) -> QueueDepth:
        row = await self.pool.fetchrow(query("queue_metrics"), self.name)
        assert row is not None
        return QueueDepth(row[0], row[1], row[2], row[3])


async def send(
    executor: Pool | Connection, queue_name: str, body: Any, run_at: datetime | None = None
) -> int:
    """Put one message on the queue, visible at ``run_at`` (now when None)."""
    msg_id: int = await executor.fetchval(query("send_message"), queue_name, body, run_at)
    return msg_id
