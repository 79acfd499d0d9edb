"""``demo``, ``bench``, ``soak``: the worker shown, measured and run for long."""

from __future__ import annotations

import argparse
from collections.abc import Coroutine
from typing import Any

from worker.cli.common import CommandError
from worker.core.logs import configure_logging
from worker.core.redact import Redactor
from worker.core.settings import Settings


def cmd_demo(settings: Settings, args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    from rich.console import Console

    from worker.demo import DemoOptions, run_demo

    options = DemoOptions(
        seed=args.seed,
        tenants=args.tenants,
        players=args.players,
        matches=args.matches,
        database=args.database,
    )
    # The demo prints its own story; the worker's per-message lines would drown it.
    configure_logging("WARNING", settings.log_format, Redactor.of(settings))
    return run_demo(settings, options, Console())


def cmd_bench(settings: Settings, args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    from pathlib import Path

    from rich.console import Console

    from worker.bench.options import BenchOptions
    from worker.bench.runner import run_bench

    sizes = {name: value for name, value in vars(args).items() if name.startswith("bench_")}
    options = BenchOptions.preset(quick=args.quick).with_overrides(
        **{name.removeprefix("bench_"): value for name, value in sizes.items()}
    )
    # The report is the output; the worker's per-message lines would drown it.
    configure_logging("WARNING", settings.log_format, Redactor.of(settings))
    json_path = Path(args.json) if args.json else None
    return run_bench(settings, options, Console(), json_path)


def cmd_soak(settings: Settings, args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    from pathlib import Path

    from rich.console import Console

    from worker.soak import SOAK_DATABASE, run_soak

    if args.minutes <= 0:
        raise CommandError("--minutes must be above 0")
    # The flaky app makes every other invalidation a warning: only errors would matter here.
    configure_logging("ERROR", settings.log_format, Redactor.of(settings))
    json_path = Path(args.json) if args.json else None
    database_name = args.database or SOAK_DATABASE
    return run_soak(settings, args.minutes, Console(), json_path, database_name=database_name)


def add_demo(commands: Any) -> None:
    demo = commands.add_parser("demo", help="play a small league through the worker")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--tenants", type=int, default=3)
    demo.add_argument("--players", type=int, default=24)
    demo.add_argument("--matches", type=int, default=100, help="per tenant")
    demo.add_argument(
        "--database", default="stats_worker_demo", help="database to (re)create for the demo"
    )
    demo.set_defaults(handler=cmd_demo)


def add_measurements(commands: Any) -> None:
    """bench, soak."""
    bench = commands.add_parser(
        "bench", help="measure latency and throughput on a reference league"
    )
    bench.add_argument("--quick", action="store_true", help="a small league (under a minute)")
    bench.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    for flag, what in (
        ("seed", "league seed"),
        ("tenants", "reference tenants"),
        ("players", "players per tenant"),
        ("matches", "history matches per tenant"),
        ("season-matches", "matches per season"),
        ("side-min", "fewest players a side"),
        ("side-max", "most players a side"),
        ("latency-matches", "matches timed one at a time"),
        ("backlog-messages", "messages drained with coalescing"),
        ("one-by-one-messages", "messages drained with coalescing off"),
        ("noop-messages", "messages for the no-op handler and the raw pgmq loop"),
        ("scale-out-messages", "corrections drained by 1, 2 and 4 worker processes"),
        ("growth-small", "history of the small growth tenant"),
        ("growth-large", "history of the large growth tenant"),
        ("growth-matches", "matches appended to each growth tenant"),
        ("many-tenants", "tenants in the database of the tenant-count measurement"),
        ("backfill-messages", "backfill of another tenant on the bulk queue"),
        ("backfill-live-matches", "live matches timed idle, then during that backfill"),
    ):
        dest = f"bench_{flag.replace('-', '_')}"
        bench.add_argument(f"--{flag}", type=int, metavar="N", dest=dest, help=what)
    bench.add_argument(
        "--database",
        metavar="NAME",
        dest="bench_database",
        help="default stats_worker_bench (and NAME_tenants for the tenant-count measurement)",
    )
    bench.set_defaults(handler=cmd_bench)

    soak = commands.add_parser(
        "soak", help="steady load with a flaky app; check memory, descriptors and tasks stay flat"
    )
    soak.add_argument("--minutes", type=float, default=10.0)
    soak.add_argument("--json", metavar="PATH", help="also write the samples as JSON")
    soak.add_argument("--database", metavar="NAME", help="default stats_worker_soak")
    soak.set_defaults(handler=cmd_soak)
