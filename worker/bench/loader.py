"""The reference league: generated, bulk-loaded, rebuilt, and its future scheduled.

History is written with :func:`~worker.stats.league.write_history` (COPY, enqueue
triggers off) and its statistics computed with :func:`~worker.stats.maintenance.rebuild`.
The matches the measurements complete later are written as the app first
creates them (:func:`~worker.stats.league.write_scheduled`); their results go to the
bench's own ``bench.pending`` tables, tagged with the phase that will use them.

Besides the reference tenants, two growth tenants are loaded: one with
``growth_small`` and one with ``growth_large`` matches of history. The
tenant-count measurement has a database of its own, loaded with one tenant of
the reference size (:func:`load_lone_tenant`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from worker.bench.options import BenchOptions
from worker.core import database
from worker.core.database import Connection, Pool
from worker.core.queries import query
from worker.core.settings import Settings
from worker.schema.migrate import migrate
from worker.stats.league import (
    League,
    Match,
    Tenant,
    generate_league,
    write_clubs,
    write_history,
    write_scheduled,
)
from worker.stats.maintenance import rebuild, scopes, tenants

LATENCY, BACKLOG, ONE_BY_ONE = "latency", "backlog", "one_by_one"
GROWTH_SMALL, GROWTH_LARGE = "growth_small", "growth_large"
PHASES = (LATENCY, BACKLOG, ONE_BY_ONE, GROWTH_SMALL, GROWTH_LARGE)
ALONE, AMONG_MANY = "tenant_alone", "tenant_among_many"
"""The lone tenant's matches: completed with it alone, then among its copies."""

ProgressSink = Callable[[str, int, int], None]
"""(stage, done, total): told as loading goes on."""


@dataclass
class LoadReport:
    postgres: str = ""
    reference_tenants: int = 0
    history_matches: int = 0
    counted_matches: int = 0
    lineup_rows: int = 0
    phase_sizes: dict[str, int] = field(default_factory=dict)
    phase_tenants: dict[str, int] = field(default_factory=dict)
    growth_tenants: dict[str, str] = field(default_factory=dict)
    """Phase → tenant id."""
    seconds: dict[str, float] = field(default_factory=dict)
    """generate, write, rebuild, vacuum."""


@dataclass
class _Plan:
    clubs: League = field(default_factory=lambda: League([]))
    history: list[Match] = field(default_factory=list)
    scheduled: list[Match] = field(default_factory=list)
    phases: dict[str, list[Match]] = field(default_factory=dict)


async def load_league(
    settings: Settings, dsn: str, options: BenchOptions, progress: ProgressSink
) -> LoadReport:
    """Fill the (fresh, empty) database at ``dsn`` with the reference league."""
    report = LoadReport(reference_tenants=options.tenants)
    started = time.perf_counter()
    progress("generating the league", 0, 1)
    plan = _plan(options)
    report.seconds["generate"] = time.perf_counter() - started
    await _load(settings, dsn, plan, report, progress)
    report.growth_tenants = {
        phase: str(plan.phases[phase][0].tenant_id) for phase in (GROWTH_SMALL, GROWTH_LARGE)
    }
    return report


async def load_lone_tenant(
    settings: Settings, dsn: str, options: BenchOptions, progress: ProgressSink
) -> LoadReport:
    """Fill the database at ``dsn`` with one tenant of the reference size.

    Its ``2 x growth_matches`` scheduled matches are the phases ``ALONE`` (the
    first half) and ``AMONG_MANY``.
    """
    report = LoadReport(reference_tenants=1)
    league = _league(options, options.seed + 3, 1, options.matches + 2 * options.growth_matches)
    tenant = league.tenants[0]
    upcoming = _counted(tenant.matches[options.matches :])
    half = len(upcoming) // 2
    plan = _Plan(
        clubs=league,
        history=tenant.matches[: options.matches],
        scheduled=tenant.matches[options.matches :],
        phases={ALONE: upcoming[:half], AMONG_MANY: upcoming[half:]},
    )
    await _load(settings, dsn, plan, report, progress)
    return report


async def _load(
    settings: Settings, dsn: str, plan: _Plan, report: LoadReport, progress: ProgressSink
) -> None:
    """Write ``plan``, compute the history's statistics, leave the database tidy."""
    async with database.open_pool(dsn, settings) as pool:
        async with pool.acquire() as connection:
            report.postgres = await connection.fetchval(query("bench_server_version"))
            started = time.perf_counter()
            await migrate(connection, settings.queue_name)
            await _write(connection, plan, progress)
            report.seconds["write"] = time.perf_counter() - started
        started = time.perf_counter()
        await _rebuild_all(pool, progress)
        report.seconds["rebuild"] = time.perf_counter() - started
        started = time.perf_counter()
        progress("vacuum analyze, checkpoint", 0, 1)
        await pool.execute(query("bench_vacuum_analyze"))
        await pool.execute(query("bench_checkpoint"))
        report.seconds["vacuum"] = time.perf_counter() - started
        report.history_matches = len(plan.history)
        report.counted_matches = await pool.fetchval(query("bench_counted_matches"))
        report.lineup_rows = await pool.fetchval(query("bench_lineup_rows"))
    report.phase_sizes = {phase: len(matches) for phase, matches in plan.phases.items()}
    report.phase_tenants = {
        phase: len({m.tenant_id for m in matches}) for phase, matches in plan.phases.items()
    }


