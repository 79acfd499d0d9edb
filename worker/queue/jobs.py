"""What operators see and do: job runs, dead letters, the queue at a glance.

Each pgmq queue numbers its messages on its own, so the live queue and its bulk
queue both have a message 1: a job is a queue and a msg_id. Listing and retrying
dead letters covers every queue of :func:`operated_queues`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from worker.core.database import Pool
from worker.core.errors import MalformedMessage
from worker.core.queries import query
from worker.core.settings import QUEUE_NAME_PATTERN
from worker.queue.pgmq import decode_body
from worker.queue.priorities import bulk_queue_name

JOB_STATUSES = ("queued", "running", "succeeded", "retrying", "dead", "retried")
"""'retried': a dead letter already put back on the queue (its ``retried_as``)."""


def queue_query(name: str, queue_name: str) -> str:
    """A named query with the queue's pgmq tables filled in (name validated first)."""
    if not QUEUE_NAME_PATTERN.fullmatch(queue_name):
        raise ValueError(f"invalid queue name {queue_name!r}")
    return query(name).format(queue_table=f'"q_{queue_name}"', archive_table=f'"a_{queue_name}"')


def operated_queues(queue_name: str) -> list[str]:
    """The queues an operator of ``queue_name`` looks after: it and its bulk queue."""
    return [queue_name, bulk_queue_name(queue_name)]


@dataclass(frozen=True)
class Job:
    queue: str
    msg_id: int
    status: str
    attempts: int
    tenant_id: UUID | None
    match_id: int | None
    enqueued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: float | None
    last_error: str | None
    retried_as: int | None
    updated_at: datetime | None
    message: Any = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            if isinstance(value, datetime):
                out[key] = value.isoformat()
            elif isinstance(value, UUID):
                out[key] = str(value)
            else:
                out[key] = value
        return out


async def list_jobs(
    pool: Pool,
    queue_name: str,
    status: str | None,
    limit: int,
    *,
    tenant: UUID | None = None,
    since: datetime | None = None,
    before_msg_id: int | None = None,
) -> list[Job]:
    """Newest first; ``before_msg_id`` (the last one shown) gives the next page."""
    if status is not None and status not in JOB_STATUSES:
        raise ValueError(f"unknown status {status!r}; one of {', '.join(JOB_STATUSES)}")
    rows = await pool.fetch(
        queue_query("list_jobs", queue_name),
        queue_name,
        status,
        limit,
        tenant,
        since,
        before_msg_id,
    )
    return [Job(queue=queue_name, **dict(row)) for row in rows]


_EARLIEST = datetime.min.replace(tzinfo=UTC)


async def list_jobs_of(
    pool: Pool,
    queue_names: Sequence[str],
    status: str | None,
    limit: int,
    *,
    tenant: UUID | None = None,
    since: datetime | None = None,
) -> list[Job]:
    """The newest ``limit`` jobs of several queues, by enqueue time (msg_ids are per queue)."""
    found = [
        job
        for name in queue_names
        for job in await list_jobs(pool, name, status, limit, tenant=tenant, since=since)
    ]
    found.sort(key=lambda job: (job.enqueued_at or _EARLIEST, job.msg_id), reverse=True)
    return found[:limit]


SHOWN_RAW_CHARACTERS = 2000


async def get_job(pool: Pool, queue_name: str, msg_id: int) -> Job | None:
    row = await pool.fetchrow(queue_query("get_job", queue_name), queue_name, msg_id)
    if row is None:
        return None
    fields = dict(row)
    fields["message"] = shown_message(fields["message"])
    return Job(queue=queue_name, **fields)


def shown_message(raw: str | None) -> Any:
    """The body as JSON, or, when it cannot be decoded within the limits, its text cut short."""
    if raw is None:
        return None
    try:
        return decode_body(raw)
    except MalformedMessage as exc:
        return {"undecodable": exc.reason, "raw": raw[:SHOWN_RAW_CHARACTERS]}


async def retry_dead(pool: Pool, queue_name: str, msg_id: int) -> int | None:
    """Put dead letter ``msg_id`` back on the queue; its new msg_id, or None if not dead."""
    row = await pool.fetchrow(queue_query("retry_dead", queue_name), queue_name, msg_id)
    return None if row is None else int(row["new_id"])


MAX_BULK_RETRY = 10_000
"""Most dead letters one bulk retry puts back (run it again for more)."""


@dataclass(frozen=True)
class Resent:
    queue: str
    msg_id: int
    new_id: int


async def retry_all_dead(
    pool: Pool, queue_names: Sequence[str], since: datetime | None = None
) -> list[Resent]:
    """Every dead letter of these queues not retried yet (died since ``since``) back on its queue.

    One at a time, each in its own statement, so one that another operator
    retried meanwhile is skipped rather than failing the rest.
    """
    resent: list[Resent] = []
    for name in queue_names:
        left = MAX_BULK_RETRY - len(resent)
        rows = await pool.fetch(queue_query("dead_letters", name), name, since, left)
        for row in rows:
            new_id = await retry_dead(pool, name, row["msg_id"])
            if new_id is not None:
                resent.append(Resent(name, int(row["msg_id"]), new_id))
    return resent


@dataclass(frozen=True)
class FailedCallback:
    id: int
    tags: list[str]
    msg_ids: list[int]
    created_at: datetime
    attempts: int
    last_error: str | None


async def failed_callbacks(pool: Pool, limit: int) -> list[FailedCallback]:
    return [
        FailedCallback(**dict(row)) for row in await pool.fetch(query("failed_callbacks"), limit)
    ]


async def resend_callbacks(pool: Pool, ids: list[int] | None) -> list[int]:
    """Failed invalidations (these, or all with None) due again now; the ids made due."""
    return [row["id"] for row in await pool.fetch(query("resend_callbacks"), ids)]


async def queue_summary(pool: Pool, queue_name: str) -> dict[str, Any]:
    """The queue at a glance; durations and ages rounded to a tenth."""
    row = await pool.fetchrow(queue_query("queue_summary", queue_name), queue_name)
    assert row is not None
    return {key: (round(v, 1) if isinstance(v, float) else v) for key, v in dict(row).items()}
