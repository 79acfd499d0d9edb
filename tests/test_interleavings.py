"""Exact under forced interleavings: the app changes a match while its recompute is half done.

The harness holds the advisory lock a later step of the recompute takes (the
hall of fame, or the Elo ratings), so the worker commits the other statistics
and then waits; the app applies a correction in that gap; the lock is let go
and the queue drains. Afterwards the statistics equal the from-scratch
reference and ``verify`` finds nothing, whatever the correction was.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from tests import reference
from tests.support import running_worker, wait_for, worker_settings
from worker.app import default_handlers
from worker.stats.aggregations import FIRST_PHASE
from worker.stats.maintenance import verify

T = uuid.UUID("40000000-0000-4000-8000-000000000004")
OTHER_TENANT = uuid.UUID("40000000-0000-4000-8000-000000000005")
OTHER_SEASON = 2
PLAYERS = range(1, 9)
HISTORY = (10, 11, 12)
TARGET = 20
SPARE = 21
"""A scheduled match a lineup row can move to."""

Change = Callable[[asyncpg.Connection], Awaitable[object]]


async def _league(conn: asyncpg.Connection, *, two_sided: bool) -> None:
    await conn.execute(
        "INSERT INTO tenants VALUES ($1, 'club'), ($2, 'other club')", T, OTHER_TENANT
    )
    await conn.execute("INSERT INTO seasons VALUES (1, $1, 'one'), (2, $1, 'two')", T)
    await conn.executemany("INSERT INTO players VALUES ($1, $2, 'p')", [(p, T) for p in PLAYERS])
    for day, match_id in enumerate((*HISTORY, TARGET, SPARE), start=1):
        await conn.execute(
            "INSERT INTO matches VALUES ($1, $2, 1, '2025-03-01'::timestamptz + $3 * interval "
            "'1 day', 'scheduled', NULL, NULL)",
            match_id,
            T,
            day,
        )
        await conn.executemany(
            "INSERT INTO match_players (match_id, player_id, team, goals) VALUES ($1, $2, $3, $4)",
            [
                (match_id, p, "A" if (p % 2 or not two_sided) else "B", (p + match_id) % 3)
                for p in PLAYERS
            ],
        )
    for match_id in HISTORY:
        await _complete(conn, match_id)


async def _complete(conn: asyncpg.Connection, match_id: int) -> None:
    await conn.execute(
        "UPDATE matches SET status = 'completed', team_a_score = 2, team_b_score = 1 WHERE id = $1",
        match_id,
    )


async def _queue_empty(conn: asyncpg.Connection) -> bool:
    return not await conn.fetchval("SELECT count(*) FROM pgmq.q_stats_updates")


RECORDING = [table for table in FIRST_PHASE if table != "player_ratings"]
"""The nine statistics that record what they applied in ``stats.applied_by_stat``
(the Elo ratings keep ``stats.rating_steps``; the hall of fame reads the others)."""


async def _only_the_held_step_waits(
    conn: asyncpg.Connection, step: str, *, target_counts: bool
) -> bool:
    """The worker waits on ``step``'s lock and on no other, and the nine recording
    statistics have committed this recompute: their records of TARGET say it
    counts (``target_counts``) or that it does not.

    With the Elo step held, the other nine run beside it and may still be
    running (or waiting for a pool connection) when it starts to wait; the
    change must land after they committed, in the gap the case is about.
    """
    waiting = await conn.fetch(
        "SELECT classid, objid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    held = await conn.fetchrow(
        "SELECT hashtext($1)::oid AS classid, hashtext($2)::oid AS objid", f"stats.{step}", str(T)
    )
    if [tuple(r) for r in waiting] != [tuple(held)]:
        return False
    recorded = await conn.fetch(
        "SELECT stat FROM stats.applied_by_stat WHERE match_id = $1 AND tenant_id = $2", TARGET, T
    )
    return sorted(r["stat"] for r in recorded) == (sorted(RECORDING) if target_counts else [])


async def _one_after_the_other(conn: asyncpg.Connection, *statements: tuple[str, int]) -> None:
    """Each in its own transaction, as two requests of the app would."""
    for sql, match_id in statements:
        await conn.execute(sql, match_id)


CHANGES: dict[str, Change] = {
    "cancel": lambda c: c.execute("UPDATE matches SET status = 'cancelled' WHERE id = $1", TARGET),
    "cancel_then_drop_a_player": lambda c: _one_after_the_other(
        c,
        ("UPDATE matches SET status = 'cancelled' WHERE id = $1", TARGET),
        ("DELETE FROM match_players WHERE match_id = $1 AND player_id = 1", TARGET),
    ),
    "delete": lambda c: c.execute("DELETE FROM matches WHERE id = $1", TARGET),
    "drop_a_player": lambda c: c.execute(
        "DELETE FROM match_players WHERE match_id = $1 AND player_id = 1", TARGET
    ),
    "move_a_player_to_another_match": lambda c: c.execute(
        "UPDATE match_players SET match_id = $2 WHERE match_id = $1 AND player_id = 1"
        " AND NOT EXISTS (SELECT 1 FROM match_players WHERE match_id = $2 AND player_id = 1)",
        TARGET,
        SPARE,
    ),
    "move_season": lambda c: c.execute(
        "UPDATE matches SET season_id = $2 WHERE id = $1", TARGET, OTHER_SEASON
    ),
    "move_date_before_history": lambda c: c.execute(
        "UPDATE matches SET played_at = '2025-01-01' WHERE id = $1", TARGET
    ),
    # The app moves a match to another tenant, its lineup (of this tenant's
    # players) taken off first, as the contract's one-tenant rule requires.
    "move_to_another_tenant": lambda c: c.execute(
        f"DELETE FROM match_players WHERE match_id = {TARGET}; "
        f"UPDATE matches SET tenant_id = '{OTHER_TENANT}', season_id = NULL WHERE id = {TARGET}"
    ),
    "clear_scores": lambda c: c.execute(
        "UPDATE matches SET team_a_score = NULL WHERE id = $1", TARGET
    ),
}


async def _settle(database_url: str, conn: asyncpg.Connection) -> None:
    async with running_worker(worker_settings(database_url), default_handlers) as worker:
        await wait_for(lambda: _queue_empty(conn), timeout=30)
        await wait_for(lambda: _idle(worker), timeout=30)


async def _idle(worker: object) -> bool:
    return worker.status.in_flight == 0  # type: ignore[attr-defined]


async def _held_while(
    database_url: str,
    conn: asyncpg.Connection,
    step: str,
    change: Change,
    *,
    target_counts: bool = True,
) -> None:
    """Run the queued recompute with ``step`` held, apply ``change`` in the gap, let go.

    ``target_counts``: whether TARGET counts in the state the held recompute applies.
    """
    holder = await asyncpg.connect(database_url)
    app = await asyncpg.connect(database_url)
    try:
        hold = holder.transaction()
        await hold.start()
        await holder.execute(
            "SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))", f"stats.{step}", str(T)
        )
        async with running_worker(worker_settings(database_url), default_handlers) as worker:
            await wait_for(
                lambda: _only_the_held_step_waits(conn, step, target_counts=target_counts),
                timeout=20,
            )
            await change(app)
            await hold.rollback()
            await wait_for(lambda: _queue_empty(conn), timeout=30)
            await wait_for(lambda: _idle(worker), timeout=30)
    finally:
        await holder.close()
        await app.close()


@pytest.mark.parametrize("step", ["hall_of_fame", "player_ratings"])
@pytest.mark.parametrize("two_sided", [False, True], ids=["one-sided", "two-sided"])
@pytest.mark.parametrize("change", sorted(CHANGES))
async def test_a_correction_in_the_gap_of_a_recompute_ends_exact(
    database_url, conn, pool, change, two_sided, step
):
    await _league(conn, two_sided=two_sided)
    await _settle(database_url, conn)
    await _complete(conn, TARGET)  # its recompute is the one held
    await _held_while(database_url, conn, step, CHANGES[change])
    await reference.assert_stats_match_reference(conn)
    assert await verify(pool, T) == []
    assert await verify(pool, OTHER_TENANT) == []


@pytest.mark.parametrize("step", ["hall_of_fame", "player_ratings"])
@pytest.mark.parametrize("two_sided", [False, True], ids=["one-sided", "two-sided"])
async def test_un_cancelling_in_the_gap_of_the_cancels_recompute_ends_exact(
    database_url, conn, pool, two_sided, step
):
    await _league(conn, two_sided=two_sided)
    await _complete(conn, TARGET)
    await _settle(database_url, conn)
    await conn.execute("UPDATE matches SET status = 'cancelled' WHERE id = $1", TARGET)
    await _held_while(
        database_url,
        conn,
        step,
        lambda c: c.execute("UPDATE matches SET status = 'completed' WHERE id = $1", TARGET),
        target_counts=False,  # the held recompute is the cancel's
    )
    await reference.assert_stats_match_reference(conn)
    assert await verify(pool, T) == []
    assert await verify(pool, OTHER_TENANT) == []


async def test_the_harness_really_holds_the_recompute(database_url, conn):
    """Without letting go, the held step never commits: the gap is real."""
    await _league(conn, two_sided=True)
    await _settle(database_url, conn)
    await _complete(conn, TARGET)
    holder = await asyncpg.connect(database_url)
    try:
        async with holder.transaction():
            await holder.execute(
                "SELECT pg_advisory_xact_lock(hashtext('stats.hall_of_fame'), hashtext($1))", str(T)
            )
            async with running_worker(worker_settings(database_url), default_handlers):
                await wait_for(
                    lambda: _only_the_held_step_waits(conn, "hall_of_fame", target_counts=True),
                    timeout=20,
                )
                await asyncio.sleep(0.5)
                # The first phase committed (the match has its report) ...
                assert await conn.fetchval(
                    "SELECT count(*) FROM stats.match_reports WHERE match_id = $1", TARGET
                )
                # ... and the message is still the worker's, unsettled.
                assert not await _queue_empty(conn)
    finally:
        await holder.close()


def _unannounced(change: Change) -> Change:
    """``change`` made with the app's triggers off, then a bare message for the match.

    A bare ``{"tenant_id", "match_id"}`` (a hand-sent ``enqueue_match``, a
    retry) names no player or season: what the statistics still hold of the
    match's old state can then only come from their own bookkeeping.
    """

    async def apply(conn: asyncpg.Connection) -> None:
        await conn.execute("SET session_replication_role = replica")
        try:
            await change(conn)
        finally:
            await conn.execute("RESET session_replication_role")
        await conn.execute("SELECT stats.enqueue_match($1, $2)", T, TARGET)

    return apply


UNANNOUNCED = (
    "cancel_then_drop_a_player",
    "drop_a_player",
    "move_a_player_to_another_match",
    "move_season",
    "move_date_before_history",
)


@pytest.mark.parametrize("step", ["hall_of_fame", "player_ratings"])
@pytest.mark.parametrize("change", UNANNOUNCED)
async def test_bookkeeping_alone_finds_what_a_held_back_recompute_applied(
    database_url, conn, pool, change, step
):
    await _league(conn, two_sided=False)
    await _settle(database_url, conn)
    await _complete(conn, TARGET)
    await _held_while(database_url, conn, step, _unannounced(CHANGES[change]))
    await reference.assert_stats_match_reference(conn)
    assert await verify(pool, T) == []


async def test_each_statistic_records_the_lineup_it_applied(database_url, conn):
    """The record of a committed statistic keeps the lineup it used, not a later one."""
    await _league(conn, two_sided=False)
    await _settle(database_url, conn)
    await _complete(conn, TARGET)
    holder = await asyncpg.connect(database_url)
    try:
        async with holder.transaction():
            await holder.execute(
                "SELECT pg_advisory_xact_lock(hashtext('stats.hall_of_fame'), hashtext($1))", str(T)
            )
            async with running_worker(worker_settings(database_url), default_handlers):
                await wait_for(
                    lambda: _only_the_held_step_waits(conn, "hall_of_fame", target_counts=True),
                    timeout=20,
                )
                await CHANGES["drop_a_player"](conn)
                recorded = await conn.fetch(
                    "SELECT stat, player_ids FROM stats.applied_by_stat WHERE match_id = $1",
                    TARGET,
                )
    finally:
        await holder.close()
    assert len(recorded) == 9
    assert {tuple(r["player_ids"]) for r in recorded} == {tuple(PLAYERS)}
