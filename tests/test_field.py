"""The databases people actually have: apps with history, owners that are not superusers.

Everything runs as an operator would: the CLI in its own process, roles with
only the rights the README lists, the app's role completing matches.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests import reference
from tests.support import (
    dsn_for_database,
    play_league,
    run_cli,
    running_worker,
    wait_for,
    worker_settings,
)
from worker import app
from worker.core.queries import migrations
from worker.queue.pgmq import PassOver, Queue
from worker.schema.pgmq_install import pgmq_sql_path
from worker.stats.league import complete_match, generate_league, write_clubs, write_scheduled

PGMQ_MATRIX = True
"""Every pgmq flavour: a server offering the extension, or the SQL-only install."""

SOURCE_TABLES = next(m.sql for m in migrations() if m.name == "0002_source_tables")
"""The contract's source tables, as an app that predates the worker has them."""


async def _play_history(conn: asyncpg.Connection, *, seed: int, tenants: int, matches: int) -> int:
    """A league completed before the worker existed; returns its counted matches."""
    league = generate_league(
        seed=seed, tenants=tenants, players=14, matches=matches, side_min=3, side_max=6
    )
    await play_league(conn, league)
    counted: int = await conn.fetchval(
        "SELECT count(*) FROM matches WHERE status = 'completed' "
        "AND team_a_score IS NOT NULL AND team_b_score IS NOT NULL"
    )
    return counted


async def test_an_app_with_history_gets_exact_statistics_with_no_manual_step(
    blank_database_url, pgmq_flavour, pgmq_version
):
    conn = await asyncpg.connect(blank_database_url)
    try:
        await conn.execute(SOURCE_TABLES)
        counted = await _play_history(conn, seed=21, tenants=2, matches=110)
        assert counted >= 200
        # The app keeps an index of its own that serves one the worker needs.
        await conn.execute("CREATE INDEX app_lineups_by_player ON match_players (player_id)")

        migrated = run_cli(blank_database_url, "migrate")
        assert migrated.returncode == 0, migrated.stderr
        assert "backfilled the statistics of 2 tenant(s)" in migrated.stdout
        assert "statistics' definitions re-applied: scope, hall_of_fame," in migrated.stdout
        assert "match_players_player_id_idx" not in migrated.stdout  # reused the app's
        assert "backfilling statistics of an existing history" in migrated.stderr
        assert await conn.fetchval("SELECT count(*) FROM stats_worker.backfill") == 0
        # The app is told: each tenant's tags are owed, sent by the worker once it runs.
        owed = await conn.fetch("SELECT tags FROM stats_worker.callbacks")
        tenants = await conn.fetch("SELECT id FROM tenants")
        assert {f"tenant:{t['id']}" for t in tenants} <= {tag for r in owed for tag in r["tags"]}

        drained = run_cli(blank_database_url, "run", "--until-empty", PORT="0")
        assert drained.returncode == 0, drained.stderr
        await reference.assert_stats_match_reference(conn)
        verified = run_cli(blank_database_url, "verify")
        assert verified.returncode == 0, verified.stdout
        # The server offered pgmq: migrate created exactly that version, and no more.
        installed = await conn.fetchval(
            "SELECT extversion FROM pg_extension WHERE extname = 'pgmq'"
        )
        assert installed == (pgmq_version if pgmq_flavour.startswith("ext-") else None)
        indexes = await conn.fetch(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'public' "
            "AND tablename = 'match_players'"
        )
        assert "match_players_player_id_idx" not in {r["indexname"] for r in indexes}
    finally:
        await conn.close()


