"""Keeping messages invisible while they run: their visibility timeout, renewed."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from worker.core import database
from worker.core.database import DATABASE_ERRORS
from worker.core.errors import error_text
from worker.core.settings import Settings
from worker.queue.pgmq import Message, Queue

log = logging.getLogger(__name__)


class Renewer:
    """Renews what a consumer holds every third of the visibility timeout.

    ``held`` is the consumer's live map of the messages it holds (msg_id →
    message); ``lock`` is the settler's; ``on_lost`` is told of the messages
    another worker read meanwhile.
    """

    def __init__(
        self,
        *,
        queue: Queue,
        dsn: str,
        settings: Settings,
        held: Mapping[int, Message],
        lock: asyncio.Lock,
        on_lost: Callable[[list[Message]], None],
    ) -> None:
        self._queue = queue
        self._dsn = dsn
        self._settings = settings
        self._held = held
        self._lock = lock
        self._on_lost = on_lost

    async def run(self) -> None:
        """Keep what this process holds invisible, on a connection of its own.

        The job pool may be busy (a verify, long replays): a renewal that
        waited behind it would let timeouts lapse and hand running messages to
        other workers. A renewal that runs late says so; a message another
        worker took meanwhile is forgotten here.
        """
        timeout = self._settings.visibility_timeout_seconds
        interval = max(0.5, timeout / 3)
        connection: database.RawConnection | None = None
        last_renewed = time.monotonic()
        try:
            while True:
                await asyncio.sleep(interval)
                if not self._held:
                    last_renewed = time.monotonic()
                    continue
                try:
                    if connection is None or connection.is_closed():
                        connection = await database.connect(self._dsn, self._settings)
                    async with self._lock:
                        # Measured once the lock is ours: a renewal held up behind a
                        # slow settle or connect is as late as one behind a busy loop.
                        late = time.monotonic() - last_renewed
                        if late > 2 * timeout / 3:
                            log.warning(
                                "visibility renewal is late", extra={"late_s": round(late, 2)}
                            )
                        held = list(self._held.values())
                        owned = await self._queue.extend_visibility(connection, held, timeout)
                except DATABASE_ERRORS as exc:
                    log.warning("visibility renewal failed", extra={"error": error_text(exc)})
                    continue
                last_renewed = time.monotonic()
                self._on_lost([m for m in held if m.msg_id not in owned])
        finally:
            if connection is not None and not connection.is_closed():
                await connection.close(timeout=2)
