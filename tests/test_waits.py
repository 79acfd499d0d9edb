"""Deadlines that never lose a cancellation (``worker/core/waits.py``).

A background task that swallowed its cancellation kept ``run --until-empty``
alive after the queue drained: the listener's probe came back in the same loop
iteration as the consumer's cancel, and ``asyncio.wait_for`` on Python 3.11
returned as if nothing had happened.
"""

from __future__ import annotations

import asyncio
import re

import pytest

from tests.support import ROOT
from worker.core.waits import wait_event


async def test_a_cancel_that_arrives_with_the_event_still_cancels():
    event = asyncio.Event()
    task = asyncio.create_task(wait_event(event, 10))
    await asyncio.sleep(0.01)
    event.set()
    task.cancel()  # in the same iteration as the event: the race wait_for loses
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_it_says_whether_the_event_came_or_the_time_ran_out():
    event = asyncio.Event()
    assert not await wait_event(event, 0.01)
    asyncio.get_running_loop().call_later(0.01, event.set)
    assert await wait_event(event, 5)
    assert await wait_event(event, None)  # already set: no deadline needed


def test_the_worker_never_waits_through_asyncio_wait_for():
    calls = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted((ROOT / "worker").rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\bwait_for\(", line)
    ]
    assert not calls, f"use worker.core.waits or asyncio.timeout instead: {calls}"
