"""Hypothesis sends what it likes straight into the queue of a real worker.

Bodies are generated as jsonb text (any shape, depth up to 3,000, integers of
thousands of digits, any unicode, wrong types, other tenants' ids, unknown
tenants and matches) and mixed with good changes of a real league. After each
drain the worker is still there, every message ended succeeded or dead with a
reason, and the statistics equal a from-scratch computation.
"""

from __future__ import annotations

import asyncio
import json

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import reference
from tests.support import drain_stats
from worker.core.database import init_connection
from worker.stats.league import complete_match, generate_league, write_clubs, write_scheduled

QUEUE = "stats_updates"
LEAGUE = generate_league(seed=91, tenants=2, players=10, matches=14, side_min=3, side_max=5)
TENANTS = [t.id for t in LEAGUE.tenants]
MATCH_IDS = [m.id for m in LEAGUE.matches()]
PLAYER_IDS = [p for t in LEAGUE.tenants for p in t.players]

# jsonb cannot hold U+0000; anything else goes.
texts = st.text(st.characters(blacklist_characters="\x00"), max_size=30)
json_scalars = st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False)
json_scalars |= st.integers(-(10**30), 10**30) | texts
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=20,
)


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


@st.composite
def bodies(draw: st.DrawFn) -> str:
    """One message body as jsonb text: mostly stats-shaped, often broken."""
    shape = draw(st.integers(0, 5))
    if shape == 0:
        return json.dumps(draw(json_values))
    if shape == 1:
        return _deep(draw(st.integers(30, 3000)))
    body: dict[str, object] = {
        "tenant_id": draw(
            st.sampled_from([str(t) for t in TENANTS]) | st.uuids().map(str) | json_scalars
        ),
        "match_id": draw(st.sampled_from(MATCH_IDS) | st.integers(-(2**70), 2**70) | json_scalars),
    }
    if draw(st.booleans()):
        body["player_ids"] = draw(
            st.lists(st.sampled_from(PLAYER_IDS) | st.integers(-(2**64), 2**64), max_size=6)
            | json_values
        )
    if draw(st.booleans()):
        body["since"] = draw(
            st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()) | json_scalars
        )
    if draw(st.booleans()):
        body[draw(texts)] = draw(json_values)
    text = json.dumps(body)
    if shape == 5:  # a number PostgreSQL keeps and Python refuses to read
        text = text[:-1] + ', "huge": ' + "7" * draw(st.integers(4301, 6000)) + "}"
    return text


async def _setup(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        if not await conn.fetchval("SELECT count(*) FROM tenants"):
            await write_clubs(conn, LEAGUE)
            await write_scheduled(conn, list(LEAGUE.matches()))
    finally:
        await conn.close()


async def _send_raw(conn: asyncpg.Connection, body: str) -> int | None:
    """The body on the queue, or None when PostgreSQL itself refuses it as JSON (an
    unpaired surrogate escape, say): such a body can never reach a queue."""
    try:
        msg_id: int = await conn.fetchval("SELECT pgmq.send($1, $2::text::jsonb)", QUEUE, body)
    except (asyncpg.InvalidTextRepresentationError, asyncpg.UntranslatableCharacterError):
        return None
    return msg_id


async def _round(database_url: str, raw_bodies: list[str], good: int) -> None:
    conn = await asyncpg.connect(database_url)
    await init_connection(conn)
    try:
        sent = [msg_id for b in raw_bodies if (msg_id := await _send_raw(conn, b)) is not None]
        for match in list(LEAGUE.matches())[good : good + 3]:
            await complete_match(conn, match)
        await drain_stats(database_url, concurrency=2, max_attempts=2)
        runs = {
            r["msg_id"]: r
            for r in await conn.fetch(
                "SELECT msg_id, status, last_error FROM stats_worker.job_runs"
                " WHERE msg_id = ANY($1)",
                sent,
            )
        }
        assert set(runs) == set(sent)
        for run in runs.values():
            assert run["status"] in {"succeeded", "dead"}, run
            if run["status"] == "dead":
                assert run["last_error"], run
        assert not await conn.fetchval(f"SELECT count(*) FROM pgmq.q_{QUEUE}")
        await reference.assert_stats_match_reference(conn)
    finally:
        await conn.close()


ROUND = iter(range(0, len(MATCH_IDS), 3))


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw_bodies=st.lists(bodies(), min_size=4, max_size=14))
def test_whatever_the_queue_holds_the_worker_settles_it_and_stays_exact(database_url, raw_bodies):
    asyncio.run(_setup(database_url))
    asyncio.run(_round(database_url, raw_bodies, next(ROUND, 0)))
