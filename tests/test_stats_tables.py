"""Hand-worked examples for each statistics table, its tie-breaks and edges, and
the corrections of the contract.

Each example writes source rows (the enqueue triggers send the messages), lets
:func:`tests.reference.drain` play the worker, and checks the rows worked out by
hand below. Every check also compares all tables with the reference.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from tests import reference

T = UUID("10000000-0000-4000-8000-000000000001")
OTHER = UUID("20000000-0000-4000-8000-000000000002")
DAY0 = datetime(2024, 5, 1, 19, 0, tzinfo=UTC)


def day(n: int) -> datetime:
    return DAY0 + timedelta(days=n)


async def create_league(
    conn: asyncpg.Connection,
    tenant: UUID = T,
    players: Iterable[int] = range(1, 13),
    seasons: Iterable[int] = (1, 2),
) -> None:
    await conn.execute("INSERT INTO tenants VALUES ($1, 'club')", tenant)
    await conn.executemany(
        "INSERT INTO seasons (id, tenant_id, name) VALUES ($1, $2, 'season')",
        [(s, tenant) for s in seasons],
    )
    await conn.executemany(
        "INSERT INTO players (id, tenant_id, name) VALUES ($1, $2, 'player')",
        [(p, tenant) for p in players],
    )


async def play(
    conn: asyncpg.Connection,
    match_id: int,
    on: int,
    score: tuple[int, int] | None,
    *,
    a: Iterable[int] = (),
    b: Iterable[int] = (),
    goals: Mapping[int, int] | None = None,
    assists: Mapping[int, int] | None = None,
    own_goals: Mapping[int, int] | None = None,
    mvp: Iterable[int] = (),
    season: int | None = 1,
    status: str = "completed",
    tenant: UUID = T,
) -> None:
    """One match and its lineup, in one transaction."""
    goals, assists, own_goals, mvps = goals or {}, assists or {}, own_goals or {}, set(mvp)
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO matches VALUES ($1, $2, $3, $4, $5, $6, $7)",
            match_id,
            tenant,
            season,
            day(on),
            status,
            score[0] if score else None,
            score[1] if score else None,
        )
        await conn.executemany(
            "INSERT INTO match_players VALUES ($1, $2, $3, $4, $5, $6, $7)",
            [
                (
                    match_id,
                    player,
                    team,
                    goals.get(player, 0),
                    assists.get(player, 0),
                    own_goals.get(player, 0),
                    player in mvps,
                )
                for team, players in (("A", a), ("B", b))
                for player in players
            ],
        )


async def settle(conn: asyncpg.Connection) -> None:
    """Drain the queue, then check every table against the reference."""
    await reference.drain(conn)
    await reference.assert_stats_match_reference(conn)


async def settle_if(conn: asyncpg.Connection, each: bool) -> None:
    """Settle now when matches are processed one by one: each new match then
    lies after the players' marks and is folded into their rows."""
    if each:
        await settle(conn)


ONE_BY_ONE = pytest.mark.parametrize("each", [False, True], ids=["together", "one_by_one"])


async def rows(conn: asyncpg.Connection, table: str, tenant: UUID = T) -> list[tuple[Any, ...]]:
    """A tenant's rows of ``table`` in canonical column order, without tenant_id."""
    columns = reference.COLUMNS[table][1:]
    fetched = await conn.fetch(
        f"SELECT {', '.join(columns)} FROM stats.{table} WHERE tenant_id = $1", tenant
    )
    return sorted(
        (
            tuple(float(v) if table == "player_ratings" and i == 1 else v for i, v in enumerate(r))
            for r in fetched
        ),
        key=lambda r: tuple((v is None, v) for v in r),
    )


async def player_rows(conn: asyncpg.Connection, player: int) -> dict[str, int]:
    """How many rows each player-keyed table holds for ``player``."""
    counts = {}
    for table in (
        "player_totals",
        "personal_bests",
        "player_form",
        "player_streaks",
        "player_ratings",
        "milestones",
        "season_standings",
        "season_leaderboards",
    ):
        counts[table] = await conn.fetchval(
            f"SELECT count(*) FROM stats.{table} WHERE player_id = $1", player
        )
    counts["partnerships"] = await conn.fetchval(
        "SELECT count(*) FROM stats.partnerships WHERE $1 IN (player_id, partner_id)", player
    )
    return counts


# -- one table at a time ---------------------------------------------------------


