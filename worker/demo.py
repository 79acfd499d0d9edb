"""``stats-worker demo``: a small league played through the real worker.

Creates a database of its own (``stats_worker_demo``) on the embedded server or
on ``DATABASE_URL``'s server, schedules a few hundred matches, starts the worker
in this process, completes the matches the way the app does (one transaction
each, the triggers enqueue), and prints what a user would look at.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from worker.app import running_worker
from worker.core import database, servers
from worker.core.database import Pool
from worker.core.handlers import HandlerRegistry
from worker.core.queries import query
from worker.core.settings import Settings
from worker.queue.pgmq import Queue
from worker.schema.migrate import migrate
from worker.stats.aggregations import TABLES, Timings
from worker.stats.handler import StatsHandler
from worker.stats.league import (
    League,
    Match,
    complete_match,
    generate_league,
    write_clubs,
    write_scheduled,
)
from worker.stats.maintenance import verify

DEMO_DATABASE = "stats_worker_demo"


@dataclass(frozen=True)
class DemoOptions:
    seed: int = 7
    tenants: int = 3
    players: int = 24
    matches: int = 100
    database: str = DEMO_DATABASE


async def run_demo(settings: Settings, options: DemoOptions, console: Console) -> int:
    with servers.database_dsn(settings, allow_embedded=True) as server_dsn:
        dsn = await servers.recreate_database(server_dsn, options.database)
        league = generate_league(
            seed=options.seed,
            tenants=options.tenants,
            players=options.players,
            matches=options.matches,
        )
        # Port 0: the demo's worker serves /health and /metrics on any free port.
        demo_settings = settings.model_copy(update={"poll_interval_seconds": 0.5, "port": 0})
        async with database.open_pool(dsn, demo_settings) as pool:
            async with pool.acquire() as connection:
                await migrate(connection, settings.queue_name)
                await write_clubs(connection, league)
                await write_scheduled(connection, list(league.matches()))
            return await _play_through_worker(demo_settings, dsn, pool, league, console)


async def _play_through_worker(
    settings: Settings, dsn: str, pool: Pool, league: League, console: Console
) -> int:
    timings: list[Timings] = []

    def handlers(settings: Settings, pool: Pool) -> HandlerRegistry:
        return {settings.queue_name: StatsHandler(pool, on_timings=timings.append)}

    async with running_worker(settings, dsn, handlers):
        matches = sorted(league.matches(), key=lambda m: (m.played_at, m.id))
        # The timed match is the latest one that is played (a cancelled one sends nothing).
        last = next(m for m in reversed(matches) if m.status == "completed")
        matches.remove(last)
        started = time.perf_counter()
        await _complete_all(pool, matches, console)
        await _drained(Queue(pool, settings.queue_name))
        elapsed = time.perf_counter() - started
        console.print(
            f"[bold]{len(matches)}[/] matches completed and their statistics computed "
            f"in {elapsed:.1f} s ({len(matches) / elapsed:.0f} matches/s)\n"
        )
        latency = await _complete_and_time(pool, settings.queue_name, last)
        await _show(pool, league, last, console)
        _show_timings(timings, console)
        console.print(
            f"Last match completed → statistics committed and message settled in "
            f"[bold]{latency * 1000:.0f} ms[/]"
        )
        drift = [d for tenant in league.tenants for d in await verify(pool, tenant.id)]
        console.print(f"verify: {'no drift' if not drift else f'{len(drift)} rows differ'}")
        return 0 if not drift else 1


def _show_timings(timings: list[Timings], console: Console) -> None:
    table = Table(title=f"Aggregations over {len(timings)} recomputes (ms, concurrent)")
    for column in ("table", "median", "p95"):
        table.add_column(column, justify="left" if column == "table" else "right")
    for name in TABLES:
        samples = sorted(t.seconds[name] * 1000 for t in timings if name in t.seconds)
        if samples:
            p95 = samples[min(len(samples) - 1, int(len(samples) * 0.95))]
            table.add_row(name, f"{statistics.median(samples):.1f}", f"{p95:.1f}")
    console.print(table)


async def _complete_all(pool: Pool, matches: list[Match], console: Console) -> None:
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("completing matches", total=len(matches))
        async with pool.acquire() as connection:
            for match in matches:
                await complete_match(connection, match)
                progress.advance(task)


async def _drained(queue: Queue) -> None:
    while (await queue.depth()).length > 0:
        await asyncio.sleep(0.02)


async def _complete_and_time(pool: Pool, queue_name: str, match: Match) -> float:
    async with pool.acquire() as connection:
        await complete_match(connection, match)
        committed = time.perf_counter()
        async with asyncio.timeout(60):
            while (
                await connection.fetchval(query("settled_match_run"), queue_name, match.id) is None
            ):
                await asyncio.sleep(0.002)
    return time.perf_counter() - committed


async def _show(pool: Pool, league: League, last: Match, console: Console) -> None:
    tenant = next(t for t in league.tenants if t.id == last.tenant_id)
    season = await pool.fetchrow(query("demo_latest_season"), tenant.id)
    if season is not None:
        table = Table(title=f"{season['tenant']} — {season['name']} standings (top 10)")
        for column in ("#", "player", "P", "W", "D", "L", "goals", "assists", "pts"):
            table.add_column(column, justify="left" if column == "player" else "right")
        for row in await pool.fetch(query("demo_standings"), season["id"], 10):
            table.add_row(*(str(v) for v in row.values()))
        console.print(table)

    fame = Table(title="Hall of fame")
    for column in ("record", "player", "value", "match"):
        fame.add_column(column)
    for row in await pool.fetch(query("demo_hall_of_fame"), tenant.id):
        fame.add_row(row["record"], row["name"], str(row["value"]), str(row["match_id"] or ""))
    console.print(fame)

    ratings = Table(title="Top ratings (Elo) and form")
    for column in ("player", "rating", "rated", "last 5"):
        ratings.add_column(column)
    for row in await pool.fetch(query("demo_top_ratings"), tenant.id, 5):
        ratings.add_row(row["name"], f"{row['rating']:.2f}", str(row["rated_matches"]),
                        row["last5"] or "")  # fmt: skip
    console.print(ratings)

    report = await pool.fetchrow(query("demo_match_report"), last.id)
    if report is not None:
        winner = {"A": "team A won", "B": "team B won", "draw": "a draw"}[report["result"]]
        console.print(
            f"\n[bold]Match report #{last.id}[/] ({report['season'] or 'friendly'}, "
            f"{report['played_at']:%Y-%m-%d}): A {report['team_a_score']}-"
            f"{report['team_b_score']} B, {winner}; top scorer {report['top_scorer'] or '—'}, "
            f"MVP {report['mvp'] or '—'}"
        )
