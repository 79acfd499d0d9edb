"""No secret ever reaches an output, whatever goes wrong.

A real worker process is configured with a database password full of URL
metacharacters, a cache secret, an admin token and a webhook whose path is its
secret; then everything that makes it talk goes wrong: the cache endpoint and
the webhook echo the secrets back in 500 bodies and in redirects, a message is
dead-lettered, wrong tokens knock on the operator API, its database
connections are killed. Every byte it printed is searched for each secret, raw
and URL-encoded.
"""

from __future__ import annotations

import signal
import socket
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import httpx

from tests.receiver import receiving
from tests.support import prepare_engine_table, process_log, start_worker_process, wait_for
from worker.queue.pgmq import send

PASSWORD = "pw#with@odd/chars:and%percent"
INTERNAL_SECRET = "cache-secret-4fa1c9d2"
ADMIN_TOKEN = "admin-token-8b7e6a5f"
WEBHOOK_SECRET = "T000/B000/hook-secret-77aa"
QUEUE = "stats_updates"


def _with_password(dsn: str) -> str:
    parts = urlsplit(dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"postgres:{quote(PASSWORD, safe='')}@{host}"))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_nothing_the_worker_prints_holds_a_secret(database_url, conn, pool):
    await prepare_engine_table(database_url)
    secrets = [PASSWORD, INTERNAL_SECRET, ADMIN_TOKEN, WEBHOOK_SECRET]
    echo = " ".join(secrets)
    # The alerts have a receiver of their own: the cache endpoint's scripted
    # answers must all go to cache invalidations, whatever the order of the POSTs.
    async with receiving() as receiver, receiving() as alerts:
        receiver.answer_next(3, 500, body=f"upstream said: {echo}")
        receiver.answer_next(1, 302, headers={"Location": f"https://login.example/?t={echo}"})
        port = _free_port()
        process = start_worker_process(
            _with_password(database_url),
            CACHE_INVALIDATION_URL=receiver.url,
            INTERNAL_SECRET=INTERNAL_SECRET,
            ADMIN_TOKEN=ADMIN_TOKEN,
            ALERT_WEBHOOK_URL=f"{alerts.url}/{WEBHOOK_SECRET}",
            ALERT_MIN_INTERVAL_SECONDS="0",
            CALLBACK_RETRY_BASE_SECONDS="0.1",
            CALLBACK_MAX_ATTEMPTS="4",
            MAX_ATTEMPTS="1",
            LOG_LEVEL="DEBUG",
            PORT=str(port),
        )
        try:
            for i in range(4):
                await send(pool, QUEUE, {"job": f"j{i}"})
            await send(pool, QUEUE, {"not": "an engine job"})  # dead letter → alert
            await send(pool, QUEUE, {"job": "fails", "fail_times": 5})
            await wait_for(lambda: _requests_at_least(receiver, 4), timeout=30)
            await wait_for(lambda: _dead_lettered(conn), timeout=30)
            await wait_for(lambda: _requests_at_least(alerts, 1), timeout=30)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                for guess in (ADMIN_TOKEN[:-1], f"{ADMIN_TOKEN}x", "nothing"):
                    await client.get("/jobs", headers={"Authorization": f"Bearer {guess}"})
                await client.get("/health")
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'stats-worker' AND datname = current_database() "
                "AND pid <> pg_backend_pid()"
            )
            after = await send(pool, QUEUE, {"job": "after-reconnect"})
            await wait_for(lambda: _succeeded(conn, after), timeout=30)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
    printed = process_log(process)
    assert "dead-lettered" in printed and "cache endpoint" in printed  # it did talk
    for secret in secrets:
        for form in {secret, quote(secret, safe=""), quote(secret)}:
            assert form not in printed, f"{secret!r} appeared in the worker's output"
    stored = " ".join(
        str(v) for r in await conn.fetch("SELECT last_error FROM stats_worker.callbacks") for v in r
    )
    for secret in secrets:
        assert secret not in stored


async def _dead_lettered(conn: asyncpg.Connection) -> bool:
    return bool(
        await conn.fetchval("SELECT count(*) FROM stats_worker.job_runs WHERE status = 'dead'")
    )


async def _succeeded(conn: asyncpg.Connection, msg_id: int) -> bool:
    status = await conn.fetchval(
        "SELECT status FROM stats_worker.job_runs WHERE msg_id = $1", msg_id
    )
    return bool(status == "succeeded")


async def _requests_at_least(receiver: object, count: int) -> bool:
    return len(receiver.requests) >= count  # type: ignore[attr-defined]
