"""The figures of a run and the JSON report (the targets it is held to: ``targets.py``)."""

from __future__ import annotations

import hashlib
import math
import os
import platform
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from worker.bench.during_backfill import DuringBackfill
from worker.bench.latency import RawLatency, WorkerLatency
from worker.bench.loader import BACKLOG, ONE_BY_ONE, LoadReport
from worker.bench.options import BenchOptions
from worker.bench.samples import summary_ms
from worker.bench.scale_out import Round
from worker.bench.targets import targets
from worker.bench.tenant_count import TenantCount
from worker.bench.throughput import Drained
from worker.core.queries import migrations
from worker.core.settings import Settings
from worker.stats.aggregations import TABLES

STEPS = ("scope", *TABLES)
"""Rows of the per-aggregation figures: the scope query, then the eleven."""
RSS_METHOD = (
    "getrusage(RUSAGE_SELF).ru_maxrss: the high-water mark of the bench process, which "
    "runs the worker, the callback receiver and the bench driver; the league is generated "
    "and loaded in a child process, whose memory is not counted"
)


def _migrations() -> dict[str, str]:
    found = migrations()
    digest = hashlib.sha256("".join(m.sql for m in found).encode()).hexdigest()
    return {"latest": found[-1].name if found else "", "sha256": digest[:16]}


@dataclass
class Results:
    options: BenchOptions
    settings: Settings
    server: str
    """``embedded`` or ``DATABASE_URL``."""
    load: LoadReport = field(default_factory=LoadReport)
    latency: WorkerLatency = field(default_factory=WorkerLatency)
    raw: RawLatency = field(default_factory=RawLatency)
    during_backfill: DuringBackfill = field(default_factory=DuringBackfill)
    growth: dict[str, WorkerLatency] = field(default_factory=dict)
    """``small`` and ``large``."""
    backlog: Drained = field(default_factory=Drained.none)
    one_by_one: Drained = field(default_factory=Drained.none)
    noop: Drained = field(default_factory=Drained.none)
    raw_loop: Drained = field(default_factory=Drained.none)
    scale_out: list[Round] = field(default_factory=list)
    tenant_count: TenantCount = field(default_factory=TenantCount)
    peak_rss_mb: float = 0.0
    peak_rss_after_mb: dict[str, float] = field(default_factory=dict)
    """The high-water mark as each phase ended (it only grows)."""
    rss_at_end_mb: float = 0.0
    seconds: float = 0.0
    migrations: dict[str, str] = field(default_factory=_migrations)
    """The SQL measured: the last migration applied, and a digest of them all."""


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else math.nan


def _tables(drained: Drained) -> dict[str, dict[str, float]]:
    return drained.tables.summary(STEPS) if drained.tables is not None else {}


def _drained(drained: Drained) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "messages": drained.messages,
        "seconds": drained.seconds,
        "per_second": drained.per_second,
    }
    if drained.recomputes is not None:
        figures["recomputes"] = drained.recomputes
    return figures


