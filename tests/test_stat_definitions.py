"""The statistics' functions in ``sql/stats``: applied by migrate, again when a file changes."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests import reference
from tests.support import drain_stats, play_league, worker_settings
from worker.core import queries
from worker.core.database import create_pool, init_connection
from worker.core.queries import migrations, stat_definitions
from worker.schema.migrate import migrate
from worker.stats.league import generate_league
from worker.stats.maintenance import verify

QUEUE = "stats_updates"
THE_SPLIT = 12
"""The migration that moved the bookkeeping to one record per statistic (0012)."""


@pytest.fixture(autouse=True)
def _fresh_queries_afterwards() -> Iterator[None]:
    yield
    queries.queries.cache_clear()  # whatever a test's copy of sql/ left cached


def _sql_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    copy = tmp_path / "sql"
    shutil.copytree(queries.sql_dir(), copy)
    monkeypatch.setattr(queries, "sql_dir", lambda: copy)
    queries.queries.cache_clear()
    return copy


async def _body_of(conn: asyncpg.Connection, function: str) -> str:
    return await conn.fetchval("SELECT prosrc FROM pg_proc WHERE oid = $1::regproc", function)


def test_the_shared_definitions_apply_first_and_every_statistic_has_a_file():
    names = [d.name for d in stat_definitions()]
    assert names[0] == "scope"
    assert sorted(names[1:]) == names[1:]
    assert set(names[1:]) == {
        "player_totals", "season_standings", "personal_bests", "hall_of_fame", "match_reports",
        "player_form", "player_streaks", "partnerships", "season_leaderboards", "milestones",
        "player_ratings",
    }  # fmt: skip


async def test_a_changed_file_reapplies_exactly_that_definition(
    blank_database_url, tmp_path, monkeypatch
):
    sql = _sql_copy(tmp_path, monkeypatch)
    conn = await asyncpg.connect(blank_database_url)
    try:
        first = await migrate(conn, QUEUE)
        assert first.definitions == [d.name for d in stat_definitions()]
        assert (await migrate(conn, QUEUE)).definitions == []

        form = sql / "stats" / "player_form.sql"
        form.write_text(form.read_text().replace("begin\n", "begin\n    -- revised\n", 1))
        again = await migrate(conn, QUEUE)
        assert again.applied == [] and again.definitions == ["player_form"]
        assert "-- revised" in await _body_of(conn, "stats.refresh_player_form")
        assert "-- revised" not in await _body_of(conn, "stats.refresh_player_totals")
        recorded = dict(
            await conn.fetch("SELECT name, checksum FROM stats_worker.stat_definitions")
        )
        assert recorded == {d.name: d.checksum for d in stat_definitions()}
    finally:
        await conn.close()


async def test_a_database_of_the_previous_version_keeps_what_its_statistics_applied(
    blank_database_url, tmp_path, monkeypatch
):
    """Migrated and played by the version before the split, then migrated now: exact."""
    sql = _sql_copy(tmp_path, monkeypatch)
    shutil.rmtree(sql / "stats")
    # The split itself is left out; the worker's own later tables (which
    # today's worker reads while it plays the league) stay.
    for migration in migrations():
        if migration.version == THE_SPLIT:
            (sql / "migrations" / f"{migration.name}.sql").unlink()
    scope_query = sql / "queries" / "stats.sql"  # the one query that read the shared record
    scope_query.write_text(
        scope_query.read_text().replace("stats.applied_by_stat", "stats.applied_matches")
    )
    conn = await asyncpg.connect(blank_database_url)
    await init_connection(conn)
    try:
        await migrate(conn, QUEUE)
        league = generate_league(seed=7, tenants=2, players=10, matches=12)
        await play_league(conn, league)
        await drain_stats(blank_database_url)
        old = await conn.fetchval("SELECT count(*) FROM stats.applied_matches")
        assert old > 0

        monkeypatch.undo()  # today's sql/
        queries.queries.cache_clear()
        report = await migrate(conn, QUEUE)
        assert report.applied == [m.name for m in migrations() if m.version == THE_SPLIT]
        assert report.definitions == [d.name for d in stat_definitions()]
        assert await conn.fetchval("SELECT to_regclass('stats.applied_matches')") is None
        assert await conn.fetchval("SELECT count(*) FROM stats.applied_by_stat") == 9 * old

        # A lineup edit of an applied match the old version recorded, made
        # behind the triggers' back: only the moved-over record names the player.
        match_id, player_id = await conn.fetchrow(
            "SELECT mp.match_id, mp.player_id FROM match_players mp"
            " JOIN stats.counted_matches m ON m.match_id = mp.match_id LIMIT 1"
        )
        tenant = await conn.fetchval("SELECT tenant_id FROM matches WHERE id = $1", match_id)
        await conn.execute("SET session_replication_role = replica")
        await conn.execute(
            "DELETE FROM match_players WHERE match_id = $1 AND player_id = $2", match_id, player_id
        )
        await conn.execute("RESET session_replication_role")
        await conn.execute("SELECT stats.enqueue_match($1, $2)", tenant, match_id)
        await drain_stats(blank_database_url)
        await reference.assert_stats_match_reference(conn)
        pool = await create_pool(blank_database_url, worker_settings(blank_database_url))
        try:
            for t in league.tenants:
                assert await verify(pool, t.id) == []
        finally:
            await pool.close()
    finally:
        await conn.close()
