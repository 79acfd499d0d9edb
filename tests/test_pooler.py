"""The worker behind a real PgBouncer in transaction mode (Supabase's pooler, issue 8).

PgBouncer runs for the session (tests/pgbouncer.py); the worker runs as an
operator runs it, ``python -m worker.cli`` in a process of its own, with
``DATABASE_URL`` through the pooler. Statistics are compared with the oracle of
tests/reference.py over a direct connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from asyncio.subprocess import Process
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests import reference
from tests.pgbouncer import PgBouncer
from tests.support import ROOT, run_cli
from worker.core.database import init_connection
from worker.core.queries import migrations
from worker.stats.league import complete_match, generate_league, write_clubs, write_scheduled

QUEUE = "stats_updates"
CACHE_HINT = "DATABASE_STATEMENT_CACHE_SIZE=0"


def worker_env(database_url: str, **env: str) -> dict[str, str]:
    """The environment of a worker process: fast polling, JSON logs, nothing inherited."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "DIRECT_DATABASE_URL", "DATABASE_STATEMENT_CACHE_SIZE")
    }
    environment.update(
        {
            "DATABASE_URL": database_url,
            "LOG_FORMAT": "json",
            "PORT": "0",
            "POLL_INTERVAL_SECONDS": "0.2",
            "VISIBILITY_TIMEOUT_SECONDS": "10",
            "RETRY_BASE_SECONDS": "0.2",
            "RETRY_MAX_SECONDS": "1",
            "CONCURRENCY": "4",
            "POOL_MIN_SIZE": "1",
            "POOL_MAX_SIZE": "6",
        }
    )
    environment.update(env)
    return environment


def cli(
    database_url: str, *args: str, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        check=False,
        cwd=ROOT,
        env=worker_env(database_url, **env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def described(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout:\n{result.stdout}\n--- stderr:\n{result.stderr}"


async def direct_connection(dsn: str) -> asyncpg.Connection:
    connection = await asyncpg.connect(dsn)
    await init_connection(connection)
    return connection


async def play_league(conn: asyncpg.Connection, seed: int) -> int:
    """A small league written the app's way (one message per completed match); its size."""
    league = generate_league(seed=seed, tenants=2, players=12, matches=16, side_min=3, side_max=5)
    matches = sorted(league.matches(), key=lambda m: (m.played_at, m.id))
    await write_clubs(conn, league)
    await write_scheduled(conn, matches)
    for match in matches:
        await complete_match(conn, match)
    return len(matches)


async def assert_drained_exactly(conn: asyncpg.Connection) -> None:
    metrics = await conn.fetchrow("SELECT * FROM pgmq.metrics($1)", QUEUE)
    assert metrics["queue_length"] == 0
    assert await conn.fetchval(f"SELECT count(*) FROM pgmq.a_{QUEUE}") == 0  # no dead letter
    await reference.assert_stats_match_reference(conn)


# -- the fixture -------------------------------------------------------------------


async def test_the_fixture_is_a_transaction_pooler(pgbouncer: PgBouncer, database_url):
    pooled = pgbouncer.url(database_url)
    first = await asyncpg.connect(pooled, statement_cache_size=0)
    second = await asyncpg.connect(pooled, statement_cache_size=0)
    direct = await asyncpg.connect(database_url)
    try:
        before = await first.fetchval("SELECT pg_backend_pid()")
        async with second.transaction():  # holds a server connection until it ends
            shared = await second.fetchval("SELECT pg_backend_pid()")
            during = await first.fetchval("SELECT pg_backend_pid()")
        # A session pooler pins each client to one server: before == during != shared.
        assert shared == before or during != before, (before, shared, during)
        direct_pids = {await direct.fetchval("SELECT pg_backend_pid()") for _ in range(3)}
        assert len(direct_pids) == 1
    finally:
        for connection in (first, second, direct):
            await connection.close()


# -- the worker through it ---------------------------------------------------------


async def test_migrate_then_run_until_empty_drains_a_league_exactly(
    pgbouncer: PgBouncer, blank_database_url
):
    pooled = pgbouncer.url(blank_database_url)
    migrated = cli(pooled, "migrate", DATABASE_STATEMENT_CACHE_SIZE="0")
    assert migrated.returncode == 0, described(migrated)
    conn = await direct_connection(blank_database_url)
    try:
        await play_league(conn, seed=21)
        run = cli(pooled, "run", "--until-empty", DATABASE_STATEMENT_CACHE_SIZE="0")
        assert run.returncode == 0, described(run)
        # A session lock through it would land on a server connection others get next.
        assert "tenant affinity off" in run.stderr, described(run)
        await assert_drained_exactly(conn)
    finally:
        await conn.close()
    verified = cli(pooled, "verify", DATABASE_STATEMENT_CACHE_SIZE="0")
    assert verified.returncode == 0, described(verified)
    assert "no drift in 2 tenant(s)" in verified.stdout


async def test_default_statement_cache_drains_exactly_or_stops_at_once_naming_the_setting(
    pgbouncer: PgBouncer, database_url
):
    pooled = pgbouncer.url(database_url)
    conn = await direct_connection(database_url)
    try:
        await play_league(conn, seed=22)
        started = time.monotonic()
        try:
            run = cli(pooled, "run", "--until-empty", timeout=90)
        except subprocess.TimeoutExpired as exc:
            stderr = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr
            pytest.fail(
                "with the default statement cache the worker stayed up through PgBouncer "
                f"instead of draining or stopping; its stderr:\n{stderr}"
            )
        elapsed = time.monotonic() - started
        print(f"default statement cache through PgBouncer: exit {run.returncode}, {elapsed:.1f}s")
        if run.returncode == 0:
            await assert_drained_exactly(conn)
            return
        hints = [line for line in run.stderr.splitlines() if CACHE_HINT in line]
        assert hints, f"no stderr line names {CACHE_HINT}: {described(run)}"
        assert "Traceback" not in run.stderr, described(run)
        assert elapsed < 20, f"took {elapsed:.1f}s to give up: {described(run)}"
    finally:
        await conn.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _text(path: Path) -> str:
    return path.read_text(errors="replace")


async def _start_cli(env: dict[str, str], *args: str, log: Path | None = None) -> Process:
    """``python -m worker.cli ARGS``: output to ``log`` (both streams) or to pipes."""
    with contextlib.ExitStack() as files:
        log_file = files.enter_context(log.open("wb")) if log else None
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "worker.cli",
            *args,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file or subprocess.PIPE,
            stderr=subprocess.STDOUT if log_file else subprocess.PIPE,
        )


@pytest.mark.parametrize(
    ("direct", "listener", "gauge"), [(False, "polling", 0), (True, "connected", 1)]
)
async def test_health_shows_polling_through_the_pooler_and_listening_with_a_direct_url(
    pgbouncer: PgBouncer, database_url, tmp_path: Path, direct, listener, gauge
):
    port = _free_port()
    extra = {"DIRECT_DATABASE_URL": database_url} if direct else {}
    env = worker_env(
        pgbouncer.url(database_url), PORT=str(port), DATABASE_STATEMENT_CACHE_SIZE="0", **extra
    )
    log = tmp_path / "worker.log"
    process = await _start_cli(env, "run", log=log)
    body: dict[str, object] = {}
    try:
        deadline = time.monotonic() + 30  # to start and answer
        settled: float | None = None  # then 10 s more for the listener to settle
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=2) as client:
            while time.monotonic() < (settled or deadline):
                assert process.returncode is None, f"the worker exited: {_text(log)}"
                try:
                    response = await client.get("/health")
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
                    continue
                body = response.json()
                settled = settled or time.monotonic() + 10
                if response.status_code == 200 and body.get("listener") == listener:
                    break
                await asyncio.sleep(0.1)
            assert body.get("listener") == listener, (body, _text(log))
            assert body["status"] == "ok", body
            metrics = (await client.get("/metrics")).text
        up = re.findall(r"^stats_worker_listener_up\{[^}]*\} (\S+)$", metrics, re.MULTILINE)
        assert up, metrics
        assert [float(value) for value in up] == [gauge] * len(up), up
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 30)
    assert code == 0, f"exit {code} after SIGTERM: {_text(log)}"