async def test_totals_standings_and_reports_with_every_tie_break(conn: asyncpg.Connection):
    await create_league(conn)
    await play(conn, 1, 1, (1, 1), a=[1], b=[2], goals={1: 1, 2: 1})
    await play(conn, 2, 2, (0, 0), a=[1], b=[3, 6])
    await play(conn, 3, 3, (2, 2), a=[1], b=[4], goals={1: 2, 4: 2})
    await play(conn, 4, 4, (1, 0), a=[5], b=[2], goals={5: 1}, mvp=[5], assists={5: 1})
    await settle(conn)

    # player: apps, W, D, L, goals, assists, own goals, clean sheets, mvps, points
    assert await rows(conn, "player_totals") == [
        (1, 3, 0, 3, 0, 3, 0, 0, 1, 0, 3),  # three draws, 0-0 is a clean sheet
        (2, 2, 0, 1, 1, 1, 0, 0, 0, 0, 1),
        (3, 1, 0, 1, 0, 0, 0, 0, 1, 0, 1),
        (4, 1, 0, 1, 0, 2, 0, 0, 0, 0, 1),
        (5, 1, 1, 0, 0, 1, 1, 0, 1, 1, 3),
        (6, 1, 0, 1, 0, 0, 0, 0, 1, 0, 1),
    ]
    # Points desc: 5 and 1 (3); wins desc puts 5 first. Then 4, 2, 3, 6 on 1
    # point and no win: goals desc (2, 1, 0, 0), then player_id for 3 and 6.
    assert await rows(conn, "season_standings") == [
        (1, 1, 3, 0, 3, 0, 3, 0, 3, 2),
        (1, 2, 2, 0, 1, 1, 1, 0, 1, 4),
        (1, 3, 1, 0, 1, 0, 0, 0, 1, 5),
        (1, 4, 1, 0, 1, 0, 2, 0, 1, 3),
        (1, 5, 1, 1, 0, 0, 1, 1, 3, 1),
        (1, 6, 1, 0, 1, 0, 0, 0, 1, 6),
    ]
    # result, scores, top scorer (tie: lowest id; none without goals), MVP
    assert await rows(conn, "match_reports") == [
        (1, "draw", 1, 1, 1, None),
        (2, "draw", 0, 0, None, None),
        (3, "draw", 2, 2, 1, None),
        (4, "A", 1, 0, 5, 5),
    ]
    report = await conn.fetchval("SELECT report FROM stats.match_reports WHERE match_id = 4")
    assert report["score"] == {"A": 1, "B": 0}
    assert [p["player_id"] for p in report["lineups"]["A"]] == [5]
    assert report["lineups"]["B"][0] == {
        "player_id": 2,
        "goals": 0,
        "assists": 0,
        "own_goals": 0,
        "is_mvp": False,
    }


async def test_null_season_cancelled_and_unscored_matches(conn: asyncpg.Connection):
    await create_league(conn)
    await play(conn, 10, 1, (2, 0), a=[1], b=[2], goals={1: 2}, season=None)
    await play(conn, 11, 2, (3, 0), a=[1], b=[2], goals={1: 3}, status="cancelled")
    await play(conn, 12, 3, None, a=[1], b=[2])
    await play(conn, 13, 4, None, a=[1], b=[2], status="scheduled")
    await settle(conn)

    # Only match 10 counts, and in no season.
    assert await rows(conn, "player_totals") == [
        (1, 1, 1, 0, 0, 2, 0, 0, 1, 0, 3),
        (2, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0),
    ]
    assert await rows(conn, "match_reports") == [(10, "A", 2, 0, 1, None)]
    assert await rows(conn, "season_standings") == []
    assert await rows(conn, "season_leaderboards") == []


@ONE_BY_ONE
async def test_milestones_a_hat_trick_from_9_to_12_reaches_10(conn: asyncpg.Connection, each: bool):
    await create_league(conn)
    # Ids run against the dates: the order is played_at, not id.
    hat_tricks = {0: 3, 1: 3, 2: 3, 3: 3}  # 3, 6, 9, then 12 on the fourth day
    for n in range(11):
        await play(
            conn,
            100 - n,
            n,
            (hat_tricks.get(n, 0), 0),
            a=[1],
            b=[2],
            goals={1: hat_tricks.get(n, 0)},
        )
        await settle_if(conn, each)
    await settle(conn)

    assert await rows(conn, "milestones") == [
        (1, "appearances", 10, 91),  # the tenth appearance, on day 9
        (1, "goals", 10, 97),  # day 3: 9 goals before, 12 after
        (2, "appearances", 10, 91),
    ]