def as_json(results: Results) -> dict[str, Any]:
    """Every figure of the run, the targets and whether each holds."""
    options, settings = results.options, results.settings
    growth = {
        size: {
            "matches_per_tenant": getattr(options, f"growth_{size}"),
            "latency_ms": summary_ms(measured.seconds),
            "aggregations_ms": measured.tables.summary(STEPS),
        }
        for size, measured in results.growth.items()
    }
    report: dict[str, Any] = {
        "finished_at": datetime.now(UTC).isoformat(),
        "seconds": results.seconds,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "postgres": results.load.postgres,
            "server": results.server,
        },
        "migrations": results.migrations,
        "options": options.as_json(),
        "worker_settings": {
            "concurrency": settings.concurrency,
            "batch_size": settings.batch_size,
            "coalesce": settings.coalesce,
            "pool_max_size": settings.pool_max_size,
        },
        "scale_out": [r.as_json() for r in results.scale_out],
        "league": {
            "tenants": options.tenants,
            "players_per_tenant": options.players,
            "matches_per_tenant": options.matches,
            "history_matches": results.load.history_matches,
            "counted_matches": results.load.counted_matches,
            "lineup_rows": results.load.lineup_rows,
            "phase_sizes": results.load.phase_sizes,
            "phase_tenants": results.load.phase_tenants,
            "load_seconds": results.load.seconds,
        },
        "latency": {
            "matches": len(results.latency.seconds),
            "worker_ms": summary_ms(results.latency.seconds),
            "raw_concurrent_ms": summary_ms(results.raw.concurrent),
            "raw_sequential_ms": summary_ms(results.raw.sequential),
            "breakdown_ms": {
                "pickup": summary_ms(results.latency.pickup),
                "handler": summary_ms(results.latency.handler),
                "delivery": summary_ms(results.latency.delivery),
            },
        },
        "aggregations_ms": {
            "worker": results.latency.tables.summary(STEPS),
            "raw_concurrent": results.raw.concurrent_tables.summary(STEPS),
            "raw_sequential": results.raw.sequential_tables.summary(STEPS),
            "backlog": _tables(results.backlog),
            "one_by_one": _tables(results.one_by_one),
        },
        "backlog": {
            "coalesced": {
                **_drained(results.backlog),
                "tenants": results.load.phase_tenants.get(BACKLOG, 0),
            },
            "one_by_one": {
                **_drained(results.one_by_one),
                "tenants": results.load.phase_tenants.get(ONE_BY_ONE, 0),
            },
            "ratio": _ratio(results.backlog.per_second, results.one_by_one.per_second),
        },
        "queue_overhead": {
            "batch_size": settings.batch_size,
            "concurrency": settings.batch_size,
            "noop_worker": _drained(results.noop),
            "raw_pgmq_loop": _drained(results.raw_loop),
            "ratio": _ratio(results.noop.per_second, results.raw_loop.per_second),
        },
        "growth": {
            **growth,
            "ratio_p50": _ratio(
                growth["large"]["latency_ms"]["p50"], growth["small"]["latency_ms"]["p50"]
            ),
        },
        "tenant_count": _tenant_count(results.tenant_count),
        "memory": {
            "peak_rss_mb": results.peak_rss_mb,
            "rss_at_end_mb": results.rss_at_end_mb,
            "peak_rss_after_mb": results.peak_rss_after_mb,
            "method": RSS_METHOD,
        },
    }
    during = results.during_backfill
    idle_ms, during_ms = summary_ms(during.idle), summary_ms(during.during)
    flood_ms = summary_ms(during.during_flood)
    report["during_backfill"] = {
        "backfill_messages": during.backfill_messages,
        "bulk_left_at_end": during.bulk_left_at_end,
        "flood_left_at_end": during.flood_left_at_end,
        "idle_ms": idle_ms,
        "during_ms": during_ms,
        "during_flood_ms": flood_ms,
        "ratio_p99": _ratio(during_ms["p99"], idle_ms["p99"]),
        "flood_ratio_p99": _ratio(flood_ms["p99"], idle_ms["p99"]),
    }
    report["targets"] = targets(report)
    report["all_targets_hold"] = all(t["holds"] for t in report["targets"])
    finite: dict[str, Any] = _finite(report)
    return finite


def _tenant_count(measured: TenantCount) -> dict[str, Any]:
    alone, among = summary_ms(measured.alone.seconds), summary_ms(measured.among_many.seconds)
    return {
        "many": measured.many,
        "matches_per_tenant": measured.load.history_matches,
        "copied_rows": measured.copied_rows,
        "copy_seconds": measured.copy_seconds,
        "alone": {
            "latency_ms": alone,
            "raw_sequential_ms": summary_ms(measured.alone_raw.sequential),
            "aggregations_ms": measured.alone_raw.sequential_tables.summary(STEPS),
        },
        "among_many": {
            "latency_ms": among,
            "raw_sequential_ms": summary_ms(measured.among_many_raw.sequential),
            "aggregations_ms": measured.among_many_raw.sequential_tables.summary(STEPS),
        },
        "ratio_p50": _ratio(among["p50"], alone["p50"]),
        "raw_sequential_ratio_p50": _ratio(
            summary_ms(measured.among_many_raw.sequential)["p50"],
            summary_ms(measured.alone_raw.sequential)["p50"],
        ),
    }


def _finite(value: Any) -> Any:
    """The report with NaN (a figure without samples) as null, so the JSON is standard."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
