"""What the commands share: their one error, a pool for the command's life, ``--since``."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from worker.core import database, servers
from worker.core.database import Pool
from worker.core.settings import Settings


class CommandError(Exception):
    """A command cannot do what was asked; the message says why."""


async def with_pool(settings: Settings, work: Callable[[Pool], Awaitable[int]]) -> int:
    with servers.database_dsn(settings, allow_embedded=False) as dsn:
        async with database.open_pool(dsn, settings) as pool:
            return await work(pool)


def since(text: str) -> datetime:
    """``--since``: an ISO-8601 time (UTC when no offset) or a span back from now: 30m, 2h, 1d."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[:-1].isdigit() and text[-1:] in units:
        return datetime.now(UTC) - timedelta(seconds=int(text[:-1]) * units[text[-1]])
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a time (2026-12-03T08:00) nor a span (30m, 2h, 1d)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