@ONE_BY_ONE
async def test_personal_bests_ties_zero_bests_and_no_win(conn: asyncpg.Connection, each: bool):
    await create_league(conn)
    await play(conn, 20, 1, (0, 2), a=[7], b=[8], goals={8: 2})
    await settle_if(conn, each)
    await play(conn, 31, 2, (1, 1), a=[7], b=[8], goals={7: 1, 8: 1})
    await settle_if(conn, each)
    # Id 30 is played after id 31: the tie goes to the earlier date.
    await play(conn, 30, 3, (1, 3), a=[7], b=[8], goals={7: 1, 8: 2}, assists={8: 1})
    await settle_if(conn, each)
    await settle(conn)

    # goals, match, assists, match, win margin, match
    assert await rows(conn, "personal_bests") == [
        # Never won: no margin. Best of 0 assists: the first appearance.
        (7, 1, 31, 0, 20, None, None),
        # Two wins by 2: the earlier one.
        (8, 2, 20, 1, 30, 2, 20),
    ]


async def test_season_leaderboard_is_cut_at_ten(conn: asyncpg.Connection):
    await create_league(conn)
    goals = {1: 3, 2: 1, 3: 1, 4: 2, 5: 1, 6: 0, 7: 1, 8: 1, 9: 1, 10: 1, 11: 1, 12: 1}
    await play(conn, 1, 1, (8, 6), a=range(1, 7), b=range(7, 13), goals=goals, mvp=[4], season=2)
    await settle(conn)

    # 11 players scored; ties by player_id; player 12 is the eleventh.
    assert await rows(conn, "season_leaderboards") == [
        (2, "goals", 1, 1, 3),
        (2, "goals", 2, 4, 2),
        (2, "goals", 3, 2, 1),
        (2, "goals", 4, 3, 1),
        (2, "goals", 5, 5, 1),
        (2, "goals", 6, 7, 1),
        (2, "goals", 7, 8, 1),
        (2, "goals", 8, 9, 1),
        (2, "goals", 9, 10, 1),
        (2, "goals", 10, 11, 1),
        (2, "mvps", 1, 4, 1),
    ]


@ONE_BY_ONE
async def test_form_and_streaks(conn: asyncpg.Connection, each: bool):
    await create_league(conn)
    # Player 1 by date: W D W W L W W; goals 1 1 1 0 2 2 0.
    results = [(1, 0), (1, 1), (2, 1), (1, 0), (2, 3), (3, 1), (1, 0)]
    scored = [1, 1, 1, 0, 2, 2, 0]
    for n, (score, goals) in enumerate(zip(results, scored, strict=True)):
        await play(conn, 50 - n, n, score, a=[1], b=[2], goals={1: goals})
        await settle_if(conn, each)
    await settle(conn)

    # Most recent first: W W L W W = 12 points.
    assert (await rows(conn, "player_form"))[0] == (1, "WWLWW", 12)
    # current/longest win, unbeaten, scoring
    assert (await rows(conn, "player_streaks"))[0] == (1, 2, 2, 2, 4, 0, 3)
    # Player 2 by date: L D L L W L L, never scored.
    assert (await rows(conn, "player_streaks"))[1] == (2, 0, 1, 0, 1, 0, 0)
    assert (await rows(conn, "player_form"))[1] == (2, "LLWLL", 3)


@ONE_BY_ONE
async def test_partnerships(conn: asyncpg.Connection, each: bool):
    await create_league(conn)
    await play(conn, 1, 1, (2, 1), a=[1, 2, 3], b=[4, 5])
    await settle_if(conn, each)
    await play(conn, 2, 2, (0, 0), a=[1, 4], b=[2, 3])
    await settle_if(conn, each)
    await settle(conn)

    # Same team only; each pair once with the lower id first.
    assert await rows(conn, "partnerships") == [
        (1, 2, 1, 1),
        (1, 3, 1, 1),
        (1, 4, 1, 0),
        (2, 3, 2, 1),
        (4, 5, 1, 0),
    ]