async def test_a_worker_on_a_history_serves_live_matches_while_it_backfills(blank_database_url):
    conn = await asyncpg.connect(blank_database_url)
    try:
        await conn.execute(SOURCE_TABLES)
        await _play_history(conn, seed=5, tenants=24, matches=120)
        settings = worker_settings(blank_database_url, pool_max_size=8)
        async with running_worker(settings, app.default_handlers):
            # run migrated without the backfill: the history waits, the worker reads.
            waiting = await conn.fetchval("SELECT count(*) FROM stats_worker.backfill")
            assert waiting == 24
            last = await conn.fetchval(
                "SELECT tenant_id FROM stats_worker.backfill "
                "ORDER BY queued_at DESC, tenant_id DESC"
            )
            match = await conn.fetchval(
                "SELECT max(id) FROM matches WHERE tenant_id = $1 AND status = 'completed'", last
            )
            msg_id = await conn.fetchval(
                "SELECT pgmq.send('stats_updates', jsonb_build_object("
                "'tenant_id', $1::uuid, 'match_id', $2::bigint))",
                last,
                match,
            )

            async def settled() -> bool:
                status = await conn.fetchval(
                    "SELECT status FROM stats_worker.job_runs WHERE msg_id = $1", msg_id
                )
                return status == "succeeded"

            await wait_for(settled, interval=0.01)
            # The live match did not wait for years of other tenants' history.
            assert await conn.fetchval("SELECT count(*) FROM stats_worker.backfill") > 0

            async def backfilled() -> bool:
                return await conn.fetchval("SELECT count(*) FROM stats_worker.backfill") == 0

            await wait_for(backfilled, timeout=120)
        await reference.assert_stats_match_reference(conn)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def _roles(server_dsn: str) -> AsyncIterator[tuple[str, str]]:
    """A database owner and an app role, neither a superuser; dropped afterwards."""
    suffix = uuid.uuid4().hex[:8]
    owner, app = f"sw_owner_{suffix}", f"sw_app_{suffix}"
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f"CREATE ROLE {owner} LOGIN NOSUPERUSER")
        await admin.execute(f"CREATE ROLE {app} LOGIN NOSUPERUSER")
        yield owner, app
    finally:
        for role in (owner, app):
            for database in await admin.fetch(
                "SELECT datname FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba "
                "WHERE r.rolname = $1",
                role,
            ):
                await admin.execute(f'DROP DATABASE IF EXISTS "{database[0]}" WITH (FORCE)')
        await admin.execute(f"DROP ROLE IF EXISTS {app}")
        await admin.execute(f"DROP ROLE IF EXISTS {owner}")
        await admin.close()


async def _passes_over_as(dsn: str) -> None:
    """The fair read (0016) claims on pgmq's queue table: that role may, on this pgmq."""
    conn = await asyncpg.connect(dsn)
    try:
        queue = Queue(conn, "stats_updates")
        for group in ("full", "full", "other"):
            await conn.execute(
                "SELECT pgmq.send('stats_updates', $1::jsonb)", json.dumps({"group": group})
            )
        read = await queue.read(30, 10, PassOver("group", ["full"]))
        assert [json.loads(m.raw or "null")["group"] for m in read] == ["other"]
        await conn.execute("DELETE FROM pgmq.q_stats_updates")
    finally:
        await conn.close()


async def _drain_exactly(dsn: str) -> None:
    """``run --until-empty`` as that role, then the statistics equal the reference."""
    drained = run_cli(dsn, "run", "--until-empty", PORT="0")
    assert drained.returncode == 0, drained.stderr
    conn = await asyncpg.connect(dsn)
    try:
        await reference.assert_stats_match_reference(conn)
    finally:
        await conn.close()


