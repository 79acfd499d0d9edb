"""Connections, and the pool the rest of the worker shares.

Where the database is (``DATABASE_URL`` or an embedded server) is
``worker/core/servers.py``'s.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from worker.core.settings import Settings

log = logging.getLogger(__name__)

# asyncpg's classes are generic only to the type checker.
if TYPE_CHECKING:
    Pool: TypeAlias = asyncpg.Pool[asyncpg.Record]
    RawConnection: TypeAlias = asyncpg.Connection[asyncpg.Record]
    Connection: TypeAlias = RawConnection | PoolConnectionProxy[asyncpg.Record]
    """A connection of its own or one borrowed from the pool."""
else:
    Pool = asyncpg.Pool
    RawConnection = asyncpg.Connection
    Connection = RawConnection | PoolConnectionProxy


DATABASE_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)
"""What a lost or refused connection raises: worth a retry, never a crash."""

_TRANSIENT_SQLSTATE_CLASSES = ("08", "40", "53", "57")
"""Connection, transaction rollback (serialization, deadlock), resources, operator."""


def is_transient(exc: BaseException) -> bool:
    """Whether the same statement may well succeed when tried again.

    A lost connection, a deadlock or a server shutting down pass; an error
    the statement's data causes (a constraint, a bad value) will not.
    """
    if isinstance(exc, asyncpg.PostgresError):
        return str(exc.sqlstate or "")[:2] in _TRANSIENT_SQLSTATE_CLASSES
    return isinstance(exc, DATABASE_ERRORS)


async def init_connection(connection: RawConnection) -> None:
    # JSON travels as Python objects, both ways.
    for type_name in ("json", "jsonb"):
        await connection.set_type_codec(
            type_name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


DEFAULT_STATEMENT_CACHE_SIZE = 100


class PoolerMisconfigured(Exception):
    """A transaction pooler with prepared statements on: every query would fail."""


def connect_kwargs(statement_cache_size: int) -> dict[str, Any]:
    """Options every connection of the worker uses (pool and listener alike)."""
    return {
        "statement_cache_size": statement_cache_size,
        "server_settings": {"application_name": "stats-worker"},
    }


def keepalive_settings(within_seconds: float) -> dict[str, str]:
    """TCP keepalives of a session whose peer vanishing must end it (and release its
    session locks) within about ``within_seconds``, not the kernel's two hours."""
    third = max(1, int(within_seconds / 3))
    return {
        "tcp_keepalives_idle": str(third),
        "tcp_keepalives_interval": str(max(1, third // 2)),
        "tcp_keepalives_count": "2",
    }


async def behind_transaction_pooler(dsn: str) -> bool:
    """Whether ``dsn`` reaches PostgreSQL through a pooler in transaction mode.

    A session (direct, or through a session pooler) keeps one backend for its
    whole life and never shares it. Through a transaction pooler two clients
    that take turns are served by the same backend, or one client by several,
    which a few ``pg_backend_pid()`` calls show. Nothing here is prepared, so
    the probe itself works whatever the pooler.
    """
    first = await asyncpg.connect(dsn, **connect_kwargs(0))
    try:
        second = await asyncpg.connect(dsn, **connect_kwargs(0))
        try:
            seen: tuple[set[int], set[int]] = (set(), set())
            for _ in range(3):
                for connection, pids in zip((first, second), seen, strict=True):
                    pids.add(await connection.fetchval("SELECT pg_backend_pid()"))
        finally:
            await second.close()
    finally:
        await first.close()
    return len(seen[0]) > 1 or len(seen[1]) > 1 or bool(seen[0] & seen[1])


async def pool_options(dsn: str, settings: Settings) -> dict[str, Any]:
    """Connection options for the pool on ``dsn``, set for what the worker relies on.

    READ COMMITTED: the statistics' functions expect each statement to see what
    committed before it, and a database whose default is REPEATABLE READ would
    turn concurrent recomputes into serialization failures. Direct connections
    set it at start-up; a transaction pooler forwards no such start-up setting,
    so there the database's own default must already be it. Prepared
    statements are off behind a transaction pooler.
    """
    configured = settings.database_statement_cache_size
    if not await behind_transaction_pooler(dsn):
        options = connect_kwargs(DEFAULT_STATEMENT_CACHE_SIZE if configured is None else configured)
        options["server_settings"]["default_transaction_isolation"] = "read committed"
        return options
    if configured:
        raise PoolerMisconfigured(
            "DATABASE_URL goes through a transaction pooler (PgBouncer or Supavisor in "
            "transaction mode), which cannot keep prepared statements: set "
            "DATABASE_STATEMENT_CACHE_SIZE=0 or leave it unset"
        )
    await _require_read_committed(dsn)
    log.info("transaction pooler detected: prepared statement cache off")
    return connect_kwargs(0)


async def _require_read_committed(dsn: str) -> None:
    connection = await asyncpg.connect(dsn, **connect_kwargs(0))
    try:
        level, role = await connection.fetchrow(
            "SELECT current_setting('default_transaction_isolation'), current_user"
        ) or ("", "")
    finally:
        await connection.close()
    if level != "read committed":
        raise PoolerMisconfigured(
            f"the database's default_transaction_isolation is {level!r}, and through a "
            "transaction pooler the worker cannot set its own: run "
            f"ALTER ROLE {role} SET default_transaction_isolation = 'read committed'"
        )


async def connect(dsn: str, settings: Settings) -> RawConnection:
    """A connection of its own (the listener's): it prepares nothing, pooler or not."""
    connection: RawConnection = await asyncpg.connect(dsn, **connect_kwargs(0))
    await init_connection(connection)
    return connection


async def create_pool(dsn: str, settings: Settings) -> Pool:
    pool: Pool = await asyncpg.create_pool(
        dsn,
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        init=init_connection,
        **await pool_options(dsn, settings),
    )
    return pool


@contextlib.asynccontextmanager
async def open_pool(dsn: str, settings: Settings) -> AsyncIterator[Pool]:
    pool = await create_pool(dsn, settings)
    try:
        yield pool
    finally:
        await pool.close()
