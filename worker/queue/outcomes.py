"""Settling messages: acks, retries and dead letters, written in batches.

Handlers report outcomes here; one flusher task writes everything pending in a
single statement (``settle_messages``): the pgmq delete / set_vt / archive, the
job-run records and the cache invalidation owed. There is no timer: a flush
starts as soon as there is something to write, and whatever arrives while it
runs goes into the next one, so batches grow with load and an idle worker acks
at once (group commit).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from worker.core import metrics
from worker.core.database import DATABASE_ERRORS, Pool, is_transient
from worker.core.queries import query
from worker.core.waits import wait_event
from worker.queue.runs import Batch, Invalidation, JobRun

log = logging.getLogger(__name__)

RUNNING_RECORD_DELAY_SECONDS = 0.5
"""A job shows as 'running' once it has run this long: most finish sooner and
get one record, at their outcome, instead of two."""

CALLBACK_LEASE_SECONDS = 30.0
"""How long a new invalidation is reserved for this process before others may send it."""
RESERVATION_SECONDS = 120.0
"""When a write-ahead invalidation falls due if no settle took its place (a crash)."""


InvalidationSink = Callable[[Invalidation], None]
DeadLetterSink = Callable[[JobRun, str], None]


class Reservation:
    """A run's write-ahead invalidation, written while the run starts.

    The run's handler reads what it needs meanwhile and awaits :meth:`committed`
    before it changes anything, so the reservation's round trip and commit are
    off a live match's path; the run's settle takes over :meth:`row`.
    """

    def __init__(self, write: Coroutine[Any, Any, int] | None) -> None:
        self._task = None if write is None else asyncio.ensure_future(write)

    async def committed(self) -> None:
        """Return once the reservation is committed; raise if it could not be."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def row(self) -> int | None:
        """The reserved row, for the settle to take over.

        None when there was nothing to reserve, or when writing it failed: the
        run then changed nothing (its handler waits for :meth:`committed`
        first), and the failure, when it mattered, is the run's.
        """
        if self._task is None:
            return None
        try:
            return await asyncio.shield(self._task)
        except DATABASE_ERRORS:
            return None

    def cancel(self) -> None:
        """Shutdown: a reservation not written yet guards nothing (no change started)."""
        if self._task is not None:
            self._task.cancel()


