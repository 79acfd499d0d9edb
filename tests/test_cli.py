"""The command line as an operator uses it: real processes, a real database."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import pytest

from tests.support import ROOT, dsn_for_database

QUEUE = "stats_updates"
NO_DATABASE_URL = (
    "stats-worker: DATABASE_URL is not set "
    "(set it, or EMBEDDED=true for a local embedded PostgreSQL)"
)


def _environment(database_url: str | None, **env: str) -> dict[str, str]:
    # The developer's own DATABASE_URL or EMBEDDED must not leak into a test.
    inherited = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "EMBEDDED"}}
    environment = {**inherited, "LOG_FORMAT": "json", **env}
    if database_url is not None:
        environment["DATABASE_URL"] = database_url
    return environment


def cli(
    database_url: str | None, *args: str, stdin: str = "", **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        check=False,
        cwd=ROOT,
        env=_environment(database_url, **env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _split_stderr(stderr: str) -> tuple[list[dict[str, Any]], list[str]]:
    """(JSON log records, every other line): the latter is what a person reads."""
    records, others = [], []
    for line in stderr.splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            others.append(line)
    return records, others


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _with_address(dsn: str, userinfo: str | None = None, port: int | None = None) -> str:
    """``dsn`` with other credentials and/or at 127.0.0.1:``port`` (TCP, not a socket)."""
    parts = urlsplit(dsn)
    old_userinfo, _, address = parts.netloc.rpartition("@")
    query = parts.query
    if port is not None:
        address = f"127.0.0.1:{port}"
        query = urlencode([(k, v) for k, v in parse_qsl(query) if k != "host"])
    userinfo = old_userinfo if userinfo is None else userinfo
    netloc = f"{userinfo}@{address}" if userinfo else address
    return urlunsplit(parts._replace(netloc=netloc, query=query))


Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def _upstream(dsn: str) -> Callable[[], Awaitable[Streams]]:
    """How to reach the server of ``dsn``: TCP, or the embedded server's Unix socket."""
    parts = urlsplit(dsn)
    if parts.hostname:
        return lambda: asyncio.open_connection(parts.hostname, parts.port or 5432)
    socket_dir = Path(dict(parse_qsl(parts.query))["host"])
    path = str(next(socket_dir.glob(".s.PGSQL.*[0-9]")))
    return lambda: asyncio.open_unix_connection(path)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def tcp_proxy(port: int, upstream: Callable[[], Awaitable[Streams]]) -> AsyncIterator[None]:
    """Forward 127.0.0.1:``port`` to the real server: a database that "comes up"."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await upstream()
        await asyncio.gather(_pipe(reader, server_writer), _pipe(server_reader, writer))

    server = await asyncio.start_server(serve, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MAX_ATTEMPTS", "many"),
        ("CONCURRENCY", "0"),
        ("QUEUE_NAME", "Bad-Name"),
        ("QUEUE_NAME", "stats_updates\n"),
        ("PORT", "70000"),
        ("LOG_LEVEL", "bogus"),
        ("STATS_READ_ROLES", "app; drop table x"),
    ],
)
def test_a_bad_setting_stops_start_up_with_one_line_naming_it(variable, value):
    result = cli(None, "migrate", **{variable: value})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert variable in lines[0]


@pytest.mark.parametrize("command", ["run", "migrate"])
def test_a_database_that_never_comes_is_retried_then_one_line_without_the_password(command):
    port = _free_port()  # nothing listens there
    password = "p%40ss%3Aw%2Frd%23hunter2"  # p@ss:w/rd#hunter2, percent-encoded
    started = time.monotonic()
    result = cli(
        f"postgresql://app:{password}@127.0.0.1:{port}/db",
        command,
        STARTUP_TIMEOUT_SECONDS="2",
        PORT="0",
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert elapsed >= 2
    records, lines = _split_stderr(result.stderr)
    assert len(lines) == 1, result.stderr
    assert re.match(
        rf"stats-worker: database at 127\.0\.0\.1:{port} not reachable after \d+ s "
        r"\(\d+ tries\): ConnectionRefusedError: ",
        lines[0],
    ), lines[0]
    tries = [r for r in records if r["message"] == "database not reachable yet"]
    assert [r["attempt"] for r in tries] == list(range(1, len(tries) + 1))
    assert len(tries) >= 3
    assert {r["level"] for r in tries} == {"WARNING"}
    assert all(r["retry_in_seconds"] > 0 and "ConnectionRefusedError" in r["error"] for r in tries)
    assert f"({len(tries) + 1} tries)" in lines[0]
    for spelling in ("hunter2", password, "p@ss"):
        assert spelling not in result.stderr + result.stdout


async def test_run_waits_for_a_database_that_comes_up_late(database_url):
    port = _free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker.cli",
        "run",
        "--until-empty",
        cwd=ROOT,
        env=_environment(
            _with_address(database_url, port=port), STARTUP_TIMEOUT_SECONDS="30", PORT="0"
        ),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    early = b""
    while b"database not reachable yet" not in early:  # the first try has failed
        line = await asyncio.wait_for(process.stderr.readline(), timeout=30)
        assert line, early.decode()
        early += line
    async with tcp_proxy(port, _upstream(database_url)):
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    stderr = early + stderr
    assert process.returncode == 0, stderr.decode()
    records, lines = _split_stderr(stderr.decode())
    assert lines == []
    messages = [r["message"] for r in records]
    assert "database not reachable yet" in messages
    assert messages.index("database reachable") > messages.index("database not reachable yet")


@pytest.mark.parametrize(
    ("command", "change", "error"),
    [
        ("run", "role", "InvalidAuthorizationSpecificationError"),
        ("migrate", "database", "InvalidCatalogNameError"),
    ],
)
def test_a_refused_login_fails_at_once_without_waiting(server_dsn, command, change, error):
    if change == "role":  # trust auth: a role that does not exist is the refusal
        dsn = _with_address(server_dsn, userinfo="nobody_xyz:s3cret-pw")
    else:
        dsn = dsn_for_database(server_dsn, "no_such_database_xyz")
    started = time.monotonic()
    result = cli(dsn, command, STARTUP_TIMEOUT_SECONDS="30", PORT="0")
    assert time.monotonic() - started < 15  # far from the 30 s it would have waited
    assert result.returncode == 1
    records, lines = _split_stderr(result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("stats-worker: cannot connect to the database at ")
    assert f"(not retried): {error}: " in lines[0]
    assert not [r for r in records if r["message"] == "database not reachable yet"]
    assert "s3cret-pw" not in result.stderr + result.stdout


@pytest.mark.parametrize("command", ["run", "migrate", "jobs"])
def test_without_database_url_only_embedded_true_starts_a_server(command, tmp_path):
    data_dir = tmp_path / "pgdata"
    result = cli(None, command, EMBEDDED_DATA_DIR=str(data_dir), STARTUP_TIMEOUT_SECONDS="30")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [NO_DATABASE_URL]
    assert not data_dir.exists()  # no server was started


def test_an_unusable_embedded_data_dir_is_one_line(tmp_path):
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("")
    result = cli(None, "run", EMBEDDED="true", EMBEDDED_DATA_DIR=str(not_a_dir / "pgdata"))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"stats-worker: EMBEDDED_DATA_DIR {not_a_dir / 'pgdata'} cannot be used: "
        "NotADirectoryError: Not a directory"
    ]


async def test_enqueue_from_argument_and_stdin_then_list_and_retry(database_url, conn):
    first = cli(database_url, "enqueue", '{"tenant_id": "x", "match_id": 1}')
    assert first.returncode == 0, first.stderr
    second = cli(database_url, "enqueue", stdin='{"hello": "stdin"}')
    assert second.returncode == 0, second.stderr
    ids = [int(first.stdout), int(second.stdout)]
    bodies = await conn.fetch(f"SELECT msg_id, message FROM pgmq.q_{QUEUE} ORDER BY msg_id")
    assert [r["msg_id"] for r in bodies] == ids
    assert bodies[1]["message"] == {"hello": "stdin"}

    listed = cli(database_url, "jobs", "--status", "queued", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [job["msg_id"] for job in json.loads(listed.stdout)] == ids[::-1]

    not_json = cli(database_url, "enqueue", "{nope")
    assert not_json.returncode == 1
    assert "not JSON" in not_json.stderr

    missing = cli(database_url, "retry", "999")
    assert missing.returncode == 1
    assert "not a dead letter" in missing.stderr


async def test_enqueue_with_delay_is_invisible_until_then(database_url, conn: asyncpg.Connection):
    result = cli(database_url, "enqueue", "--delay", "60", '{"tenant_id": "x", "match_id": 1}')
    assert result.returncode == 0, result.stderr
    metrics = await conn.fetchrow("SELECT * FROM pgmq.metrics($1)", QUEUE)
    assert metrics["queue_length"] == 1
    assert metrics["queue_visible_length"] == 0


def test_run_with_embedded_true_starts_an_embedded_server_and_consumes(tmp_path):
    embedded = {"EMBEDDED": "true", "EMBEDDED_DATA_DIR": str(tmp_path / "pgdata")}
    body = '{"tenant_id": "00000000-0000-0000-0000-000000000001", "match_id": 1}'
    premature = cli(None, "enqueue", body, **embedded)
    assert premature.returncode == 1
    assert "run `stats-worker migrate` first" in premature.stderr
    first = cli(None, "run", "--until-empty", PORT="0", **embedded)
    assert first.returncode == 0, first.stderr  # migrated, found nothing, stopped
    enqueued = cli(None, "enqueue", body, **embedded)
    assert enqueued.returncode == 0, enqueued.stderr
    run = cli(None, "run", "--until-empty", PORT="0", **embedded)
    assert run.returncode == 0, run.stderr
    assert '"message succeeded"' in run.stderr
    listed = cli(None, "jobs", "--json", **embedded)
    assert [job["status"] for job in json.loads(listed.stdout)] == ["succeeded"]


async def test_another_queue_name_needs_move_queue_and_says_what_it_repoints(database_url, conn):
    refused = cli(database_url, "migrate", QUEUE_NAME="other_queue")
    assert refused.returncode == 1
    [line] = refused.stderr.strip().splitlines()
    assert "--move-queue" in line and "'stats_updates'" in line
    assert cli(database_url, "run", "--until-empty", QUEUE_NAME="other_queue").returncode == 1
    assert await conn.fetchval("SELECT stats.queue_name()") == "stats_updates"

    moved = cli(database_url, "migrate", "--move-queue", QUEUE_NAME="other_queue")
    assert moved.returncode == 0, moved.stderr
    assert "from queue stats_updates to other_queue" in moved.stdout
    assert await conn.fetchval("SELECT stats.queue_name()") == "other_queue"
    msg_id = await conn.fetchval("SELECT stats.enqueue_match(gen_random_uuid(), 1)")
    assert await conn.fetchval("SELECT count(*) FROM pgmq.q_other_queue WHERE msg_id = $1", msg_id)