@ONE_BY_ONE
async def test_elo_by_hand(conn: asyncpg.Connection, each: bool):
    await create_league(conn)
    # Ids against dates again: Elo runs in played_at order.
    await play(conn, 9, 1, (1, 0), a=[1, 2], b=[3, 4])
    await settle_if(conn, each)
    await play(conn, 8, 2, (2, 2), a=[1, 3], b=[2, 4])
    await settle_if(conn, each)
    await play(conn, 7, 3, (0, 1), a=[1, 2], b=[3, 4])
    await settle_if(conn, each)
    await play(conn, 6, 4, (5, 0), a=[2, 5])  # no team B: not rated
    await settle_if(conn, each)
    await play(conn, 5, 5, (1, 0), a=[1], b=[3, 4])
    await settle_if(conn, each)
    await settle(conn)

    # 1. All 1000: Ea = 0.5, A +16, B -16.
    # 2. Both means (1016 + 984) / 2 = 1000, a draw: no change.
    # 3. Ra 1016, Rb 984: Ea = 1 / (1 + 10^(-32/400)) = 0.545922; B wins:
    #    A 32 * (0 - 0.545922) = -17.4695, B +17.4695.
    # 5. Ra 998.5305, Rb 1001.4695: Ea = 1 / (1 + 10^(2.939/400)) = 0.495771;
    #    A wins: +16.1353, B -16.1353. Player 5 was in no rated match.
    assert await rows(conn, "player_ratings") == [
        (1, 1014.67, 4),
        (2, 998.53, 3),
        (3, 985.33, 4),
        (4, 985.33, 4),
    ]


@ONE_BY_ONE
async def test_hall_of_fame(conn: asyncpg.Connection, each: bool):
    await create_league(conn)
    await play(conn, 1, 1, (0, 0), a=[2], b=[1])
    await settle_if(conn, each)
    await play(conn, 2, 2, (2, 1), a=[1], b=[3], goals={1: 2, 3: 1})
    await settle_if(conn, each)
    await play(conn, 3, 3, (2, 0), a=[3], b=[2], goals={3: 2})
    await settle_if(conn, each)
    await play(conn, 4, 5, (2, 2), a=[1], b=[2], goals={1: 2, 2: 2})
    await settle_if(conn, each)
    await settle(conn)

    # Nobody assisted or was MVP: those records are absent.
    assert await rows(conn, "hall_of_fame") == [
        ("longest_win_streak", 1, 1, None),  # 1 and 3 on 1: lowest id
        ("most_appearances", 1, 3, None),  # 1 and 2 on 3: lowest id
        ("most_goals", 1, 4, None),
        # 2 goals in a match: player 1 on days 2 and 5, player 3 on day 3,
        # player 2 on day 5; the earliest match wins.
        ("most_goals_in_match", 1, 2, 2),
        ("most_wins", 1, 1, None),
    ]


async def test_most_goals_in_match_tie_in_one_match_goes_to_lowest_id(
    conn: asyncpg.Connection,
):
    await create_league(conn)
    await play(conn, 1, 1, (3, 3), a=[4], b=[2], goals={4: 3, 2: 3})
    await play(conn, 2, 0, (2, 0), a=[1], b=[3], goals={1: 2})
    await settle(conn)

    record = await conn.fetchrow(
        "SELECT player_id, value, match_id FROM stats.hall_of_fame"
        " WHERE record = 'most_goals_in_match'"
    )
    assert tuple(record) == (2, 3, 1)


async def test_counted_match_without_lineup_has_a_report_only(conn: asyncpg.Connection):
    await create_league(conn)
    await play(conn, 1, 1, (2, 1))
    await settle(conn)

    assert await rows(conn, "match_reports") == [(1, "A", 2, 1, None, None)]
    for table in reference.TABLES:
        if table != "match_reports":
            assert await rows(conn, table) == [], table


async def test_tenants_do_not_mix(conn: asyncpg.Connection):
    await create_league(conn)
    await create_league(conn, OTHER, players=range(21, 25), seasons=(3,))
    await play(conn, 1, 1, (1, 0), a=[1], b=[2], goals={1: 1})
    await play(conn, 2, 1, (0, 4), a=[21], b=[22], goals={22: 4}, season=3, tenant=OTHER)
    await settle(conn)

    assert await rows(conn, "hall_of_fame") == [
        ("longest_win_streak", 1, 1, None),
        ("most_appearances", 1, 1, None),
        ("most_goals", 1, 1, None),
        ("most_goals_in_match", 1, 1, 1),
        ("most_wins", 1, 1, None),
    ]
    assert [r[0] for r in await rows(conn, "player_totals", OTHER)] == [21, 22]
    assert await rows(conn, "player_ratings", OTHER) == [(21, 984.0, 1), (22, 1016.0, 1)]