class Settler:
    """Collects outcomes and writes them in batches; see the module docstring."""

    def __init__(self, pool: Pool, queue_name: str) -> None:
        self._pool = pool
        self._queue_name = queue_name
        self._lost = metrics.messages_lost_total.labels(queue=queue_name)
        self._pending = Batch()
        self._starting: dict[int, tuple[float, JobRun]] = {}
        """Runs not yet recorded as 'running', with when they should be."""
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.lock = asyncio.Lock()
        """Held while writing; the visibility renewer takes it too, so a renewal
        can never land after (and undo) a retry's backoff."""
        self.on_invalidation: InvalidationSink | None = None
        self.on_dead_letter: DeadLetterSink | None = None
        """Told of each dead letter once its archive has committed (alerts)."""

    def started(self, runs: Sequence[JobRun]) -> None:
        due = time.monotonic() + RUNNING_RECORD_DELAY_SECONDS
        for run in runs:
            self._starting[run.msg_id] = (due, run)
        self._wake.set()  # so the flusher learns the new deadline

    def succeeded(self, runs: Sequence[JobRun], tags: Sequence[str]) -> None:
        for run in runs:
            self._starting.pop(run.msg_id, None)
            self._pending.runs[run.msg_id] = run
            self._pending.acks.append(run.msg_id)
        self._pending.tags.update(tags)
        self._kick()

    def reserve(self, msg_ids: Sequence[int], tags: Sequence[str]) -> Reservation:
        """Record ``tags`` as owed before a run may change anything (see reserve_invalidation)."""
        return Reservation(self._reserve(msg_ids, tags) if tags else None)

    async def _reserve(self, msg_ids: Sequence[int], tags: Sequence[str]) -> int:
        reserved: int = await self._pool.fetchval(
            query("reserve_invalidation"), list(msg_ids), RESERVATION_SECONDS, list(tags)
        )
        return reserved

    def release(self, reserved: int | None) -> None:
        """The run's outcome carries its tags now: its write-ahead row goes with the settle."""
        if reserved is not None:
            self._pending.released.append(reserved)
            self._kick()

    def owe(self, tags: Sequence[str]) -> None:
        """Tags owed whatever the outcome (a failed run may have committed part of its work)."""
        if tags:
            self._pending.tags.update(tags)
            self._kick()

    def retry(self, run: JobRun, delay_seconds: float) -> None:
        self._starting.pop(run.msg_id, None)
        self._pending.runs[run.msg_id] = run
        self._pending.retries[run.msg_id] = delay_seconds
        self._kick()

    def dead(self, run: JobRun) -> None:
        self._starting.pop(run.msg_id, None)
        self._pending.runs[run.msg_id] = run
        self._pending.dead.append(run.msg_id)
        self._kick()

    def _kick(self) -> None:
        self._idle.clear()
        self._wake.set()

    async def drained(self) -> None:
        """Wait until every outcome reported so far is written."""
        await self._idle.wait()

    async def run(self) -> None:
        """The flusher task: write whatever is pending, forever."""
        failures = 0
        while True:
            await wait_event(self._wake, self._until_next_start())
            self._wake.clear()
            self._record_long_runs()
            batch, self._pending = self._pending, Batch()
            if not batch:
                self._idle.set()
                continue
            try:
                await self._write(batch)
                failures = 0
            except DATABASE_ERRORS as exc:
                if not is_transient(exc):
                    await self._write_apart(batch, exc)
                    if not self._pending:
                        self._idle.set()
                    continue
                failures += 1
                log.warning("could not settle messages, will retry", extra={"error": repr(exc)})
                self._requeue(batch)
                await asyncio.sleep(min(0.1 * 2**failures, 5.0))
                continue
            if not self._pending:
                self._idle.set()

    def _until_next_start(self) -> float | None:
        if not self._starting:
            return None
        earliest = min(due for due, _ in self._starting.values())
        return max(0.0, earliest - time.monotonic())

    def _record_long_runs(self) -> None:
        """Runs past the delay go into the next batch as 'running'."""
        now = time.monotonic()
        for msg_id, (due, run) in list(self._starting.items()):
            if due <= now:
                del self._starting[msg_id]
                self._pending.runs.setdefault(msg_id, run)
                self._idle.clear()

    async def _write_apart(self, batch: Batch, error: BaseException) -> None:
        """A batch the database refuses: bisect it so the rest settle without the bad one.

        Only this flusher writes, so the halves go one after the other. The
        one outcome that still fails alone is logged once and left unsettled:
        its message comes back when its visibility timeout ends.
        """
        parts = batch.halves() if len(batch.runs) > 1 or batch.tags else []
        if not parts or (len(parts) == 1 and len(parts[0].runs) == len(batch.runs)):
            for run in batch.runs.values():
                log.error(
                    "could not settle a message, leaving it to its visibility timeout",
                    extra={"msg_id": run.msg_id, "status": run.status, "error": repr(error)},
                )
            return
        for part in parts:
            try:
                await self._write(part)
            except DATABASE_ERRORS as exc:
                if is_transient(exc):
                    self._requeue(part)
                else:
                    await self._write_apart(part, exc)

    def _requeue(self, batch: Batch) -> None:
        """Put a batch that failed to write back in front of newer outcomes."""
        newer = self._pending
        batch.runs.update(newer.runs)
        batch.acks.extend(newer.acks)
        batch.retries.update(newer.retries)
        batch.dead.extend(newer.dead)
        batch.tags.update(newer.tags)
        batch.released.extend(newer.released)
        self._pending = batch
        self._wake.set()

    async def _write(self, batch: Batch) -> None:
        runs = list(batch.runs.values())
        # The connection first, then the lock: the renewer, which shares the
        # lock, must never wait for the pool behind us.
        async with self._pool.acquire() as connection, self.lock:
            row = await connection.fetchrow(
                query("settle_messages"),
                self._queue_name,
                [r.msg_id for r in runs],
                [r.status for r in runs],
                [r.attempts for r in runs],
                [r.tenant_id for r in runs],
                [r.match_id for r in runs],
                [r.enqueued_at for r in runs],
                [r.started_at for r in runs],
                [r.finished_at for r in runs],
                [r.duration_ms for r in runs],
                [r.error for r in runs],
                batch.acks,
                list(batch.retries),
                list(batch.retries.values()),
                batch.dead,
                sorted(batch.tags),
                CALLBACK_LEASE_SECONDS,
                [r.read_ct for r in runs],
                [r.failures for r in runs],
                batch.released,
            )
        assert row is not None
        if row["callback_id"] is not None and self.on_invalidation is not None:
            self.on_invalidation(Invalidation(row["callback_id"], tuple(sorted(batch.tags))))
        owned = set(row["owned"])
        for run in runs:
            if run.msg_id not in owned:
                self._lost.inc()
                log.warning(
                    "message lost: another worker read it after its visibility timeout "
                    "lapsed; its outcome here is not recorded",
                    extra={"msg_id": run.msg_id, "status": run.status},
                )
        if self.on_dead_letter is not None:
            for msg_id in batch.dead:
                if msg_id in owned:
                    self.on_dead_letter(batch.runs[msg_id], self._queue_name)
