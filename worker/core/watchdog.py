"""The last line of defence: a thread that ends a stuck process so the platform restarts it.

Railway checks health only at deploy time and Fly's checks only steer
traffic, so a worker whose consumer is stuck (every slot waiting on a lock
that never comes, a database that stopped answering mid-statement) would stay
stuck. And after SIGTERM a blocked await could keep the process alive past
the platform's kill timeout, losing the chance to exit cleanly. The watchdog
runs in a thread of its own, so it acts even when the event loop is blocked:

- no progress (a read or a finished recompute) for ``WATCHDOG_SECONDS``: exit 70;
- still running ``SHUTDOWN_GRACE_SECONDS`` + ``SETTLE_WINDOW_SECONDS`` after the
  stop signal: exit 70.

Nothing is lost either way: what was not settled becomes visible again when its
visibility timeout ends.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

from worker.core.status import WorkerStatus

log = logging.getLogger(__name__)

EXIT_STUCK = 70
SETTLE_WINDOW_SECONDS = 8.0
"""After the grace period: time to settle and close before the hard exit."""
CHECK_EVERY_SECONDS = 1.0


class Watchdog:
    def __init__(self, status: WorkerStatus, *, stall_seconds: float, grace_seconds: float) -> None:
        self._status = status
        self._stall_seconds = stall_seconds
        self._deadline_after_stop = grace_seconds + SETTLE_WINDOW_SECONDS
        self._signalled_at: float | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="watchdog", daemon=True)

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()

    def watch_signals(self, signals: tuple[signal.Signals, ...]) -> None:
        """Note a stop signal even while the event loop is blocked.

        asyncio hears signals through its wakeup fd, so its handler runs only
        when the loop does; this Python-level handler (which asyncio does not
        need: the wakeup fd is set apart from it) runs between bytecodes of the
        main thread, blocked or not.
        """
        for signum in signals:
            signal.signal(signum, self._signalled)

    def _signalled(self, signum: int, frame: object) -> None:
        self._signalled_at = self._signalled_at or time.monotonic()

    def _watch(self) -> None:
        stopping_since: float | None = None
        while not self._done.wait(CHECK_EVERY_SECONDS):
            now = time.monotonic()
            if self._status.stopping or self._signalled_at is not None:
                stopping_since = stopping_since or self._signalled_at or now
                if now - stopping_since > self._deadline_after_stop:
                    self._exit(
                        f"shutdown overran {self._deadline_after_stop:g} s "
                        "(SHUTDOWN_GRACE_SECONDS + settle window): exiting now"
                    )
            elif self._stall_seconds and self._status.progress_age_seconds() > self._stall_seconds:
                self._exit(
                    f"no progress for {self._stall_seconds:g} s (WATCHDOG_SECONDS): "
                    "exiting so the platform restarts the worker"
                )

    def _exit(self, why: str) -> None:
        log.critical(why)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(EXIT_STUCK)
