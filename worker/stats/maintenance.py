"""``rebuild`` and ``verify``: recompute from scratch, and compare without writing.

Operators use them after a restore or a bug. A rebuild recomputes a tenant's
whole scope with the same eleven functions the worker runs. Verify does the
same inside a transaction it rolls back, comparing every row before and after
(in the database, against a temporary copy): the live tables are never touched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from worker.core.database import Connection, Pool
from worker.core.queries import query
from worker.stats.aggregations import (
    TABLES,
    Scope,
    refresh_concurrently,
    refresh_in_one_transaction,
)
from worker.stats.handler import cache_tags

RATING_TOLERANCE = 0.01
Progress = Callable[[float], None]
"""Told how many matches' worth of work was just done (a fraction per statistic)."""


async def tenants(pool: Pool, only: UUID | None = None) -> list[UUID]:
    if only is not None:
        return [only]
    return [row["id"] for row in await pool.fetch(query("tenants_with_stats"))]


async def full_scope(executor: Pool | Connection, tenant: UUID) -> Scope:
    row = await executor.fetchrow(query("rebuild_scope"), tenant)
    assert row is not None
    return Scope(
        tenant_id=tenant,
        match_ids=row["match_ids"] or [],
        player_ids=row["player_ids"] or [],
        season_ids=row["season_ids"] or [],
        rating_from_at=row["rating_from_at"],
        rating_from_id=row["rating_from_id"],
    )


async def scopes(pool: Pool, tenant_ids: list[UUID]) -> list[Scope]:
    return [await full_scope(pool, tenant) for tenant in tenant_ids]


async def rebuild(pool: Pool, tenant_scopes: list[Scope], progress: Progress | None = None) -> None:
    """Recompute every statistic of these tenants' scopes from the source tables.

    Progress counts matches, each statistic of a tenant a share of its matches,
    so one big tenant moves the bar as its statistics finish instead of at its end.
    Each tenant's cache tags are then owed to the app (``stats_worker.callbacks``),
    so pages built from the old statistics are invalidated.
    """
    for scope in tenant_scopes:
        share = len(scope.match_ids) / len(TABLES)
        done = None if progress is None else _reporting(progress, share)
        await refresh_concurrently(pool, scope, done)
        await pool.fetchval(query("owe_invalidation"), cache_tags([scope.tenant_id]))


def _reporting(progress: Progress, share: float) -> Callable[[str], None]:
    return lambda _table: progress(share)


@dataclass(frozen=True)
class Drift:
    table: str
    key: dict[str, Any]
    live: dict[str, Any] | None
    expected: dict[str, Any] | None


class _Rollback(Exception):
    pass


async def verify(pool: Pool, tenant: UUID, progress: Progress | None = None) -> list[Drift]:
    """Rows of ``tenant`` whose live value differs from a from-scratch computation.

    The live rows are copied into temporary tables of the verifying
    transaction and compared there, so only the rows that differ reach this
    process, however large the tenant. ``progress`` is told of the tenant's
    matches as each statistic is computed, as :func:`rebuild` does.
    """
    drift: list[Drift] = []
    async with pool.acquire() as connection:
        keys = {table: await _key_columns(connection, table) for table in TABLES}
        try:
            async with connection.transaction():
                for table in TABLES:
                    keep = query("verify_keep_live").format(table=table)  # one of TABLES
                    await connection.execute(keep, tenant)
                scope = await full_scope(connection, tenant)
                share = len(scope.match_ids) / len(TABLES)
                done = None if progress is None else _reporting(progress, share)
                await refresh_in_one_transaction(connection, scope, done)
                for table in TABLES:
                    live, expected = await _differing_rows(connection, table, tenant, keys[table])
                    drift += _compare(table, keys[table], live, expected)
                raise _Rollback
        except _Rollback:
            pass
    return drift


async def _key_columns(connection: Connection, table: str) -> list[str]:
    return [row["attname"] for row in await connection.fetch(query("table_key_columns"), table)]


Key = tuple[Any, ...]
Row = dict[str, Any]


async def _differing_rows(
    connection: Connection, table: str, tenant: UUID, key_columns: list[str]
) -> tuple[dict[Key, Row], dict[Key, Row]]:
    """The live and the recomputed rows of ``table`` that are not in both, by key.

    A row whose value changed is in both, under its key.
    """
    sides: dict[str, dict[Key, Row]] = {"live": {}, "expected": {}}
    sql = query("verify_differing_rows").format(table=table)  # table is one of TABLES
    for record in await connection.fetch(sql, tenant):
        row: Row = record["row"]
        sides[record["side"]][tuple(row[c] for c in key_columns)] = row
    return sides["live"], sides["expected"]


def _compare(
    table: str, key_columns: list[str], live: dict[Key, Row], expected: dict[Key, Row]
) -> list[Drift]:
    """The rows that differ beyond the rating tolerance, in key order."""
    drift = []
    for k in sorted(live.keys() | expected.keys(), key=str):
        have, want = live.get(k), expected.get(k)
        if have is None or want is None or not _same_row(have, want):
            drift.append(Drift(table, dict(zip(key_columns, k, strict=True)), have, want))
    return drift


def _same_row(have: Row, want: Row) -> bool:
    if have.keys() != want.keys():
        return False
    for column, value in have.items():
        other = want[column]
        if isinstance(value, int | float) and isinstance(other, int | float):
            if abs(value - other) > RATING_TOLERANCE:
                return False
        elif value != other:
            return False
    return True
