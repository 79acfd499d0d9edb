"""Cache invalidation against a real HTTP receiver and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import asyncpg
import pytest

from tests.receiver import Receiver, receiving
from tests.support import (
    ROOT,
    prepare_engine_table,
    running_worker,
    start_worker_process,
    wait_for,
    worker_settings,
)
from worker.app import default_handlers
from worker.callback.invalidator import CacheInvalidator
from worker.callback.posting import http_client, retry_after_seconds
from worker.core.metrics import REGISTRY
from worker.core.settings import Settings
from worker.queue.outcomes import Settler
from worker.queue.pgmq import send
from worker.queue.runs import Invalidation, JobRun
from worker.stats.handler import cache_tags
from worker.stats.league import complete_match, generate_league, write_clubs, write_scheduled

QUEUE = "stats_updates"
SECRET = "s3cret-token"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with receiving() as running:
        yield running


def callback_settings(database_url: str, receiver: Receiver | None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "cache_invalidation_url": receiver.url if receiver else None,
        "internal_secret": SECRET,
        "retry_base_seconds": 0.05,
        "retry_max_seconds": 0.2,
        "callback_timeout_seconds": 2.0,
        "callback_max_attempts": 50,
        **overrides,
    }
    return worker_settings(database_url, **values)


@contextlib.asynccontextmanager
async def background(*coroutines: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    """Run lifetime tasks for the block; one that dies fails the test."""
    tasks = [asyncio.create_task(c) for c in coroutines]
    try:
        yield
        for task in tasks:
            if task.done():
                task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def invalidating(pool: asyncpg.Pool, settings: Settings) -> AsyncIterator[CacheInvalidator]:
    async with http_client(settings) as client:
        invalidator = CacheInvalidator(pool, settings, client)
        async with background(invalidator.run()):
            yield invalidator


async def owe(conn: asyncpg.Connection, tags: Sequence[str], *, due_in: float = 30.0) -> int:
    """A callback row as settle_messages writes it; due now when ``due_in`` <= 0."""
    callback_id: int = await conn.fetchval(
        "INSERT INTO stats_worker.callbacks (msg_ids, tags, next_attempt_at)"
        " VALUES ('{1}', $1, now() + make_interval(secs => $2)) RETURNING id",
        list(tags),
        due_in,
    )
    return callback_id


async def submit(conn: asyncpg.Connection, invalidator: CacheInvalidator, tags: list[str]) -> int:
    callback_id = await owe(conn, tags)
    invalidator.submit(Invalidation(callback_id, tuple(tags)))
    return callback_id


async def row(conn: asyncpg.Connection, callback_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM stats_worker.callbacks WHERE id = $1", callback_id)


async def gone(conn: asyncpg.Connection, callback_id: int) -> bool:
    return await row(conn, callback_id) is None


def counted(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(f"stats_worker_{name}_total", labels) or 0.0


async def counted_more(name: str, before: float, **labels: str) -> None:
    """Wait until the counter has gone past ``before``."""

    async def more() -> bool:
        return counted(name, **labels) > before

    await wait_for(more)


async def test_a_settled_message_invalidates_its_tags_at_once(database_url, conn, pool, receiver):
    settings = callback_settings(database_url, receiver)
    tenant = uuid.uuid4()
    settler = Settler(pool, QUEUE)
    async with invalidating(pool, settings) as invalidator:
        settler.on_invalidation = invalidator.submit
        async with background(settler.run()):
            msg_id = await send(pool, QUEUE, {"tenant_id": str(tenant), "match_id": 7})
            now = datetime.now(UTC)
            run = JobRun(msg_id, "succeeded", 1, now, now, tenant, 7, now, 1.0)
            settler.succeeded([run], cache_tags([tenant]))
            # Well before the row's 30 s lease ends: the POST did not wait for a sweep.
            [request] = await receiver.wait_for_requests(1, timeout=5)
            await wait_for(lambda: _no_callbacks(conn))
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert request.headers["content-type"] == "application/json"
    assert request.body == {
        "tags": [
            "match_reports",
            f"match_reports:{tenant}",
            "player_stats",
            f"player_stats:{tenant}",
            "season_stats",
            f"season_stats:{tenant}",
            f"tenant:{tenant}",
        ]
    }


def test_cache_tags_are_sorted_and_scoped_to_each_tenant():
    a, b = "0000aaaa-0000-4000-8000-000000000000", "0000bbbb-0000-4000-8000-000000000000"
    tags = cache_tags([b, a, b])
    assert tags == sorted(tags)
    assert len(tags) == len(set(tags)) == 3 + 2 * 4
    assert {"player_stats", f"player_stats:{a}", f"season_stats:{b}", f"tenant:{a}"} <= set(tags)


async def test_a_tenants_recompute_sends_its_scoped_tags_and_none_of_another_tenants(
    database_url, conn, pool, receiver
):
    league = generate_league(seed=3, tenants=2, players=8, matches=4, side_min=3, side_max=4)
    a, b = league.tenants
    await write_clubs(conn, league)
    await write_scheduled(conn, list(league.matches()))  # scheduled: nothing to recompute
    match = next(m for m in a.matches if m.status == "completed")
    await complete_match(conn, match)  # the trigger enqueues tenant A's message
    async with running_worker(callback_settings(database_url, receiver), default_handlers):
        [request] = await receiver.wait_for_requests(1)
        await wait_for(lambda: _no_callbacks(conn))
    assert await conn.fetchval(
        "SELECT count(*) FROM stats.match_reports WHERE match_id = $1", match.id
    )
    assert request.body == {"tags": cache_tags([a.id])}
    assert {f"player_stats:{a.id}", f"season_stats:{a.id}", f"match_reports:{a.id}"} <= set(
        request.body["tags"]
    )
    assert not [tag for tag in request.body["tags"] if str(b.id) in tag]
    assert len(receiver.requests) == 1


async def _no_callbacks(conn: asyncpg.Connection) -> bool:
    return await conn.fetchval("SELECT count(*) FROM stats_worker.callbacks") == 0


async def test_without_a_secret_there_is_no_authorization_header(
    database_url, conn, pool, receiver
):
    settings = callback_settings(database_url, receiver, internal_secret=None)
    async with invalidating(pool, settings) as invalidator:
        callback_id = await submit(conn, invalidator, ["tenant:x", "player_stats", "tenant:x"])
        [request] = await receiver.wait_for_requests(1)
        await wait_for(lambda: gone(conn, callback_id))
    assert "authorization" not in request.headers
    assert request.body == {"tags": ["player_stats", "tenant:x"]}


async def test_server_errors_are_retried_until_delivered_once(database_url, conn, pool, receiver):
    receiver.answer_next(2, 503)
    errors_before, delivered_before = (
        counted("callback_attempts", status_class="5xx"),
        counted("callback_attempts", status_class="2xx"),
    )
    async with invalidating(pool, callback_settings(database_url, receiver)) as invalidator:
        callback_id = await submit(conn, invalidator, ["season_stats"])
        await wait_for(lambda: gone(conn, callback_id))
    assert [r.body for r in receiver.requests] == [{"tags": ["season_stats"]}] * 3
    assert counted("callback_attempts", status_class="5xx") - errors_before == 2
    assert counted("callback_attempts", status_class="2xx") - delivered_before == 1


async def test_an_invalidation_waits_in_the_table_while_the_app_is_down(
    database_url, conn, pool, receiver
):
    await receiver.stop()
    async with invalidating(pool, callback_settings(database_url, receiver)) as invalidator:
        callback_id = await submit(conn, invalidator, ["match_reports"])
        await wait_for(lambda: _attempted(conn, callback_id, 3))
        waiting = await row(conn, callback_id)
        assert waiting is not None
        assert waiting["status"] == "pending"
        assert "ConnectError" in waiting["last_error"]
        await receiver.start()
        await wait_for(lambda: gone(conn, callback_id))
    assert [r.body for r in receiver.requests] == [{"tags": ["match_reports"]}]


async def _attempted(conn: asyncpg.Connection, callback_id: int, attempts: int) -> bool:
    found = await row(conn, callback_id)
    return found is not None and found["attempts"] >= attempts


async def test_a_rejected_invalidation_fails_at_once_and_loudly(
    database_url, conn, pool, receiver, caplog
):
    caplog.set_level(logging.INFO)
    receiver.answer_always(401, body=f"invalid token {SECRET}")
    rejected_before = counted("callback_failures", reason="rejected")
    async with invalidating(pool, callback_settings(database_url, receiver)) as invalidator:
        callback_id = await submit(conn, invalidator, ["player_stats"])
        await counted_more("callback_failures", rejected_before, reason="rejected")
        await asyncio.sleep(0.5)  # several retry delays: none comes
    assert len(receiver.requests) == 1
    failed = await row(conn, callback_id)
    assert failed is not None
    assert (failed["status"], failed["attempts"]) == ("failed", 1)
    assert failed["last_error"] == "HTTP 401: invalid token ***"
    assert counted("callback_failures", reason="rejected") - rejected_before == 1
    [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert error.status == 401
    assert error.callback_id == callback_id
    assert all(SECRET not in str(record.__dict__) for record in caplog.records)


async def test_a_redirect_fails_at_once_and_names_its_location(
    database_url, conn, pool, receiver, caplog
):
    # The usual cause: the route sits behind the app's login middleware.
    login = f"https://app.example/login?token={SECRET}&next=" + "x" * 500
    receiver.answer_always(302, headers={"Location": login})
    attempts_before = counted("callback_attempts", status_class="3xx")
    rejected_before = counted("callback_failures", reason="rejected")
    async with invalidating(pool, callback_settings(database_url, receiver)) as invalidator:
        callback_id = await submit(conn, invalidator, ["player_stats"])
        await counted_more("callback_failures", rejected_before, reason="rejected")
        await asyncio.sleep(0.5)  # several retry delays: none comes
    assert len(receiver.requests) == 1
    failed = await row(conn, callback_id)
    assert failed is not None
    assert (failed["status"], failed["attempts"]) == ("failed", 1)
    assert failed["last_error"].startswith(
        "HTTP 302 redirect to https://app.example/login?token=***"
    )
    assert counted("callback_attempts", status_class="3xx") - attempts_before == 1
    [error] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert error.levelno == logging.ERROR
    assert error.callback_id == callback_id
    message = error.getMessage()
    assert message.startswith("cache endpoint redirected (302) to https://app.example/login?")
    assert "set CACHE_INVALIDATION_URL to the final URL" in message
    assert "login page" in message
    assert "x" * 200 not in message  # the Location is cut to 200 characters
    assert all(SECRET not in str(record.__dict__) for record in caplog.records)


async def test_a_relative_redirect_is_not_followed(database_url, conn, pool, receiver):
    # A 308 keeps the POST: followed, it would reach the receiver a second time.
    receiver.answer_always(308, headers={"Location": "/hook/"})
    async with invalidating(pool, callback_settings(database_url, receiver)) as invalidator:
        callback_id = await submit(conn, invalidator, ["season_stats"])
        await wait_for(lambda: _failed(conn, callback_id))
    assert [r.path for r in receiver.requests] == ["/hook"]
    failed = await row(conn, callback_id)
    assert failed is not None
    assert failed["last_error"] == f"HTTP 308 redirect to {receiver.url}/"


async def _failed(conn: asyncpg.Connection, callback_id: int) -> bool:
    found = await row(conn, callback_id)
    return found is not None and found["status"] == "failed"


async def test_an_invalidation_fails_when_its_attempts_run_out(
    database_url, conn, pool, receiver, caplog
):
    receiver.answer_always(500)
    exhausted_before = counted("callback_failures", reason="attempts_exhausted")
    settings = callback_settings(database_url, receiver, callback_max_attempts=3)
    async with invalidating(pool, settings) as invalidator:
        callback_id = await submit(conn, invalidator, ["player_stats"])
        await counted_more("callback_failures", exhausted_before, reason="attempts_exhausted")
    assert len(receiver.requests) == 3
    failed = await row(conn, callback_id)
    assert failed is not None
    assert (failed["status"], failed["attempts"], failed["last_error"]) == ("failed", 3, "HTTP 500")
    assert counted("callback_failures", reason="attempts_exhausted") - exhausted_before == 1
    assert any(
        r.levelno == logging.ERROR and "attempts exhausted" in r.getMessage()
        for r in caplog.records
    )


async def test_too_many_requests_waits_as_long_as_retry_after_says(
    database_url, conn, pool, receiver
):
    receiver.answer_next(1, 429, headers={"Retry-After": "1"})
    async with invalidating(pool, callback_settings(database_url, receiver)) as invalidator:
        callback_id = await submit(conn, invalidator, ["season_stats"])
        await wait_for(lambda: gone(conn, callback_id))
    first, second = receiver.requests
    # Without the header the next attempt would come within retry_max_seconds (0.2 s).
    assert second.at - first.at >= 0.9


def test_retry_after_is_read_as_seconds_or_as_a_date():
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert retry_after_seconds("120", now) == 120
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30
    assert retry_after_seconds(format_datetime(now - timedelta(hours=1), usegmt=True), now) == 0
    assert retry_after_seconds("soon", now) is None
    assert retry_after_seconds(None, now) is None


async def test_rows_a_crashed_worker_left_are_swept_into_one_post(
    database_url, conn, pool, receiver
):
    left = [
        await owe(conn, ["player_stats", "tenant:a"], due_in=-5),
        await owe(conn, ["player_stats", "tenant:b"], due_in=-3),
        await owe(conn, ["season_stats", "tenant:a"], due_in=-1),
    ]
    async with invalidating(pool, callback_settings(database_url, receiver)):
        [request] = await receiver.wait_for_requests(1)
        for callback_id in left:
            await wait_for(lambda callback_id=callback_id: gone(conn, callback_id))
    assert request.body == {"tags": ["player_stats", "season_stats", "tenant:a", "tenant:b"]}


async def test_two_replicas_never_send_one_row_twice(database_url, conn, pool, receiver):
    receiver.answer_always(204, delay=0.3)
    for i in range(20):
        await owe(conn, [f"row:{i}"], due_in=-1)
    settings = callback_settings(database_url, receiver)
    async with invalidating(pool, settings), invalidating(pool, settings):
        await wait_for(lambda: _no_callbacks(conn))
        await asyncio.sleep(0.5)  # a second send would arrive within the receiver's delay
    sent = [tag for request in receiver.requests for tag in request.body["tags"]]
    assert sorted(sent) == sorted(f"row:{i}" for i in range(20))


async def test_without_a_url_invalidations_are_dropped_with_one_warning(
    database_url, conn, pool, caplog
):
    caplog.set_level(logging.INFO)
    orphan = await owe(conn, ["player_stats"], due_in=-1)
    async with invalidating(pool, callback_settings(database_url, None)) as invalidator:
        submitted = await submit(conn, invalidator, ["season_stats"])
        await wait_for(lambda: gone(conn, submitted))
        await wait_for(lambda: gone(conn, orphan))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["CACHE_INVALIDATION_URL is not set: cache invalidation is off"]


async def test_a_run_that_fails_still_invalidates_what_it_may_have_committed(
    database_url, pool, receiver
):
    """Each statistic commits on its own: a recompute that fails halfway changed some."""
    await prepare_engine_table(database_url)
    settings = callback_settings(database_url, receiver, max_attempts=1)
    async with running_worker(settings):
        await send(pool, QUEUE, {"job": "half-done", "fail_times": 9})
        [request] = await receiver.wait_for_requests(1, timeout=10)
    assert request.body == {"tags": ["job:half-done"]}


async def test_rebuild_posts_the_tags_of_the_tenants_it_rebuilt(database_url, conn, receiver):
    league = generate_league(seed=2, tenants=2, players=8, matches=6, side_min=3, side_max=4)
    await write_clubs(conn, league)
    await write_scheduled(conn, list(league.matches()))
    rebuilt = league.tenants[0].id
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker.cli", "rebuild", "--tenant", str(rebuilt),
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url, "CACHE_INVALIDATION_URL": receiver.url,
             "INTERNAL_SECRET": SECRET, "LOG_FORMAT": "json"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()
    assert "posted the cache invalidation of every rebuilt tenant" in out.decode()
    [request] = receiver.requests
    assert request.body == {"tags": cache_tags([rebuilt])}
    assert request.headers["authorization"] == f"Bearer {SECRET}"


async def test_a_worker_killed_mid_recompute_still_owes_the_invalidation(database_url, conn, pool):
    """Written before the work starts, the invalidation survives the worker's death."""
    await prepare_engine_table(database_url)
    process = start_worker_process(database_url)
    try:
        await send(pool, QUEUE, {"job": "doomed", "sleep": 30})
        await wait_for(lambda: _job_started(conn, "doomed"), timeout=20)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        process.kill()
    [owed] = await conn.fetch(
        "SELECT tags, status, next_attempt_at > now() AS later FROM stats_worker.callbacks"
    )
    assert owed["tags"] == ["job:doomed"] and owed["status"] == "pending" and owed["later"]


