"""The consumer: read what there is room for, run it, settle it, repeat.

Per queue: a read loop that claims at most as many messages as there are free
slots (pgmq ``read`` with a visibility timeout), a task per group of messages
(``worker/queue/groups.py``), a renewer that keeps running messages invisible
(``worker/queue/renewal.py``), and a LISTEN connection on pgmq's insert NOTIFY
so an idle worker wakes at once (polling stays on as the fallback when the
listener is down).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Hashable, Sequence
from typing import Any

from worker.core import metrics
from worker.core.database import DATABASE_ERRORS, Pool
from worker.core.errors import MalformedMessage, error_text
from worker.core.handlers import Handler
from worker.core.settings import Settings
from worker.core.status import WorkerStatus
from worker.core.waits import wait_event
from worker.queue import control
from worker.queue.affinity import HAND_BACK_SECONDS, Claims, TenantAffinity
from worker.queue.groups import Groups
from worker.queue.listener import listen_forever
from worker.queue.outcomes import Settler
from worker.queue.pgmq import Message, Queue, decode_body
from worker.queue.renewal import Renewer
from worker.queue.verdicts import Verdicts, utcnow

log = logging.getLogger(__name__)


HOLD_PER_SLOT = 2
"""With tenant affinity, the most tenants a replica claims per recompute slot at
read time: enough to keep every slot busy while the next recompute's messages
gather, the rest left to other replicas (or claimed here when they start)."""


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
        pause: control.Pause,
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
        self._verdicts = Verdicts(
            settings=settings, queue_name=queue_name, handler=handler, settler=settler
        )
        self._release_wanted = asyncio.Event()
        self._groups = Groups(
            settings=settings,
            queue_name=queue_name,
            handler=handler,
            settler=settler,
            verdicts=self._verdicts,
            status=status,
            wake=self._wake,
            release_wanted=self._release_wanted,
            before_start=self._claimed_at_start,
        )
        self._renewer = Renewer(
            queue=self.queue,
            dsn=dsn,
            settings=settings,
            held=self._groups.in_flight,
            lock=settler.lock,
            on_lost=self._groups.forget_lost,
        )
        self._handed_back = metrics.messages_handed_back_total.labels(queue=queue_name)
        self._affinity = TenantAffinity(dsn, queue_name) if settings.coalesce else None
        self._unclaimed: set[Hashable] = set()
        """Keys held here that this replica has not claimed yet (it had no room)."""
        self._poll_gauge = metrics.last_poll_timestamp_seconds.labels(queue=queue_name)
        self._pause = pause
        self._paused_here = False
        """What this consumer last saw, as its replica row says."""
        self._replica = control.replica_name()
        self._replica_seen_at = -control.REPLICA_SEEN_SECONDS

    def stop(self) -> None:
        """Stop reading; in-flight work goes on (see :meth:`run`)."""
        self._stopping = True
        self._groups.stop()
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
            asyncio.create_task(self._renewer.run(), name=f"renew:{self.queue.name}"),
        ]
        if self._affinity is not None:
            helpers.append(
                asyncio.create_task(self._release_forever(), name=f"affinity:{self.queue.name}")
            )
        try:
            await self._read_until_stopped(helpers)
            await self._groups.finish()
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
            limit = self._groups.read_limit()
            self._wake.clear()
            if limit <= 0:  # until a slot frees up (a wake for a new message can wait)
                await self._sleep_until_woken()
                continue
            try:
                if await self._paused():
                    self._mark_poll()
                    await self._sleep_until_woken()
                    continue
                messages = await self.queue.read(
                    self._settings.visibility_timeout_seconds,
                    limit,
                    self._groups.passing_over(self._handler.group_field()),
                )
            except DATABASE_ERRORS as exc:
                failures += 1
                log.warning("queue read failed", extra={"error": error_text(exc)})
                await asyncio.sleep(min(0.2 * 2**failures, 10.0))
                continue
            failures = 0
            self._mark_poll()
            if messages:
                if not await self._accept(messages):
                    # Every one belongs to tenants other replicas hold: reading on at
                    # once would only skim the queue and hand back more of theirs.
                    await self._sleep_until_woken()
            elif self._until_empty and await self._queue_is_empty():
                return
            else:
                await self._sleep_until_woken()

    async def _paused(self) -> bool:
        """Asked before every read, so a pause reaches every replica within one poll."""
        paused = await self._pause.check()
        changed, self._paused_here = paused != self._paused_here, paused
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
        if self._groups.in_flight:
            return False
        await self._settler.drained()
        return (await self.queue.depth()).length == 0

    # -- accepting what was read ---------------------------------------------------

    async def _accept(self, messages: list[Message]) -> bool:
        """Decode, parse and queue messages by group key, then start what may start.

        Each body is decoded on its own: one that cannot be is dead-lettered
        with its reason and the others go on. Messages of a tenant another
        replica holds go back to the queue for it (see ``worker/queue/affinity.py``);
        False when that was all of them.
        """
        accepted: list[tuple[Message, Any, Hashable | None]] = []
        for message in messages:
            if self._groups.holds(message.msg_id):
                self._groups.reread(message)
                continue
            try:
                payload = self._handler.parse(decode_body(message.raw))
            except MalformedMessage as exc:
                run = self._verdicts.record(message, None, utcnow())
                self._verdicts.dead(message, run, exc.reason, "malformed")
                continue
            key = self._handler.group_key(payload) if self._settings.coalesce else None
            accepted.append((message, payload, key))
        keys = list(dict.fromkeys(key for _, _, key in accepted if key is not None))
        claims = Claims(mine=set(keys))
        if self._affinity is not None and keys:
            claims = await self._affinity.claim(keys, HOLD_PER_SLOT * self._settings.concurrency)
        # Keys this replica had no room to claim yet are claimed when they start.
        self._unclaimed.update(set(keys) - claims.mine - claims.elsewhere)
        self._unclaimed -= claims.mine
        for message, payload, key in accepted:
            if key not in claims.elsewhere:
                self._groups.hold(message, payload, key)
        self._groups.dispatch()
        handed = [message for message, _, key in accepted if key in claims.elsewhere]
        runnable = len(handed) < len(messages)
        if handed:
            # Visible at once when this replica waits before its next read anyway;
            # otherwise a moment later, so that next read goes past them.
            await self._hand_back(handed, HAND_BACK_SECONDS if runnable else 0)
        return runnable

    async def _claimed_at_start(self, key: Hashable, group: list[tuple[Message, Any]]) -> bool:
        """Claim a key read while this replica had no room for it; when another
        replica took it meanwhile, its messages go back to the queue for that one."""
        if self._affinity is None or key not in self._unclaimed:
            return True
        self._unclaimed.discard(key)
        if key not in (await self._affinity.claim([key], most=None)).elsewhere:
            return True
        await self._hand_back(self._groups.give_back(key, group), 0)
        return False

    async def _hand_back(self, messages: list[Message], seconds: int) -> None:
        """Back on the queue, unrun, for the replica whose recompute holds their tenant."""
        try:
            await self.queue.extend_visibility(self.queue.pool, messages, seconds)
        except DATABASE_ERRORS as exc:  # they come back at their visibility timeout instead
            log.warning("handing messages back failed", extra={"error": error_text(exc)})
            return
        self._handed_back.inc(len(messages))

    # -- tenant affinity ------------------------------------------------------------

    async def _release_forever(self) -> None:
        """Give other replicas the tenants this one is done with, as soon as it is.

        Also every poll interval without a reason, so no claim can outlive its
        tenant's work here, whatever path the messages left by.
        """
        assert self._affinity is not None
        while True:
            await wait_event(self._release_wanted, self._settings.poll_interval_seconds)
            self._release_wanted.clear()
            await self._affinity.release_unneeded(self._groups.needs)
