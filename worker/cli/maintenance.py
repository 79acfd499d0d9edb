"""``rebuild``, ``verify``, ``purge``: the statistics recomputed or checked, old rows deleted."""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Coroutine
from typing import Any

from worker.cli.common import with_pool
from worker.core.database import Pool
from worker.core.settings import Settings


def cmd_rebuild(settings: Settings, args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    from rich.console import Console
    from rich.progress import Progress

    from worker.callback.invalidator import CacheInvalidator
    from worker.callback.posting import http_client
    from worker.core.queries import query
    from worker.stats import maintenance

    async def work(pool: Pool) -> int:
        tenant_ids = await maintenance.tenants(pool, args.tenant)
        scopes = await maintenance.scopes(pool, tenant_ids)
        matches = sum(len(scope.match_ids) for scope in scopes)
        with Progress(console=Console(stderr=True)) as progress:
            bar = progress.add_task(f"rebuilding {matches} match(es)", total=matches or 1)
            await maintenance.rebuild(pool, scopes, lambda done: progress.advance(bar, done))
            progress.update(bar, completed=matches or 1)
        print(f"rebuilt the statistics of {matches} match(es) in {len(tenant_ids)} tenant(s)")
        async with http_client(settings) as client:
            await CacheInvalidator(pool, settings, client).send_due_now()
        owed = await pool.fetchval(query("pending_callbacks"))
        if settings.cache_invalidation_url is None:
            print("CACHE_INVALIDATION_URL is not set: no cache invalidation posted")
        elif owed:
            print(f"{owed} invalidation(s) not delivered yet: a running worker retries them")
        else:
            print("posted the cache invalidation of every rebuilt tenant")
        return 0

    return with_pool(settings, work)


def cmd_verify(settings: Settings, args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    from rich.console import Console
    from rich.progress import MofNCompleteColumn, Progress

    from worker.cli.text import drift_lines, drift_summary
    from worker.stats import maintenance

    async def work(pool: Pool) -> int:
        tenant_ids = await maintenance.tenants(pool, args.tenant)
        scopes = await maintenance.scopes(pool, tenant_ids)
        matches = sum(len(scope.match_ids) for scope in scopes)
        drift = []
        # Counted in matches like rebuild's, each statistic of a tenant a share of
        # its matches, so one big tenant moves the bar as its statistics are checked.
        columns = (*Progress.get_default_columns(), MofNCompleteColumn())
        with Progress(*columns, console=Console(stderr=True)) as progress:
            bar = progress.add_task(f"verifying {matches} match(es)", total=matches or 1)
            for scope in scopes:
                drift += await maintenance.verify(
                    pool, scope.tenant_id, lambda done: progress.advance(bar, done)
                )
            progress.update(bar, completed=matches or 1)
        for item in drift[: args.show]:
            print("\n".join(drift_lines(item)))
        if len(drift) > args.show:
            print(f"... and {len(drift) - args.show} more row(s) (--show N prints more)")
        print(drift_summary(drift, len(tenant_ids)))
        return 1 if drift else 0

    return with_pool(settings, work)


def cmd_purge(settings: Settings, args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    from worker.upkeep import retention

    async def work(pool: Pool) -> int:
        names = retention.queue_names(settings)
        report = await retention.purge(pool, settings, names, dry_run=args.dry_run)
        verb = "would purge" if args.dry_run else "purged"
        for table, rows in report.rows.items():
            print(f"{table}: {verb} {rows} row(s)")
        print(f"{verb} {report.total} row(s) in {report.seconds:.1f} s")
        return 0

    return with_pool(settings, work)


def add_commands(commands: Any) -> None:
    """rebuild, verify, purge."""
    rebuild = commands.add_parser("rebuild", help="recompute every statistic from scratch")
    rebuild.add_argument("--tenant", type=uuid.UUID)
    rebuild.set_defaults(handler=cmd_rebuild)

    check = commands.add_parser("verify", help="report statistics that differ from a recompute")
    check.add_argument("--tenant", type=uuid.UUID)
    check.add_argument("--show", type=int, default=20, help="differing rows to print")
    check.set_defaults(handler=cmd_verify)

    purging = commands.add_parser("purge", help="delete rows past their retention")
    purging.add_argument("--dry-run", action="store_true", help="only count them")
    purging.set_defaults(handler=cmd_purge)
