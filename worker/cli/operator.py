"""``jobs``, ``retry``, ``callbacks``, ``pause``, ``resume``: what an operator sees and fixes."""

from __future__ import annotations

import argparse
import json
import uuid
from collections.abc import Coroutine
from typing import Any

from worker.cli.common import CommandError, since, with_pool
from worker.core.database import Pool
from worker.core.settings import Settings
from worker.queue import jobs


def _queues(settings: Settings, chosen: str | None) -> list[str]:
    """The live queue and its bulk queue, or the one of them ``--queue`` names."""
    names = jobs.operated_queues(settings.queue_name)
    if chosen is None:
        return names
    if chosen not in names:
        raise CommandError(f"--queue {chosen}: one of {', '.join(names)}")
    return [chosen]


def cmd_jobs(settings: Settings, args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    from worker.cli.text import job_lines

    queues = _queues(settings, args.queue)

    async def work(pool: Pool) -> int:
        found = await jobs.list_jobs_of(
            pool, queues, args.status, args.limit, tenant=args.tenant, since=args.since
        )
        if args.json:
            print(json.dumps([job.as_json() for job in found], indent=2))
            return 0
        print("\n".join(job_lines(found, wide=args.wide)))
        return 0

    return with_pool(settings, work)


def cmd_retry(settings: Settings, args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    queues = _queues(settings, args.queue)

    async def one(pool: Pool) -> int:
        queue, msg_id = args.queue or settings.queue_name, args.msg_id
        new_id = await jobs.retry_dead(pool, queue, msg_id)
        if new_id is not None:
            print(f"message {msg_id} is back on {queue} as {new_id}")
            return 0
        job = await jobs.get_job(pool, queue, msg_id)
        if job is not None and job.retried_as is not None:
            raise CommandError(f"message {msg_id} was already retried as {job.retried_as}")
        state = f" (it is {job.status})" if job is not None else ""
        hint = "" if args.queue else await _dead_elsewhere(pool, settings, msg_id)
        raise CommandError(f"message {msg_id} is not a dead letter of {queue}{state}{hint}")

    async def every(pool: Pool) -> int:
        resent = await jobs.retry_all_dead(pool, queues, args.since)
        for item in resent:
            print(f"message {item.msg_id} is back on {item.queue} as {item.new_id}")
        print(f"retried {len(resent)} dead letter(s)")
        return 0

    if args.all_dead == (args.msg_id is not None):
        raise CommandError("give either a msg_id or --all-dead")
    if args.since is not None and not args.all_dead:
        raise CommandError("--since goes with --all-dead")
    return with_pool(settings, every if args.all_dead else one)


async def _dead_elsewhere(pool: Pool, settings: Settings, msg_id: int) -> str:
    """How to retry ``msg_id`` when the bulk queue has that dead letter (msg_ids are per queue)."""
    for name in jobs.operated_queues(settings.queue_name)[1:]:
        job = await jobs.get_job(pool, name, msg_id)
        if job is not None and job.status == "dead":
            return f"; {name} has a dead letter {msg_id}: retry {msg_id} --queue {name}"
    return ""


def cmd_callbacks(settings: Settings, args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    from worker.cli.text import callback_lines

    async def show(pool: Pool) -> int:
        failed = await jobs.failed_callbacks(pool, args.limit)
        print("\n".join(callback_lines(failed)))
        print(f"{len(failed)} failed invalidation(s)")
        return 0

    async def resend(pool: Pool) -> int:
        ids = await jobs.resend_callbacks(pool, args.ids or None)
        missing = sorted(set(args.ids) - set(ids))
        print(
            f"{len(ids)} failed invalidation(s) due again: a running worker sends them within 10 s"
        )
        if missing:
            raise CommandError(f"not failed invalidations: {', '.join(map(str, missing))}")
        return 0

    if args.action == "resend":
        return with_pool(settings, resend)
    if not args.failed:
        raise CommandError("say what to see: callbacks --failed, or callbacks resend [ID ...]")
    return with_pool(settings, show)


def cmd_pause(settings: Settings, args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    from worker.queue import control

    async def work(pool: Pool) -> int:
        name = settings.queue_name
        if args.command == "pause":
            changed = await control.pause(pool, name)
            print(
                f"queue {name} paused (its bulk queue too): "
                "every replica stops reading within one poll"
                if changed
                else f"queue {name} was already paused"
            )
        else:
            changed = await control.resume(pool, name)
            print(f"queue {name} resumed" if changed else f"queue {name} was not paused")
        return 0

    return with_pool(settings, work)


def add_commands(commands: Any) -> None:
    """jobs, retry, callbacks: what an operator looks at and puts right."""
    listing = commands.add_parser("jobs", help="list job runs")
    listing.add_argument("--status", choices=jobs.JOB_STATUSES)
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--tenant", type=uuid.UUID)
    listing.add_argument("--since", type=since, help="updated since: ISO time or 30m, 2h, 1d")
    listing.add_argument("--wide", action="store_true", help="whole tenant ids and errors")
    listing.add_argument("--json", action="store_true")
    listing.add_argument("--queue", help="only this queue (default: QUEUE_NAME and its bulk queue)")
    listing.set_defaults(handler=cmd_jobs)

    retry = commands.add_parser("retry", help="put dead letters back on the queue")
    retry.add_argument("msg_id", type=int, nargs="?")
    retry.add_argument("--all-dead", action="store_true", help="every dead letter not retried")
    retry.add_argument("--since", type=since, help="with --all-dead: those dead since then")
    retry.add_argument(
        "--queue", help="the msg_id's queue (default QUEUE_NAME); --all-dead: only this one"
    )
    retry.set_defaults(handler=cmd_retry)

    callbacks = commands.add_parser("callbacks", help="failed cache invalidations")
    callbacks.add_argument("action", nargs="?", choices=["resend"])
    callbacks.add_argument("ids", nargs="*", type=int, help="with resend: these (default all)")
    callbacks.add_argument("--failed", action="store_true", help="list the failed ones")
    callbacks.add_argument("--limit", type=int, default=50)
    callbacks.set_defaults(handler=cmd_callbacks)

    for name, what in (
        ("pause", "stop every replica reading the queue and its bulk queue"),
        ("resume", "undo pause"),
    ):
        commands.add_parser(name, help=what).set_defaults(handler=cmd_pause)
