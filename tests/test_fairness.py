"""One tenant's backlog on the live queue never holds up another tenant's messages.

Reads pass over a tenant once a whole recompute of it (``BATCH_SIZE``) waits in
the worker (``0016_fair_read.sql``), on every pgmq flavour: the pass-over read is
made on the queue table where pgmq has no way to say "not these groups".
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from tests.pgbouncer import PgBouncer
from tests.support import prepare_engine_table, running_worker, wait_for
from tests.support import worker_settings as settings_for_test
from worker.queue.pgmq import PassOver, Queue, send

PGMQ_MATRIX = True  # the pass-over read writes the queue table as each pgmq version reads

QUEUE = "stats_updates"
BACKLOG = 300
JOB_SECONDS = 0.02


async def finished(conn, job: str) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT count(*) FROM engine_runs WHERE job = $1 AND finished_at IS NOT NULL", job
        )
    )


async def test_a_message_behind_another_tenants_backlog_runs_at_once(database_url, conn):
    await _behind_a_backlog(database_url, conn, database_url)


async def test_the_same_through_a_transaction_pooler(database_url, conn, pgbouncer: PgBouncer):
    await _behind_a_backlog(
        database_url, conn, pgbouncer.url(database_url), database_statement_cache_size=0
    )


async def _behind_a_backlog(
    database_url: str, conn: asyncpg.Connection, worker_url: str, **overrides: Any
) -> None:
    await prepare_engine_table(database_url)
    # 300 messages of one tenant, then one of another, all before the worker starts:
    # strictly first in, first out, the second tenant would wait for 30 recomputes.
    await conn.execute(
        "SELECT pgmq.send_batch($1, array_agg(jsonb_build_object("
        "'job', 'flood-' || i, 'group', 'flood', 'sleep', $2::float8))) "
        "FROM generate_series(1, $3) AS i",
        QUEUE,
        JOB_SECONDS,
        BACKLOG,
    )
    await send(conn, QUEUE, {"job": "other", "group": "other"})
    settings = settings_for_test(worker_url, concurrency=2, batch_size=10, **overrides)
    async with running_worker(settings):
        await wait_for(lambda: finished(conn, "other"), interval=0.01)
        flood_done = await conn.fetchval(
            "SELECT count(*) FROM engine_runs WHERE job LIKE 'flood-%' AND finished_at IS NOT NULL"
        )
        biggest = await conn.fetchval("SELECT max(group_size) FROM engine_runs")
    # It ran while the backlog was still there: after at most a few of its recomputes.
    assert flood_done <= 4 * settings.batch_size, flood_done
    assert biggest <= settings.batch_size  # and no recompute ran more than BATCH_SIZE


async def test_the_pass_over_read_leaves_only_the_named_groups(conn):
    bodies = [
        {"group": "full", "n": 1},
        {"group": "FULL", "n": 2},  # the key's text in another case: still that group
        {"group": "other", "n": 3},
        {"n": 4},  # no group field
        {"group": {"full": 1}, "n": 5},  # not text
        [1, 2],  # not an object
        "full",
        None,  # SQL NULL: pgmq.send takes it
    ]
    for body in bodies:
        await conn.fetchval("SELECT pgmq.send($1, $2::jsonb)", QUEUE, body)
    queue = Queue(conn, QUEUE)
    read = await queue.read(30, 100, PassOver("group", ["full"]))
    got = [None if m.raw is None else json.loads(m.raw) for m in read]
    assert got == [b for b in bodies if not (isinstance(b, dict) and b.get("n") in (1, 2))]
    # Read as pgmq reads: counted, invisible for the timeout, stamped where pgmq stamps.
    rows = await conn.fetch(
        f"SELECT read_ct, vt > clock_timestamp() AS hidden, "
        f"to_jsonb(q) ? 'last_read_at' AS stamps, to_jsonb(q) ->> 'last_read_at' AS read_at "
        f"FROM pgmq.q_{QUEUE} AS q ORDER BY msg_id"
    )
    left, taken = rows[:2], rows[2:]
    assert [(r["read_ct"], r["hidden"]) for r in left] == [(0, False)] * 2
    assert [(r["read_ct"], r["hidden"]) for r in taken] == [(1, True)] * len(taken)
    if rows[0]["stamps"]:  # pgmq 1.13
        assert all(r["read_at"] is None for r in left)
        assert all(r["read_at"] is not None for r in taken)
    assert await queue.read(30, 100, PassOver("group", ["full"])) == []
    # Nothing to pass over: pgmq's own read takes the two left.
    assert [json.loads(m.raw)["n"] for m in await queue.read(30, 100)] == [1, 2]