async def test_a_recompute_changes_nothing_before_its_write_ahead_row_commits(
    database_url, conn, pool, receiver
):
    """The scope is read while the write-ahead row commits; the statistics wait for it."""
    league = generate_league(seed=5, tenants=1, players=8, matches=3, side_min=3, side_max=4)
    await write_clubs(conn, league)
    await write_scheduled(conn, list(league.matches()))
    match = next(m for m in league.matches() if m.status == "completed")
    await complete_match(conn, match)
    holder = await asyncpg.connect(database_url)
    try:
        tx = holder.transaction()
        await tx.start()
        # Lets the worker read (its scope, its job records) but not insert the row.
        await holder.execute("LOCK TABLE stats_worker.callbacks IN SHARE MODE")
        async with running_worker(callback_settings(database_url, receiver), default_handlers):
            try:
                await wait_for(lambda: _inserting_a_callback(conn), timeout=20)
                await asyncio.sleep(0.5)  # time for a recompute that did not wait to write
                reported_while_held = await _reported(conn, match.id)
            finally:
                await tx.rollback()  # before the worker stops: its settle needs the table
            [request] = await receiver.wait_for_requests(1, timeout=20)
        assert not reported_while_held, "the statistics changed before the write-ahead row"
        assert await _reported(conn, match.id)
        assert request.body == {"tags": cache_tags([league.tenants[0].id])}
    finally:
        await holder.close()


async def _inserting_a_callback(conn: asyncpg.Connection) -> bool:
    waiting: int = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        " AND query LIKE '%INSERT INTO stats_worker.callbacks%'"
    )
    return waiting > 0


async def _reported(conn: asyncpg.Connection, match_id: int) -> bool:
    found: int = await conn.fetchval(
        "SELECT count(*) FROM stats.match_reports WHERE match_id = $1", match_id
    )
    return found > 0


async def test_a_settled_run_leaves_no_write_ahead_row(database_url, conn, pool, receiver):
    await prepare_engine_table(database_url)
    async with running_worker(callback_settings(database_url, receiver)):
        await send(pool, QUEUE, {"job": "fine"})
        await receiver.wait_for_requests(1, timeout=10)
        await wait_for(lambda: _no_callbacks(conn))
    assert [r.body for r in receiver.requests] == [{"tags": ["job:fine"]}]


async def _job_started(conn, job: str) -> bool:
    return bool(await conn.fetchval("SELECT count(*) FROM engine_runs WHERE job = $1", job))
