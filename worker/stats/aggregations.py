"""The eleven aggregations, run concurrently for one scope.

Ten read only the source tables, so they run at once (``asyncio.gather``), each
on its own pool connection and in its own transaction. The hall of fame is
derived from three of their outputs, so it runs after them: the one explicit
dependency. Each SQL function serialises itself per (table, tenant) with an
advisory lock, so concurrent recomputes of one tenant never interleave.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from worker.core import metrics
from worker.core.database import Connection, Pool
from worker.core.queries import query

FIRST_PHASE = (
    "player_totals",
    "season_standings",
    "personal_bests",
    "match_reports",
    "player_form",
    "player_streaks",
    "partnerships",
    "season_leaderboards",
    "milestones",
    "player_ratings",
)
SECOND_PHASE = ("hall_of_fame",)
TABLES = FIRST_PHASE + SECOND_PHASE


@dataclass(frozen=True)
class Scope:
    """What one recompute touches within a tenant."""

    tenant_id: UUID
    match_ids: Sequence[int]
    player_ids: Sequence[int]
    season_ids: Sequence[int]
    rating_from_at: datetime | None = None
    rating_from_id: int | None = None

    def arguments(self) -> tuple[object, ...]:
        return (
            self.tenant_id,
            list(self.match_ids),
            list(self.player_ids),
            list(self.season_ids),
            self.rating_from_at,
            self.rating_from_id,
        )


@dataclass
class Timings:
    seconds: dict[str, float] = field(default_factory=dict)


async def _refresh(
    pool: Pool, table: str, scope: Scope, timings: Timings, on_done: Refreshed | None
) -> None:
    started = time.perf_counter()
    await pool.fetchval(query(f"refresh_{table}"), *scope.arguments())
    elapsed = time.perf_counter() - started
    timings.seconds[table] = elapsed
    metrics.aggregation_duration_seconds.labels(table=table).observe(elapsed)
    if on_done is not None:
        on_done(table)


Refreshed = Callable[[str], None]
"""Told the table each time one statistic of a scope is refreshed (rebuild's progress)."""


async def refresh_concurrently(
    pool: Pool, scope: Scope, on_done: Refreshed | None = None
) -> Timings:
    """All eleven for ``scope``; raises if any fails (the others still commit)."""
    timings = Timings()
    results = await asyncio.gather(
        *(_refresh(pool, table, scope, timings, on_done) for table in FIRST_PHASE),
        return_exceptions=True,
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        raise failures[0]
    for table in SECOND_PHASE:
        await _refresh(pool, table, scope, timings, on_done)
    return timings


async def refresh_one_by_one(pool: Pool, scope: Scope, on_done: Refreshed | None = None) -> Timings:
    """The same eleven, one at a time on one pool connection at a time (bulk work).

    Same outcome as :func:`refresh_concurrently`, each statistic committing on
    its own, the first failure raised after the rest of the first phase. It
    keeps at most one backend busy, so on a small database server a backfill
    leaves the other cores to live matches, whose ten run at once.
    """
    timings = Timings()
    failures: list[Exception] = []
    for table in FIRST_PHASE:
        try:
            await _refresh(pool, table, scope, timings, on_done)
        except Exception as exc:
            failures.append(exc)
    if failures:
        raise failures[0]
    for table in SECOND_PHASE:
        await _refresh(pool, table, scope, timings, on_done)
    return timings


async def refresh_in_one_transaction(
    connection: Connection, scope: Scope, on_done: Callable[[str], None] | None = None
) -> None:
    """All eleven, one after another, inside the caller's transaction (rebuild, verify)."""
    for table in TABLES:
        await connection.fetchval(query(f"refresh_{table}"), *scope.arguments())
        if on_done is not None:
            on_done(table)