# -- corrections ---------------------------------------------------------------


async def test_score_edited(conn: asyncpg.Connection):
    await create_league(conn)
    await play(conn, 1, 1, (3, 1), a=[1, 2], b=[3, 4], goals={1: 3, 3: 1})
    await play(conn, 2, 2, (1, 1), a=[1, 3], b=[2, 4], goals={1: 1, 2: 1})
    await settle(conn)

    await conn.execute("UPDATE matches SET team_a_score = 1, team_b_score = 3 WHERE id = 1")
    await settle(conn)
    assert (await rows(conn, "player_totals"))[0][:5] == (1, 2, 0, 1, 1)
    assert (await rows(conn, "match_reports"))[0][:2] == (1, "B")


async def test_lineup_changed_removes_a_players_only_appearance(conn: asyncpg.Connection):
    await create_league(conn)
    await play(conn, 1, 1, (3, 1), a=[1, 2, 5], b=[3, 4], goals={5: 3}, season=1)
    await play(conn, 2, 2, (1, 1), a=[1, 3], b=[2, 4])
    await settle(conn)
    assert (await player_rows(conn, 5))["player_totals"] == 1

    await conn.execute("DELETE FROM match_players WHERE match_id = 1 AND player_id = 5")
    message = await conn.fetchval("SELECT message FROM pgmq.q_stats_updates")
    assert message["player_ids"] == [5]
    await settle(conn)
    assert set((await player_rows(conn, 5)).values()) == {0}


async def test_goals_fixed(conn: asyncpg.Connection):
    await create_league(conn)
    await play(conn, 1, 1, (2, 0), a=[1, 2], b=[3], goals={1: 2}, season=2)
    await settle(conn)

    async with conn.transaction():
        await conn.execute("UPDATE match_players SET goals = 0 WHERE player_id = 1")
        await conn.execute("UPDATE match_players SET goals = 2 WHERE player_id = 2")
    await settle(conn)
    assert (await rows(conn, "match_reports"))[0][4] == 2
    assert await rows(conn, "season_leaderboards") == [
        (2, "clean_sheets", 1, 1, 1),
        (2, "clean_sheets", 2, 2, 1),
        (2, "goals", 1, 2, 2),
    ]


async def test_cancelled_uncancelled_and_deleted(conn: asyncpg.Connection):
    await create_league(conn)
    await play(conn, 1, 1, (2, 0), a=[1, 2], b=[3], goals={1: 2})
    await play(conn, 2, 2, (1, 0), a=[1], b=[2])
    await settle(conn)
    everything = await reference.live_tables(conn)

    await conn.execute("UPDATE matches SET status = 'cancelled' WHERE id = 1")
    await settle(conn)
    assert set((await player_rows(conn, 3)).values()) == {0}
    assert [r[0] for r in await rows(conn, "match_reports")] == [2]

    await conn.execute("UPDATE matches SET status = 'completed' WHERE id = 1")
    await settle(conn)
    assert not reference.table_differences(everything, await reference.live_tables(conn))

    await conn.execute("DELETE FROM matches WHERE id = 1")
    await settle(conn)
    assert set((await player_rows(conn, 3)).values()) == {0}
    # Each statistic that reads the matches forgot the deleted one, and only it.
    recorded = await conn.fetch(
        "SELECT match_id, count(*) FROM stats.applied_by_stat GROUP BY 1 ORDER BY 1"
    )
    assert [tuple(r) for r in recorded] == [(2, 9)]


async def test_moved_to_another_season_and_date(conn: asyncpg.Connection):
    await create_league(conn)
    await play(conn, 1, 1, (2, 0), a=[1], b=[2], season=1)
    await play(conn, 2, 2, (0, 1), a=[1], b=[2], season=1)
    await play(conn, 3, 3, (1, 1), a=[1, 3], b=[2, 4], season=2)
    await settle(conn)

    await conn.execute("UPDATE matches SET season_id = 2 WHERE id = 1")
    await settle(conn)
    assert [r[:3] for r in await rows(conn, "season_standings")] == [
        (1, 1, 1),
        (1, 2, 1),
        (2, 1, 2),
        (2, 2, 2),
        (2, 3, 1),
        (2, 4, 1),
    ]

    # Match 1 moves after match 3: form, streaks and Elo follow the new order.
    await conn.execute("UPDATE matches SET played_at = $1 WHERE id = 1", day(4))
    await settle(conn)
    assert (await rows(conn, "player_form"))[0][:2] == (1, "WDL")


