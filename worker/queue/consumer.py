"""The consumer: read what there is room for, run it, settle it, repeat.

Per queue: a read loop that claims at most as many messages as there are free
slots (pgmq ``read`` with a visibility timeout), a task per group of messages,
a renewer that keeps running messages invisible, and a LISTEN connection on
pgmq's insert NOTIFY so an idle worker wakes at once (polling stays on as the
fallback when the listener is down).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Hashable, Sequence
from datetime import UTC, datetime
from typing import Any

from worker.core import database, metrics
from worker.core.database import DATABASE_ERRORS, Pool
from worker.core.errors import GiveUp, MalformedMessage, RetryLater
from worker.core.handlers import Handler
from worker.core.settings import Settings
from worker.core.status import WorkerStatus
from worker.core.waits import wait_event
from worker.queue import control
from worker.queue.affinity import HAND_BACK_SECONDS, TenantAffinity
from worker.queue.listener import listen_forever
from worker.queue.outcomes import JobRun, Settler
from worker.queue.pgmq import Message, Queue, decode_body

log = logging.getLogger(__name__)


READ_AHEAD_PER_SLOT = 8
"""With coalescing, the most messages one read claims per recompute slot."""


def backoff_seconds(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with equal jitter: half fixed, half random."""
    ceiling: float = min(cap, base * 2.0 ** max(0, attempt - 1))
    jitter: float = random.uniform(0, ceiling / 2)
    return ceiling / 2 + jitter


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:2000]


