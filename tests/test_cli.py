"""The command line as an operator uses it: real processes, a real database."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import asyncpg
import pytest

from tests.support import ROOT

QUEUE = "stats_updates"


def cli(
    database_url: str | None, *args: str, stdin: str = "", **env: str
) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "LOG_FORMAT": "json", **env}
    environment.pop("DATABASE_URL", None)
    if database_url is not None:
        environment["DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        check=False,
        cwd=ROOT,
        env=environment,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [("MAX_ATTEMPTS", "many"), ("CONCURRENCY", "0"), ("QUEUE_NAME", "Bad-Name"), ("PORT", "70000")],
)
def test_a_bad_setting_stops_start_up_with_one_line_naming_it(variable, value):
    result = cli(None, "migrate", **{variable: value})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert variable in lines[0]


def test_a_bad_database_url_password_is_not_echoed():
    result = cli("postgresql://app:hunter2@127.0.0.1:1/db", "migrate")
    assert result.returncode != 0
    assert "hunter2" not in result.stderr + result.stdout
    assert result.stderr.startswith("stats-worker: database error:")


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


def test_run_without_database_url_starts_an_embedded_server_and_consumes(tmp_path):
    data_dir = str(tmp_path / "pgdata")
    body = '{"tenant_id": "00000000-0000-0000-0000-000000000001", "match_id": 1}'
    premature = cli(None, "enqueue", body, EMBEDDED_DATA_DIR=data_dir)
    assert premature.returncode == 1
    assert "run `stats-worker migrate` first" in premature.stderr
    first = cli(None, "run", "--until-empty", EMBEDDED_DATA_DIR=data_dir, PORT="0")
    assert first.returncode == 0, first.stderr  # migrated, found nothing, stopped
    enqueued = cli(None, "enqueue", body, EMBEDDED_DATA_DIR=data_dir)
    assert enqueued.returncode == 0, enqueued.stderr
    run = cli(None, "run", "--until-empty", EMBEDDED_DATA_DIR=data_dir, PORT="0")
    assert run.returncode == 0, run.stderr
    assert '"message succeeded"' in run.stderr
    listed = cli(None, "jobs", "--json", EMBEDDED_DATA_DIR=data_dir)
    assert [job["status"] for job in json.loads(listed.stdout)] == ["succeeded"]
