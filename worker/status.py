"""The consumer's vital signs, shared with /health and the metrics refresher."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class WorkerStatus:
    started_at: float
    last_poll_at: float | None = None
    listener_connected: bool = False
    in_flight: int = 0
    stopping: bool = False

    @classmethod
    def now(cls) -> WorkerStatus:
        return cls(started_at=time.time())

    def poll_age_seconds(self) -> float:
        since = self.last_poll_at if self.last_poll_at is not None else self.started_at
        return max(0.0, time.time() - since)
