"""Helpers shared by the tests: settings, a test handler, workers in the background."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from pydantic import BaseModel, ValidationError

from worker import app
from worker.app import Worker
from worker.core.database import Pool
from worker.core.errors import MalformedMessage
from worker.core.handlers import HandlerRegistry, Subject
from worker.core.settings import Settings
from worker.stats.league import League, complete_match, write_clubs, write_scheduled

ROOT = Path(__file__).resolve().parent.parent


def dsn_for_database(server_dsn: str, database: str) -> str:
    parts = urlsplit(server_dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


def worker_settings(database_url: str, **overrides: Any) -> Settings:
    """Settings for a worker under test: fast polling, short timeouts."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "poll_interval_seconds": 0.2,
        "visibility_timeout_seconds": 5,
        "retry_base_seconds": 0.2,
        "retry_max_seconds": 2.0,
        "shutdown_grace_seconds": 5.0,
        "pool_min_size": 1,
        "pool_max_size": 6,
        "port": 0,
    }
    values.update(overrides)
    return Settings(**values)


async def wait_for(
    condition: Callable[[], Awaitable[bool]], timeout: float = 15.0, interval: float = 0.05
) -> None:
    """Poll ``condition`` until it holds; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


# -- a handler for engine tests ------------------------------------------------

ENGINE_TABLE = """
CREATE TABLE IF NOT EXISTS public.engine_runs (
    id bigserial PRIMARY KEY,
    job text NOT NULL,
    pid integer NOT NULL,
    group_size integer NOT NULL DEFAULT 1,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz
)
"""


class EngineJob(BaseModel):
    job: str
    sleep: float = 0.0
    fail_times: int = 0
    """Fail this many runs before succeeding."""
    group: str | None = None
    block: float = 0.0
    """Block the whole event loop this long (a stuck process, for the watchdog)."""


class EngineHandler:
    """Records each run in ``engine_runs`` (start, end, pid), sleeps, fails on request."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    def parse(self, body: Any) -> EngineJob:
        try:
            return EngineJob.model_validate(body)
        except ValidationError as exc:
            raise MalformedMessage(f"not an engine job: {exc.errors()[0]['msg']}") from None

    def subject(self, payload: EngineJob) -> Subject:
        return Subject()

    def group_key(self, payload: EngineJob) -> Hashable | None:
        return payload.group

    def group_field(self) -> str | None:
        return "group"

    def owed_tags(self, payloads: Sequence[EngineJob]) -> Sequence[str]:
        return [f"job:{p.job}" for p in payloads]

    async def run(
        self, payloads: Sequence[EngineJob], before_changes: Callable[[], Awaitable[None]]
    ) -> Sequence[str]:
        await before_changes()
        for job in payloads:
            run_id = await self.pool.fetchval(
                "INSERT INTO engine_runs (job, pid, group_size) VALUES ($1, $2, $3) RETURNING id",
                job.job,
                os.getpid(),
                len(payloads),
            )
            await asyncio.sleep(job.sleep)
            time.sleep(job.block)  # noqa: ASYNC251 - blocking is the point
            previous = await self.pool.fetchval(
                "SELECT count(*) FROM engine_runs WHERE job = $1 AND id < $2", job.job, run_id
            )
            await self.pool.execute(
                "UPDATE engine_runs SET finished_at = clock_timestamp() WHERE id = $1", run_id
            )
            if previous < job.fail_times:
                raise RuntimeError(f"planned failure {previous + 1} of {job.fail_times}")
        return [f"job:{p.job}" for p in payloads]


def engine_handlers(settings: Settings, pool: Pool) -> HandlerRegistry:
    return {settings.queue_name: EngineHandler(pool)}


async def prepare_engine_table(database_url: str) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(ENGINE_TABLE)
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def running_worker(
    settings: Settings,
    handlers: Callable[[Settings, Pool], HandlerRegistry] = engine_handlers,
) -> AsyncIterator[Worker]:
    """A worker running in this event loop until the block ends (then stopped gracefully)."""
    assert settings.database_url is not None
    dsn = settings.database_url.get_secret_value()
    async with app.running_worker(settings, dsn, handlers) as (worker, _):
        yield worker


async def drain_stats(database_url: str, **overrides: Any) -> None:
    """The real stats worker in this event loop until the queue is empty."""
    await asyncio.wait_for(
        app.run_worker(
            worker_settings(database_url, **overrides),
            database_url,
            handlers=app.default_handlers,
            until_empty=True,
            install_signal_handlers=False,
        ),
        timeout=120,
    )


async def play_league(connection: asyncpg.Connection, league: League) -> None:
    """Clubs, then every match scheduled and completed the app's way (one message each)."""
    await write_clubs(connection, league)
    await write_scheduled(connection, list(league.matches()))
    for match in league.matches():
        await complete_match(connection, match)


def start_worker_process(database_url: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
    """A worker in its own process, running the engine test handler."""
    return _spawn_worker(database_url, ["-m", "tests.engine_process", *args], env)


def start_stats_worker(database_url: str, **env: str) -> subprocess.Popen[bytes]:
    """``stats-worker run`` in its own process, as a replica runs it."""
    return _spawn_worker(database_url, ["-m", "worker.cli", "run"], env)


def _spawn_worker(
    database_url: str, argv: list[str], env: dict[str, str]
) -> subprocess.Popen[bytes]:
    environment = {
        **os.environ,
        "DATABASE_URL": database_url,
        "POLL_INTERVAL_SECONDS": "0.2",
        "VISIBILITY_TIMEOUT_SECONDS": "5",
        "RETRY_BASE_SECONDS": "0.2",
        "LOG_FORMAT": "json",
        "PORT": "0",
        **env,
    }
    log_path = Path(tempfile.mkstemp(prefix="worker-", suffix=".log")[1])
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, *argv],
            cwd=ROOT,
            env=environment,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    PROCESS_LOGS[process.pid] = log_path
    return process


PROCESS_LOGS: dict[int, Path] = {}
"""Where each worker process started by a test writes its log (printed on failure)."""


def process_log(process: subprocess.Popen[bytes]) -> str:
    return PROCESS_LOGS[process.pid].read_text(errors="replace")


def run_cli(
    database_url: str | None, *args: str, stdin: str = "", timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    """``stats-worker ARGS`` in its own process, as an operator runs it (JSON logs)."""
    environment = {**os.environ, "LOG_FORMAT": "json", **env}
    environment.pop("DATABASE_URL", None)
    if database_url is not None:
        environment["DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        check=False,
        cwd=ROOT,
        env=environment,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def stop_process(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    process.send_signal(sig)
    code = process.wait(timeout=30)
    if code != 0:
        print(f"--- worker {process.pid} exited {code}; its log:\n{process_log(process)}")
    return code
