"""The HTTP side over real TCP: /health, /metrics, the operator API, and the refresher."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from importlib import metadata
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import (
    drain_stats,
    prepare_engine_table,
    running_worker,
    wait_for,
    worker_settings,
)
from worker.app import Worker
from worker.callback.invalidator import CacheInvalidator
from worker.callback.posting import http_client
from worker.core import metrics
from worker.core.database import open_pool
from worker.core.status import WorkerStatus
from worker.queue.pgmq import send
from worker.upkeep.alerts import DeadLetterAlerter
from worker.web.http import create_app
from worker.web.refresher import QueueSnapshots, refresh_gauges, refresh_once
from worker.web.server import bind_socket, serve

QUEUE = "stats_updates"
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@contextlib.asynccontextmanager
async def serving(
    worker: Worker, snapshots: QueueSnapshots | None = None, host: str = "127.0.0.1"
) -> AsyncIterator[httpx.AsyncClient]:
    """The worker's app on a real socket (port 0), and a client that talks to it."""
    port_known: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve(create_app(worker, snapshots), worker.settings, port_known.set_result)
    )
    done, _ = await asyncio.wait({task, port_known}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    base = f"http://{host if ':' not in host else f'[{host}]'}:{port_known.result()}"
    try:
        async with httpx.AsyncClient(base_url=base, trust_env=False, timeout=10) as client:
            yield client
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def bare_worker(
    database_url: str, status: WorkerStatus | None = None, **overrides: Any
) -> AsyncIterator[Worker]:
    """A worker's parts without its consumer: the HTTP side alone."""
    values: dict[str, Any] = {"host": "127.0.0.1", "admin_token": TOKEN, **overrides}
    settings = worker_settings(database_url, **values)
    async with open_pool(database_url, settings) as pool, http_client(settings) as client:
        yield Worker(
            settings,
            pool,
            status or WorkerStatus.now(),
            invalidator=CacheInvalidator(pool, settings, client),
            alerter=DeadLetterAlerter(settings, client),
        )


async def _status_of(client: httpx.AsyncClient, msg_id: int, status: str) -> bool:
    response = await client.get(f"/jobs/{msg_id}", headers=AUTH)
    return response.status_code == 200 and response.json()["status"] == status


# -- /health -------------------------------------------------------------------------------


async def test_health_describes_a_running_worker(database_url, pool):
    await prepare_engine_table(database_url)
    later = datetime.now(UTC) + timedelta(hours=1)
    await send(pool, QUEUE, {"job": "not-yet"}, later)
    settings = worker_settings(database_url, host="127.0.0.1")
    async with running_worker(settings) as worker, serving(worker) as client:
        await wait_for(lambda: _async(worker.status.listener_connected))
        response = await client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"] == "ok"
    assert 0 <= body["last_poll_age_seconds"] < 5
    assert body["listener"] == "connected"
    assert body["queue"]["depth"] == 1
    assert body["queue"]["visible"] == 0
    assert body["queue"]["oldest_age_seconds"] >= 0
    assert body["in_flight"] == 0
    assert body["stopping"] is False
    assert body["version"] == metadata.version("stats-worker")


async def _async(value: bool) -> bool:
    return value


async def test_health_is_503_while_the_database_is_unreachable_then_recovers(
    server_dsn, database_url
):
    name = urlsplit(database_url).path.lstrip("/")
    admin = await asyncpg.connect(server_dsn)
    try:
        async with bare_worker(database_url) as worker, serving(worker) as client:
            assert (await client.get("/health")).status_code == 200

            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            await admin.execute(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
                " WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
            for _ in range(2):  # the broken connection, then a failed reconnect
                response = await client.get("/health")
                assert response.status_code == 503
                body = response.json()
                assert body["status"] == "unavailable"
                assert body["database"] == "unreachable"
                # Anyone may ask /health: no address, no server message.
                assert body["reason"] == "database unreachable"
                assert "127.0.0.1" not in response.text and "accepting" not in response.text
            response = await client.get("/queue", headers=AUTH)
            assert response.status_code == 503
            assert response.json()["error"] == "database unreachable"

            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            response = await client.get("/health")
            assert response.status_code == 200
            assert response.json()["database"] == "ok"
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()


async def test_health_reports_a_stalled_consumer_unless_it_is_stopping(database_url):
    status = WorkerStatus(started_at=time.time() - 120, last_poll_at=time.time() - 90)
    worker_parts = bare_worker(database_url, status, stall_after_seconds=60)
    async with worker_parts as worker, serving(worker) as client:
        response = await client.get("/health")
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "stalled"
        assert body["database"] == "ok"
        assert "STALL_AFTER_SECONDS=60" in body["reason"]
        assert body["last_poll_age_seconds"] >= 90

        status.stopping = True
        response = await client.get("/health")
        assert response.status_code == 200
        assert response.json()["stopping"] is True

        status.stopping = False
        status.last_poll_at = time.time()
        assert (await client.get("/health")).status_code == 200


# -- /metrics ------------------------------------------------------------------------------

BASE_UNIT_SUFFIXES = ("_seconds", "_bytes")
TIME_WORDS = re.compile(r"(^|_)(duration|latency|age|time|timestamp|elapsed|delay|lag)(_|$)")
NON_BASE_UNITS = re.compile(
    r"(^|_)(ms|us|ns|millis|milliseconds|microseconds|minutes|hours|days|kb|mb|gb|percent)(_|$)"
)
FORBIDDEN_LABELS = {"tenant", "tenant_id", "match", "match_id", "player", "player_id", "msg_id"}


def naming_problems(text: str) -> list[str]:
    """Every way the exposition breaks the metric naming conventions."""
    problems = []
    declared = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.MULTILINE))
    for name, kind in declared.items():
        if not re.fullmatch(r"stats_worker(_[a-z0-9]+)+", name):
            problems.append(f"{name}: not snake_case with the stats_worker_ prefix")
        if (kind == "counter") != name.endswith("_total"):
            problems.append(f"{name}: counters, and only counters, end in _total")
        base = name.removesuffix("_total")
        if NON_BASE_UNITS.search(base):
            problems.append(f"{name}: use base units (seconds, bytes)")
        if TIME_WORDS.search(base) and not base.endswith("_seconds"):
            problems.append(f"{name}: a time needs the _seconds suffix")
        if kind in {"histogram", "summary"} and not base.endswith(BASE_UNIT_SUFFIXES):
            problems.append(f"{name}: a {kind} needs a unit suffix")
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for label in FORBIDDEN_LABELS & set(sample.labels):
                problems.append(f"{sample.name}: label {label!r} has unbounded cardinality")
    return problems


