"""``stats-worker bench``: the report's shape, never its timings."""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
import uuid
from typing import Any

import asyncpg
import pytest

from tests.support import ROOT
from worker.bench.options import BenchOptions
from worker.bench.report import STEPS
from worker.bench.samples import percentile, summary_ms
from worker.bench.targets import targets

SUMMARY = {"count", "p50", "p95", "p99", "mean", "max"}
DRAINED = {"messages", "seconds", "per_second"}
TARGETS = {"latency_p50", "latency_p99", "sequential_p50", "backlog_drain", "queue_overhead",
           "growth", "tenant_count", "live_during_backfill", "live_during_flood",
           "scale_out_throughput",
           "scale_out_recomputes", "peak_rss"}  # fmt: skip


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def assert_numbers(figures: dict[str, Any], keys: set[str]) -> None:
    assert keys <= figures.keys(), keys - figures.keys()
    for key in keys:
        assert is_number(figures[key]), (key, figures[key])


def assert_steps(per_step: dict[str, Any]) -> None:
    assert set(per_step) == set(STEPS)
    for figures in per_step.values():
        assert_numbers(figures, {"p50", "p95"})


def assert_report_shape(report: dict[str, Any]) -> None:
    assert is_number(report["seconds"])
    assert isinstance(report["finished_at"], str)
    assert_numbers(report["machine"], {"cpus"})
    assert {"python", "postgres", "server", "platform"} <= report["machine"].keys()
    assert {"latest", "sha256"} <= report["migrations"].keys()
    assert_numbers(report["options"], {"tenants", "players", "matches", "latency_matches"})
    assert_numbers(report["worker_settings"], {"concurrency", "batch_size", "pool_max_size"})
    league = report["league"]
    assert_numbers(league, {"tenants", "history_matches", "counted_matches", "lineup_rows"})
    assert_numbers(league["load_seconds"], {"generate", "write", "rebuild", "vacuum"})

    latency = report["latency"]
    assert is_number(latency["matches"])
    for name in ("worker_ms", "raw_concurrent_ms", "raw_sequential_ms"):
        assert_numbers(latency[name], SUMMARY)
    for name in ("pickup", "handler", "delivery"):
        assert_numbers(latency["breakdown_ms"][name], SUMMARY)
    for source in ("worker", "raw_concurrent", "raw_sequential", "backlog", "one_by_one"):
        assert_steps(report["aggregations_ms"][source])

    backlog = report["backlog"]
    assert_numbers(backlog["coalesced"], DRAINED | {"recomputes", "tenants"})
    assert_numbers(backlog["one_by_one"], DRAINED | {"recomputes", "tenants"})
    assert is_number(backlog["ratio"])
    queue = report["queue_overhead"]
    assert_numbers(queue, {"batch_size", "concurrency", "ratio"})
    assert_numbers(queue["noop_worker"], DRAINED)
    assert_numbers(queue["raw_pgmq_loop"], DRAINED)

    growth = report["growth"]
    assert is_number(growth["ratio_p50"])
    for size in ("small", "large"):
        assert is_number(growth[size]["matches_per_tenant"])
        assert_numbers(growth[size]["latency_ms"], SUMMARY)
        assert_steps(growth[size]["aggregations_ms"])

    counted = report["tenant_count"]
    assert_numbers(counted, {"many", "matches_per_tenant", "copied_rows", "ratio_p50"})
    assert counted["many"] == report["options"]["many_tenants"]
    assert counted["copied_rows"] > counted["matches_per_tenant"] * (counted["many"] - 1)
    for key in ("alone", "among_many"):
        assert_numbers(counted[key]["latency_ms"], SUMMARY)
        assert counted[key]["latency_ms"]["count"] > 0
        assert_numbers(counted[key]["raw_sequential_ms"], SUMMARY)
        assert_steps(counted[key]["aggregations_ms"])
    during = report["during_backfill"]
    assert_numbers(during, {"backfill_messages", "bulk_left_at_end", "flood_left_at_end",
                            "ratio_p99", "flood_ratio_p99"})  # fmt: skip
    assert during["backfill_messages"] > 0
    assert during["flood_left_at_end"] > 0  # each live match was measured behind a backlog
    for key in ("idle_ms", "during_ms", "during_flood_ms"):
        assert_numbers(during[key], SUMMARY)

    scale = report["scale_out"]
    assert [r["processes"] for r in scale] == [1, 2, 4]
    for r in scale:
        assert_numbers(r, {"messages", "wall_seconds", "drain_seconds", "per_second",
                           "recomputes_per_message", "lost", "drift_rows"})  # fmt: skip
        assert r["drift_rows"] == 0, r  # every round ends exact
        assert r["messages"] > 0 and r["recomputes_per_message"] > 0

    assert_numbers(report["memory"], {"peak_rss_mb", "rss_at_end_mb"})
    phases = {"load", "latency", "backlog", "queue_overhead", "scale_out", "tenant_count"}
    assert_numbers(report["memory"]["peak_rss_after_mb"], phases)
    assert "ru_maxrss" in report["memory"]["method"]

    assert {t["name"] for t in report["targets"]} == TARGETS
    for target in report["targets"]:
        assert_numbers(target, {"value", "limit"})
        assert target["comparison"] in {"<", "<=", ">="}
        assert isinstance(target["holds"], bool)
        assert target["description"]
    assert isinstance(report["all_targets_hold"], bool)


