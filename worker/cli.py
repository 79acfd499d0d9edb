"""``stats-worker``: the command line. Each command is a small function."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from worker.core import database
from worker.core.database import Pool
from worker.core.logs import configure_logging
from worker.core.redact import Redactor
from worker.core.settings import Settings, SettingsError, load_settings
from worker.core.startup import DatabaseUnreachable, wait_for_database
from worker.queue import jobs
from worker.schema.migrate import MigrateError

EXIT_USAGE = 2


class CommandError(Exception):
    """A command cannot do what was asked; the message says why."""


async def _with_pool(settings: Settings, work: Callable[[Pool], Awaitable[int]]) -> int:
    with database.database_dsn(settings, allow_embedded=False) as dsn:
        async with database.open_pool(dsn, settings) as pool:
            return await work(pool)


def cmd_run(settings: Settings, args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    from worker.app import run_worker

    async def run() -> int:
        with database.database_dsn(settings, allow_embedded=False) as dsn:
            # The pool's server, and the session one (LISTEN, migrate) when it differs.
            for target in dict.fromkeys((dsn, settings.session_dsn(dsn))):
                await wait_for_database(target, settings)
            await run_worker(settings, dsn, until_empty=args.until_empty)
        return 0

    return run()


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    from worker.app import migrate_for

    async def work() -> int:
        with database.database_dsn(settings, allow_embedded=False) as dsn:
            # A migrate step on deploy races the database's restart just as ``run`` does.
            await wait_for_database(settings.session_dsn(dsn), settings)
            report = await migrate_for(settings, dsn, move_queue=args.move_queue)
        if report.moved_from_queue:
            print(
                f"re-pointed the app's triggers from queue {report.moved_from_queue} "
                f"to {settings.queue_name}"
            )
        applied = ", ".join(report.applied) or "none (up to date)"
        print(f"pgmq: {report.pgmq}")
        print(f"queue {settings.queue_name}: {'created' if report.queue_created else 'exists'}")
        print(f"migrations applied: {applied}")
        if report.definitions:
            print(f"statistics' definitions re-applied: {', '.join(report.definitions)}")
        if report.indexes_created:
            print(f"indexes created concurrently: {', '.join(report.indexes_created)}")
        if report.backfilled_tenants:
            print(f"backfilled the statistics of {report.backfilled_tenants} tenant(s)")
        return 0

    return work()


def _read_body(args: argparse.Namespace) -> Any:
    text = args.body if args.body is not None else sys.stdin.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(f"the message is not JSON: {exc}") from None


def cmd_enqueue(settings: Settings, args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    from worker.queue.pgmq import send

    body = _read_body(args)
    run_at = datetime.now(UTC) + timedelta(seconds=args.delay) if args.delay else None

    async def work(pool: Pool) -> int:
        msg_id = await send(pool, args.queue or settings.queue_name, body, run_at)
        print(msg_id)
        return 0

    return _with_pool(settings, work)


def cmd_jobs(settings: Settings, args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    from worker.cli_text import job_lines

    async def work(pool: Pool) -> int:
        found = await jobs.list_jobs(
            pool, settings.queue_name, args.status, args.limit, tenant=args.tenant, since=args.since
        )
        if args.json:
            print(json.dumps([job.as_json() for job in found], indent=2))
            return 0
        print("\n".join(job_lines(found, wide=args.wide)))
        return 0

    return _with_pool(settings, work)


def _since(text: str) -> datetime:
    """``--since``: an ISO-8601 time (UTC when no offset) or a span back from now: 30m, 2h, 1d."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[:-1].isdigit() and text[-1:] in units:
        return datetime.now(UTC) - timedelta(seconds=int(text[:-1]) * units[text[-1]])
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a time (2026-12-03T08:00) nor a span (30m, 2h, 1d)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def cmd_retry(settings: Settings, args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    async def one(pool: Pool) -> int:
        new_id = await jobs.retry_dead(pool, settings.queue_name, args.msg_id)
        if new_id is not None:
            print(f"message {args.msg_id} is back on the queue as {new_id}")
            return 0
        job = await jobs.get_job(pool, settings.queue_name, args.msg_id)
        if job is not None and job.retried_as is not None:
            raise CommandError(f"message {args.msg_id} was already retried as {job.retried_as}")
        state = f" (it is {job.status})" if job is not None else ""
        raise CommandError(
            f"message {args.msg_id} is not a dead letter of {settings.queue_name}{state}"
        )

    async def every(pool: Pool) -> int:
        resent = await jobs.retry_all_dead(pool, settings.queue_name, args.since)
        for old, new in resent:
            print(f"message {old} is back on the queue as {new}")
        print(f"retried {len(resent)} dead letter(s)")
        return 0

    if args.all_dead == (args.msg_id is not None):
        raise CommandError("give either a msg_id or --all-dead")
    if args.since is not None and not args.all_dead:
        raise CommandError("--since goes with --all-dead")
    return _with_pool(settings, every if args.all_dead else one)


def cmd_callbacks(settings: Settings, args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    from worker.cli_text import callback_lines

    async def show(pool: Pool) -> int:
        failed = await jobs.failed_callbacks(pool, args.limit)
        print("\n".join(callback_lines(failed)))
        print(f"{len(failed)} failed invalidation(s)")
        return 0

    async def resend(pool: Pool) -> int:
        ids = await jobs.resend_callbacks(pool, args.ids or None)
        missing = sorted(set(args.ids) - set(ids))
        print(f"{len(ids)} failed invalidation(s) due again: a running worker sends them now")
        if missing:
            raise CommandError(f"not failed invalidations: {', '.join(map(str, missing))}")
        return 0

    if args.action == "resend":
        return _with_pool(settings, resend)
    if not args.failed:
        raise CommandError("say what to see: callbacks --failed, or callbacks resend [ID ...]")
    return _with_pool(settings, show)


def cmd_pause(settings: Settings, args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    from worker.queue import control

    async def work(pool: Pool) -> int:
        name = settings.queue_name
        if args.command == "pause":
            changed = await control.pause(pool, name)
            print(
                f"queue {name} paused: every replica stops reading within one poll"
                if changed
                else f"queue {name} was already paused"
            )
        else:
            changed = await control.resume(pool, name)
            print(f"queue {name} resumed" if changed else f"queue {name} was not paused")
        return 0

    return _with_pool(settings, work)


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

    return _with_pool(settings, work)


def cmd_verify(settings: Settings, args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    from rich.console import Console
    from rich.progress import Progress

    from worker.cli_text import drift_lines, drift_summary
    from worker.stats import maintenance

    async def work(pool: Pool) -> int:
        tenant_ids = await maintenance.tenants(pool, args.tenant)
        drift = []
        with Progress(console=Console(stderr=True)) as progress:
            bar = progress.add_task("verifying tenants", total=len(tenant_ids) or 1)
            for tenant in tenant_ids:
                drift += await maintenance.verify(pool, tenant)
                progress.advance(bar)
        for item in drift[: args.show]:
            print("\n".join(drift_lines(item)))
        if len(drift) > args.show:
            print(f"... and {len(drift) - args.show} more row(s) (--show N prints more)")
        print(drift_summary(drift, len(tenant_ids)))
        return 1 if drift else 0

    return _with_pool(settings, work)


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

    return _with_pool(settings, work)


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

    from worker.soak import run_soak

    if args.minutes <= 0:
        raise CommandError("--minutes must be above 0")
    # The flaky app makes every other invalidation a warning: only errors would matter here.
    configure_logging("ERROR", settings.log_format, Redactor.of(settings))
    return run_soak(settings, args.minutes, Console(), Path(args.json) if args.json else None)


def _add_operator_commands(commands: Any) -> None:
    """jobs, retry, callbacks: what an operator looks at and puts right."""
    listing = commands.add_parser("jobs", help="list job runs")
    listing.add_argument("--status", choices=jobs.JOB_STATUSES)
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--tenant", type=uuid.UUID)
    listing.add_argument("--since", type=_since, help="updated since: ISO time or 30m, 2h, 1d")
    listing.add_argument("--wide", action="store_true", help="whole tenant ids and errors")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_jobs)

    retry = commands.add_parser("retry", help="put dead letters back on the queue")
    retry.add_argument("msg_id", type=int, nargs="?")
    retry.add_argument("--all-dead", action="store_true", help="every dead letter not retried")
    retry.add_argument("--since", type=_since, help="with --all-dead: those dead since then")
    retry.set_defaults(handler=cmd_retry)

    callbacks = commands.add_parser("callbacks", help="failed cache invalidations")
    callbacks.add_argument("action", nargs="?", choices=["resend"])
    callbacks.add_argument("ids", nargs="*", type=int, help="with resend: these (default all)")
    callbacks.add_argument("--failed", action="store_true", help="list the failed ones")
    callbacks.add_argument("--limit", type=int, default=50)
    callbacks.set_defaults(handler=cmd_callbacks)

    for name, what in (("pause", "stop every replica reading the queue"), ("resume", "undo pause")):
        commands.add_parser(name, help=what).set_defaults(handler=cmd_pause)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stats-worker",
        description="Keeps a league's statistics fresh from a pgmq queue. "
        "Settings come from environment variables (see README).",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="consume the queue (default: until SIGTERM)")
    run.add_argument("--until-empty", action="store_true", help="exit 0 once the queue is empty")
    run.set_defaults(handler=cmd_run)

    migrating = commands.add_parser("migrate", help="install pgmq, the queue and the schema")
    migrating.add_argument(
        "--move-queue",
        action="store_true",
        help="re-point the app's triggers to QUEUE_NAME when they send to another queue",
    )
    migrating.set_defaults(handler=cmd_migrate)

    enqueue = commands.add_parser("enqueue", help="put a message on the queue")
    enqueue.add_argument("body", nargs="?", help="JSON body (default: read stdin)")
    enqueue.add_argument("--delay", type=float, default=0.0, help="seconds before it is visible")
    enqueue.add_argument("--queue", help="queue name (default: QUEUE_NAME)")
    enqueue.set_defaults(handler=cmd_enqueue)

    _add_operator_commands(commands)

    demo = commands.add_parser("demo", help="play a small league through the worker")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--tenants", type=int, default=3)
    demo.add_argument("--players", type=int, default=24)
    demo.add_argument("--matches", type=int, default=100, help="per tenant")
    demo.add_argument(
        "--database", default="stats_worker_demo", help="database to (re)create for the demo"
    )
    demo.set_defaults(handler=cmd_demo)

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
    soak.set_defaults(handler=cmd_soak)
    return parser


def _fail(redact: Redactor, message: str) -> None:
    """The one line a failed command prints, with no secret in it."""
    print(f"stats-worker: {redact(message)}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"stats-worker: {exc}", file=sys.stderr)
        return EXIT_USAGE
    redact = Redactor.of(settings)
    configure_logging(settings.log_level, settings.log_format, redact)
    try:
        exit_code: int = asyncio.run(args.handler(settings, args))
        return exit_code
    except database.DatabaseNotConfigured as exc:
        _fail(redact, f"{exc}")
        return EXIT_USAGE
    except (
        CommandError,
        ValueError,
        MigrateError,
        database.PoolerMisconfigured,
        DatabaseUnreachable,
    ) as exc:
        _fail(redact, f"{exc}")
        return 1
    except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError) as exc:
        _fail(redact, f"{exc}: run `stats-worker migrate` first")
        return 1
    except database.DATABASE_ERRORS as exc:
        _fail(redact, f"database error: {type(exc).__name__}: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