def test_the_convention_check_catches_bad_names():
    exposition = (
        "# TYPE stats_worker_jobs counter\n"
        "# TYPE requests_total counter\n"
        "# TYPE stats_worker_depth_total gauge\n"
        "# TYPE stats_worker_job_duration_ms histogram\n"
        "# TYPE stats_worker_oldest_age gauge\n"
        "# TYPE stats_worker_runs_total counter\n"
        'stats_worker_runs_total{tenant_id="x"} 1\n'
        "# TYPE stats_worker_fine_total counter\n"
        "# TYPE stats_worker_fine_created gauge\n"
        "# TYPE stats_worker_wait_seconds histogram\n"
    )
    flagged = {problem.split(":")[0] for problem in naming_problems(exposition)}
    assert flagged == {
        "stats_worker_jobs",
        "requests_total",
        "stats_worker_depth_total",
        "stats_worker_job_duration_ms",
        "stats_worker_oldest_age",
        "stats_worker_runs_total",
    }


async def test_metrics_parse_and_every_name_follows_the_conventions(database_url, pool):
    await prepare_engine_table(database_url)
    msg_id = await send(pool, QUEUE, {"job": "counted"})
    settings = worker_settings(database_url, host="127.0.0.1")
    async with running_worker(settings) as worker, serving(worker) as client:
        await refresh_once(worker, QueueSnapshots())
        await wait_for(lambda: _status_of_job(worker, msg_id, "succeeded"))
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    for expected in (
        "stats_worker_messages",
        "stats_worker_job_duration_seconds",
        "stats_worker_queue_messages",
        "stats_worker_pool_connections",
    ):
        assert expected in families
    samples = {s.name for s in families["stats_worker_messages"].samples}
    assert "stats_worker_messages_total" in samples
    assert naming_problems(response.text) == []