class Consumer:
    def __init__(
        self,
        *,
        pool: Pool,
        dsn: str,
        settings: Settings,
        queue_name: str,
        handler: Handler[Any],
        settler: Settler,
        status: WorkerStatus,
        until_empty: bool = False,
    ) -> None:
        self.queue = Queue(pool, queue_name)
        self._dsn = dsn
        self._settings = settings
        self._handler = handler
        self._settler = settler
        self._status = status
        self._until_empty = until_empty
        self._wake = asyncio.Event()
        self._stopping = False
        self._in_flight: dict[int, Message] = {}
        """Every message read and not yet settled: waiting or running."""
        self._waiting: dict[Hashable, list[tuple[Message, Any]]] = {}
        """Messages not started yet, by group key, oldest key first."""
        self._waiting_count = 0
        self._running: set[Hashable] = set()
        """Group keys with a recompute running: one per key at a time."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._runs: dict[int, JobRun] = {}
        """The run records of messages running now, by msg_id."""
        self._labels = {"queue": queue_name}
        self._outcomes = {
            outcome: metrics.messages_total.labels(queue=queue_name, outcome=outcome)
            for outcome in ("succeeded", "retried", "dead")
        }
        self._duration = metrics.job_duration_seconds.labels(queue=queue_name)
        self._in_flight_gauge = metrics.jobs_in_flight.labels(queue=queue_name)
        self._lost = metrics.messages_lost_total.labels(queue=queue_name)
        self._handed_back = metrics.messages_handed_back_total.labels(queue=queue_name)
        self._affinity = TenantAffinity(dsn, queue_name) if settings.coalesce else None
        self._release_wanted = asyncio.Event()
        self._poll_gauge = metrics.last_poll_timestamp_seconds.labels(queue=queue_name)
        self._replica = control.replica_name()
        self._replica_seen_at = -control.REPLICA_SEEN_SECONDS

    def stop(self) -> None:
        """Stop reading; in-flight work goes on (see :meth:`run`)."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Consume until :meth:`stop` (or an empty queue with ``until_empty``).

        Then let in-flight groups finish within the grace period and cancel the
        rest; a cancelled message is released at once for another worker.
        """
        helpers = [
            asyncio.create_task(
                listen_forever(
                    self._dsn, self._settings, self.queue.name, self._wake.set, self._status
                ),
                name=f"listen:{self.queue.name}",
            ),
            asyncio.create_task(self._renew_forever(), name=f"renew:{self.queue.name}"),
        ]
        if self._affinity is not None:
            helpers.append(
                asyncio.create_task(self._release_forever(), name=f"affinity:{self.queue.name}")
            )
        try:
            await self._read_until_stopped(helpers)
            await self._finish_in_flight()
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            if self._affinity is not None:
                await self._affinity.close()

    # -- reading -------------------------------------------------------------

    async def _read_until_stopped(self, helpers: Sequence[asyncio.Task[None]]) -> None:
        failures = 0
        while not self._stopping:
            for task in helpers:
                if task.done():
                    task.result()  # a helper that died takes the consumer down, loudly
                    raise RuntimeError(f"{task.get_name()} stopped unexpectedly")
            limit = self._read_limit()
            self._wake.clear()
            if limit <= 0:  # until a slot frees up (a wake for a new message can wait)
                await self._sleep_until_woken()
                continue
            try:
                if await self._paused():
                    self._mark_poll()
                    await self._sleep_until_woken()
                    continue
                messages = await self.queue.read(self._settings.visibility_timeout_seconds, limit)
            except DATABASE_ERRORS as exc:
                failures += 1
                log.warning("queue read failed", extra={"error": _short(exc)})
                await asyncio.sleep(min(0.2 * 2**failures, 10.0))
                continue
            failures = 0
            self._mark_poll()
            if messages:
                await self._accept(messages)
            elif self._until_empty and await self._queue_is_empty():
                return
            else:
                await self._sleep_until_woken()

    def _read_limit(self) -> int:
        """How many messages the next read may claim (0: wait until woken).

        Without coalescing, a read claims only what can start at once. With it,
        the worker keeps reading while fewer groups wait to start than there
        are slots: messages of a tenant whose recompute is running do not count,
        they wait (renewed) and merge into its next recompute, up to
        ``BATCH_SIZE`` messages held. One read claims at most
        ``READ_AHEAD_PER_SLOT`` per slot, so replicas share a backlog.
        """
        if not self._settings.coalesce:
            return max(0, self._settings.concurrency - len(self._running))
        startable = sum(1 for key in self._waiting if key not in self._running)
        if startable >= self._settings.concurrency:
            return 0
        room = self._settings.batch_size - self._waiting_count
        return min(room, READ_AHEAD_PER_SLOT * self._settings.concurrency)

    async def _paused(self) -> bool:
        """Asked before every read, so a pause reaches every replica within one poll."""
        paused = await control.is_paused(self.queue.pool, self.queue.name)
        changed = paused != self._status.paused
        if changed:
            log.warning("consuming paused" if paused else "consuming resumed", extra=self._labels)
        self._status.paused = paused
        now = time.monotonic()
        if changed or now - self._replica_seen_at >= control.REPLICA_SEEN_SECONDS:
            self._replica_seen_at = now
            await control.replica_seen(self.queue.pool, self.queue.name, self._replica, paused)
        return paused

    def _mark_poll(self) -> None:
        now = time.time()
        self._status.made_progress()
        self._status.last_poll_at = now
        self._poll_gauge.set(now)

    async def _sleep_until_woken(self) -> None:
        await wait_event(self._wake, self._settings.poll_interval_seconds)

    async def _queue_is_empty(self) -> bool:
        if self._in_flight:
            return False
        await self._settler.drained()
        return (await self.queue.depth()).length == 0

    # -- scheduling ---------------------------------------------------------------

    async def _accept(self, messages: list[Message]) -> None:
        """Decode, parse and queue messages by group key, then start what may start.

        Each body is decoded on its own: one that cannot be is dead-lettered
        with its reason and the others go on. Messages of a tenant another
        replica holds go back to the queue for it (see ``worker/queue/affinity.py``).
        """
        accepted: list[tuple[Message, Any, Hashable | None]] = []
        for message in messages:
            if message.msg_id in self._in_flight:
                self._reread(message)
                continue
            try:
                payload = self._handler.parse(decode_body(message.raw))
            except MalformedMessage as exc:
                run = self._run_record(message, None, _utcnow())
                self._dead(message, run, exc.reason, "malformed")
                continue
            key = self._handler.group_key(payload) if self._settings.coalesce else None
            accepted.append((message, payload, key))
        keys = {key for _, _, key in accepted if key is not None}
        mine = await self._affinity.claim(keys) if self._affinity and keys else keys
        others = [message for message, _, key in accepted if key is not None and key not in mine]
        for message, payload, key in accepted:
            if key is not None and key not in mine:
                continue
            self._in_flight[message.msg_id] = message
            group = ("message", message.msg_id) if key is None else key  # None: runs alone
            self._waiting.setdefault(group, []).append((message, payload))
            self._waiting_count += 1
        self._dispatch()
        if others:
            await self._hand_back(others)

    async def _hand_back(self, messages: list[Message]) -> None:
        """Visible again in a moment, for the replica whose recompute holds their tenant."""
        try:
            await self.queue.extend_visibility(self.queue.pool, messages, HAND_BACK_SECONDS)
        except DATABASE_ERRORS as exc:  # they come back at their visibility timeout instead
            log.warning("handing messages back failed", extra={"error": _short(exc)})
            return
        self._handed_back.inc(len(messages))

    def _reread(self, message: Message) -> None:
        """A message this process holds came back (its timeout lapsed): keep one copy.

        The new read is the one that owns the message now, so the copy already
        waiting or running takes its read_ct and goes on; it is not queued twice.
        """
        self._in_flight[message.msg_id] = message
        if (run := self._runs.get(message.msg_id)) is not None:
            run.read_ct = message.read_ct
            return
        for group in self._waiting.values():
            for i, (held, payload) in enumerate(group):
                if held.msg_id == message.msg_id:
                    group[i] = (message, payload)
                    return

    def _dispatch(self) -> None:
        """Start waiting groups, oldest first, one per key, while slots are free."""
        for key in list(self._waiting):
            if len(self._running) >= self._settings.concurrency:
                break
            if key in self._running:
                continue  # its messages join the recompute after the running one
            group = self._waiting.pop(key)
            self._waiting_count -= len(group)
            self._running.add(key)
            task = asyncio.create_task(self._run_group(key, group))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._show_in_flight()

    def _show_in_flight(self) -> None:
        self._status.in_flight = len(self._in_flight)
        self._in_flight_gauge.set(len(self._in_flight))

    def _run_record(self, message: Message, payload: Any, started_at: datetime) -> JobRun:
        subject = self._handler.subject(payload) if payload is not None else None
        return JobRun(
            msg_id=message.msg_id,
            status="running",
            attempts=message.attempt,
            enqueued_at=message.enqueued_at,
            started_at=started_at,
            read_ct=message.read_ct,
            failures=message.failures,
            tenant_id=subject.tenant_id if subject else None,
            match_id=subject.match_id if subject else None,
        )

    async def _run_group(self, key: Hashable, group: list[tuple[Message, Any]]) -> None:
        started_at, started = _utcnow(), time.perf_counter()
        runs = [self._run_record(message, payload, started_at) for message, payload in group]
        self._runs.update((run.msg_id, run) for run in runs)
        self._settler.started(runs)
        alone = False
        payloads = [payload for _, payload in group]
        reserved: int | None = None
        try:
            reserved = await self._settler.reserve(
                [m.msg_id for m, _ in group], self._handler.owed_tags(payloads)
            )
            tags = await self._handler.run(payloads)
        except asyncio.CancelledError:
            # Its write-ahead invalidation stays: part of the work may have committed.
            self._release(runs, "interrupted by shutdown")
            raise
        except Exception as exc:
            self._finish(runs, started)
            # Same batch as what follows: the tags move from the write-ahead row to it.
            self._settler.release(reserved)
            self._settler.owe(self._handler.owed_tags(payloads))
            if len(group) > 1 and not self._stopping:
                # One bad message must not take the others with it: each runs
                # alone now, and only its own failure counts against it.
                alone = True
                log.warning(
                    "a coalesced recompute failed; running its messages one by one",
                    extra={"messages": len(group), "error": _short(exc)},
                )
            elif isinstance(exc, GiveUp):
                for (message, _), run in zip(group, runs, strict=True):
                    self._dead(message, run, exc.reason, "gave_up")
            else:
                self._failed_all(group, runs, exc)
        else:
            self._finish(runs, started)
            self._settler.release(reserved)
            self._settler.succeeded(runs, tags)
            self._outcomes["succeeded"].inc(len(runs))
            if log.isEnabledFor(logging.INFO):
                for run in runs:
                    log.info("message succeeded", extra=_log_fields(run, coalesced=len(runs)))
        finally:
            self._done(key, [] if alone else group)
        if alone:
            self._running.discard(key)
            for message, payload in group:
                self._waiting[("alone", message.msg_id)] = [(message, payload)]
                self._waiting_count += 1
            self._dispatch()

    def _failed_all(
        self, group: list[tuple[Message, Any]], runs: list[JobRun], exc: Exception
    ) -> None:
        delay = exc.delay_seconds if isinstance(exc, RetryLater) else None
        for (message, _), run in zip(group, runs, strict=True):
            self._failed(message, run, _short(exc), delay)

    def _finish(self, runs: list[JobRun], started: float) -> None:
        elapsed = time.perf_counter() - started
        self._duration.observe(elapsed)
        finished_at = _utcnow()
        for run in runs:
            run.status, run.finished_at, run.duration_ms = "succeeded", finished_at, elapsed * 1000

    def _failed(self, message: Message, run: JobRun, error: str, delay: float | None) -> None:
        run.failures = message.failures + 1
        if run.failures >= self._settings.max_attempts:
            limit = self._settings.max_attempts
            reason = f"attempts exhausted ({run.failures}/{limit}): {error}"
            self._dead(message, run, reason, "attempts_exhausted")
            return
        if delay is None:
            delay = backoff_seconds(
                run.failures, self._settings.retry_base_seconds, self._settings.retry_max_seconds
            )
        run.status, run.error = "retrying", error
        self._settler.retry(run, delay)
        self._outcomes["retried"].inc()
        fields = _log_fields(run, retry_in_s=round(delay, 3))
        log.warning("message failed, will retry", extra=fields)

    def _dead(self, message: Message, run: JobRun, reason: str, kind: str) -> None:
        run.status, run.error = "dead", reason
        run.finished_at = run.finished_at or _utcnow()
        self._settler.dead(run)
        self._outcomes["dead"].inc()
        metrics.dead_letters_total.labels(reason=kind, **self._labels).inc()
        log.error("message dead-lettered", extra=_log_fields(run, reason_kind=kind))

    def _release(self, runs: list[JobRun], why: str) -> None:
        """Give unfinished messages back to the queue now rather than at their timeout."""
        for run in runs:
            run.status, run.error = "retrying", why
            self._settler.retry(run, 0.0)

    def _done(self, key: Hashable, group: list[tuple[Message, Any]]) -> None:
        self._status.made_progress()
        self._running.discard(key)
        self._release_wanted.set()
        for message, _ in group:
            self._in_flight.pop(message.msg_id, None)
            self._runs.pop(message.msg_id, None)
        if not self._stopping:
            self._dispatch()
        self._show_in_flight()
        self._wake.set()

    async def _finish_in_flight(self) -> None:
        """Release what never started; give running groups the grace period."""
        waiting = [pair for group in self._waiting.values() for pair in group]
        self._waiting.clear()
        self._waiting_count = 0
        if waiting:
            now = _utcnow()
            self._release([self._run_record(m, p, now) for m, p in waiting], "released at shutdown")
            for message, _ in waiting:
                self._in_flight.pop(message.msg_id, None)
        if self._tasks:
            log.info("waiting for in-flight messages", extra={"count": len(self._in_flight)})
            _, pending = await asyncio.wait(
                set(self._tasks), timeout=self._settings.shutdown_grace_seconds
            )
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._settler.drained()

    # -- keeping messages invisible while they run ------------------------------

    async def _renew_forever(self) -> None:
        """Keep what this process holds invisible, on a connection of its own.

        The job pool may be busy (a verify, long replays): a renewal that
        waited behind it would let timeouts lapse and hand running messages to
        other workers. A renewal that runs late says so; a message another
        worker took meanwhile is forgotten here.
        """
        timeout = self._settings.visibility_timeout_seconds
        interval = max(0.5, timeout / 3)
        connection: database.RawConnection | None = None
        last_renewed = time.monotonic()
        try:
            while True:
                await asyncio.sleep(interval)
                if not self._in_flight:
                    last_renewed = time.monotonic()
                    continue
                late = time.monotonic() - last_renewed
                if late > 2 * timeout / 3:
                    log.warning("visibility renewal is late", extra={"late_s": round(late, 2)})
                try:
                    if connection is None or connection.is_closed():
                        connection = await database.connect(self._dsn, self._settings)
                    async with self._settler.lock:
                        held = list(self._in_flight.values())
                        owned = await self.queue.extend_visibility(connection, held, timeout)
                except DATABASE_ERRORS as exc:
                    log.warning("visibility renewal failed", extra={"error": _short(exc)})
                    continue
                last_renewed = time.monotonic()
                self._forget_lost([m for m in held if m.msg_id not in owned])
        finally:
            if connection is not None and not connection.is_closed():
                await connection.close(timeout=2)

    def _forget_lost(self, lost: list[Message]) -> None:
        """Messages read again by another worker: not ours to run or settle any more."""
        for message in lost:
            if self._in_flight.get(message.msg_id) is not message:
                continue  # re-read by this process meanwhile: that read is ours
            del self._in_flight[message.msg_id]
            self._lost.inc()
            log.warning(
                "message lost: another worker read it after its visibility timeout lapsed",
                extra={"msg_id": message.msg_id},
            )
            for key, group in list(self._waiting.items()):
                kept = [(m, p) for m, p in group if m.msg_id != message.msg_id]
                if len(kept) != len(group):
                    self._waiting_count -= len(group) - len(kept)
                    if kept:
                        self._waiting[key] = kept
                    else:
                        del self._waiting[key]
                        self._release_wanted.set()
        self._show_in_flight()

    # -- tenant affinity ------------------------------------------------------------

    def _needs(self, key: Hashable) -> bool:
        """Whether this replica still has messages of ``key`` waiting or running."""
        return key in self._waiting or key in self._running

    async def _release_forever(self) -> None:
        """Give other replicas the tenants this one is done with, as soon as it is.

        Also every poll interval without a reason, so no claim can outlive its
        tenant's work here, whatever path the messages left by.
        """
        assert self._affinity is not None
        while True:
            await wait_event(self._release_wanted, self._settings.poll_interval_seconds)
            self._release_wanted.clear()
            await self._affinity.release_unneeded(self._needs)


def _log_fields(run: JobRun, **more: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "msg_id": run.msg_id,
        "tenant_id": str(run.tenant_id) if run.tenant_id else None,
        "match_id": run.match_id,
        "attempt": run.attempts,
        "duration_ms": round(run.duration_ms, 2) if run.duration_ms is not None else None,
    }
    if run.error:
        fields["error"] = run.error
    fields.update(more)
    return fields
