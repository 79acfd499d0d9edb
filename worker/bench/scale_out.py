"""Scale-out: 1, 2 and 4 worker processes draining the same backlog of corrections.

Each round starts N real ``stats-worker run`` processes, as N replicas would
run, and waits until every one is up and idle; then it puts the same messages
on the queue in one transaction (one per sampled match, round-robin over every
tenant, in the same order) on statistics that are exact before it starts, so
every round begins from the same state and no process start-up is timed.
Reported per round: the wall time from the enqueue to the last message settled
(as the bench polls it) and the drain time (first message enqueued → last run
finished, from the job records), messages per second of drain, recomputes per
message (from the workers' own ``coalesced`` log fields), messages a worker
lost to another (none should be settled twice), and the rows ``verify`` finds
different.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

from worker.core.database import Pool
from worker.core.queries import query
from worker.core.settings import Settings
from worker.stats import maintenance

PROCESS_COUNTS = (1, 2, 4)
READY_SECONDS = 60.0
"""Longest a worker process may take to start, or to stop once told to."""


@dataclass(frozen=True)
class Round:
    processes: int
    messages: int
    wall_seconds: float
    drain_seconds: float
    recomputes: float
    lost: int
    drift_rows: int

    @property
    def per_second(self) -> float:
        return self.messages / self.drain_seconds if self.drain_seconds > 0 else 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "processes": self.processes,
            "messages": self.messages,
            "wall_seconds": round(self.wall_seconds, 3),
            "drain_seconds": round(self.drain_seconds, 3),
            "per_second": round(self.per_second, 1),
            "recomputes": round(self.recomputes),
            "recomputes_per_message": round(self.recomputes / max(1, self.messages), 3),
            "lost": self.lost,
            "drift_rows": self.drift_rows,
        }


async def one_round(
    settings: Settings, dsn: str, pool: Pool, processes: int, messages: int
) -> Round:
    """Start the replicas, enqueue the backlog, wait until it is settled, check it."""
    tenants = await maintenance.tenants(pool)
    replicas = [_Replica(await _start(settings, dsn)) for _ in range(processes)]
    try:
        await asyncio.gather(*(replica.ready() for replica in replicas))
        started = time.perf_counter()
        row = await pool.fetchrow(query("bench_scale_out_enqueue"), messages)
        assert row is not None
        first_id, sent = int(row[0]), int(row[1])
        while await pool.fetchval(query("bench_scale_out_settled"), first_id) < sent:
            if any(replica.process.returncode is not None for replica in replicas):
                raise RuntimeError("a scale-out worker exited while draining")
            await asyncio.sleep(0.05)
        wall = time.perf_counter() - started
    finally:
        logs = await asyncio.gather(*(replica.stop() for replica in replicas))
    recomputes, lost = _from_logs(logs, first_id)
    drain = float(await pool.fetchval(query("bench_scale_out_drain_seconds"), first_id) or 0.0)
    drift = 0
    for tenant in tenants:
        drift += len(await maintenance.verify(pool, tenant))
    return Round(processes, sent, wall, drain, recomputes, lost, drift)


class _Replica:
    """One worker process and everything it logs (read as it comes: a full pipe
    would stall it)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self._lines: list[bytes] = []
        self._started = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stderr is not None
        async for line in self.process.stderr:
            self._lines.append(line)
            if b'"message": "worker started"' in line:
                self._started.set()

    async def ready(self) -> None:
        async with asyncio.timeout(READY_SECONDS):
            while not self._started.is_set():
                if self._reader.done():
                    raise RuntimeError(f"a scale-out worker did not start: {self.log()[-2000:]!r}")
                await asyncio.sleep(0.05)

    async def stop(self) -> bytes:
        """SIGTERM, as a platform stops a replica; its log once it has exited."""
        if self.process.returncode is None:
            self.process.terminate()
        try:
            async with asyncio.timeout(READY_SECONDS):
                code = await self.process.wait()
        except TimeoutError:
            self.process.kill()
            code = await self.process.wait()
        await self._reader
        if code != 0:
            raise RuntimeError(f"a scale-out worker exited {code}: {self.log()[-2000:]!r}")
        return self.log()

    def log(self) -> bytes:
        return b"".join(self._lines)


async def _start(settings: Settings, dsn: str) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "MIGRATE_ON_START": "false",
        "PORT": "0",
        "HOST": "127.0.0.1",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "QUEUE_NAME": settings.queue_name,
        "CONCURRENCY": str(settings.concurrency),
        "BATCH_SIZE": str(settings.batch_size),
        "POOL_MAX_SIZE": str(settings.pool_max_size),
    }
    env.pop("CACHE_INVALIDATION_URL", None)
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker.cli",
        "run",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


def _from_logs(logs: list[bytes], first_id: int) -> tuple[float, int]:
    """Recomputes (each message's share of its group) and lost messages of this round."""
    recomputes, lost = 0.0, 0
    for log in logs:
        for line in log.decode(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            record = json.loads(line)
            if int(record.get("msg_id") or 0) < first_id:
                continue
            if record.get("message") == "message succeeded":
                recomputes += 1 / max(1, int(record.get("coalesced") or 1))
            elif str(record.get("message", "")).startswith("message lost"):
                lost += 1
    return recomputes, lost