async def _status_of_job(worker: Worker, msg_id: int, status: str) -> bool:
    from worker.queue import jobs

    job = await jobs.get_job(worker.pool, QUEUE, msg_id)
    return job is not None and job.status == status


# -- the refresher -------------------------------------------------------------------------


async def test_the_refresher_sets_the_gauges_and_keeps_going_without_a_database(database_url, pool):
    await send(pool, QUEUE, {"job": "now"})
    await send(pool, QUEUE, {"job": "later"}, datetime.now(UTC) + timedelta(hours=1))
    async with bare_worker(database_url, metrics_refresh_seconds=0.05) as worker:
        snapshots = QueueSnapshots()
        assert await refresh_once(worker, snapshots) is None
        depth = snapshots.fresh(QUEUE, 60)
        assert depth is not None and depth.length == 2 and depth.visible == 1

        def sample(name: str, **labels: str) -> float | None:
            return metrics.REGISTRY.get_sample_value(name, labels)

        assert sample("stats_worker_queue_messages", queue=QUEUE, state="total") == 2
        assert sample("stats_worker_queue_messages", queue=QUEUE, state="visible") == 1
        assert sample("stats_worker_queue_oldest_message_age_seconds", queue=QUEUE) is not None
        assert sample("stats_worker_pool_connections", state="max") == 6
        assert (sample("stats_worker_pool_connections", state="open") or 0) >= 1

        await worker.pool.close()
        assert await refresh_once(worker, snapshots) is not None
        task = asyncio.create_task(refresh_gauges(worker, snapshots))
        await asyncio.sleep(0.3)
        assert not task.done()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_health_uses_the_refreshers_depth_while_it_is_fresh(database_url):
    async with bare_worker(database_url) as worker:
        snapshots = QueueSnapshots()
        await refresh_once(worker, snapshots)
        await send(worker.pool, QUEUE, {"job": "unseen"})
        async with serving(worker, snapshots) as client:
            assert (await client.get("/health")).json()["queue"]["depth"] == 0
            await refresh_once(worker, snapshots)
            assert (await client.get("/health")).json()["queue"]["depth"] == 1


# -- the operator API ----------------------------------------------------------------------


async def test_the_operator_api_is_off_without_an_admin_token(database_url):
    async with bare_worker(database_url, admin_token=None) as worker, serving(worker) as client:
        for response in (await client.get("/jobs"), await client.get("/queue", headers=AUTH)):
            assert response.status_code == 403
            assert response.json() == {"error": "operator API disabled: set ADMIN_TOKEN"}


async def test_the_operator_api_needs_the_bearer_token(database_url):
    async with bare_worker(database_url) as worker, serving(worker) as client:
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": f"Basic {TOKEN}"},
            {"Authorization": "Bearer"},
        ):
            response = await client.get("/jobs", headers=headers)
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == "Bearer"
            assert "error" in response.json()
        response = await client.get("/jobs", headers=AUTH)
        assert response.status_code == 200
        assert response.json() == {"jobs": []}