def _as(dsn: str, role: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{role}@{host}"))


async def _owned_database(server_dsn: str, owner: str) -> str:
    name = f"sw_field_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" OWNER {owner}')
    finally:
        await admin.close()
    return dsn_for_database(server_dsn, name)


async def _app_plays(app_dsn: str, owner_dsn: str, app: str) -> None:
    """The owner creates the app's tables and lets the app role use them; the app plays."""
    owner = await asyncpg.connect(owner_dsn)
    try:
        await owner.execute(
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON tenants, seasons, players, matches, "
            f"match_players TO {app}"
        )
    finally:
        await owner.close()
    conn = await asyncpg.connect(app_dsn)
    try:
        await _play_history(conn, seed=8, tenants=2, matches=25)
    except asyncpg.InsufficientPrivilegeError as exc:
        pytest.fail(f"the app role could not complete a match: {exc}")
    finally:
        await conn.close()


async def test_a_non_superuser_owner_migrates_and_runs_while_an_app_role_plays(server_dsn):
    async with _roles(server_dsn) as (owner, app):
        database = await _owned_database(server_dsn, owner)
        owner_dsn, app_dsn = _as(database, owner), _as(database, app)
        migrated = run_cli(owner_dsn, "migrate", STATS_READ_ROLES=app)
        assert migrated.returncode == 0, migrated.stderr
        await _passes_over_as(owner_dsn)
        await _app_plays(app_dsn, owner_dsn, app)
        await _drain_exactly(owner_dsn)
        # STATS_READ_ROLES: the app reads the statistics, not the worker's bookkeeping.
        reader = await asyncpg.connect(app_dsn)
        try:
            assert await reader.fetchval("SELECT count(*) FROM stats.player_totals") > 0
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await reader.fetchval("SELECT count(*) FROM stats.rating_steps")
        finally:
            await reader.close()


async def test_pgmq_of_a_superuser_names_the_grant_then_works_once_granted(
    server_dsn, pgmq_flavour
):
    async with _roles(server_dsn) as (owner, app):
        database = await _owned_database(server_dsn, owner)
        owner_dsn = _as(database, owner)
        superuser = await asyncpg.connect(database)
        try:
            # Installed by someone else, as a superuser enables pgmq for a project.
            if pgmq_flavour.startswith("ext-"):
                await superuser.execute("CREATE EXTENSION pgmq")
            else:
                await superuser.execute(pgmq_sql_path().read_text())
            refused = run_cli(owner_dsn, "migrate")
            assert refused.returncode == 1
            lines = refused.stderr.strip().splitlines()
            assert len(lines) == 1, refused.stderr
            assert f"GRANT USAGE ON SCHEMA pgmq TO {owner}" in lines[0]
            assert "pgmq.create('stats_updates')" in lines[0]
            assert "pgmq.create('stats_updates_bulk')" in lines[0]
            # The superuser runs what the line says.
            fix = lines[0].split(" run ", 1)[1]
            await superuser.execute(fix)
        finally:
            await superuser.close()
        migrated = run_cli(owner_dsn, "migrate")
        assert migrated.returncode == 0, migrated.stderr
        await _passes_over_as(owner_dsn)
        await _app_plays(_as(database, app), owner_dsn, app)
        await _drain_exactly(owner_dsn)


async def test_the_worker_reads_committed_whatever_the_database_default(database_url, conn):
    name = await conn.fetchval("SELECT current_database()")
    await conn.execute(
        f"ALTER DATABASE \"{name}\" SET default_transaction_isolation = 'repeatable read'"
    )
    plain = await asyncpg.connect(database_url)
    try:
        assert await plain.fetchval("SHOW transaction_isolation") == "repeatable read"
    finally:
        await plain.close()
    async with running_worker(worker_settings(database_url)) as worker:
        assert await worker.pool.fetchval("SHOW transaction_isolation") == "read committed"


async def test_a_commit_under_replica_role_leaves_no_message_unsent(database_url, conn):
    league = generate_league(seed=4, tenants=1, players=8, matches=3, side_min=3, side_max=4)
    await write_clubs(conn, league)
    matches = list(league.matches())
    await write_scheduled(conn, matches)
    # A subscriber of logical replication: the app's triggers are made to fire
    # for replicated changes too, but the commit-time send is not.
    for table in ("matches", "match_players"):
        for trigger in ("stats_enqueue_inserted", "stats_enqueue_updated"):
            await conn.execute(f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER {trigger}")
    async with conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        for match in matches:
            await complete_match(conn, match)
    assert await conn.fetchval("SELECT count(*) FROM pgmq.q_stats_updates") == 0
    assert await conn.fetchval("SELECT count(*) FROM stats.pending_messages") == len(matches)

    result = run_cli(database_url, "run", "--until-empty", PORT="0")
    assert result.returncode == 0, result.stderr
    assert "left unsent" in result.stderr
    assert await conn.fetchval("SELECT count(*) FROM stats.pending_messages") == 0
    await reference.assert_stats_match_reference(conn)


async def test_an_early_enqueue_and_a_completion_of_the_same_match_both_commit(database_url, conn):
    league = generate_league(seed=6, tenants=1, players=8, matches=2, side_min=3, side_max=4)
    await write_clubs(conn, league)
    first, second = list(league.matches())
    await write_scheduled(conn, [first, second])
    if await conn.fetchval("SELECT to_regproc('pgmq.enable_notify_insert') IS NOT NULL"):
        # A database an older worker migrated had pgmq's per-message notify on.
        await conn.execute("SELECT pgmq.enable_notify_insert('stats_updates', 0)")
        migrated = run_cli(database_url, "migrate")
        assert migrated.returncode == 0, migrated.stderr
        assert not await conn.fetchval(
            "SELECT count(*) FROM pgmq.notify_insert_throttle WHERE queue_name = 'stats_updates'"
        )

    early = await asyncpg.connect(database_url)
    completing = await asyncpg.connect(database_url)
    try:
        early_tx, completing_tx = early.transaction(), completing.transaction()
        await early_tx.start()
        await early.fetchval("SELECT stats.enqueue_match($1, $2)", first.tenant_id, second.id)
        await completing_tx.start()
        await complete_match(completing, first)  # its send happens at commit
        # The early transaction now touches the match the other one holds.
        touching = asyncio.create_task(
            early.execute("UPDATE matches SET played_at = played_at WHERE id = $1", first.id)
        )
        await asyncio.sleep(0.3)
        await asyncio.wait_for(completing_tx.commit(), timeout=10)
        await asyncio.wait_for(touching, timeout=10)
        await early_tx.commit()
    finally:
        await early.close()
        await completing.close()
    assert await conn.fetchval("SELECT count(*) FROM pgmq.q_stats_updates") == 2
