"""The pgmq queue, through pgmq's own functions (and the adapters of 0006/0008/0016)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from worker.core.database import Connection, Pool
from worker.core.errors import MalformedMessage
from worker.core.queries import query

MAX_BODY_BYTES = 65_536
"""Largest message body the worker decodes; a bigger one is dead-lettered unread."""
MAX_BODY_DEPTH = 32
"""Deepest nesting of arrays and objects a body may have."""


@dataclass(frozen=True)
class Message:
    msg_id: int
    read_ct: int
    """Reads so far, this one included: who owns the message (see 0008)."""
    enqueued_at: datetime
    vt: datetime
    raw: str | None
    """The body as PostgreSQL stored it (jsonb text; None for SQL NULL, which
    pgmq.send accepts), decoded by :func:`decode_body`."""
    failures: int = 0
    """Failed runs recorded for this message so far."""

    @property
    def attempt(self) -> int:
        """This run's number: failures so far plus one (reads that did not fail don't count)."""
        return self.failures + 1


def decode_body(raw: str | None) -> Any:
    """The JSON of a body, or MalformedMessage naming the limit it broke.

    Anyone who can write SQL can put any jsonb on the queue, or none at all:
    depth, size and number limits are checked here, one message at a time.
    """
    if raw is None:
        raise MalformedMessage("body is SQL NULL")
    size = len(raw.encode())
    if size > MAX_BODY_BYTES:
        raise MalformedMessage(f"body too large: {size} bytes (limit {MAX_BODY_BYTES})")
    if _nesting_depth(raw) > MAX_BODY_DEPTH:
        raise MalformedMessage(f"body nested deeper than {MAX_BODY_DEPTH} levels")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # e.g. an integer of 5,000 digits
        raise MalformedMessage(f"body cannot be decoded: {str(exc)[:200]}") from None


def _nesting_depth(raw: str) -> int:
    """Deepest [ / { nesting outside strings, without building anything."""
    depth = deepest = 0
    in_string = escaped = False
    for char in raw:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


@dataclass(frozen=True)
class QueueDepth:
    length: int
    visible: int
    oldest_age_seconds: int | None
    total_sent: int


@dataclass(frozen=True)
class PassOver:
    """Groups a read passes over: messages whose body ``field`` is one of ``keys``."""

    field: str
    keys: list[str]
    """Lower case, as the read compares them."""


@dataclass(frozen=True)
class Queue:
    pool: Pool
    name: str

    async def read(
        self, visibility_timeout: int, limit: int, passing_over: PassOver | None = None
    ) -> list[Message]:
        """Claim up to ``limit`` visible messages, oldest first, except those of
        the groups ``passing_over`` names (see ``0016_fair_read.sql``)."""
        field, keys = (passing_over.field, passing_over.keys) if passing_over else (None, None)
        rows = await self.pool.fetch(
            query("read_messages"), self.name, visibility_timeout, limit, field, keys
        )
        return [Message(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]

    async def extend_visibility(
        self, executor: Pool | Connection, owned: Sequence[Message], seconds: int
    ) -> set[int]:
        """Renew the messages still owned; return their ids (the rest were lost)."""
        if not owned:
            return set()
        ids: list[int] = await executor.fetchval(
            query("extend_visibility"),
            self.name,
            [m.msg_id for m in owned],
            [m.read_ct for m in owned],
            seconds,
        )
        return set(ids)

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