async def test_operators_see_outcomes_and_bring_a_dead_letter_back(database_url, pool):
    await prepare_engine_table(database_url)
    ok_id = await send(pool, QUEUE, {"job": "fine"})
    dead_id = await send(pool, QUEUE, {"job": "doomed", "fail_times": 1})
    settings = worker_settings(database_url, host="127.0.0.1", admin_token=TOKEN, max_attempts=1)
    async with running_worker(settings) as worker, serving(worker) as client:
        await wait_for(lambda: _status_of(client, ok_id, "succeeded"))
        await wait_for(lambda: _status_of(client, dead_id, "dead"))

        ok = (await client.get(f"/jobs/{ok_id}", headers=AUTH)).json()
        assert ok["attempts"] == 1
        assert datetime.fromisoformat(ok["finished_at"]) >= datetime.fromisoformat(ok["started_at"])
        dead = (await client.get(f"/jobs/{dead_id}", headers=AUTH)).json()
        assert "planned failure 1 of 1" in dead["last_error"]
        assert dead["message"] == {"job": "doomed", "fail_times": 1}
        listed = (await client.get("/jobs?status=dead&limit=10", headers=AUTH)).json()["jobs"]
        assert [job["msg_id"] for job in listed] == [dead_id]

        response = await client.post(f"/jobs/{dead_id}/retry", headers=AUTH)
        assert response.status_code == 200
        new_id = response.json()["msg_id"]
        assert response.json()["retry_of"] == dead_id
        await wait_for(lambda: _status_of(client, new_id, "succeeded"))

        again = await client.post(f"/jobs/{dead_id}/retry", headers=AUTH)
        assert again.status_code == 409
        assert f"message {dead_id} is not a dead letter" in again.json()["error"]
        retried = (await client.get(f"/jobs/{dead_id}", headers=AUTH)).json()
        assert (retried["status"], retried["retried_as"]) == ("retried", new_id)
        assert (await client.post(f"/jobs/{ok_id}/retry", headers=AUTH)).status_code == 409
        assert (await client.post("/jobs/987654/retry", headers=AUTH)).status_code == 404
        assert (await client.get("/jobs/987654", headers=AUTH)).status_code == 404
        assert (await client.get("/jobs/not-a-number", headers=AUTH)).status_code == 404

        summary = (await client.get("/queue", headers=AUTH)).json()
    assert summary["queue"] == QUEUE
    assert summary["succeeded_last_24h"] == 2
    assert summary["retried_last_24h"] == 1
    assert summary["dead_last_24h"] == 0
    assert summary["waiting"] == 0
    for key in ("running", "mean_duration_ms", "p95_duration_ms", "oldest_waiting_seconds"):
        assert key in summary
    assert summary["failed_callbacks"] == 0


async def test_queue_rounds_its_figures_to_a_tenth(database_url, pool):
    await pool.execute(
        "INSERT INTO stats_worker.job_runs (queue_name, msg_id, status, attempts, enqueued_at,"
        " started_at, finished_at, duration_ms)"
        " SELECT $1, n, 'succeeded', 1, now(), now(), now(), d"
        " FROM unnest($2::float8[]) WITH ORDINALITY AS t(d, n)",
        QUEUE,
        [10.04, 20.17, 33.339],
    )
    waiting = await send(pool, QUEUE, {"job": "waiting"})
    await pool.execute(
        f"UPDATE pgmq.q_{QUEUE} SET enqueued_at = now() - interval '12.3456 s' WHERE msg_id = $1",
        waiting,
    )
    async with bare_worker(database_url) as worker, serving(worker) as client:
        summary = (await client.get("/queue", headers=AUTH)).json()
    assert summary["mean_duration_ms"] == 21.2  # 21.183
    assert summary["p95_duration_ms"] == 32.0  # 32.0221
    assert summary["succeeded_per_minute"] == 0.6
    assert 12.3 <= summary["oldest_waiting_seconds"] < 20
    figures = [value for value in summary.values() if isinstance(value, float)]
    assert len(figures) == 5  # also dead_per_minute
    assert all(value == round(value, 1) for value in figures), summary


async def test_the_operator_api_reaches_the_bulk_queue_by_name(database_url, pool):
    bulk = f"{QUEUE}_bulk"
    await pool.execute("SELECT pgmq.send($1, $2::jsonb)", bulk, {"not": "a stats message"})
    await drain_stats(database_url)
    async with bare_worker(database_url) as worker, serving(worker) as client:
        listed = await client.get(f"/jobs?status=dead&queue={bulk}", headers=AUTH)
        assert [(j["queue"], j["msg_id"]) for j in listed.json()["jobs"]] == [(bulk, 1)]
        assert (await client.get("/jobs?status=dead", headers=AUTH)).json() == {"jobs": []}
        assert (await client.get("/jobs/1", headers=AUTH)).status_code == 404
        assert (await client.get(f"/jobs/1?queue={bulk}", headers=AUTH)).json()["status"] == "dead"
        retried = await client.post(f"/jobs/1/retry?queue={bulk}", headers=AUTH)
        assert retried.status_code == 200
        assert retried.json()["queue"] == bulk
        summary = (await client.get(f"/queue?queue={bulk}", headers=AUTH)).json()
        assert (summary["queue"], summary["retried_last_24h"], summary["waiting"]) == (bulk, 1, 1)
        elsewhere = await client.get("/jobs?queue=elsewhere", headers=AUTH)
        assert elsewhere.status_code == 400
        assert f"one of {QUEUE}, {bulk}" in elsewhere.json()["error"]