async def test_hand_enqueued_messages_without_hints(conn: asyncpg.Connection):
    """Changes the triggers did not see, announced by stats.enqueue_match alone:
    the old season, players and position come from what was last applied."""
    await create_league(conn)
    await play(conn, 1, 1, (2, 0), a=[1, 5], b=[2], season=1)
    await play(conn, 2, 2, (0, 1), a=[1], b=[2], season=1)
    await play(conn, 3, 3, (1, 1), a=[1, 3], b=[2, 4], season=2)
    await settle(conn)

    async def quietly(sql: str, *args: Any) -> None:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute(sql, *args)

    await quietly("UPDATE matches SET season_id = 2, played_at = $1 WHERE id = 1", day(9))
    await quietly("DELETE FROM match_players WHERE match_id = 1 AND player_id = 5")
    await conn.execute("SELECT stats.enqueue_match($1, 1)", T)
    await settle(conn)
    assert set((await player_rows(conn, 5)).values()) == {0}

    await quietly("DELETE FROM match_players WHERE match_id = 3")
    await quietly("DELETE FROM matches WHERE id = 3")
    await conn.execute("SELECT stats.enqueue_match($1, 3)", T)
    await settle(conn)
    assert {r[0] for r in await rows(conn, "season_standings")} == {1, 2}


async def test_a_message_twice_or_twice_at_once_changes_nothing(
    conn: asyncpg.Connection, pool: asyncpg.Pool
):
    await create_league(conn)
    await play(conn, 1, 1, (2, 1), a=[1, 2], b=[3, 4], goals={1: 1, 2: 1, 3: 1})
    await play(conn, 2, 2, (0, 0), a=[1, 3], b=[2, 4])
    await settle(conn)
    before = await reference.live_tables(conn)

    scope = await reference.message_scope(conn, [{"tenant_id": str(T), "match_id": 1}])
    assert [await reference.refresh(conn, t, scope) for t in reference.TABLES] == [0] * 11

    for _ in range(3):
        await conn.execute("SELECT stats.enqueue_match($1, 1)", T)
        await conn.execute("SELECT stats.enqueue_match($1, 2)", T)
    await reference.drain(pool, concurrently=True)
    assert not reference.table_differences(before, await reference.live_tables(conn))


async def test_rebuild_equals_incremental(conn: asyncpg.Connection):
    await create_league(conn)
    await play(conn, 1, 1, (2, 1), a=[1, 2], b=[3, 4], goals={1: 1, 2: 1, 3: 1})
    await play(conn, 2, 2, (0, 0), a=[1, 3], b=[2, 4], season=None)
    await settle(conn)
    before = await reference.live_tables(conn)

    await conn.execute("TRUNCATE stats.player_totals, stats.player_ratings, stats.rating_steps")
    # A stale row of a player without appearances goes too.
    await conn.execute("INSERT INTO stats.player_form VALUES (9, $1, 'W', 3)", T)
    await reference.rebuild(conn, T)
    assert not reference.table_differences(before, await reference.live_tables(conn))


async def test_a_new_last_match_is_folded_and_a_correction_recomputes(conn: asyncpg.Connection):
    await create_league(conn)
    for n in range(1, 4):
        await play(conn, n, n, (1, 0), a=[1, 2], b=[3, 4], goals={1: 1})
        await settle(conn)

    async def plan(match_id: int) -> tuple[list[int], list[int]]:
        scope = await reference.message_scope(conn, [{"tenant_id": str(T), "match_id": match_id}])
        row = await conn.fetchrow(
            "SELECT fold_players, recompute_players"
            " FROM stats.plan_refresh('player_totals', $1, $2, $3, $4, $5)",
            T,
            scope.player_ids,
            scope.match_ids,
            scope.rating_from_at,
            scope.rating_from_id,
        )
        return list(row["fold_players"]), list(row["recompute_players"])

    await play(conn, 4, 4, (0, 2), a=[1, 5], b=[3, 4], goals={3: 2})
    assert await plan(4) == ([1, 3, 4], [5])  # 5 is new: nothing to fold onto
    await settle(conn)

    await conn.execute("UPDATE match_players SET goals = 0 WHERE match_id = 2")
    assert await plan(2) == ([], [1, 2, 3, 4])
    await settle(conn)
