"""``stats-worker``: the command line. Each command is a small function, grouped by topic:
``consume`` (run, migrate, enqueue), ``operator`` (jobs, retry, callbacks, pause,
resume), ``maintenance`` (rebuild, verify, purge) and ``tools`` (demo, bench, soak);
``text`` lays out what they print.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import asyncpg

from worker.cli import consume, maintenance, operator, tools
from worker.cli.common import CommandError
from worker.core import database, servers
from worker.core.logs import configure_logging
from worker.core.redact import Redactor
from worker.core.settings import SettingsError, load_settings
from worker.core.startup import DatabaseUnreachable
from worker.schema.migrate import MigrateError

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stats-worker",
        description="Keeps a league's statistics fresh from a pgmq queue. "
        "Settings come from environment variables (see README).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    # In the order ``--help`` lists them.
    consume.add_commands(commands)
    operator.add_commands(commands)
    tools.add_demo(commands)
    maintenance.add_commands(commands)
    tools.add_measurements(commands)
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
    except servers.DatabaseNotConfigured as exc:
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
