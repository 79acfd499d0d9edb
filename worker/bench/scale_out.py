"""Scale-out: 1, 2 and 4 worker processes draining the same backlog of corrections.

Each round puts the same messages on the queue (one per sampled match, spread
over every tenant, in the same order) on statistics that are exact before it
starts, so every round begins from the same state. N real ``stats-worker run
--until-empty`` processes then drain it, as N replicas would. Reported per
round: the wall time from start to the last exit (process start-up included)
and the drain time (first run started → last run finished, from the job
records), messages per second of drain, recomputes per message (from the
workers' own ``coalesced`` log fields), messages a worker lost to another
(none should be settled twice), and the rows ``verify`` finds different.
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
    """Enqueue the backlog, drain it with ``processes`` workers, check the statistics."""
    tenants = await maintenance.tenants(pool)
    first_id = int(await pool.fetchval(query("bench_scale_out_enqueue"), messages) or 0)
    started = time.perf_counter()
    children = [await _start(settings, dsn) for _ in range(processes)]
    outputs = await asyncio.gather(*(child.communicate() for child in children))
    wall = time.perf_counter() - started
    for child, (_, err) in zip(children, outputs, strict=True):
        if child.returncode != 0:
            raise RuntimeError(f"a scale-out worker exited {child.returncode}: {err[-2000:]!r}")
    recomputes, lost = _from_logs([err for _, err in outputs], first_id)
    drain = float(await pool.fetchval(query("bench_scale_out_drain_seconds"), first_id) or 0.0)
    drift = 0
    for tenant in tenants:
        drift += len(await maintenance.verify(pool, tenant))
    return Round(processes, messages, wall, drain, recomputes, lost, drift)


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
        "--until-empty",
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