@pytest.mark.parametrize(
    "query", ["status=bogus", "limit=0", "limit=ten", "limit=-1", "limit=100000"]
)
async def test_listing_jobs_rejects_bad_parameters(database_url, query):
    async with bare_worker(database_url) as worker, serving(worker) as client:
        response = await client.get(f"/jobs?{query}", headers=AUTH)
    assert response.status_code == 400
    assert response.json()["error"]


async def test_a_message_enqueued_with_a_delay_runs_only_after_it(database_url, conn):
    await prepare_engine_table(database_url)
    settings = worker_settings(database_url, host="127.0.0.1", admin_token=TOKEN)
    async with running_worker(settings) as worker, serving(worker) as client:
        sent_at = datetime.now(UTC)
        response = await client.post(
            "/jobs", headers=AUTH, json={"body": {"job": "later"}, "delay_seconds": 1.5}
        )
        assert response.status_code == 201
        msg_id = response.json()["msg_id"]
        visible_at = datetime.fromisoformat(response.json()["visible_at"])
        assert visible_at >= sent_at + timedelta(seconds=1.5)

        await asyncio.sleep(0.8)  # several polls of the worker
        assert await _status_of(client, msg_id, "queued")
        assert await conn.fetchval("SELECT count(*) FROM engine_runs WHERE job = 'later'") == 0

        await wait_for(lambda: _status_of(client, msg_id, "succeeded"))
    started = await conn.fetchval("SELECT started_at FROM engine_runs WHERE job = 'later'")
    assert started >= visible_at - timedelta(milliseconds=50)


async def test_a_message_enqueued_for_a_time_waits_for_it(database_url, conn):
    async with bare_worker(database_url) as worker, serving(worker) as client:
        run_at = (datetime.now(UTC) + timedelta(minutes=5)).replace(microsecond=0)
        response = await client.post(
            "/jobs", headers=AUTH, json={"body": {"job": "x"}, "run_at": run_at.isoformat()}
        )
        assert response.status_code == 201
        msg_id = response.json()["msg_id"]
    vt = await conn.fetchval(f"SELECT vt FROM pgmq.q_{QUEUE} WHERE msg_id = $1", msg_id)
    assert vt == run_at


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"{}",
        b'{"body": [1, 2]}',
        b'{"body": {"job": "x"}, "delay_seconds": -1}',
        b'{"body": {"job": "x"}, "delay_seconds": "soon"}',
        b'{"body": {"job": "x"}, "delay_seconds": 1, "run_at": "2030-01-01T00:00:00Z"}',
        b'{"body": {"job": "x"}, "run_at": "2030-01-01T00:00:00"}',
        b'{"body": {"job": "x"}, "delay": 5}',
    ],
)
async def test_enqueue_rejects_bad_input(database_url, conn, payload):
    async with bare_worker(database_url) as worker, serving(worker) as client:
        response = await client.post("/jobs", headers=AUTH, content=payload)
    assert response.status_code == 400
    assert response.json()["error"]
    assert await conn.fetchval(f"SELECT count(*) FROM pgmq.q_{QUEUE}") == 0


# -- serving -------------------------------------------------------------------------------


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


async def test_the_default_host_takes_ipv4_and_ipv6_and_leaves_signals_alone(database_url):
    handler = signal.getsignal(signal.SIGTERM)
    async with bare_worker(database_url, host="::") as worker:
        async with serving(worker, host="127.0.0.1") as client:
            assert (await client.get("/health")).status_code == 200
            port = client.base_url.port
            if _ipv6_loopback():  # where the machine has IPv6, "::" serves it too
                async with httpx.AsyncClient(trust_env=False) as six:
                    assert (await six.get(f"http://[::1]:{port}/health")).status_code == 200
            assert signal.getsignal(signal.SIGTERM) is handler
        async with httpx.AsyncClient(trust_env=False) as late:
            with pytest.raises(httpx.ConnectError):  # cancelled: the listener is closed
                await late.get(f"http://127.0.0.1:{port}/health")


def test_a_taken_port_is_reported_with_the_settings_to_change():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"HOST=127.0.0.1 PORT={port}"):
            bind_socket("127.0.0.1", port)
