"""``stats-worker soak`` at a small scale: the command runs, judges and reports."""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg

from tests.support import run_cli
from worker.soak import Sample, judge


async def test_a_short_soak_stays_flat_and_exact(server_dsn, tmp_path):
    report_path = tmp_path / "soak.json"
    name = f"sw_soak_{uuid.uuid4().hex[:10]}"
    try:
        result = await asyncio.to_thread(
            run_cli, server_dsn, "soak", "--minutes", "0.3", "--json", str(report_path),
            "--database", name,
        )  # fmt: skip
    finally:
        admin = await asyncpg.connect(server_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "soak passed" in result.stdout
    report = json.loads(report_path.read_text())
    assert report["drift"] == 0
    assert report["callbacks_refused"] > 0  # the app really was flaky
    assert len(report["samples"]) >= 10
    assert set(report["flat"]) == {"rss_mb", "fds", "tasks"}


def test_the_judge_sees_growth_after_the_warm_up():
    steady = [Sample(float(s), 60.0, 30, 26 if s == 9 else 15, s) for s in range(20)]
    assert all(judge(steady).values())  # a burst of work in flight is no growth
    leaking = [Sample(float(s), 60.0 + s, 30 + s, 15, s) for s in range(20)]
    verdict = judge(leaking)
    assert verdict == {"rss_mb": False, "fds": False, "tasks": True}