async def test_six_concurrent_migrates_through_the_pooler_apply_each_migration_once(
    pgbouncer: PgBouncer, blank_database_url
):
    env = worker_env(pgbouncer.url(blank_database_url), DATABASE_STATEMENT_CACHE_SIZE="0")
    processes = [await _start_cli(env, "migrate") for _ in range(6)]
    try:
        outputs = await asyncio.wait_for(
            asyncio.gather(*(process.communicate() for process in processes)), 60
        )
    except TimeoutError:
        pytest.fail("six concurrent migrates did not all finish within 60 s")
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
    results = [
        (process.returncode, out.decode(), err.decode())
        for process, (out, err) in zip(processes, outputs, strict=True)
    ]
    for code, stdout, stderr in results:
        assert code == 0, f"exit {code}\n--- stdout:\n{stdout}\n--- stderr:\n{stderr}"

    names = [m.name for m in migrations()]
    applied: list[str] = []
    for _, stdout, _ in results:
        line = next(x for x in stdout.splitlines() if x.startswith("migrations applied: "))
        listed = line.removeprefix("migrations applied: ")
        if not listed.startswith("none"):
            applied += listed.split(", ")
    assert sorted(applied) == sorted(names)  # each one by exactly one process

    conn = await asyncpg.connect(blank_database_url)
    try:
        rows = await conn.fetch("SELECT version, name FROM stats_worker.schema_migrations")
        assert sorted(r["name"] for r in rows) == sorted(names)
        queues = await conn.fetchval("SELECT count(*) FROM pgmq.meta")
        assert queues == 2  # the queue and its bulk queue, each once
    finally:
        await conn.close()


async def test_behind_a_pooler_a_repeatable_read_default_stops_start_up(
    database_url, conn, pgbouncer
):
    name = await conn.fetchval("SELECT current_database()")
    await conn.execute(
        f"ALTER DATABASE \"{name}\" SET default_transaction_isolation = 'repeatable read'"
    )
    result = run_cli(pgbouncer.url(database_url), "run", "--until-empty", PORT="0")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert "ALTER ROLE" in last and "default_transaction_isolation = 'read committed'" in last
