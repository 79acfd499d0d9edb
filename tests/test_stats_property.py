"""Random small leagues and random corrections: once the queue has drained, every
statistics table equals the plain-Python reference (the contract's invariant).

Each example starts from empty tables in the test's database. The source rows
are written by ordinary transactions, so the enqueue triggers produce the
messages; some corrections instead bypass the triggers and enqueue a bare
``{"tenant_id", "match_id"}`` by hand, which leaves the old state of the match
to stats.message_scope alone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import reference

BASE_TIME = datetime(2024, 3, 1, 18, 0, tzinfo=UTC)
TENANTS = (
    UUID("00000000-0000-4000-8000-00000000000a"),
    UUID("00000000-0000-4000-8000-00000000000b"),
)


@dataclass
class TenantPlan:
    tenant_id: UUID
    players: list[int]
    seasons: list[int]


@dataclass
class MatchPlan:
    id: int
    tenant_id: UUID
    season_id: int | None
    slot: int
    status: str
    team_a_score: int | None
    team_b_score: int | None
    lineup: list[tuple[int, str, int, int, int, bool]] = field(default_factory=list)


@dataclass
class League:
    tenants: list[TenantPlan]
    matches: list[MatchPlan]


def played_at(slot: int) -> datetime:
    # Few distinct times, so that equal played_at (ordered by id) is common.
    return BASE_TIME + timedelta(days=slot)


@st.composite
def lineups(draw: st.DrawFn, players: list[int]) -> list[tuple[int, str, int, int, int, bool]]:
    chosen = draw(st.lists(st.sampled_from(players), unique=True, max_size=len(players)))
    rows = []
    for player in chosen:
        rows.append(
            (
                player,
                draw(st.sampled_from("AB")),
                draw(st.integers(0, 4)),
                draw(st.integers(0, 2)),
                draw(st.integers(0, 1)),
                draw(st.booleans()),
            )
        )
    return rows


@st.composite
def leagues(draw: st.DrawFn) -> League:
    tenant_count = draw(st.integers(1, 2))
    tenants = []
    next_player, next_season = 1, 1
    for tenant_id in TENANTS[:tenant_count]:
        player_count = draw(st.integers(2, 6))
        season_count = draw(st.integers(0, 2))
        tenants.append(
            TenantPlan(
                tenant_id,
                list(range(next_player, next_player + player_count)),
                list(range(next_season, next_season + season_count)),
            )
        )
        next_player += player_count
        next_season += season_count
    matches = []
    for match_id in range(1, draw(st.integers(5, 25)) + 1):
        tenant = draw(st.sampled_from(tenants))
        status = draw(st.sampled_from(["completed"] * 6 + ["scheduled", "cancelled"]))
        scored = status == "completed" and draw(st.integers(0, 9)) > 0
        matches.append(
            MatchPlan(
                id=match_id,
                tenant_id=tenant.tenant_id,
                season_id=draw(st.sampled_from([None, *tenant.seasons])),
                slot=draw(st.integers(0, 8)),
                status=status,
                team_a_score=draw(st.integers(0, 4)) if scored else None,
                team_b_score=draw(st.integers(0, 4)) if scored else None,
                lineup=draw(lineups(tenant.players)),
            )
        )
    return League(tenants, matches)


CORRECTION_KINDS = (
    "score",
    "status",
    "season",
    "date",
    "remove_player",
    "add_player",
    "goals",
    "switch_team",
    "delete",
    "touch_nothing_relevant",
)


@st.composite
def corrections(draw: st.DrawFn, league: League) -> list[dict[str, Any]]:
    """A few changes, each a dict the test applies in its own transaction."""
    result = []
    for _ in range(draw(st.integers(1, 6))):
        match = draw(st.sampled_from(league.matches))
        tenant = next(t for t in league.tenants if t.tenant_id == match.tenant_id)
        result.append(
            {
                "kind": draw(st.sampled_from(CORRECTION_KINDS)),
                "match_id": match.id,
                "tenant_id": match.tenant_id,
                "score": (draw(st.integers(0, 4)), draw(st.integers(0, 4))),
                "status": draw(st.sampled_from(["completed", "scheduled", "cancelled"])),
                "season_id": draw(st.sampled_from([None, *tenant.seasons])),
                "slot": draw(st.integers(0, 8)),
                "player": draw(st.sampled_from(tenant.players)),
                "goals": draw(st.integers(0, 12)),
                "by_hand": draw(st.integers(0, 3)) == 0,
                "drain_after": draw(st.booleans()),
            }
        )
    return result


async def reset(conn: asyncpg.Connection) -> None:
    await conn.execute(
        """
        TRUNCATE public.match_players, public.matches, public.players, public.seasons,
            public.tenants, stats.player_totals, stats.season_standings,
            stats.personal_bests, stats.hall_of_fame, stats.match_reports,
            stats.player_form, stats.player_streaks, stats.partnerships,
            stats.season_leaderboards, stats.milestones, stats.player_ratings,
            stats.rating_steps, stats.applied_by_stat, stats.player_marks;
        SELECT pgmq.purge_queue('stats_updates');
        """
    )


async def insert_league(
    conn: asyncpg.Connection,
    league: League,
    after_each: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """Writes the league; ``after_each`` runs after each one-match transaction."""
    async with conn.transaction():
        for tenant in league.tenants:
            await conn.execute("INSERT INTO tenants VALUES ($1, 'club')", tenant.tenant_id)
            await conn.executemany(
                "INSERT INTO seasons (id, tenant_id, name) VALUES ($1, $2, 'season')",
                [(s, tenant.tenant_id) for s in tenant.seasons],
            )
            await conn.executemany(
                "INSERT INTO players (id, tenant_id, name) VALUES ($1, $2, 'player')",
                [(p, tenant.tenant_id) for p in tenant.players],
            )
    # Half the matches in one bulk transaction, the rest one by one.
    for chunk in (league.matches[::2], *([m] for m in league.matches[1::2])):
        async with conn.transaction():
            await conn.executemany(
                "INSERT INTO matches VALUES ($1, $2, $3, $4, $5, $6, $7)",
                [
                    (
                        m.id,
                        m.tenant_id,
                        m.season_id,
                        played_at(m.slot),
                        m.status,
                        m.team_a_score,
                        m.team_b_score,
                    )
                    for m in chunk
                ],
            )
            await conn.executemany(
                "INSERT INTO match_players VALUES ($1, $2, $3, $4, $5, $6, $7)",
                [(m.id, *row) for m in chunk for row in m.lineup],
            )
        if after_each is not None and len(chunk) == 1:
            await after_each()


async def apply_correction(conn: asyncpg.Connection, change: dict[str, Any]) -> None:
    match_id, kind = change["match_id"], change["kind"]
    async with conn.transaction():
        if change["by_hand"]:
            # As if the app wrote without the triggers: only the enqueue_match
            # below tells the worker.
            await conn.execute("SET LOCAL session_replication_role = replica")
        if kind == "score":
            await conn.execute(
                "UPDATE matches SET team_a_score = $2, team_b_score = $3 WHERE id = $1",
                match_id,
                *change["score"],
            )
        elif kind == "status":
            await conn.execute(
                "UPDATE matches SET status = $2, team_a_score = coalesce(team_a_score, $3),"
                " team_b_score = coalesce(team_b_score, $4) WHERE id = $1",
                match_id,
                change["status"],
                *change["score"],
            )
        elif kind == "season":
            await conn.execute(
                "UPDATE matches SET season_id = $2 WHERE id = $1", match_id, change["season_id"]
            )
        elif kind == "date":
            await conn.execute(
                "UPDATE matches SET played_at = $2 WHERE id = $1",
                match_id,
                played_at(change["slot"]),
            )
        elif kind == "remove_player":
            await conn.execute(
                "DELETE FROM match_players WHERE match_id = $1 AND player_id ="
                " (SELECT min(player_id) FROM match_players WHERE match_id = $1)",
                match_id,
            )
        elif kind == "add_player":
            await conn.execute(
                "INSERT INTO match_players (match_id, player_id, team, goals)"
                " SELECT $1, $2, 'B', 1 WHERE EXISTS (SELECT FROM matches WHERE id = $1)"
                " ON CONFLICT DO NOTHING",
                match_id,
                change["player"],
            )
        elif kind == "goals":
            await conn.execute(
                "UPDATE match_players SET goals = $2 WHERE match_id = $1 AND player_id ="
                " (SELECT max(player_id) FROM match_players WHERE match_id = $1)",
                match_id,
                change["goals"],
            )
        elif kind == "switch_team":
            await conn.execute(
                "UPDATE match_players SET team = CASE team WHEN 'A' THEN 'B' ELSE 'A' END,"
                " is_mvp = NOT is_mvp WHERE match_id = $1",
                match_id,
            )
        elif kind == "delete":
            await conn.execute("DELETE FROM matches WHERE id = $1", match_id)
        elif kind == "touch_nothing_relevant":
            await conn.execute("UPDATE matches SET status = status WHERE id = $1", match_id)
        if change["by_hand"]:
            await conn.execute("SET LOCAL session_replication_role = origin")
            await conn.execute("SELECT stats.enqueue_match($1, $2)", change["tenant_id"], match_id)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    data=st.data(),
    league=leagues(),
    concurrently=st.booleans(),
    coalesce=st.booleans(),
    drain_each=st.booleans(),
)
async def test_drained_stats_equal_the_reference(
    conn: asyncpg.Connection,
    pool: asyncpg.Pool,
    data: st.DataObject,
    league: League,
    concurrently: bool,
    coalesce: bool,
    drain_each: bool,
) -> None:
    executor = pool if concurrently else conn

    async def drain() -> int:
        return await reference.drain(executor, concurrently=concurrently, coalesce=coalesce)

    await reset(conn)
    # Draining after each match makes most of them land after the players'
    # marks (folded); draining once recomputes.
    await insert_league(conn, league, drain if drain_each else None)
    await drain()
    await reference.assert_stats_match_reference(conn)

    for change in data.draw(corrections(league)):
        await apply_correction(conn, change)
        if change["drain_after"]:
            await drain()
    await drain()
    await reference.assert_stats_match_reference(conn)

    # A rebuild from scratch agrees with the incremental result.
    before = await reference.live_tables(conn)
    for tenant in league.tenants:
        await reference.rebuild(conn, tenant.tenant_id)
    assert not reference.table_differences(before, await reference.live_tables(conn))
