"""The report as tables, printed from the same dictionary the JSON is written from."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from worker.bench.report import STEPS


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def render(report: dict[str, Any], console: Console) -> None:
    for table in (
        _latency(report),
        _aggregations(report),
        _throughput(report),
        _growth(report),
        _tenant_count(report),
        _live_behind_backlogs(report),
        _scale_out(report),
        _targets(report),
    ):
        console.print(table)
    memory = report["memory"]
    console.print(
        f"Peak RSS {memory['peak_rss_mb']:.1f} MB (at the end {memory['rss_at_end_mb']:.1f} MB): "
        f"{memory['method']}."
    )
    sql = report["migrations"]
    console.print(f"SQL measured: migrations up to {sql['latest']} (sha256 {sql['sha256']}).")
    verdict = (
        "[green]all targets hold[/]" if report["all_targets_hold"] else "[red]targets missed[/]"
    )
    console.print(f"Total {report['seconds']:.0f} s — {verdict}")


def _scale_out(report: dict[str, Any]) -> Table:
    table = Table(title="Scale-out: worker processes draining the same backlog")
    columns = ("processes", "messages", "wall s", "drain s", "msg/s", "recomputes/msg", "lost",
               "drift rows")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="right")
    for r in report["scale_out"]:
        table.add_row(
            str(r["processes"]), str(r["messages"]), f"{r['wall_seconds']:.2f}",
            f"{r['drain_seconds']:.2f}", f"{r['per_second']:.1f}",
            f"{r['recomputes_per_message']:.3f}", str(r["lost"]), str(r["drift_rows"]),
        )  # fmt: skip
    return table


def _latency(report: dict[str, Any]) -> Table:
    latency = report["latency"]
    table = Table(title=f"Latency, {latency['matches']} matches one at a time (ms)")
    table.add_column("", no_wrap=True)
    for column in ("p50", "p95", "p99", "mean", "max"):
        table.add_column(column, justify="right")
    rows = [
        ("worker: commit → callback received", latency["worker_ms"]),
        ("raw SQL, concurrent (as the handler)", latency["raw_concurrent_ms"]),
        ("raw SQL, sequential (one connection)", latency["raw_sequential_ms"]),
        ("  worker: commit → handler starts", latency["breakdown_ms"]["pickup"]),
        ("  worker: handler (scope + eleven)", latency["breakdown_ms"]["handler"]),
        ("  worker: handler done → callback", latency["breakdown_ms"]["delivery"]),
    ]
    for name, figures in rows:
        table.add_row(name, *(_ms(figures[c]) for c in ("p50", "p95", "p99", "mean", "max")))
    return table


def _aggregations(report: dict[str, Any]) -> Table:
    table = Table(title="Per aggregation (ms): p50 / p95")
    table.add_column("", no_wrap=True)
    sources = {
        "worker": report["aggregations_ms"]["worker"],
        "raw concurrent": report["aggregations_ms"]["raw_concurrent"],
        "raw sequential": report["aggregations_ms"]["raw_sequential"],
        "backlog drain": report["aggregations_ms"]["backlog"],
    }
    for growth in report["growth"].values():
        if isinstance(growth, dict):
            sources[f"worker, {growth['matches_per_tenant']:,} matches"] = growth["aggregations_ms"]
    for name in sources:
        table.add_column(name, justify="right")
    for step in STEPS:
        cells = []
        for figures in sources.values():
            row = figures.get(step)
            cells.append(f"{_ms(row['p50'])} / {_ms(row['p95'])}" if row else "-")
        table.add_row(step, *cells)
    return table


def _throughput(report: dict[str, Any]) -> Table:
    backlog, queue = report["backlog"], report["queue_overhead"]
    table = Table(title="Throughput")
    for column in ("", "messages", "seconds", "per second", "recomputes"):
        table.add_column(column, justify="left" if not column else "right")
    rows = [
        (f"backlog, coalescing ({backlog['coalesced']['tenants']} tenants)", backlog["coalesced"]),
        (
            f"backlog, coalesce off ({backlog['one_by_one']['tenants']} tenants)",
            backlog["one_by_one"],
        ),
        (f"no-op handler (batch {queue['batch_size']})", queue["noop_worker"]),
        (f"raw pgmq read+delete (batch {queue['batch_size']})", queue["raw_pgmq_loop"]),
    ]
    for name, figures in rows:
        recomputes = figures.get("recomputes")
        table.add_row(
            name,
            f"{figures['messages']:,}",
            _num(figures["seconds"]),
            _num(figures["per_second"], 1),
            "-" if recomputes is None else f"{recomputes:,}",
        )
    return table


def _growth(report: dict[str, Any]) -> Table:
    table = Table(title="Growth: appended-match latency, worker (ms)")
    for column in ("matches per tenant", "appended", "p50", "p95", "p99"):
        table.add_column(column, justify="right")
    for size in ("small", "large"):
        growth = report["growth"][size]
        figures = growth["latency_ms"]
        table.add_row(
            f"{growth['matches_per_tenant']:,}",
            str(figures["count"]),
            *(_ms(figures[c]) for c in ("p50", "p95", "p99")),
        )
    return table


def _tenant_count(report: dict[str, Any]) -> Table:
    counted = report["tenant_count"]
    table = Table(
        title=f"Tenant count: one tenant of {counted['matches_per_tenant']:,} matches, appended to"
        f" alone and among {counted['many']} ({counted['copied_rows']:,} rows copied in"
        f" {counted['copy_seconds']:.0f} s) (ms)"
    )
    for column in ("tenants", "appended", "worker p50", "worker p95", "raw sequential p50"):
        table.add_column(column, justify="right")
    for tenants, key in (("1", "alone"), (str(counted["many"]), "among_many")):
        figures = counted[key]
        table.add_row(
            tenants,
            str(figures["latency_ms"]["count"]),
            _ms(figures["latency_ms"]["p50"]),
            _ms(figures["latency_ms"]["p95"]),
            _ms(figures["raw_sequential_ms"]["p50"]),
        )
    return table


def _live_behind_backlogs(report: dict[str, Any]) -> Table:
    during = report["during_backfill"]
    table = Table(
        title=f"Live matches behind {during['backfill_messages']:,} messages of another tenant (ms)"
    )
    for column in ("while", "matches", "p50", "p99", "max", "backlog left"):
        table.add_column(column, justify="left" if column == "while" else "right")
    for label, key, left in (
        ("idle", "idle_ms", ""),
        ("backfill on the bulk queue", "during_ms", f"{during['bulk_left_at_end']:,}"),
        ("the same on the live queue", "during_flood_ms", f"{during['flood_left_at_end']:,}"),
    ):
        figures = during[key]
        table.add_row(
            label,
            str(figures["count"]),
            _ms(figures["p50"]),
            _ms(figures["p99"]),
            _ms(figures["max"]),
            left,
        )
    return table


def _targets(report: dict[str, Any]) -> Table:
    table = Table(title="Targets")
    for column in ("target", "value", "limit", "holds"):
        table.add_column(column, justify="left" if column == "target" else "right")
    for target in report["targets"]:
        table.add_row(
            target["description"],
            _num(target["value"]),
            f"{target['comparison']} {_num(target['limit'])}",
            "[green]yes[/]" if target["holds"] else "[red]no[/]",
        )
    return table
