"""The consumer's vital signs, shared with /health and the metrics refresher."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class WorkerStatus:
    started_at: float
    last_poll_at: float | None = None
    last_progress_at: float | None = None
    """time.monotonic() of the last read or finished recompute (the watchdog's)."""
    listener_connected: bool = False
    in_flight: int = 0
    stopping: bool = False
    paused: bool = False
    """An operator paused the queue: the consumer reads nothing until resumed."""

    @classmethod
    def now(cls) -> WorkerStatus:
        return cls(started_at=time.time())

    def made_progress(self) -> None:
        self.last_progress_at = time.monotonic()

    def progress_age_seconds(self) -> float:
        if self.last_progress_at is None:
            self.made_progress()
            return 0.0
        return time.monotonic() - self.last_progress_at

    def poll_age_seconds(self) -> float:
        since = self.last_poll_at if self.last_poll_at is not None else self.started_at
        return max(0.0, time.time() - since)
