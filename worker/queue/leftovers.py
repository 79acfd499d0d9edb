"""Trigger messages that no commit sent, sent by the worker (see 0010_leftover_messages.sql).

A transaction that commits under ``session_replication_role = replica`` fires
no trigger at commit, so its pending message stays unsent; the worker sends
those at start (before the first read) and every ``LEFTOVER_SWEEP_SECONDS``.
"""

from __future__ import annotations

import asyncio
import logging

from worker.core import database
from worker.core.database import Pool
from worker.core.queries import query

log = logging.getLogger(__name__)

LEFTOVER_SWEEP_SECONDS = 30.0


async def send_leftover_messages(pool: Pool) -> None:
    """Send trigger messages that no commit sent (see 0010_leftover_messages.sql)."""
    try:
        sent = await pool.fetchval(query("send_leftover_messages"))
    except database.DATABASE_ERRORS as exc:
        log.warning("leftover message sweep failed", extra={"error": repr(exc)})
        return
    if sent:
        log.warning(
            "sent trigger messages a commit had left unsent (session_replication_role = replica?)",
            extra={"messages": sent},
        )


async def sweep_leftover_messages(pool: Pool) -> None:
    """After the sweep at start (before the first read), one every half minute."""
    while True:
        await asyncio.sleep(LEFTOVER_SWEEP_SECONDS)
        await send_leftover_messages(pool)
