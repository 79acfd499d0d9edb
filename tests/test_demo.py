"""The README's "run it" command, end to end (it creates a database of its own)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid

import asyncpg

from tests.support import ROOT


def test_demo_prints_the_league_and_reports_no_drift(server_dsn):
    name = f"sw_demo_{uuid.uuid4().hex[:10]}"
    environment = {**os.environ, "DATABASE_URL": server_dsn, "COLUMNS": "120"}
    command = [sys.executable, "-m", "worker.cli", "demo", "--tenants", "2", "--matches", "40"]
    try:
        result = subprocess.run(
            [*command, "--database", name],
            cwd=ROOT,
            env=environment,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    finally:
        asyncio.run(_drop_database(server_dsn, name))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for heading in ("standings", "Hall of fame", "Match report", "Aggregations over"):
        assert heading in out
    assert "statistics committed and message settled in" in out
    assert "verify: no drift" in out


async def _drop_database(server_dsn: str, name: str) -> None:
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
