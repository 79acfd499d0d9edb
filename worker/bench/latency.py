"""Latency: one match at a time on an idle worker, against raw SQL on the same match.

For each match: the app completes it (one transaction; the triggers enqueue),
and the clock runs from that commit to the cache invalidation POST arriving
at the receiver. Then, with the worker idle, the same match is recomputed
twice without queue or worker — the eleven aggregations as the handler runs
them (scope, ten concurrently on their own pool connections, hall of fame),
then the eleven one after another on one connection. Before each raw run the
match is taken back out of the statistics (enqueue triggers off, recomputed)
and put back, so every run writes the same rows the worker wrote.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field

from worker.app import Worker
from worker.bench.harness import StatsHandlers, pending_matches
from worker.bench.receiver import CallbackReceiver
from worker.bench.samples import TableTimings
from worker.core.database import Connection, Pool
from worker.core.queries import query
from worker.stats.aggregations import TABLES, Scope, refresh_concurrently
from worker.stats.handler import StatsHandler
from worker.stats.league import Match, complete_match
from worker.stats.message import StatsMessage

CALLBACK_TIMEOUT_SECONDS = 60.0


@dataclass
class WorkerLatency:
    """Commit → callback of each match, and where that time went."""

    seconds: list[float] = field(default_factory=list)
    pickup: list[float] = field(default_factory=list)
    """Commit → the handler starts (NOTIFY, read, parse)."""
    handler: list[float] = field(default_factory=list)
    """Scope and the eleven aggregations, as the worker ran them."""
    delivery: list[float] = field(default_factory=list)
    """Handler done → callback received (settle, invalidation POST)."""
    tables: TableTimings = field(default_factory=TableTimings)


@dataclass
class RawLatency:
    concurrent: list[float] = field(default_factory=list)
    sequential: list[float] = field(default_factory=list)
    concurrent_tables: TableTimings = field(default_factory=TableTimings)
    sequential_tables: TableTimings = field(default_factory=TableTimings)


async def measure(
    *,
    worker: Worker,
    handlers: StatsHandlers,
    pool: Pool,
    receiver: CallbackReceiver,
    phase: str,
    tick: Callable[[], None],
    raw: RawLatency | None = None,
) -> WorkerLatency:
    """Complete the matches of ``phase`` one at a time; with ``raw``, also the raw runs."""
    measured = WorkerLatency()
    scopes = StatsHandler(pool)
    async with pool.acquire() as app:
        async for match in pending_matches(pool, phase):
            await _through_worker(
                worker=worker,
                handlers=handlers,
                app=app,
                receiver=receiver,
                match=match,
                measured=measured,
            )
            if raw is not None:
                await _raw_runs(pool, app, scopes, match, raw)
            tick()
    return measured


async def measure_interleaved(
    *,
    worker: Worker,
    handlers: StatsHandlers,
    pool: Pool,
    receiver: CallbackReceiver,
    phases: Mapping[str, str],
    tick: Callable[[], None],
) -> dict[str, WorkerLatency]:
    """Complete one match of each of ``phases`` in turn, until all are done.

    Phases compared with each other (the growth tenants) then share whatever
    the machine and the database do meanwhile (autovacuum, checkpoints, a
    neighbour's burst): measured one after the other, one phase could take all
    of it, and their ratio moved by 0.2 between runs that changed nothing.
    """
    measured = {name: WorkerLatency() for name in phases}
    streams: dict[str, AsyncIterator[Match]] = {
        name: pending_matches(pool, phase) for name, phase in phases.items()
    }
    async with pool.acquire() as app:
        while streams:
            for name, stream in list(streams.items()):
                match = await anext(stream, None)
                if match is None:
                    del streams[name]
                    continue
                await _through_worker(
                    worker=worker,
                    handlers=handlers,
                    app=app,
                    receiver=receiver,
                    match=match,
                    measured=measured[name],
                )
                tick()
    return measured


async def _through_worker(
    *,
    worker: Worker,
    handlers: StatsHandlers,
    app: Connection,
    receiver: CallbackReceiver,
    match: Match,
    measured: WorkerLatency,
) -> None:
    receiver.forget()
    runs_before = len(handlers.runs())
    await complete_match(app, match)
    committed = time.perf_counter()
    arrival = await receiver.wait_for_tag(f"tenant:{match.tenant_id}", CALLBACK_TIMEOUT_SECONDS)
    measured.seconds.append(arrival.at - committed)
    runs = handlers.runs()[runs_before:]
    if len(runs) == 1:
        run = runs[0]
        measured.pickup.append(run.started - committed)
        measured.handler.append(run.finished - run.started)
        measured.delivery.append(arrival.at - run.finished)
        measured.tables.add(run.seconds)
    # Idle again before anything else runs: the invalidation is recorded as sent.
    await worker.invalidator.drained()
    for settler in worker.settlers:
        await settler.drained()


async def _raw_runs(
    pool: Pool, app: Connection, scopes: StatsHandler, match: Match, raw: RawLatency
) -> None:
    message = StatsMessage(tenant_id=match.tenant_id, match_id=match.id)
    await _take_back(pool, app, scopes, message)
    started = time.perf_counter()
    scope = await _scope(scopes, message)
    scoped = time.perf_counter()
    timings = await refresh_concurrently(pool, scope)
    raw.concurrent.append(time.perf_counter() - started)
    raw.concurrent_tables.add({"scope": scoped - started, **timings.seconds})

    await _take_back(pool, app, scopes, message)
    async with pool.acquire() as connection:
        seconds: dict[str, float] = {}
        started = time.perf_counter()
        scope = await _scope(scopes, message)
        seconds["scope"] = time.perf_counter() - started
        for table in TABLES:
            began = time.perf_counter()
            await connection.fetchval(query(f"refresh_{table}"), *scope.arguments())
            seconds[table] = time.perf_counter() - began
        raw.sequential.append(time.perf_counter() - started)
        raw.sequential_tables.add(seconds)


async def _scope(scopes: StatsHandler, message: StatsMessage) -> Scope:
    scope = await scopes.scope([message])
    assert scope is not None, "the bench's matches all exist"
    return scope


async def _take_back(
    pool: Pool, app: Connection, scopes: StatsHandler, message: StatsMessage
) -> None:
    """Undo the match's contribution and restore it, without a message either way.

    Afterwards the source is as it was, and the statistics are as they were
    just before the worker ran the match: the next run recomputes from there.
    The source is changed on ``app``, the phase's own connection, not the
    pool's: setting ``session_replication_role`` (the triggers off) empties the
    plan cache of its session, and a pool connection so emptied would time the
    next run with every plan made again, which the worker's connections never do.
    """
    async with app.transaction():
        await app.execute(query("disable_enqueue_triggers"))
        await app.execute(query("bench_uncount_match"), message.match_id)
    await refresh_concurrently(pool, await _scope(scopes, message))
    async with app.transaction():
        await app.execute(query("disable_enqueue_triggers"))
        await app.execute(query("bench_recount_match"), message.match_id)
