"""Hostile and broken messages: whatever anyone writes to the queue with SQL.

Each case goes straight into the queue of a real worker, mixed with good
messages of the same tenant (so they are read and coalesced together): the
worker never dies, every message ends settled, the bad ones dead with their
reason, and the statistics still equal the reference.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime

import asyncpg

from tests import reference
from tests.receiver import Receiver, receiving
from tests.support import (
    drain_stats,
    play_league,
    prepare_engine_table,
    running_worker,
    wait_for,
    worker_settings,
)
from worker.queue.outcomes import Settler
from worker.queue.pgmq import send
from worker.queue.runs import JobRun
from worker.stats.league import generate_league

QUEUE = "stats_updates"


def _settings(receiver: Receiver) -> dict[str, object]:
    return {"concurrency": 2, "max_attempts": 2, "cache_invalidation_url": receiver.url}


async def _send_raw(conn: asyncpg.Connection, body: str | None) -> int:
    """Any jsonb PostgreSQL accepts, sent as text so nothing on our side decodes it."""
    msg_id: int = await conn.fetchval("SELECT pgmq.send($1, $2::text::jsonb)", QUEUE, body)
    return msg_id


async def _league(conn: asyncpg.Connection) -> tuple[uuid.UUID, uuid.UUID, list[int]]:
    league = generate_league(seed=3, tenants=2, players=10, matches=12, side_min=3, side_max=5)
    await play_league(conn, league)
    first, second = league.tenants
    return first.id, second.id, [m.id for m in first.matches]


async def test_hostile_bodies_are_dead_lettered_alone_and_the_rest_goes_on(database_url, conn):
    async with receiving() as receiver:
        await _hostile_bodies_in_a_live_league(database_url, conn, receiver)


async def _hostile_bodies_in_a_live_league(
    database_url: str, conn: asyncpg.Connection, receiver: Receiver
) -> None:
    tenant, other, matches = await _league(conn)
    await drain_stats(database_url, **_settings(receiver))
    receiver.requests.clear()
    other_player = await conn.fetchval("SELECT min(id) FROM players WHERE tenant_id = $1", other)
    prefix = f'{{"tenant_id": "{tenant}", "match_id": {matches[0]}'
    hostile = {
        "deep": prefix + ', "x": ' + "[" * 3000 + "]" * 3000 + "}",
        "huge_int": prefix + ', "x": ' + "9" * 5001 + "}",
        "too_big": prefix + ', "pad": "' + "a" * 70_000 + '"}',
        "far_since": prefix + ', "since": "0001-01-01T00:00:00+01:00"}',
        "many_players": prefix + ', "player_ids": ' + json.dumps(list(range(1, 2000))) + "}",
        "not_object": "[1, 2, 3]",
        "json_null": "null",
        "sql_null": None,  # pgmq.send takes it: the message column is nullable
        "unicode": prefix + ', "note": "\\ud83d\\ude00 \\u202e"}',
    }
    bad_ids = {name: await _send_raw(conn, body) for name, body in hostile.items()}
    # Harmless but useless: another tenant's player, an unknown tenant and match.
    forged = await _send_raw(
        conn,
        json.dumps(
            {"tenant_id": str(tenant), "match_id": matches[1], "player_ids": [other_player]}
        ),
    )
    stranger = uuid.uuid4()
    unknown = await _send_raw(conn, json.dumps({"tenant_id": str(stranger), "match_id": 987}))
    marks_before = await conn.fetch(
        "SELECT * FROM stats.player_marks WHERE tenant_id = $1 ORDER BY stat, player_id", other
    )

    await drain_stats(database_url, **_settings(receiver))

    runs = {
        r["msg_id"]: r
        for r in await conn.fetch("SELECT msg_id, status, last_error FROM stats_worker.job_runs")
    }
    dead = {name for name, msg_id in bad_ids.items() if runs[msg_id]["status"] == "dead"}
    assert dead == set(hostile) - {"unicode"}, {
        n: runs[i]["last_error"] for n, i in bad_ids.items()
    }
    assert runs[bad_ids["unicode"]]["status"] == "succeeded"  # unknown keys are ignored
    assert "nested deeper" in runs[bad_ids["deep"]]["last_error"]
    assert "too large" in runs[bad_ids["too_big"]]["last_error"]
    assert "SQL NULL" in runs[bad_ids["sql_null"]]["last_error"]
    assert "since" in runs[bad_ids["far_since"]]["last_error"]
    assert runs[forged]["status"] == "succeeded"
    assert runs[unknown]["status"] == "succeeded"
    assert await conn.fetchval(f"SELECT count(*) FROM pgmq.q_{QUEUE}") == 0
    # The forged message left the other tenant's bookkeeping alone ...
    marks_after = await conn.fetch(
        "SELECT * FROM stats.player_marks WHERE tenant_id = $1 ORDER BY stat, player_id", other
    )
    assert marks_after == marks_before
    # ... and everything is as a from-scratch computation says.
    await reference.assert_stats_match_reference(conn)
    # The unknown tenant changed nothing, so nothing of it is invalidated.
    sent = {tag for request in receiver.requests for tag in request.body["tags"]}
    assert f"tenant:{tenant}" in sent
    assert not [tag for tag in sent if str(stranger) in tag]


async def test_a_failing_message_does_not_take_its_coalesced_neighbours_down(
    database_url, conn, pool
):
    await prepare_engine_table(database_url)
    ids = [
        await send(pool, QUEUE, {"job": name, "group": "club", "fail_times": fails})
        for name, fails in (("good-1", 0), ("bad", 99), ("good-2", 0))
    ]
    settings = worker_settings(database_url, max_attempts=3)
    async with running_worker(settings):
        await wait_for(lambda: _all_settled(conn, ids), timeout=30)
    statuses = {
        r["msg_id"]: (r["status"], r["attempts"])
        for r in await conn.fetch("SELECT msg_id, status, attempts FROM stats_worker.job_runs")
    }
    assert statuses[ids[0]] == ("succeeded", 1)
    assert statuses[ids[2]] == ("succeeded", 1)
    assert statuses[ids[1]] == ("dead", 3)
    group_sizes = await conn.fetch("SELECT job, group_size FROM engine_runs ORDER BY id")
    assert group_sizes[0]["group_size"] == 3  # read and run together first


async def _all_settled(conn: asyncpg.Connection, ids: list[int]) -> bool:
    done = await conn.fetchval(
        "SELECT count(*) FROM stats_worker.job_runs WHERE msg_id = ANY($1) "
        "AND status IN ('succeeded', 'dead')",
        ids,
    )
    return bool(done == len(ids))


async def test_a_flooding_cache_endpoint_is_read_only_a_little(database_url, conn, pool):
    """It answers 500 with a body of 300 MB: the worker reads a few KB and hangs up."""
    sent = 0

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 500 Oops\r\nContent-Length: 300000000\r\n\r\n")
        chunk = b"x" * 65536
        try:
            while sent < 300_000_000:
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(flood, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        settings = worker_settings(
            database_url,
            cache_invalidation_url=f"http://127.0.0.1:{port}/hook",
            callback_max_attempts=1,
        )
        await prepare_engine_table(database_url)
        async with running_worker(settings):
            await send(pool, QUEUE, {"job": "one"})
            await wait_for(lambda: _has_failed_callback(conn), timeout=20)
    finally:
        server.close()
    error = await conn.fetchval("SELECT last_error FROM stats_worker.callbacks")
    assert error.startswith("HTTP 500: xxx") and len(error) < 300
    assert sent < 20_000_000, f"the worker read {sent} bytes of the answer"


async def _has_failed_callback(conn: asyncpg.Connection) -> bool:
    return bool(
        await conn.fetchval("SELECT count(*) FROM stats_worker.callbacks WHERE status = 'failed'")
    )


async def test_one_outcome_the_database_refuses_does_not_hold_back_the_rest(database_url, conn):
    """A deterministic write error (here a NUL in the error text) is bisected out."""
    ids = [await conn.fetchval("SELECT pgmq.send($1, '{}')", QUEUE) for _ in range(3)]
    await conn.fetch("SELECT msg_id FROM pgmq.read($1, 30, 3)", QUEUE)  # read_ct 1 each
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    settler = Settler(pool, QUEUE)
    flusher = asyncio.create_task(settler.run())
    try:
        now = datetime.now(UTC)
        good = [JobRun(i, "succeeded", 1, now, now, read_ct=1) for i in ids[:2]]
        bad = JobRun(ids[2], "retrying", 1, now, now, read_ct=1, error="a\x00b")
        settler.succeeded(good, ["job:good"])
        settler.retry(bad, 0.0)
        await asyncio.wait_for(settler.drained(), timeout=10)
    finally:
        flusher.cancel()
        await pool.close()
    left = [r["msg_id"] for r in await conn.fetch(f"SELECT msg_id FROM pgmq.q_{QUEUE}")]
    assert left == [ids[2]]  # the two good acks went through; the bad one waits its timeout
    assert await conn.fetchval("SELECT count(*) FROM stats_worker.callbacks") == 1
