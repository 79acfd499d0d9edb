"""Three worker processes, small pools, short visibility timeouts, and an app that never stops.

While the app applies hundreds of random corrections in their own
transactions (and an operator runs ``verify`` now and then), three real worker
processes with three-connection pools and a two-second visibility timeout
drain the queue. Afterwards: no drift, no app transaction failed (no
deadlock), and no message was settled by a worker that had lost it.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import asyncpg

from tests import reference
from tests.support import ROOT, play_league, wait_for
from worker.stats.league import generate_league
from worker.stats.maintenance import verify

CORRECTIONS = 300


def _start_worker(database_url: str) -> tuple[subprocess.Popen[bytes], Path]:
    log_path = Path(tempfile.mkstemp(prefix="concurrency-", suffix=".log")[1])
    env = {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": database_url,
        "POOL_MAX_SIZE": "3",
        "POOL_MIN_SIZE": "1",
        "CONCURRENCY": "2",
        "VISIBILITY_TIMEOUT_SECONDS": "2",
        "POLL_INTERVAL_SECONDS": "0.2",
        "RETRY_BASE_SECONDS": "0.2",
        "RETRY_MAX_SECONDS": "1",
        "MAX_ATTEMPTS": "20",
        "MIGRATE_ON_START": "false",
        "LOG_FORMAT": "json",
        "PORT": "0",
    }
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "run"],
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    return process, log_path


async def _correct(conn: asyncpg.Connection, rng: random.Random, tenants: dict) -> None:
    """One random correction of the kinds the contract lists, in its own transaction."""
    tenant = rng.choice([t for t in tenants if tenants[t]["matches"]])
    match_id = rng.choice(tenants[tenant]["matches"])
    player = rng.choice(tenants[tenant]["players"])
    kind = rng.randrange(8)
    async with conn.transaction():
        if kind == 0:
            await conn.execute(
                "UPDATE matches SET team_a_score = $2, team_b_score = $3, status = 'completed'"
                " WHERE id = $1",
                match_id, rng.randrange(5), rng.randrange(5),
            )  # fmt: skip
        elif kind == 1:
            await conn.execute(
                "UPDATE match_players SET goals = $3 WHERE match_id = $1 AND player_id = $2",
                match_id, player, rng.randrange(4),
            )  # fmt: skip
        elif kind == 2:
            await conn.execute(
                "DELETE FROM match_players WHERE match_id = $1 AND player_id = $2", match_id, player
            )
        elif kind == 3:
            await conn.execute(
                "INSERT INTO match_players (match_id, player_id, team) VALUES ($1, $2, $3)"
                " ON CONFLICT DO NOTHING",
                match_id, player, rng.choice("AB"),
            )  # fmt: skip
        elif kind == 4:
            status = rng.choice(["cancelled", "completed"])
            await conn.execute("UPDATE matches SET status = $2 WHERE id = $1", match_id, status)
        elif kind == 5:
            season = rng.choice([*tenants[tenant]["seasons"], None])
            await conn.execute("UPDATE matches SET season_id = $2 WHERE id = $1", match_id, season)
        elif kind == 6:
            await conn.execute(
                "UPDATE matches SET played_at = played_at + $2 * interval '1 day' WHERE id = $1",
                match_id, rng.randrange(-40, 40),
            )  # fmt: skip
        else:
            await conn.execute("DELETE FROM matches WHERE id = $1", match_id)
            tenants[tenant]["matches"].remove(match_id)


async def _queue_drained(conn: asyncpg.Connection) -> bool:
    return not await conn.fetchval("SELECT count(*) FROM pgmq.q_stats_updates")


def _by_message(log_paths: list[Path], message: str) -> dict[int, set[int]]:
    """msg_id → the worker processes (by index) that logged ``message`` for it."""
    seen: dict[int, set[int]] = collections.defaultdict(set)
    for index, path in enumerate(log_paths):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("message", "").startswith(message) and "msg_id" in record:
                    seen[record["msg_id"]].add(index)
    return seen


async def test_three_workers_and_a_busy_app_end_exact_and_never_settle_a_lost_message(
    database_url, conn, pool
):
    rng = random.Random(77)
    league = generate_league(seed=77, tenants=2, players=12, matches=40, side_min=3, side_max=6)
    await play_league(conn, league)
    tenants = {
        t.id: {"matches": [m.id for m in t.matches], "players": list(t.players),
               "seasons": list(t.seasons)}
        for t in league.tenants
    }  # fmt: skip

    workers = [_start_worker(database_url) for _ in range(3)]
    app = await asyncpg.connect(database_url)
    app_errors: list[BaseException] = []
    try:
        for i in range(CORRECTIONS):
            try:
                await _correct(app, rng, tenants)
            except asyncpg.PostgresError as exc:  # a deadlock would land here
                app_errors.append(exc)
            if i % 100 == 50:
                for tenant in tenants:
                    await verify(pool, tenant)  # an operator's check while it all runs
            await asyncio.sleep(rng.uniform(0, 0.01))
        await wait_for(lambda: _queue_drained(conn), timeout=120, interval=0.2)
    finally:
        await app.close()
        for process, _ in workers:
            process.send_signal(signal.SIGTERM)
        codes = [process.wait(timeout=60) for process, _ in workers]
    logs = [path for _, path in workers]
    assert app_errors == []
    assert codes == [0, 0, 0], [p.read_text()[-3000:] for p in logs]
    await reference.assert_stats_match_reference(conn)
    for tenant in tenants:
        assert await verify(pool, tenant) == []
    # A message two workers both finished was settled only by the one that owned it:
    # every other one said it had lost it.
    succeeded, lost = _by_message(logs, "message succeeded"), _by_message(logs, "message lost")
    for msg_id, processes in succeeded.items():
        assert len(processes - lost.get(msg_id, set())) <= 1, msg_id
    rows = await conn.fetch(
        "SELECT status, count(*) FROM stats_worker.job_runs GROUP BY status ORDER BY 1"
    )
    assert {r["status"] for r in rows} <= {"succeeded", "retrying"}, rows
