"""The enqueue triggers: one message per changed match per transaction, sent in
the transaction of the change, with the hints the worker needs."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg

T = UUID("30000000-0000-4000-8000-000000000003")
KICK_OFF = datetime(2024, 6, 1, 18, 30, tzinfo=UTC)
TEN = range(1, 11)


async def messages(executor: Any, queue: str = "stats_updates") -> list[dict[str, Any]]:
    rows = await executor.fetch(f"SELECT message FROM pgmq.q_{queue} ORDER BY msg_id")
    return [row["message"] for row in rows]


async def clear_queue(conn: asyncpg.Connection) -> None:
    await conn.execute("SELECT pgmq.purge_queue('stats_updates')")


async def scheduled_match_with_ten_players(conn: asyncpg.Connection, match_id: int = 1) -> None:
    await conn.execute("INSERT INTO tenants VALUES ($1, 'club') ON CONFLICT DO NOTHING", T)
    await conn.execute("INSERT INTO seasons VALUES (1, $1, 'one') ON CONFLICT DO NOTHING", T)
    await conn.executemany(
        "INSERT INTO players VALUES ($1, $2, 'p') ON CONFLICT DO NOTHING", [(p, T) for p in TEN]
    )
    await conn.execute(
        "INSERT INTO matches VALUES ($1, $2, 1, $3, 'scheduled', NULL, NULL)",
        match_id,
        T,
        KICK_OFF,
    )
    await conn.executemany(
        "INSERT INTO match_players (match_id, player_id, team) VALUES ($1, $2, $3)",
        [(match_id, p, "A" if p <= 5 else "B") for p in TEN],
    )


async def completed_match_with_ten_players(conn: asyncpg.Connection, match_id: int = 1) -> None:
    await scheduled_match_with_ten_players(conn, match_id)
    await conn.execute(
        "UPDATE matches SET status = 'completed', team_a_score = 2, team_b_score = 1 WHERE id = $1",
        match_id,
    )
    await clear_queue(conn)


async def test_completing_a_match_sends_one_message_at_commit(
    conn: asyncpg.Connection, pool: asyncpg.Pool
):
    await scheduled_match_with_ten_players(conn)
    assert await messages(conn) == []  # a scheduled match counts nowhere

    async with conn.transaction():
        await conn.execute(
            "UPDATE matches SET status = 'completed', team_a_score = 3, team_b_score = 2"
            " WHERE id = 1"
        )
        await conn.execute("UPDATE match_players SET goals = 1 WHERE player_id IN (1, 2, 3)")
        # Not visible outside the transaction before it commits.
        assert await messages(pool) == []
    assert await messages(pool) == [{"tenant_id": str(T), "match_id": 1}]


async def test_a_match_inserted_complete_with_its_lineup_sends_one_message(
    conn: asyncpg.Connection,
):
    await conn.execute("INSERT INTO tenants VALUES ($1, 'club')", T)
    await conn.executemany("INSERT INTO players VALUES ($1, $2, 'p')", [(p, T) for p in TEN])
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO matches VALUES (7, $1, NULL, $2, 'completed', 1, 1)", T, KICK_OFF
        )
        for player in TEN:  # one statement per row
            await conn.execute(
                "INSERT INTO match_players (match_id, player_id, team) VALUES (7, $1, $2)",
                player,
                "A" if player % 2 else "B",
            )
    assert await messages(conn) == [{"tenant_id": str(T), "match_id": 7}]


async def test_a_rolled_back_completion_sends_nothing(conn: asyncpg.Connection):
    await scheduled_match_with_ten_players(conn)
    transaction = conn.transaction()
    await transaction.start()
    await conn.execute(
        "UPDATE matches SET status = 'completed', team_a_score = 3, team_b_score = 2"
    )
    await transaction.rollback()
    assert await messages(conn) == []
    assert await conn.fetchval("SELECT count(*) FROM stats.pending_messages") == 0


async def test_a_rolled_back_savepoint_takes_its_hints_along(conn: asyncpg.Connection):
    await completed_match_with_ten_players(conn)
    async with conn.transaction():
        savepoint = conn.transaction()
        await savepoint.start()
        await conn.execute("DELETE FROM match_players WHERE player_id = 4")
        await savepoint.rollback()
        await conn.execute("UPDATE matches SET team_a_score = 5 WHERE id = 1")
    assert await messages(conn) == [{"tenant_id": str(T), "match_id": 1}]


async def test_a_match_and_several_lineup_rows_in_one_transaction_send_one_message(
    conn: asyncpg.Connection,
):
    await completed_match_with_ten_players(conn)
    async with conn.transaction():
        await conn.execute("UPDATE matches SET team_a_score = 4 WHERE id = 1")
        await conn.execute("UPDATE match_players SET goals = 2 WHERE player_id = 1")
        await conn.execute("UPDATE match_players SET assists = 1 WHERE player_id IN (2, 6)")
        await conn.execute("UPDATE match_players SET team = 'A' WHERE player_id = 7")
        await conn.execute("DELETE FROM match_players WHERE player_id IN (9, 10)")
    assert await messages(conn) == [{"tenant_id": str(T), "match_id": 1, "player_ids": [9, 10]}]


async def test_removing_a_player_from_the_lineup_names_them(conn: asyncpg.Connection):
    await completed_match_with_ten_players(conn)
    await conn.execute("DELETE FROM match_players WHERE match_id = 1 AND player_id = 8")
    assert await messages(conn) == [{"tenant_id": str(T), "match_id": 1, "player_ids": [8]}]

    # Replacing a player by changing the row's key names the one who left.
    await clear_queue(conn)
    await conn.execute("UPDATE match_players SET player_id = 8 WHERE player_id = 9")
    assert await messages(conn) == [{"tenant_id": str(T), "match_id": 1, "player_ids": [9]}]


async def test_deleting_a_match_names_its_players_season_and_time(conn: asyncpg.Connection):
    await completed_match_with_ten_players(conn)
    await conn.execute("DELETE FROM matches WHERE id = 1")  # the lineup goes by cascade
    assert await messages(conn) == [
        {
            "tenant_id": str(T),
            "match_id": 1,
            "player_ids": list(TEN),
            "season_ids": [1],
            "since": "2024-06-01T18:30:00.000000Z",
        }
    ]
    since = datetime.fromisoformat((await messages(conn))[0]["since"])
    assert since == KICK_OFF


async def test_cancelling_moving_and_rescheduling_carry_the_old_state(conn: asyncpg.Connection):
    await completed_match_with_ten_players(conn)
    await conn.execute("INSERT INTO seasons VALUES (2, $1, 'two')", T)
    await conn.execute("UPDATE matches SET season_id = 2 WHERE id = 1")
    await conn.execute("UPDATE matches SET played_at = played_at + interval '1 day' WHERE id = 1")
    await conn.execute("UPDATE matches SET status = 'cancelled' WHERE id = 1")
    body = {"tenant_id": str(T), "match_id": 1}
    assert await messages(conn) == [
        {**body, "season_ids": [1]},
        {**body, "since": "2024-06-01T18:30:00.000000Z"},
        # Stopping to count names the lineup: whoever leaves it later is covered.
        {
            **body,
            "player_ids": list(TEN),
            "season_ids": [2],
            "since": "2024-06-02T18:30:00.000000Z",
        },
    ]


async def test_changes_that_affect_no_statistic_send_nothing(conn: asyncpg.Connection):
    await scheduled_match_with_ten_players(conn)
    await conn.execute("UPDATE matches SET played_at = played_at + interval '1 hour'")
    await conn.execute("UPDATE match_players SET goals = 3 WHERE player_id = 1")
    await conn.execute("DELETE FROM match_players WHERE player_id = 2")
    await conn.execute("UPDATE matches SET status = 'completed'")  # no scores yet
    await conn.execute("DELETE FROM matches WHERE id = 1")
    assert await messages(conn) == []

    await completed_match_with_ten_players(conn, 2)
    await conn.execute("UPDATE matches SET status = status, team_a_score = team_a_score")
    await conn.execute("UPDATE match_players SET goals = goals")
    await conn.execute("UPDATE tenants SET name = 'renamed'")
    await conn.execute("UPDATE players SET name = 'renamed'")
    assert await messages(conn) == []


async def test_two_matches_in_one_transaction_send_two_messages(conn: asyncpg.Connection):
    await completed_match_with_ten_players(conn, 1)
    await completed_match_with_ten_players(conn, 2)
    async with conn.transaction():
        await conn.execute("UPDATE matches SET team_b_score = 0")
        await conn.execute("UPDATE match_players SET goals = 1 WHERE player_id = 1")
    assert sorted(m["match_id"] for m in await messages(conn)) == [1, 2]


async def test_the_queue_name_comes_from_the_config(conn: asyncpg.Connection):
    await completed_match_with_ten_players(conn)
    await conn.execute("SELECT pgmq.create('other_queue')")
    await conn.execute(
        "UPDATE stats_worker.config SET value = 'other_queue' WHERE key = 'queue_name'"
    )
    await conn.execute("UPDATE matches SET team_b_score = 2")
    msg_id = await conn.fetchval("SELECT stats.enqueue_match($1, 42)", T)
    assert await messages(conn, "other_queue") == [
        {"tenant_id": str(T), "match_id": 1},
        {"tenant_id": str(T), "match_id": 42},
    ]
    assert msg_id == await conn.fetchval("SELECT max(msg_id) FROM pgmq.q_other_queue")
    assert await messages(conn) == []


async def test_the_app_role_needs_no_rights_on_stats_or_pgmq(conn: asyncpg.Connection):
    role = f"sw_test_app_{uuid.uuid4().hex[:10]}"
    await conn.execute(f'CREATE ROLE "{role}" NOLOGIN')
    try:
        await conn.execute(f'GRANT USAGE ON SCHEMA public TO "{role}"')
        await conn.execute(
            f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{role}"'
        )
        await scheduled_match_with_ten_players(conn)
        async with conn.transaction():
            await conn.execute(f'SET LOCAL ROLE "{role}"')
            await conn.execute(
                "UPDATE matches SET status = 'completed', team_a_score = 1, team_b_score = 0"
            )
            await conn.execute("DELETE FROM match_players WHERE player_id = 3")
        assert await messages(conn) == [{"tenant_id": str(T), "match_id": 1, "player_ids": [3]}]
    finally:
        await conn.execute(f'DROP OWNED BY "{role}"')
        await conn.execute(f'DROP ROLE "{role}"')
