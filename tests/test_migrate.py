"""``migrate``: pgmq (extension or SQL-only), the queue, numbered migrations, once each."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import asyncpg
import pytest

from tests import pgmq_versions
from worker.core.queries import migrations
from worker.schema.migrate import migrate
from worker.schema.pgmq_install import pgmq_sql_path, pgmq_sql_version

QUEUE = "stats_updates"
PGMQ_MATRIX = True


async def _recorded(conn: asyncpg.Connection) -> list[int]:
    rows = await conn.fetch("SELECT version FROM stats_worker.schema_migrations ORDER BY 1")
    return [r["version"] for r in rows]


async def _extversion(conn: asyncpg.Connection) -> str | None:
    return await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'pgmq'")


async def test_migrate_twice_applies_everything_once(
    blank_database_url, pgmq_flavour, pgmq_version
):
    extension = pgmq_versions.flavour(pgmq_flavour).extension
    conn = await asyncpg.connect(blank_database_url)
    try:
        first = await migrate(conn, QUEUE)
        assert first.pgmq == (
            f"extension {pgmq_version}" if extension else f"sql-only {pgmq_sql_version()}"
        )
        assert first.queue_created
        assert first.applied == [m.name for m in migrations()]
        second = await migrate(conn, QUEUE)
        assert second.pgmq == f"present ({pgmq_version if extension else 'sql'})"
        assert not second.queue_created
        assert second.applied == []
        assert await _recorded(conn) == [m.version for m in migrations()]
        assert (
            await conn.fetchval("SELECT value FROM stats_worker.config WHERE key = 'queue_name'")
            == QUEUE
        )
        # The worker's own insert NOTIFY, whatever pgmq offers; never pgmq's as well.
        assert await conn.fetchval(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass($1) "
            "AND tgname = 'stats_worker_notify_insert'",
            f"pgmq.q_{QUEUE}",
        )
        if await conn.fetchval("SELECT to_regclass('pgmq.notify_insert_throttle')"):  # 1.13
            assert not await conn.fetchval(
                "SELECT count(*) FROM pgmq.notify_insert_throttle WHERE queue_name = $1", QUEUE
            )
    finally:
        await conn.close()


async def test_two_concurrent_migrates_are_safe(blank_database_url):
    connections = [await asyncpg.connect(blank_database_url) for _ in range(3)]
    try:
        reports = await asyncio.gather(*(migrate(c, QUEUE) for c in connections))
        applied = [name for report in reports for name in report.applied]
        assert sorted(applied) == sorted(m.name for m in migrations())
        assert sum(report.queue_created for report in reports) == 1
        assert await _recorded(connections[0]) == [m.version for m in migrations()]
    finally:
        for c in connections:
            await c.close()


async def test_an_existing_sql_only_pgmq_is_detected_not_reapplied(blank_database_url):
    conn = await asyncpg.connect(blank_database_url)
    try:
        await conn.execute(pgmq_sql_path().read_text())
        await conn.execute("SELECT pgmq.create('other_queue')")
        await conn.execute("SELECT pgmq.send('other_queue', '{\"keep\": true}')")
        report = await migrate(conn, QUEUE)
        assert report.pgmq == "present (sql)"
        # The app's own queue and its message are untouched.
        assert await conn.fetchval("SELECT count(*) FROM pgmq.q_other_queue") == 1
    finally:
        await conn.close()


@pytest.mark.pgmq_matrix(extension_only=True)
async def test_migrate_uses_create_extension_where_pgmq_is_available(
    blank_database_url, database_url, pgmq_version
):
    # A fresh database of a server that merely offers the version.
    conn = await asyncpg.connect(blank_database_url)
    try:
        offered = await conn.fetchval(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'pgmq'"
        )
        assert offered == pgmq_version
        assert await _extversion(conn) is None
        report = await migrate(conn, QUEUE)
        assert report.pgmq == f"extension {pgmq_version}"
        assert await _extversion(conn) == pgmq_version
        again = await migrate(conn, QUEUE)
        assert again.pgmq == f"present ({pgmq_version})"
        assert again.applied == []
        assert await _extversion(conn) == pgmq_version  # never upgraded
        msg_id = await conn.fetchval("SELECT pgmq.send($1, '{}')", QUEUE)
        assert msg_id == 1
    finally:
        await conn.close()
    # A database whose extension was created before migrate (the template).
    conn = await asyncpg.connect(database_url)
    try:
        report = await migrate(conn, QUEUE)
        assert report.pgmq == f"present ({pgmq_version})"
        assert not report.queue_created
        assert report.applied == []
        assert await _extversion(conn) == pgmq_version
    finally:
        await conn.close()


def _collect(**environment: str | None) -> str:
    """``pytest --collect-only`` of this module under ``environment``; its output."""
    env = {**os.environ, **environment}
    env = {key: value for key, value in env.items() if value is not None}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-p", "no:cacheprovider", __file__],
        cwd=pgmq_versions.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "skip" not in result.stdout.lower(), result.stdout
    return result.stdout


def test_without_the_shared_releases_their_flavours_are_not_generated_and_said_so():
    ext_113 = f"ext-{pgmq_versions.SQL_ONLY.removeprefix('sql-')}"
    out = _collect(**{pgmq_versions.SHARED_DIR_VARIABLE: "/nonexistent", "TEST_DATABASE_URL": None})
    said = "pgmq not covered: 1.4.4, 1.5.1 (/nonexistent/pgmq absent)"
    assert out.count(said) == 2, out  # header and summary
    assert f"test_migrate_twice_applies_everything_once[{pgmq_versions.SQL_ONLY}]" in out
    assert f"test_migrate_twice_applies_everything_once[{ext_113}]" in out
    assert f"test_migrate_uses_create_extension_where_pgmq_is_available[{ext_113}]" in out
    assert "ext-1.4.4" not in out
    assert "ext-1.5.1" not in out


def test_a_run_on_its_own_server_leaves_the_extension_flavours_out_and_says_so():
    out = _collect(TEST_DATABASE_URL="postgresql://nobody@127.0.0.1:1/none")
    left = ", ".join(f.name for f in pgmq_versions.available_flavours() if f.extension)
    assert out.count(f"pgmq not covered: {left} (") == 2, out
    assert f"test_migrate_twice_applies_everything_once[{pgmq_versions.SQL_ONLY}]" in out
    assert "[ext-" not in out
    assert "test_migrate_uses_create_extension_where_pgmq_is_available" not in out
    assert "1 deselected" in out


async def test_migrate_keeps_an_apps_existing_tables_and_data(blank_database_url):
    conn = await asyncpg.connect(blank_database_url)
    try:
        await conn.execute(
            """
            CREATE TABLE tenants (id uuid PRIMARY KEY, name text NOT NULL,
                                  plan text NOT NULL DEFAULT 'free');
            CREATE TABLE seasons (id bigint PRIMARY KEY, tenant_id uuid NOT NULL REFERENCES tenants,
                                  name text NOT NULL, starts_on date, ends_on date);
            CREATE TABLE players (id bigint PRIMARY KEY, tenant_id uuid NOT NULL REFERENCES tenants,
                                  name text NOT NULL);
            CREATE TABLE matches (id bigint PRIMARY KEY, tenant_id uuid NOT NULL REFERENCES tenants,
                                  season_id bigint REFERENCES seasons,
                                  played_at timestamptz NOT NULL,
                                  status text NOT NULL, team_a_score int, team_b_score int);
            CREATE TABLE match_players (match_id bigint REFERENCES matches ON DELETE CASCADE,
                                  player_id bigint REFERENCES players, team text NOT NULL,
                                  goals int NOT NULL DEFAULT 0, assists int NOT NULL DEFAULT 0,
                                  own_goals int NOT NULL DEFAULT 0,
                                  is_mvp boolean NOT NULL DEFAULT false,
                                  PRIMARY KEY (match_id, player_id));
            INSERT INTO tenants VALUES ('00000000-0000-0000-0000-000000000001', 'Club', 'pro');
            INSERT INTO players VALUES (1, '00000000-0000-0000-0000-000000000001', 'Ann');
            INSERT INTO matches VALUES (7, '00000000-0000-0000-0000-000000000001', NULL,
                                        '2026-01-01', 'completed', 2, 1);
            INSERT INTO match_players VALUES (7, 1, 'A', 2, 0, 0, true);
            """
        )
        report = await migrate(conn, QUEUE)
        assert report.applied == [m.name for m in migrations()]
        assert await conn.fetchval("SELECT plan FROM tenants") == "pro"
        assert await conn.fetchval("SELECT goals FROM match_players WHERE match_id = 7") == 2
        assert await conn.fetchval("SELECT count(*) FROM matches") == 1
    finally:
        await conn.close()
