"""``/health`` and ``/metrics``: open to anyone, and cheap enough to poll every few seconds."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from worker.core import metrics
from worker.core.status import WorkerView
from worker.queue.pgmq import Queue, QueueDepth
from worker.web.refresher import QueueSnapshots
from worker.web.responses import DATABASE_ERRORS, JSON, describe, package_version

log = logging.getLogger(__name__)

HEALTH_TIMEOUT_SECONDS = 2.0


def _depth_json(depth: QueueDepth) -> dict[str, int]:
    return {
        "depth": depth.length,
        "visible": depth.visible,
        "oldest_age_seconds": depth.oldest_age_seconds or 0,
    }


class Health:
    """The open endpoints; ``snapshots`` are the refresher's queue depths."""

    def __init__(self, worker: WorkerView, snapshots: QueueSnapshots) -> None:
        self.worker = worker
        self.pool = worker.pool
        self.settings = worker.settings
        self.queue_name = worker.settings.queue_name
        self.snapshots = snapshots
        self.version = package_version()

    async def health(self, request: Request) -> Response:
        status = self.worker.status
        poll_age = status.poll_age_seconds()
        body: dict[str, Any] = {
            "status": "ok",
            "database": "ok",
            "last_poll_age_seconds": round(poll_age, 3),
            "listener": "connected" if status.listener_connected else "polling",
            "queue": None,
            "in_flight": status.in_flight,
            "stopping": status.stopping,
            "paused": status.paused,
            "version": self.version,
        }
        try:
            body["queue"] = _depth_json(await self._probe_database())
        except DATABASE_ERRORS as exc:
            # Who asks may be anyone: the details (addresses, errors) go to the log.
            log.warning("health check: database unreachable", extra={"error": describe(exc)})
            body.update(status="unavailable", database="unreachable")
            body["reason"] = "database unreachable"
            return JSON(body, 503)
        if not status.stopping and poll_age > self.settings.stall_after_seconds:
            body["status"] = "stalled"
            body["reason"] = (
                f"the consumer has not polled for {poll_age:.0f}s "
                f"(STALL_AFTER_SECONDS={self.settings.stall_after_seconds:g})"
            )
            return JSON(body, 503)
        return JSON(body)

    async def _probe_database(self) -> QueueDepth:
        """One small query: ``SELECT 1`` when the refresher's depth is fresh, else the depth."""
        max_age = 3 * self.settings.metrics_refresh_seconds
        async with asyncio.timeout(HEALTH_TIMEOUT_SECONDS):
            cached = self.snapshots.fresh(self.queue_name, max_age)
            if cached is not None:
                await self.pool.fetchval("SELECT 1")
                return cached
            depth = await Queue(self.pool, self.queue_name).depth()
        self.snapshots.record(self.queue_name, depth)
        return depth

    async def metrics(self, request: Request) -> Response:
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)
