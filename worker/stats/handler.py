"""The stats handler: messages of one tenant → one scoped recompute → cache tags."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any

from worker.core.database import Pool
from worker.core.handlers import Subject
from worker.core.queries import query
from worker.stats.aggregations import Scope, Timings, refresh_concurrently, refresh_one_by_one
from worker.stats.message import StatsMessage, parse_stats_message

CACHE_TAGS = ("player_stats", "season_stats", "match_reports")
CONCURRENT_UP_TO_MATCHES = 32
"""A recompute of more matches than this (a tenant's mass correction merged into
one, on either queue) is throughput work, not a live match waiting: it refreshes
one statistic at a time, keeping one backend busy, so the cores stay with the
small recomputes of other tenants' live matches running beside it."""


def cache_tags(tenant_ids: Sequence[object]) -> list[str]:
    """The tags a recompute of these tenants invalidates, sorted.

    The bare tags stay for pages tagged before tenant scoping; ``<tag>:<tenant>``
    lets the app tag a tenant's pages so another tenant's match leaves them cached.
    """
    tenants = {str(t) for t in tenant_ids}
    scoped = {f"{tag}:{tenant}" for tag in CACHE_TAGS for tenant in tenants}
    return sorted({*CACHE_TAGS, *scoped, *(f"tenant:{tenant}" for tenant in tenants)})


class StatsHandler:
    def __init__(
        self,
        pool: Pool,
        on_timings: Callable[[Timings], None] | None = None,
        *,
        concurrent: bool = True,
    ) -> None:
        self._pool = pool
        self._on_timings = on_timings
        """Told each recompute's per-aggregation durations (the demo's summary)."""
        self._concurrent = concurrent
        """The ten at once (live matches), or one at a time (bulk work: see
        :func:`~worker.stats.aggregations.refresh_one_by_one`)."""

    def parse(self, body: Any) -> StatsMessage:
        return parse_stats_message(body)

    def subject(self, payload: StatsMessage) -> Subject:
        return Subject(tenant_id=payload.tenant_id, match_id=payload.match_id)

    def group_key(self, payload: StatsMessage) -> Hashable | None:
        # Messages of one tenant read together share one recompute: their
        # scopes merge, and every table is recomputed once from the source.
        return payload.tenant_id

    def group_field(self) -> str | None:
        return "tenant_id"

    async def scope(self, messages: Sequence[StatsMessage]) -> Scope | None:
        """What the messages touch; None when they name nothing this tenant has or had."""
        tenant = messages[0].tenant_id
        if any(m.tenant_id != tenant for m in messages):
            raise ValueError("a recompute covers one tenant")
        match_ids = sorted({m.match_id for m in messages})
        sinces = [m.since for m in messages if m.since is not None]
        row = await self._pool.fetchrow(
            query("message_scope"),
            tenant,
            match_ids,
            sorted({p for m in messages for p in m.player_ids}),
            sorted({s for m in messages for s in m.season_ids}),
            min(sinces) if sinces else None,
        )
        assert row is not None
        if not row["changes_something"]:
            return None
        return Scope(
            tenant_id=tenant,
            match_ids=match_ids,
            player_ids=row["player_ids"] or [],
            season_ids=row["season_ids"] or [],
            rating_from_at=row["rating_from_at"],
            rating_from_id=row["rating_from_id"],
        )

    def owed_tags(self, payloads: Sequence[StatsMessage]) -> Sequence[str]:
        # Each table commits on its own: after a failure some may have changed.
        return cache_tags([p.tenant_id for p in payloads])

    async def run(
        self, payloads: Sequence[StatsMessage], before_changes: Callable[[], Awaitable[None]]
    ) -> Sequence[str]:
        scope = await self.scope_before_changes(payloads, before_changes)
        if scope is None:
            return []  # an unknown tenant or match: nothing changed, nothing to invalidate
        timings = await self.refresh(scope)
        if self._on_timings is not None:
            self._on_timings(timings)
        return cache_tags([p.tenant_id for p in payloads])

    async def scope_before_changes(
        self, messages: Sequence[StatsMessage], before_changes: Callable[[], Awaitable[None]]
    ) -> Scope | None:
        """The scope, read while the engine's write-ahead invalidation commits
        (the scope only reads); once it returns, the recompute may change things."""
        scope, _ = await asyncio.gather(self.scope(messages), before_changes())
        return scope

    async def refresh(self, scope: Scope) -> Timings:
        if self._concurrent and len(scope.match_ids) <= CONCURRENT_UP_TO_MATCHES:
            return await refresh_concurrently(self._pool, scope)
        return await refresh_one_by_one(self._pool, scope)
