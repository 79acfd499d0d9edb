"""The messages a consumer holds, grouped by key, and the recomputes that run them.

A message read and not yet settled is held here: waiting to start in the
group of its key (a tenant's messages read together run as one recompute), or
running. One recompute per key at a time, at most ``CONCURRENCY`` at once; a
coalesced group that fails runs again message by message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from worker.core import metrics
from worker.core.errors import GiveUp, error_text
from worker.core.handlers import Handler
from worker.core.settings import Settings
from worker.core.status import WorkerStatus
from worker.queue.outcomes import Settler
from worker.queue.pgmq import Message, PassOver
from worker.queue.runs import JobRun
from worker.queue.verdicts import Verdicts, utcnow

log = logging.getLogger(__name__)

READ_AHEAD_PER_SLOT = 8
"""With coalescing, the most messages one read claims per recompute slot."""
HELD_RECOMPUTES = 4
"""With coalescing, the most messages held waiting, in full recomputes
(``BATCH_SIZE`` each): room for other tenants while one tenant's backlog has a
full recompute waiting and reads pass over it."""


class Groups:
    """One consumer's held messages and running recomputes; see the module docstring.

    ``wake`` is set when a recompute ends (a slot is free for the read loop),
    ``release_wanted`` when a key may no longer be needed here (tenant affinity).
    ``before_start`` is asked as each group is about to run: False when it must
    not run here (see :meth:`give_back`).
    """

    def __init__(
        self,
        *,
        settings: Settings,
        queue_name: str,
        handler: Handler[Any],
        settler: Settler,
        verdicts: Verdicts,
        status: WorkerStatus,
        wake: asyncio.Event,
        release_wanted: asyncio.Event,
        before_start: Callable[[Hashable, list[tuple[Message, Any]]], Awaitable[bool]]
        | None = None,
    ) -> None:
        self._settings = settings
        self._handler = handler
        self._settler = settler
        self._verdicts = verdicts
        self._status = status
        self._wake = wake
        self._release_wanted = release_wanted
        self._before_start = before_start
        self.stopping = False
        self.in_flight: dict[int, Message] = {}
        """Every message read and not yet settled: waiting or running."""
        self._waiting: dict[Hashable, list[tuple[Message, Any]]] = {}
        """Messages not started yet, by group key, oldest key first."""
        self.waiting_count = 0
        self._running: set[Hashable] = set()
        """Group keys with a recompute running: one per key at a time."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._runs: dict[int, JobRun] = {}
        """The run records of messages running now, by msg_id."""
        self._in_flight_gauge = metrics.jobs_in_flight.labels(queue=queue_name)
        self._lost = metrics.messages_lost_total.labels(queue=queue_name)

    def stop(self) -> None:
        """Start nothing more; what runs goes on (see :meth:`finish`)."""
        self.stopping = True

    def running_count(self) -> int:
        return len(self._running)

    def startable_count(self) -> int:
        """Groups waiting whose key has no recompute running."""
        return sum(1 for key in self._waiting if key not in self._running)

    def read_limit(self) -> int:
        """How many messages the next read may claim (0: wait until woken).

        Without coalescing, a read claims only what can start at once. With it,
        the worker keeps reading while fewer groups wait to start than there
        are slots: messages of a tenant whose recompute is running do not count,
        they wait (renewed) and merge into its next recompute, up to
        ``BATCH_SIZE`` messages of one tenant (then reads pass over that tenant,
        see :meth:`passing_over`) and ``HELD_RECOMPUTES`` times that in all.
        One read claims at most ``READ_AHEAD_PER_SLOT`` per slot, so replicas
        share a backlog.
        """
        if not self._settings.coalesce:
            return max(0, self._settings.concurrency - self.running_count())
        if self.startable_count() >= self._settings.concurrency:
            return 0
        room = HELD_RECOMPUTES * self._settings.batch_size - self.waiting_count
        return min(room, READ_AHEAD_PER_SLOT * self._settings.concurrency)

    def passing_over(self, field: str | None) -> PassOver | None:
        """The keys (tenants) the next read leaves in the queue: those with a full
        recompute waiting here already; ``field`` is the body field of the key.
        Without this, one tenant's backlog at the head of the FIFO would be all a
        worker ever read, and every other tenant would wait for it to drain."""
        full = self.full_keys() if self._settings.coalesce else []
        if field is None or not full:
            return None
        return PassOver(field, [str(key).lower() for key in full])

    def needs(self, key: Hashable) -> bool:
        """Whether this replica still has messages of ``key`` waiting or running."""
        return key in self._waiting or key in self._running

    def hold(self, message: Message, payload: Any, key: Hashable | None) -> None:
        """Queue ``message`` in the group of ``key`` (None: it runs alone)."""
        self.in_flight[message.msg_id] = message
        group = ("message", message.msg_id) if key is None else key
        self._waiting.setdefault(group, []).append((message, payload))
        self.waiting_count += 1

    def holds(self, msg_id: int) -> bool:
        """In flight here, or still running after the renewer gave its read up as lost
        (a read by this process that the renewer's answer overtook is ours)."""
        return msg_id in self.in_flight or msg_id in self._runs

    def reread(self, message: Message) -> None:
        """A message this process holds came back (its timeout lapsed): keep one copy.

        The new read is the one that owns the message now, so the copy already
        waiting or running takes its read_ct and goes on; it is not queued twice.
        """
        self.in_flight[message.msg_id] = message
        if (run := self._runs.get(message.msg_id)) is not None:
            run.read_ct = message.read_ct
            self._show_in_flight()
            return
        for group in self._waiting.values():
            for i, (held, payload) in enumerate(group):
                if held.msg_id == message.msg_id:
                    group[i] = (message, payload)
                    return

    def full_keys(self) -> list[Hashable]:
        """Keys with a whole recompute's worth (``BATCH_SIZE``) of messages waiting."""
        batch = self._settings.batch_size
        return [key for key, group in self._waiting.items() if len(group) >= batch]

    def dispatch(self) -> None:
        """Start waiting groups, oldest first, one per key, while slots are free;
        a group runs at most ``BATCH_SIZE`` messages, the rest wait for its next run."""
        batch = self._settings.batch_size
        for key in list(self._waiting):
            if len(self._running) >= self._settings.concurrency:
                break
            if key in self._running:
                continue  # its messages join the recompute after the running one
            group, rest = self._waiting[key][:batch], self._waiting[key][batch:]
            if rest:
                self._waiting[key] = rest
            else:
                del self._waiting[key]
            self.waiting_count -= len(group)
            self._running.add(key)
            task = asyncio.create_task(self._start_group(key, group))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._show_in_flight()

    def _show_in_flight(self) -> None:
        self._status.in_flight = len(self.in_flight)
        self._in_flight_gauge.set(len(self.in_flight))

    def give_back(self, key: Hashable, group: list[tuple[Message, Any]]) -> list[Message]:
        """Let go of a group that will not run here, with any message of its key read
        since; return their messages (for the queue)."""
        later = self._waiting.pop(key, [])
        self.waiting_count -= len(later)
        self._done(key, group + later)
        return [message for message, _ in group + later]

    async def _start_group(self, key: Hashable, group: list[tuple[Message, Any]]) -> None:
        if self._before_start is None or await self._before_start(key, group):
            await self._run_group(key, group)

    async def _run_group(self, key: Hashable, group: list[tuple[Message, Any]]) -> None:
        verdicts = self._verdicts
        started_at, started = utcnow(), time.perf_counter()
        runs = [verdicts.record(message, payload, started_at) for message, payload in group]
        self._runs.update((run.msg_id, run) for run in runs)
        self._settler.started(runs)
        alone = False
        payloads = [payload for _, payload in group]
        reservation = self._settler.reserve(
            [m.msg_id for m, _ in group], self._handler.owed_tags(payloads)
        )
        try:
            tags = await self._handler.run(payloads, reservation.committed)
        except asyncio.CancelledError:
            # A written write-ahead invalidation stays: part of the work may have committed.
            reservation.cancel()
            verdicts.release(runs, "interrupted by shutdown")
            raise
        except Exception as exc:
            verdicts.finish(runs, started)
            # Same batch as what follows: the tags move from the write-ahead row to it.
            self._settler.release(await reservation.row())
            self._settler.owe(self._handler.owed_tags(payloads))
            if len(group) > 1 and not self.stopping:
                # One bad message must not take the others with it: each runs
                # alone now, and only its own failure counts against it.
                alone = True
                log.warning(
                    "a coalesced recompute failed; running its messages one by one",
                    extra={"messages": len(group), "error": error_text(exc)},
                )
            elif isinstance(exc, GiveUp):
                for (message, _), run in zip(group, runs, strict=True):
                    verdicts.dead(message, run, exc.reason, "gave_up")
            else:
                verdicts.failed_all(group, runs, exc)
        else:
            verdicts.finish(runs, started)
            self._settler.release(await reservation.row())
            verdicts.succeeded(runs, tags)
        finally:
            self._done(key, [] if alone else group)
        if alone:
            self._running.discard(key)
            for message, payload in group:
                self._waiting[("alone", message.msg_id)] = [(message, payload)]
                self.waiting_count += 1
            self.dispatch()

    def _done(self, key: Hashable, group: list[tuple[Message, Any]]) -> None:
        self._status.made_progress()
        self._running.discard(key)
        self._release_wanted.set()
        for message, _ in group:
            self.in_flight.pop(message.msg_id, None)
            self._runs.pop(message.msg_id, None)
        if not self.stopping:
            self.dispatch()
        self._show_in_flight()
        self._wake.set()

    async def finish(self) -> None:
        """Release what never started; give running groups the grace period."""
        waiting = [pair for group in self._waiting.values() for pair in group]
        self._waiting.clear()
        self.waiting_count = 0
        if waiting:
            now = utcnow()
            runs = [self._verdicts.record(m, p, now) for m, p in waiting]
            self._verdicts.release(runs, "released at shutdown")
            for message, _ in waiting:
                self.in_flight.pop(message.msg_id, None)
        if self._tasks:
            log.info("waiting for in-flight messages", extra={"count": len(self.in_flight)})
            _, pending = await asyncio.wait(
                set(self._tasks), timeout=self._settings.shutdown_grace_seconds
            )
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._settler.drained()

    def forget_lost(self, lost: list[Message]) -> None:
        """Messages read again by another worker: not ours to run or settle any more."""
        for message in lost:
            if self.in_flight.get(message.msg_id) is not message:
                continue  # re-read by this process meanwhile: that read is ours
            del self.in_flight[message.msg_id]
            self._lost.inc()
            log.warning(
                "message lost: another worker read it after its visibility timeout lapsed",
                extra={"msg_id": message.msg_id},
            )
            for key, group in list(self._waiting.items()):
                kept = [(m, p) for m, p in group if m.msg_id != message.msg_id]
                if len(kept) != len(group):
                    self.waiting_count -= len(group) - len(kept)
                    if kept:
                        self._waiting[key] = kept
                    else:
                        del self._waiting[key]
                        self._release_wanted.set()
        self._show_in_flight()
