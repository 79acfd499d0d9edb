"""The real worker (consumer, coalescing, concurrent aggregations) against the oracle."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from tests import reference
from tests.support import drain_stats, wait_for, worker_settings
from worker.app import default_handlers
from worker.queue.priorities import bulk_queue_name
from worker.stats.aggregations import FIRST_PHASE
from worker.stats.handler import CONCURRENT_UP_TO_MATCHES
from worker.stats.league import complete_match, generate_league, write_clubs, write_scheduled
from worker.stats.maintenance import rebuild, scopes, verify
from worker.stats.message import StatsMessage

PGMQ_MATRIX = True  # every pgmq flavour (tests/conftest.py)


async def test_the_worker_drains_a_league_and_its_corrections_to_the_reference(
    database_url, conn: asyncpg.Connection, pool: asyncpg.Pool
):
    league = generate_league(seed=11, tenants=2, players=12, matches=30, side_min=3, side_max=5)
    matches = sorted(league.matches(), key=lambda m: (m.played_at, m.id))
    await write_clubs(conn, league)
    await write_scheduled(conn, matches)
    for match in matches:
        await complete_match(conn, match)
    await drain_stats(database_url, concurrency=4)  # coalescing on: a tenant's messages merge
    await reference.assert_stats_match_reference(conn)

    first, second, third, fourth = [m for m in matches if m.status == "completed"][:4]
    async with conn.transaction():  # a score edited and a scorer's goals fixed
        await conn.execute(
            "UPDATE matches SET team_a_score = team_a_score + 3 WHERE id = $1", first.id
        )
        await conn.execute(
            "UPDATE match_players SET goals = goals + 3 WHERE match_id = $1 AND team = 'A' "
            "AND player_id = (SELECT min(player_id) FROM match_players WHERE match_id = $1)",
            first.id,
        )
    await conn.execute(
        "DELETE FROM match_players WHERE match_id = $1 AND player_id = $2",
        second.id,
        second.lineup[0].player_id,
    )
    await conn.execute("UPDATE matches SET status = 'cancelled' WHERE id = $1", third.id)
    await conn.execute(
        "UPDATE matches SET season_id = NULL, played_at = played_at + $2 WHERE id = $1",
        fourth.id,
        timedelta(days=400),
    )
    await conn.execute("DELETE FROM matches WHERE id = $1", matches[-1].id)
    await drain_stats(database_url, concurrency=4, coalesce=False)
    await reference.assert_stats_match_reference(conn)

    for tenant in league.tenants:
        assert await verify(pool, tenant.id) == []


async def test_verify_reports_drift_and_rebuild_repairs_it(database_url, conn, pool):
    league = generate_league(seed=5, tenants=1, players=10, matches=12, side_min=3, side_max=5)
    await write_clubs(conn, league)
    await write_scheduled(conn, list(league.matches()))
    for match in league.matches():
        await complete_match(conn, match)
    await drain_stats(database_url, concurrency=4)
    tenant = league.tenants[0].id
    assert await verify(pool, tenant) == []

    player = await conn.fetchval("SELECT min(player_id) FROM stats.player_totals")
    await conn.execute(
        "UPDATE stats.player_totals SET goals = goals + 1 WHERE player_id = $1", player
    )
    await conn.execute(
        "DELETE FROM stats.match_reports WHERE match_id = $1", league.tenants[0].matches[0].id
    )
    drift = await verify(pool, tenant)
    assert {(d.table, d.expected is None, d.live is None) for d in drift} >= {
        ("player_totals", False, False),
        ("match_reports", False, True),
    }
    # verify wrote nothing
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM stats.match_reports WHERE match_id = $1",
            league.tenants[0].matches[0].id,
        )
        == 0
    )

    # One tenant: the progress still moves statistic by statistic, counted in matches.
    steps: list[float] = []
    await rebuild(pool, await scopes(pool, [tenant]), steps.append)
    assert len(steps) == 11
    assert sum(steps) == pytest.approx(len(league.tenants[0].matches))
    checked: list[float] = []
    assert await verify(pool, tenant, checked.append) == []
    assert len(checked) == 11
    assert sum(checked) == pytest.approx(len(league.tenants[0].matches))
    await reference.assert_stats_match_reference(conn)


async def test_bulk_work_and_big_recomputes_refresh_one_statistic_at_a_time(
    database_url, conn: asyncpg.Connection, pool: asyncpg.Pool
):
    """The worker's own wiring (app.default_handlers): with the first statistic of a
    recompute held, a live recompute of one match goes on with the others, while a
    bulk one, and a live one of more than CONCURRENT_UP_TO_MATCHES, wait."""
    league = generate_league(seed=7, tenants=1, players=8, matches=60, side_min=3, side_max=4)
    await write_clubs(conn, league)
    matches = [m for m in league.matches() if m.status == "completed"]
    await write_scheduled(conn, matches)
    for match in matches:
        await complete_match(conn, match)
    settings = worker_settings(database_url)
    live, bulk = settings.queue_name, bulk_queue_name(settings.queue_name)
    handlers = default_handlers(settings, pool)
    tenant = league.tenants[0].id
    held, others = FIRST_PHASE[0], set(FIRST_PHASE[1:]) - {"player_ratings"}
    big = matches[2 : 3 + CONCURRENT_UP_TO_MATCHES]

    async def recorded(match_id: int) -> set[str]:
        rows = await conn.fetch(
            "SELECT stat FROM stats.applied_by_stat WHERE match_id = $1", match_id
        )
        return {r["stat"] for r in rows}

    async def held_step_waits() -> bool:
        return bool(
            await conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'advisory' "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
        )

    for queue, batch, goes_on in (
        (live, matches[:1], True),
        (bulk, matches[1:2], False),
        (live, big, False),
    ):
        holder = await asyncpg.connect(database_url)
        try:
            await holder.execute(
                "SELECT pg_advisory_lock(hashtext($1), hashtext($2))", f"stats.{held}", str(tenant)
            )
            messages = [StatsMessage(tenant_id=tenant, match_id=m.id) for m in batch]
            run = asyncio.create_task(handlers[queue].run(messages, _nothing_to_wait_for))
            await wait_for(held_step_waits)
            if goes_on:
                await wait_for(lambda m=batch[0].id: _has(recorded(m), others))
            else:
                await asyncio.sleep(1.0)  # time enough for the others, were they running
                assert await recorded(batch[0].id) == set()
        finally:
            await holder.close()
        await run
        assert {held, *others} <= await recorded(batch[-1].id)
    rest = matches[3 + CONCURRENT_UP_TO_MATCHES :]
    rest_messages = [StatsMessage(tenant_id=tenant, match_id=m.id) for m in rest]
    await handlers[live].run(rest_messages, _nothing_to_wait_for)
    await reference.assert_stats_match_reference(conn)


async def _nothing_to_wait_for() -> None:
    """No write-ahead invalidation to wait for: the test calls the handler directly."""


async def _has(found: Coroutine[Any, Any, set[str]], wanted: set[str]) -> bool:
    return wanted <= await found
