"""The issue's targets: each figure of the report, its limit, and whether it holds."""

from __future__ import annotations

import math
import operator
from typing import Any

_HOLDS = {"<": operator.lt, "<=": operator.le, ">=": operator.ge}


def _target(name: str, text: str, value: float, comparison: str, limit: float) -> dict[str, Any]:
    holds = not math.isnan(value) and bool(_HOLDS[comparison](value, limit))
    return {
        "name": name,
        "description": text,
        "value": value,
        "comparison": comparison,
        "limit": limit,
        "holds": holds,
    }


def scale_out_ratios(rounds: list[dict[str, Any]]) -> dict[str, float]:
    """More processes against one: the slowest drain rate and the most recomputes per message."""
    by_count = {r["processes"]: r for r in rounds}
    one, more = by_count.get(1), [r for n, r in by_count.items() if n > 1]
    if one is None or not more or not one["per_second"] or not one["recomputes_per_message"]:
        return {"throughput": math.nan, "recomputes": math.nan}
    return {
        "throughput": min(r["per_second"] for r in more) / one["per_second"],
        "recomputes": max(r["recomputes_per_message"] for r in more)
        / one["recomputes_per_message"],
    }


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with its value, its limit and whether it holds."""
    worker, raw = report["latency"]["worker_ms"], report["latency"]["raw_concurrent_ms"]
    scaling = scale_out_ratios(report["scale_out"])
    return [
        _target(
            "latency_p50",
            "worker latency p50 (ms) <= 1.15 x raw concurrent SQL p50 + 5 ms",
            worker["p50"],
            "<=",
            1.15 * raw["p50"] + 5,
        ),
        _target("latency_p99", "worker latency p99 (ms) < 100 ms", worker["p99"], "<", 100.0),
        _target(
            "sequential_p50",
            "raw SQL recompute, sequential, p50 (ms) <= 25 ms",
            report["latency"]["raw_sequential_ms"]["p50"],
            "<=",
            25.0,
        ),
        _target(
            "backlog_drain",
            "backlog drain rate >= 3 x the one-by-one rate (ratio)",
            report["backlog"]["ratio"],
            ">=",
            3.0,
        ),
        _target(
            "queue_overhead",
            "no-op worker throughput >= 0.8 x the raw pgmq loop (ratio)",
            report["queue_overhead"]["ratio"],
            ">=",
            0.8,
        ),
        _target(
            "growth",
            "appended-match latency p50 at the large history <= 1.2 x at the small (ratio)",
            report["growth"]["ratio_p50"],
            "<=",
            1.2,
        ),
        _target(
            "tenant_count",
            f"appended-match latency p50 among {report['tenant_count']['many']} tenants"
            " <= 1.2 x alone (ratio)",
            report["tenant_count"]["ratio_p50"],
            "<=",
            1.2,
        ),
        _target(
            "live_during_backfill",
            "live-match latency p99 during another tenant's backfill <= 2 x idle p99 (ratio)",
            report["during_backfill"]["ratio_p99"],
            "<=",
            2.0,
        ),
        _target(
            "live_during_flood",
            "live-match latency p99 behind another tenant's backlog on the live queue"
            " <= 2 x idle p99 (ratio)",
            report["during_backfill"]["flood_ratio_p99"],
            "<=",
            2.0,
        ),
        _target(
            "scale_out_throughput",
            "scale-out: 2 and 4 worker processes drain >= 1 x as fast as one (ratio, slowest)",
            scaling["throughput"],
            ">=",
            1.0,
        ),
        _target(
            "scale_out_recomputes",
            "scale-out: recomputes per message with 2 and 4 processes <= 1.1 x with one"
            " (ratio, highest)",
            scaling["recomputes"],
            "<=",
            1.1,
        ),
        _target(
            "peak_rss",
            "peak RSS of the worker's process (MB) <= 100 MB",
            report["memory"]["peak_rss_mb"],
            "<=",
            100.0,
        ),
    ]