def _plan(options: BenchOptions) -> _Plan:
    plan = _Plan()
    pending = options.pending_per_tenant()
    reference = _league(options, options.seed, options.tenants, options.matches + pending)
    growth = [
        (GROWTH_SMALL, options.growth_small, options.seed + 1),
        (GROWTH_LARGE, options.growth_large, options.seed + 2),
    ]
    leagues = [(reference, options.matches)]
    for phase, history, seed in growth:
        league = _league(options, seed, 1, history + options.growth_matches)
        league = _renumbered(league, after=[clubs for clubs, _ in leagues])
        leagues.append((league, history))
        plan.phases[phase] = _counted(league.tenants[0].matches[history:])
    for league, history in leagues:
        plan.clubs.tenants += league.tenants
        for tenant in league.tenants:
            plan.history += tenant.matches[:history]
            plan.scheduled += tenant.matches[history:]
    upcoming = _counted(
        sorted(
            (m for tenant in reference.tenants for m in tenant.matches[options.matches :]),
            key=lambda m: (m.played_at, m.id),
        )
    )
    shared = options.latency_matches + options.backlog_messages
    plan.phases[LATENCY] = upcoming[: options.latency_matches]
    plan.phases[BACKLOG] = upcoming[options.latency_matches : shared]
    few = {t.id for t in reference.tenants[: options.one_by_one_tenants()]}
    later = [m for m in upcoming[shared:] if m.tenant_id in few]
    plan.phases[ONE_BY_ONE] = later[: options.one_by_one_messages]
    return plan


def _league(options: BenchOptions, seed: int, tenant_count: int, matches: int) -> League:
    return generate_league(
        seed=seed,
        tenants=tenant_count,
        players=options.players,
        matches=matches,
        season_matches=options.season_matches,
        side_min=options.side_min,
        side_max=options.side_max,
    )


def _counted(matches: Sequence[Match]) -> list[Match]:
    """The matches whose completion sends a message (cancelled ones send none)."""
    return [m for m in matches if m.status == "completed"]


def _renumbered(league: League, after: Sequence[League]) -> League:
    """``league`` with player, season and match ids past those of ``after``."""

    def top(ids: Callable[[Tenant], Sequence[int]]) -> int:
        return max((i for other in after for t in other.tenants for i in ids(t)), default=0)

    players = top(lambda t: list(t.players))
    seasons = top(lambda t: list(t.seasons))
    matches = top(lambda t: [m.id for m in t.matches])
    renumbered = League([])
    for tenant in league.tenants:
        copy = Tenant(tenant.id, tenant.name)
        copy.players = {pid + players: name for pid, name in tenant.players.items()}
        copy.seasons = {sid + seasons: info for sid, info in tenant.seasons.items()}
        for m in tenant.matches:
            lineup = [replace(line, player_id=line.player_id + players) for line in m.lineup]
            season = m.season_id + seasons if m.season_id is not None else None
            copy.matches.append(replace(m, id=m.id + matches, season_id=season, lineup=lineup))
        renumbered.tenants.append(copy)
    return renumbered


async def _write(connection: Connection, plan: _Plan, progress: ProgressSink) -> None:
    steps = ("clubs", "history", "scheduled matches", "their results")
    progress("writing the league", 0, len(steps))
    await write_clubs(connection, plan.clubs)
    progress("writing the league", 1, len(steps))
    await write_history(connection, plan.history)
    progress("writing the league", 2, len(steps))
    await write_scheduled(connection, plan.scheduled)
    progress("writing the league", 3, len(steps))
    await _write_pending(connection, plan.phases)
    await connection.execute(query("bench_analyze"))
    progress("writing the league", 4, len(steps))


async def _write_pending(connection: Connection, phases: dict[str, list[Match]]) -> None:
    await connection.execute(query("bench_create_tables"))
    rows = [
        (m.id, phase, i, m.tenant_id, m.status, m.team_a_score, m.team_b_score)
        for phase, matches in phases.items()
        for i, m in enumerate(matches)
    ]
    await connection.copy_records_to_table(
        "pending",
        schema_name="bench",
        records=rows,
        columns=[
            "match_id",
            "phase",
            "ordinal",
            "tenant_id",
            "status",
            "team_a_score",
            "team_b_score",
        ],
    )
    lines = [
        (m.id, line.player_id, line.team, line.goals, line.assists, line.own_goals, line.is_mvp)
        for matches in phases.values()
        for m in matches
        for line in m.lineup
    ]
    await connection.copy_records_to_table(
        "pending_lines",
        schema_name="bench",
        records=lines,
        columns=["match_id", "player_id", "team", "goals", "assists", "own_goals", "is_mvp"],
    )


async def _rebuild_all(pool: Pool, progress: ProgressSink) -> None:
    tenant_scopes = await scopes(pool, await tenants(pool))
    total = sum(len(scope.match_ids) for scope in tenant_scopes)
    done = 0.0
    progress("computing the history's statistics (rebuild)", 0, total)

    def advance(matches: float) -> None:
        nonlocal done
        done += matches
        progress("computing the history's statistics (rebuild)", round(done), total)

    await rebuild(pool, tenant_scopes, advance)