def tail(stdout: bytes, stderr: bytes) -> str:
    """The end of both streams: where a failed or stuck bench got to."""
    out, err = (stream.decode(errors="replace")[-3000:] for stream in (stdout, stderr))
    return f"{out}\n--- stderr\n{err}"


@pytest.mark.timeout(600)
async def test_quick_bench_writes_every_figure_and_target(server_dsn, tmp_path):
    name = f"sw_bench_{uuid.uuid4().hex[:10]}"
    path = tmp_path / "bench.json"
    environment = {**os.environ, "DATABASE_URL": server_dsn, "COLUMNS": "160"}
    try:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "worker.cli", "bench", "--quick"),
            *("--database", name, "--json", str(path)),
            cwd=ROOT,
            env=environment,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), 540)
        except TimeoutError:
            process.kill()
            stdout, stderr = await process.communicate()
            pytest.fail(f"the quick bench ran past 540 s; its last words:\n{tail(stdout, stderr)}")
        assert process.returncode == 0, tail(stdout, stderr)
        assert "Targets" in stdout.decode()
        assert_report_shape(json.loads(path.read_text()))
    finally:
        admin = await asyncpg.connect(server_dsn)
        try:
            for database in (name, f"{name}_tenants"):
                await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        finally:
            await admin.close()


def test_percentiles_interpolate_between_ranks():
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([1.0, 2.0], 50) == 1.5
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 100) == 5.0
    assert math.isnan(percentile([], 50))
    assert summary_ms([0.001, 0.003])["p50"] == pytest.approx(2.0)


def figures(**overrides: float) -> dict[str, Any]:
    values = {"p50": 10.0, "raw": 10.0, "p99": 50.0, "sequential": 20.0, "backlog": 3.5,
              "queue": 0.9, "growth": 1.1, "tenants": 1.1, "rss": 70.0, "backfill": 1.5,
              "flood": 1.5, "scaling": 1.2, "recomputes": 1.0, **overrides}  # fmt: skip
    one = {"processes": 1, "per_second": 100.0, "recomputes_per_message": 1.0}
    more = [{"processes": n, "per_second": 100.0 * values["scaling"],
             "recomputes_per_message": values["recomputes"]} for n in (2, 4)]  # fmt: skip
    return {
        "latency": {
            "worker_ms": {"p50": values["p50"], "p99": values["p99"]},
            "raw_concurrent_ms": {"p50": values["raw"]},
            "raw_sequential_ms": {"p50": values["sequential"]},
        },
        "backlog": {"ratio": values["backlog"]},
        "queue_overhead": {"ratio": values["queue"]},
        "growth": {"ratio_p50": values["growth"]},
        "tenant_count": {"many": 200, "ratio_p50": values["tenants"]},
        "memory": {"peak_rss_mb": values["rss"]},
        "during_backfill": {"ratio_p99": values["backfill"], "flood_ratio_p99": values["flood"]},
        "scale_out": [one, *more],
    }


def test_targets_hold_up_to_their_limits_and_fail_past_them():
    assert all(t["holds"] for t in targets(figures()))
    at_limits = figures(p50=16.5, sequential=25.0, backlog=3.0, growth=1.2, tenants=1.2, rss=100,
                        backfill=2.0, flood=2.0, scaling=1.0, recomputes=1.1)  # fmt: skip
    assert all(t["holds"] for t in targets(at_limits))
    failing = figures(p50=16.6, p99=100.0, sequential=25.1, backlog=2.9, queue=0.7, growth=1.21,
                      tenants=1.21, rss=101, backfill=2.1, flood=2.1, scaling=0.99,
                      recomputes=1.11)  # fmt: skip
    assert not any(t["holds"] for t in targets(failing))
    without_samples = targets(figures(p50=math.nan, p99=math.nan))
    assert not without_samples[0]["holds"]
    assert not without_samples[1]["holds"]


def test_options_take_overrides_and_refuse_nonsense():
    quick = BenchOptions.preset(quick=True)
    assert quick.tenants < BenchOptions().tenants
    assert quick.with_overrides(tenants=7, matches=None).tenants == 7
    with pytest.raises(ValueError, match="--backlog-messages"):
        BenchOptions().with_overrides(backlog_messages=0)
    with pytest.raises(ValueError, match="side"):
        BenchOptions().with_overrides(players=6, side_min=4)
