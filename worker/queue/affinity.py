"""Tenant affinity: one replica at a time recomputes a tenant, the others take others.

Replicas that read messages of the same tenant at once each recompute it with
fewer messages merged, then queue behind each other on the statistics' locks:
more replicas, slower statistics. So a replica that reads a tenant's message
first takes a session advisory lock named after the queue and the tenant, on a
connection of its own, and keeps it while that tenant has messages waiting or
running here. Another replica that reads the tenant's messages meanwhile
hands them back, visible again a second later, where the holder's next read
merges them into its next recompute; its own read goes on to other tenants.

Nothing coordinates but PostgreSQL: a replica that dies loses its locks with
its session (at once when the process dies, within the TCP keepalive when its
host does). Where no session is to be had (a transaction pooler and no
``DIRECT_DATABASE_URL``) or the connection is down, every read is today's read:
the statistics stay exact either way, affinity only saves work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import asyncpg

from worker.core import database
from worker.core.database import DATABASE_ERRORS, RawConnection
from worker.core.queries import query

log = logging.getLogger(__name__)

HAND_BACK_SECONDS = 1
"""How long a message of a tenant another replica holds stays invisible."""
RECONNECT_SECONDS = 5.0
"""After a failed connection, reads go without affinity this long before trying again."""
KEEPALIVE_SECONDS = 30.0
"""Within about this long the server ends the session of a replica whose host died."""


@dataclass(frozen=True)
class Claims:
    """One read's keys, by who runs them."""

    mine: set[Hashable]
    elsewhere: set[Hashable] = field(default_factory=set)
    """Held by another replica: their messages go back to the queue for it."""


class TenantAffinity:
    """This replica's claims on tenants, for one queue."""

    def __init__(self, dsn: str, queue_name: str) -> None:
        self._dsn = dsn
        self._prefix = f"stats_worker:affinity:{queue_name}:"
        self._connection: RawConnection | None = None
        self._held: dict[str, Hashable] = {}
        """Lock name → key, for the claims this replica holds."""
        self._lock = asyncio.Lock()
        self._retry_at = 0.0
        self._available = True
        """False once the DSN turned out to be a transaction pooler."""

    @property
    def active(self) -> bool:
        """Whether claims are being taken now (for /health and the tests)."""
        return self._connection is not None and not self._connection.is_closed()

    async def claim(self, keys: Sequence[Hashable], most: int | None) -> Claims:
        """Which of ``keys`` (in read order) this replica runs, and which another holds.

        Keys it holds already are its own; it takes others while it holds fewer
        than ``most`` (None: every one it can), so one replica never sits on more
        tenants than it can keep busy while the others wait. The keys it had no room to try are in
        neither set: it tries them again when it is about to run them. Every key
        is its own when affinity is unavailable: the read then works as without it.
        """
        names = {self._name(key): key for key in keys}
        async with self._lock:
            connection = await self._open()
            if connection is None:
                return Claims(mine=set(keys))
            wanted = [name for name in names if name not in self._held]
            room = len(wanted) if most is None else most - len(self._held)
            taken: list[str] = []
            if wanted and room > 0:
                try:
                    taken = await connection.fetchval(
                        query("claim_tenants"), wanted, room, timeout=5
                    )
                    if extra := taken[room:]:  # never expected: the scan stops at the limit
                        await connection.fetchval(query("release_tenants"), extra, timeout=5)
                        taken = taken[:room]
                except DATABASE_ERRORS as exc:
                    await self._lose(exc)
                    return Claims(mine=set(keys))
                self._held.update((name, names[name]) for name in taken)
            return Claims(
                mine={key for name, key in names.items() if name in self._held},
                elsewhere={
                    names[name] for name in _tried(wanted, taken, room) if name not in self._held
                },
            )

    async def release_unneeded(self, needed: Callable[[Hashable], bool]) -> None:
        """Give up every claim whose key ``needed`` no longer wants (asked under the
        lock, so a key a claim just took is kept)."""
        async with self._lock:
            names = [name for name, key in self._held.items() if not needed(key)]
            if not names or self._connection is None:
                return
            try:
                await self._connection.fetchval(query("release_tenants"), names, timeout=5)
            except DATABASE_ERRORS as exc:
                await self._lose(exc)
                return
            for name in names:
                del self._held[name]

    async def close(self) -> None:
        """Release every claim (ending the session does)."""
        async with self._lock:
            self._held.clear()
            if self._connection is not None and not self._connection.is_closed():
                with contextlib.suppress(*DATABASE_ERRORS):
                    await self._connection.close(timeout=2)
            self._connection = None

    def _name(self, key: Hashable) -> str:
        return f"{self._prefix}{key}"

    async def _open(self) -> RawConnection | None:
        if self._connection is not None and not self._connection.is_closed():
            return self._connection
        if self._connection is not None:
            await self._lose(ConnectionError("the affinity connection closed"))
        if not self._available or time.monotonic() < self._retry_at:
            return None
        try:
            if await database.behind_transaction_pooler(self._dsn):
                self._available = False
                log.warning(
                    "tenant affinity off: the database is reached through a transaction "
                    "pooler; set DIRECT_DATABASE_URL so replicas keep to their own tenants"
                )
                return None
            options = database.connect_kwargs(0)
            options["server_settings"].update(database.keepalive_settings(KEEPALIVE_SECONDS))
            # Whose claims these are, for operators (pg_stat_activity) and tests.
            options["server_settings"]["application_name"] = f"stats-worker affinity {os.getpid()}"
            self._connection = await asyncpg.connect(self._dsn, timeout=5, **options)
        except DATABASE_ERRORS as exc:
            self._retry_at = time.monotonic() + RECONNECT_SECONDS
            log.warning("tenant affinity unavailable", extra={"error": repr(exc)[:500]})
            return None
        return self._connection

    async def _lose(self, exc: BaseException) -> None:
        """The session (and with it every claim) is gone: read without affinity a while."""
        log.warning("tenant affinity connection lost", extra={"error": repr(exc)[:500]})
        self._held.clear()
        self._retry_at = time.monotonic() + RECONNECT_SECONDS
        if self._connection is not None and not self._connection.is_closed():
            self._connection.terminate()
        self._connection = None


def _tried(wanted: list[str], taken: list[str], room: int) -> list[str]:
    """The names a claim tried: none without room; all of them unless it stopped at
    ``room`` taken, and then those up to the last one taken."""
    if room <= 0:
        return []
    if len(taken) < room:
        return wanted
    last = max(wanted.index(name) for name in taken)
    return wanted[: last + 1]
