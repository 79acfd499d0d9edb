"""The consumer's vital signs, shared with /health and the metrics refresher.

:class:`WorkerView` is all that the HTTP side and the gauge refresher know of a
running worker, so neither imports ``worker.app`` (which wires them and hands
itself in).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from worker.core.database import Pool
from worker.core.settings import Settings


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
    """An operator paused the worker: no consumer (the bulk one neither) reads until resumed."""

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


class WorkerView(Protocol):
    """What the HTTP side and the gauge refresher read of a running worker."""

    @property
    def pool(self) -> Pool: ...
    @property
    def settings(self) -> Settings: ...
    @property
    def status(self) -> WorkerStatus: ...
    def queue_names(self) -> list[str]:
        """The queues the worker consumes (its configured queue when it has no consumer)."""
        ...

    def callbacks_due(self) -> None:
        """Invalidations were made due again (a resend): send them now, not at the next sweep."""
        ...
