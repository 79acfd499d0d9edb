"""Waiting with a deadline without ever losing a cancellation.

On Python 3.11, ``asyncio.wait_for`` drops a cancellation that arrives in the
same loop iteration as the thing it waits for (CPython gh-86296, fixed in 3.12):
the waiter returns normally and its loop goes on, so the task never stops and
the worker's shutdown waits for it forever. ``asyncio.timeout`` tells the two
apart, so every deadline in the worker goes through it.
"""

from __future__ import annotations

import asyncio
import contextlib


async def wait_event(event: asyncio.Event, seconds: float | None) -> bool:
    """Wait until ``event`` is set or ``seconds`` have passed (None: no deadline);
    True when it is set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    return event.is_set()
