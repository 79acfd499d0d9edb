"""``run``, ``migrate``, ``enqueue``: the worker itself, its database, a message by hand."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

from worker.cli.common import CommandError, with_pool
from worker.core import servers
from worker.core.database import Pool
from worker.core.settings import Settings
from worker.core.startup import wait_for_database


def cmd_run(settings: Settings, args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    from worker.app import run_worker

    async def run() -> int:
        with servers.database_dsn(settings, allow_embedded=False) as dsn:
            # The pool's server, and the session one (LISTEN, migrate) when it differs.
            for target in dict.fromkeys((dsn, settings.session_dsn(dsn))):
                await wait_for_database(target, settings)
            await run_worker(settings, dsn, until_empty=args.until_empty)
        return 0

    return run()


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    from worker.schema.migrate import migrate_for

    async def work() -> int:
        with servers.database_dsn(settings, allow_embedded=False) as dsn:
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

    return with_pool(settings, work)


def add_commands(commands: Any) -> None:
    """run, migrate, enqueue."""
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
