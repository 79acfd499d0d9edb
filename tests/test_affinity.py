"""Tenant affinity: one replica at a time recomputes a tenant (``worker/queue/affinity.py``).

Another replica is a session holding the tenant's lock, or a second worker
process. What a user would notice: a tenant another replica holds is left to it
while everything else drains; two replicas never recompute one tenant at the
same moment (so they never wait on each other's locks or redo each other's
work); a lost lock connection or a dead replica changes nothing but speed.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from tests import reference
from tests.support import (
    process_log,
    running_worker,
    start_stats_worker,
    stop_process,
    wait_for,
    worker_settings,
)
from worker import app
from worker.queue.affinity import RECONNECT_SECONDS
from worker.stats.league import complete_match, generate_league, write_clubs, write_scheduled

QUEUE = "stats_updates"
PGMQ_MATRIX = True  # claims and hand-backs on every pgmq users have
LEAGUE = generate_league(seed=141, tenants=4, players=12, matches=30, side_min=3, side_max=5)


def lock_name(tenant: object) -> str:
    return f"stats_worker:affinity:{QUEUE}:{tenant}"


async def _schedule_league(conn: asyncpg.Connection) -> None:
    await write_clubs(conn, LEAGUE)
    await write_scheduled(conn, list(LEAGUE.matches()))


async def _succeeded(conn: asyncpg.Connection, tenant: object) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM stats_worker.job_runs WHERE tenant_id = $1"
            " AND status = 'succeeded'",
            tenant,
        )
    )


async def _queued(conn: asyncpg.Connection, tenant: object) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT msg_id, read_ct FROM pgmq.q_{QUEUE} WHERE message->>'tenant_id' = $1",
        str(tenant),
    )


async def test_a_tenant_another_replica_holds_is_left_to_it_while_the_rest_drains(
    database_url, conn
):
    held, *free = LEAGUE.tenants
    await _schedule_league(conn)
    other_replica = await asyncpg.connect(database_url)
    name = lock_name(held.id)
    assert await other_replica.fetchval(
        "SELECT pg_try_advisory_lock(hashtextextended($1, 0))", name
    )
    for match in LEAGUE.matches():
        await complete_match(conn, match)

    settings = worker_settings(database_url)
    async with running_worker(settings, app.default_handlers):
        for tenant in free:
            done = len(tenant.matches) - sum(m.status == "cancelled" for m in tenant.matches)
            await wait_for(lambda t=tenant, n=done: _at_least(conn, t.id, n), timeout=60)
        await asyncio.sleep(1.5)  # several hand-backs and polls
        assert await _succeeded(conn, held.id) == 0
        waiting = await _queued(conn, held.id)
        assert waiting, "the held tenant's messages stay on the queue"
        assert min(r["read_ct"] for r in waiting) >= 2, "read, handed back, read again"

        await other_replica.close()  # that replica dies: its claim ends with its session
        await wait_for(lambda: _queue_empty(conn), timeout=60)
    await reference.assert_stats_match_reference(conn)


async def _at_least(conn: asyncpg.Connection, tenant: object, count: int) -> bool:
    return await _succeeded(conn, tenant) >= count


async def _queue_empty(conn: asyncpg.Connection) -> bool:
    return not await conn.fetchval(f"SELECT count(*) FROM pgmq.q_{QUEUE}")


async def test_two_replicas_never_recompute_one_tenant_at_the_same_time(database_url, conn, pool):
    await _schedule_league(conn)
    # One slot each: a replica holds at most two tenants, so the four are shared out.
    # A replica whose read was all the other's tenants sleeps a poll: a short one,
    # or the other may drain the whole backlog (about 2 s) before it wakes.
    env = {"CONCURRENCY": "1", "POOL_MAX_SIZE": "4", "MIGRATE_ON_START": "false",
           "LOG_FORMAT": "json", "POLL_INTERVAL_SECONDS": "0.2"}  # fmt: skip
    replicas = [start_stats_worker(database_url, **env) for _ in "ab"]
    try:
        for replica in replicas:  # both up and idle before the backlog appears
            await wait_for(lambda r=replica: _started(r), timeout=60, interval=0.1)
        for match in LEAGUE.matches():
            await complete_match(conn, match)
        # Far more than one read takes: each match's message again, six times over.
        await conn.execute(
            f"SELECT pgmq.send_batch('{QUEUE}', array_agg(message ORDER BY r, msg_id))"
            f" FROM pgmq.q_{QUEUE}, generate_series(1, 6) AS r"
        )
        await wait_for(lambda: _queue_empty(conn), timeout=90, interval=0.1)
    finally:
        codes = [stop_process(replica) for replica in replicas]
    assert codes == [0, 0]
    groups = [_recomputes(process_log(replica)) for replica in replicas]
    assert all(groups), "neither replica holds more tenants than two slots' worth"
    for tenant in LEAGUE.tenants:
        for start, end in groups[0].get(str(tenant.id), []):
            for other_start, other_end in groups[1].get(str(tenant.id), []):
                overlap = min(end, other_end) - max(start, other_start)
                assert overlap <= timedelta(milliseconds=20), (tenant.id, start, other_start)
    await reference.assert_stats_match_reference(conn)
    assert await pool.fetchval(f"SELECT count(*) FROM pgmq.q_{QUEUE}") == 0


async def _started(replica: subprocess.Popen[bytes]) -> bool:
    assert replica.poll() is None, process_log(replica)[-3000:]
    return '"message": "worker started"' in process_log(replica)


def _recomputes(log: str) -> dict[str, list[tuple[datetime, datetime]]]:
    """tenant → (start, end) of each recompute a replica logged, from its JSON lines."""
    seen: dict[str, set[tuple[datetime, datetime]]] = {}
    for line in log.splitlines():
        if not line.startswith("{"):
            continue
        record: dict[str, Any] = json.loads(line)
        if record.get("message") != "message succeeded" or not record.get("tenant_id"):
            continue
        end = datetime.strptime(record["time"], "%Y-%m-%d %H:%M:%S,%f")
        start = end - timedelta(milliseconds=float(record["duration_ms"]))
        seen.setdefault(record["tenant_id"], set()).add((start, end))
    return {tenant: sorted(spans) for tenant, spans in seen.items()}


async def _affinity_sessions(conn: asyncpg.Connection) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name LIKE 'stats-worker affinity %'"
        )
    )


async def test_a_lost_affinity_connection_only_costs_speed(database_url, conn):
    await _schedule_league(conn)
    matches = list(LEAGUE.matches())
    settings = worker_settings(database_url)
    async with running_worker(settings, app.default_handlers):
        for match in matches[:40]:
            await complete_match(conn, match)
        await wait_for(lambda: _queue_empty(conn), timeout=60)
        assert await _affinity_sessions(conn) >= 1
        killed = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database()"
            " AND application_name LIKE 'stats-worker affinity %'"
        )
        assert killed >= 1
        for match in matches[40:80]:  # read without affinity for a while, then with it again
            await complete_match(conn, match)
        await wait_for(lambda: _queue_empty(conn), timeout=60)
        await asyncio.sleep(RECONNECT_SECONDS + 0.5)
        for match in matches[80:]:
            await complete_match(conn, match)
        await wait_for(lambda: _queue_empty(conn), timeout=60)
        assert await _affinity_sessions(conn) >= 1
    await reference.assert_stats_match_reference(conn)
