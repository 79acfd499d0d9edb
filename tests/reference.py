"""The eleven statistics of the contract, computed in plain Python.

This is the tests' independent oracle: :func:`expected_tables` reads nothing but
source rows and follows ``/work/shared/contract/stats.md`` line by line, with
none of the SQL functions involved. :func:`live_tables` reads the ``stats``
tables into the same canonical form, and :func:`table_differences` compares the
two (ratings within 0.01, as the contract allows).

It also holds :func:`drain`, which plays the worker's part for the SQL tests:
read the queue, ask ``stats.message_scope``, run the ten refreshes (each in its
own transaction, optionally concurrently) and then the hall of fame.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

Row = tuple[Any, ...]
Tables = dict[str, set[Row]]

RATING_TOLERANCE = 0.01

# Canonical column order of each table; report (free form) is left out.
COLUMNS: dict[str, tuple[str, ...]] = {
    "player_totals": (
        "tenant_id",
        "player_id",
        "appearances",
        "wins",
        "draws",
        "losses",
        "goals",
        "assists",
        "own_goals",
        "clean_sheets",
        "mvps",
        "points",
    ),
    "season_standings": (
        "tenant_id",
        "season_id",
        "player_id",
        "played",
        "wins",
        "draws",
        "losses",
        "goals",
        "assists",
        "points",
        "position",
    ),
    "personal_bests": (
        "tenant_id",
        "player_id",
        "most_goals",
        "most_goals_match_id",
        "most_assists",
        "most_assists_match_id",
        "biggest_win_margin",
        "biggest_win_match_id",
    ),
    "hall_of_fame": ("tenant_id", "record", "player_id", "value", "match_id"),
    "match_reports": (
        "tenant_id",
        "match_id",
        "result",
        "team_a_score",
        "team_b_score",
        "top_scorer_id",
        "mvp_id",
    ),
    "player_form": ("tenant_id", "player_id", "last5", "form_points"),
    "player_streaks": (
        "tenant_id",
        "player_id",
        "current_win",
        "longest_win",
        "current_unbeaten",
        "longest_unbeaten",
        "current_scoring",
        "longest_scoring",
    ),
    "partnerships": ("tenant_id", "player_id", "partner_id", "matches_together", "wins_together"),
    "season_leaderboards": ("tenant_id", "season_id", "category", "position", "player_id", "value"),
    "milestones": ("tenant_id", "player_id", "kind", "threshold", "match_id"),
    "player_ratings": ("tenant_id", "player_id", "rating", "rated_matches"),
}
TABLES = tuple(COLUMNS)
FIRST_PHASE = tuple(t for t in TABLES if t != "hall_of_fame")
THRESHOLDS = (10, 25, 50, 100, 250, 500)
CATEGORIES = ("goals", "assists", "mvps", "clean_sheets")


@dataclass(frozen=True)
class Match:
    id: int
    tenant_id: UUID
    season_id: int | None
    played_at: datetime
    status: str
    team_a_score: int | None
    team_b_score: int | None

    @property
    def counted(self) -> bool:
        return (
            self.status == "completed"
            and self.team_a_score is not None
            and self.team_b_score is not None
        )

    @property
    def order(self) -> tuple[datetime, int]:
        return (self.played_at, self.id)


@dataclass(frozen=True)
class Lineup:
    match_id: int
    player_id: int
    team: str
    goals: int = 0
    assists: int = 0
    own_goals: int = 0
    is_mvp: bool = False


@dataclass(frozen=True)
class Appearance:
    match: Match
    line: Lineup

    @property
    def own(self) -> int:
        score = self.match.team_a_score if self.line.team == "A" else self.match.team_b_score
        assert score is not None
        return score

    @property
    def other(self) -> int:
        score = self.match.team_b_score if self.line.team == "A" else self.match.team_a_score
        assert score is not None
        return score

    @property
    def result(self) -> str:
        return "W" if self.own > self.other else "D" if self.own == self.other else "L"

    @property
    def points(self) -> int:
        return {"W": 3, "D": 1, "L": 0}[self.result]


# -- the reference -------------------------------------------------------------


def expected_tables(matches: Iterable[Match], lineups: Iterable[Lineup]) -> Tables:
    """Every table for every tenant, from source rows only."""
    tables: Tables = {name: set() for name in TABLES}
    counted = {m.id: m for m in matches if m.counted}
    lines_by_match: dict[int, list[Lineup]] = defaultdict(list)
    for line in lineups:
        lines_by_match[line.match_id].append(line)
    by_tenant: dict[UUID, list[Match]] = defaultdict(list)
    for match in counted.values():
        by_tenant[match.tenant_id].append(match)
    for tenant, tenant_matches in by_tenant.items():
        tenant_matches.sort(key=lambda m: m.order)
        _tenant_tables(tables, tenant, tenant_matches, lines_by_match)
    return tables


def _tenant_tables(
    tables: Tables,
    tenant: UUID,
    matches: list[Match],
    lines_by_match: Mapping[int, list[Lineup]],
) -> None:
    appearances: dict[int, list[Appearance]] = defaultdict(list)  # in match order
    for match in matches:
        for line in lines_by_match.get(match.id, []):
            appearances[line.player_id].append(Appearance(match, line))
    for player, apps in appearances.items():
        tables["player_totals"].add((tenant, player, *_totals(apps)))
        tables["personal_bests"].add((tenant, player, *_bests(apps)))
        tables["player_form"].add((tenant, player, *_form(apps)))
        tables["player_streaks"].add((tenant, player, *_streaks(apps)))
        for kind, threshold, match_id in _milestones(apps):
            tables["milestones"].add((tenant, player, kind, threshold, match_id))
    _seasons(tables, tenant, appearances)
    _partnerships(tables, tenant, matches, lines_by_match)
    _reports(tables, tenant, matches, lines_by_match)
    _hall_of_fame(tables, tenant, appearances)
    _ratings(tables, tenant, matches, lines_by_match)


def _totals(apps: list[Appearance]) -> Row:
    results = [a.result for a in apps]
    return (
        len(apps),
        results.count("W"),
        results.count("D"),
        results.count("L"),
        sum(a.line.goals for a in apps),
        sum(a.line.assists for a in apps),
        sum(a.line.own_goals for a in apps),
        sum(1 for a in apps if a.other == 0),
        sum(1 for a in apps if a.line.is_mvp),
        sum(a.points for a in apps),
    )


def _best(apps: list[Appearance], value: Any) -> tuple[int, int]:
    """The highest value; on a tie the earliest appearance (apps are in order)."""
    best = apps[0]
    for app in apps[1:]:
        if value(app) > value(best):
            best = app
    return value(best), best.match.id


def _bests(apps: list[Appearance]) -> Row:
    wins = [a for a in apps if a.result == "W"]
    margin: tuple[int | None, int | None] = (
        _best(wins, lambda a: a.own - a.other) if wins else (None, None)
    )
    return (
        *_best(apps, lambda a: a.line.goals),
        *_best(apps, lambda a: a.line.assists),
        *margin,
    )


def _form(apps: list[Appearance]) -> Row:
    last = list(reversed(apps))[:5]
    return "".join(a.result for a in last), sum(a.points for a in last)


def _runs(flags: list[bool]) -> tuple[int, int]:
    """(current, longest) run of True; current ends at the last element."""
    longest = current = 0
    for flag in flags:
        current = current + 1 if flag else 0
        longest = max(longest, current)
    return current, longest


def _streaks(apps: list[Appearance]) -> Row:
    return (
        *_runs([a.result == "W" for a in apps]),
        *_runs([a.result != "L" for a in apps]),
        *_runs([a.line.goals > 0 for a in apps]),
    )


def _milestones(apps: list[Appearance]) -> list[tuple[str, int, int]]:
    found = []
    for kind in ("appearances", "goals"):
        total = 0
        reached: set[int] = set()
        for app in apps:
            total += 1 if kind == "appearances" else app.line.goals
            for threshold in THRESHOLDS:
                if total >= threshold and threshold not in reached:
                    reached.add(threshold)
                    found.append((kind, threshold, app.match.id))
    return found


def _seasons(tables: Tables, tenant: UUID, appearances: Mapping[int, list[Appearance]]) -> None:
    per_season: dict[int, dict[int, list[Appearance]]] = defaultdict(lambda: defaultdict(list))
    for player, apps in appearances.items():
        for app in apps:
            if app.match.season_id is not None:
                per_season[app.match.season_id][player].append(app)
    for season, players in per_season.items():
        standings = []
        for player, apps in players.items():
            played, wins, draws, losses, goals, assists, _, _, _, points = _totals(apps)
            standings.append((player, played, wins, draws, losses, goals, assists, points))
        standings.sort(key=lambda s: (-s[7], -s[2], -s[5], s[0]))
        for position, (player, *values) in enumerate(standings, start=1):
            tables["season_standings"].add((tenant, season, player, *values, position))
        values_by_category = {
            "goals": lambda apps: sum(a.line.goals for a in apps),
            "assists": lambda apps: sum(a.line.assists for a in apps),
            "mvps": lambda apps: sum(1 for a in apps if a.line.is_mvp),
            "clean_sheets": lambda apps: sum(1 for a in apps if a.other == 0),
        }
        for category, measure in values_by_category.items():
            board = [(measure(apps), player) for player, apps in players.items()]
            board = sorted((b for b in board if b[0] > 0), key=lambda b: (-b[0], b[1]))[:10]
            for position, (value, player) in enumerate(board, start=1):
                tables["season_leaderboards"].add(
                    (tenant, season, category, position, player, value)
                )


def _partnerships(
    tables: Tables, tenant: UUID, matches: list[Match], lines_by_match: Mapping[int, list[Lineup]]
) -> None:
    together: dict[tuple[int, int], list[int]] = defaultdict(lambda: [0, 0])
    for match in matches:
        assert match.team_a_score is not None and match.team_b_score is not None
        winner = (
            "A"
            if match.team_a_score > match.team_b_score
            else "B"
            if match.team_b_score > match.team_a_score
            else None
        )
        lines = lines_by_match.get(match.id, [])
        for first in lines:
            for second in lines:
                if first.player_id < second.player_id and first.team == second.team:
                    pair = together[(first.player_id, second.player_id)]
                    pair[0] += 1
                    pair[1] += first.team == winner
    for (player, partner), (matches_together, wins) in together.items():
        tables["partnerships"].add((tenant, player, partner, matches_together, wins))


def _reports(
    tables: Tables, tenant: UUID, matches: list[Match], lines_by_match: Mapping[int, list[Lineup]]
) -> None:
    for match in matches:
        a, b = match.team_a_score, match.team_b_score
        assert a is not None and b is not None
        lines = lines_by_match.get(match.id, [])
        scorers = sorted((-line.goals, line.player_id) for line in lines if line.goals > 0)
        mvps = sorted(line.player_id for line in lines if line.is_mvp)
        result = "A" if a > b else "B" if b > a else "draw"
        tables["match_reports"].add(
            (
                tenant,
                match.id,
                result,
                a,
                b,
                scorers[0][1] if scorers else None,
                mvps[0] if mvps else None,
            )
        )


def _hall_of_fame(
    tables: Tables, tenant: UUID, appearances: Mapping[int, list[Appearance]]
) -> None:
    career = {
        "most_appearances": len,
        "most_goals": lambda apps: sum(a.line.goals for a in apps),
        "most_assists": lambda apps: sum(a.line.assists for a in apps),
        "most_wins": lambda apps: sum(1 for a in apps if a.result == "W"),
        "most_mvps": lambda apps: sum(1 for a in apps if a.line.is_mvp),
        "longest_win_streak": lambda apps: _runs([a.result == "W" for a in apps])[1],
    }
    for record, measure in career.items():
        candidates = sorted((-measure(apps), player) for player, apps in appearances.items())
        if candidates and -candidates[0][0] > 0:
            value, player = candidates[0]
            tables["hall_of_fame"].add((tenant, record, player, -value, None))
    # Straight from every appearance, not from personal bests: the SQL derives
    # it from personal bests, and this checks that reasoning.
    in_match = sorted(
        (-a.line.goals, a.match.played_at, a.match.id, a.line.player_id)
        for apps in appearances.values()
        for a in apps
    )
    if in_match and -in_match[0][0] > 0:
        goals, _, match_id, player = in_match[0]
        tables["hall_of_fame"].add((tenant, "most_goals_in_match", player, -goals, match_id))


def _ratings(
    tables: Tables, tenant: UUID, matches: list[Match], lines_by_match: Mapping[int, list[Lineup]]
) -> None:
    for player, (rating, rated) in elo(matches, lines_by_match).items():
        tables["player_ratings"].add((tenant, player, rating, rated))


def elo(
    matches: Sequence[Match], lines_by_match: Mapping[int, list[Lineup]]
) -> dict[int, tuple[float, int]]:
    """{player: (rating, rated matches)} over counted ``matches`` in the given order."""
    rating: dict[int, float] = {}
    rated: dict[int, int] = defaultdict(int)
    for match in matches:
        lines = lines_by_match.get(match.id, [])
        team_a = sorted(line.player_id for line in lines if line.team == "A")
        team_b = sorted(line.player_id for line in lines if line.team == "B")
        if not team_a or not team_b:
            continue
        assert match.team_a_score is not None and match.team_b_score is not None
        mean_a = sum(rating.get(p, 1000.0) for p in team_a) / len(team_a)
        mean_b = sum(rating.get(p, 1000.0) for p in team_b) / len(team_b)
        expected_a = 1 / (1 + 10 ** ((mean_b - mean_a) / 400))
        score_a = (
            1.0
            if match.team_a_score > match.team_b_score
            else 0.5
            if match.team_a_score == match.team_b_score
            else 0.0
        )
        gain_a = 32 * (score_a - expected_a)
        gain_b = 32 * ((1 - score_a) - (1 - expected_a))
        for player in team_a:
            rating[player] = rating.get(player, 1000.0) + gain_a
        for player in team_b:
            rating[player] = rating.get(player, 1000.0) + gain_b
        for player in team_a + team_b:
            rated[player] += 1
    return {player: (rating[player], rated[player]) for player in rating}


# -- the database side ---------------------------------------------------------


async def load_source(conn: Any) -> tuple[list[Match], list[Lineup]]:
    """Every source row of the database."""
    matches = [
        Match(
            id=r["id"],
            tenant_id=r["tenant_id"],
            season_id=r["season_id"],
            played_at=r["played_at"],
            status=r["status"],
            team_a_score=r["team_a_score"],
            team_b_score=r["team_b_score"],
        )
        for r in await conn.fetch(
            "SELECT id, tenant_id, season_id, played_at, status, team_a_score, team_b_score"
            " FROM public.matches"
        )
    ]
    lineups = [
        Lineup(
            match_id=r["match_id"],
            player_id=r["player_id"],
            team=r["team"],
            goals=r["goals"],
            assists=r["assists"],
            own_goals=r["own_goals"],
            is_mvp=r["is_mvp"],
        )
        for r in await conn.fetch(
            "SELECT match_id, player_id, team, goals, assists, own_goals, is_mvp"
            " FROM public.match_players"
        )
    ]
    return matches, lineups


async def expected_from_database(conn: Any) -> Tables:
    return expected_tables(*await load_source(conn))


async def live_tables(conn: Any) -> Tables:
    """The stats tables in the canonical form of :func:`expected_tables`."""
    tables: Tables = {}
    for name, columns in COLUMNS.items():
        rows = await conn.fetch(f"SELECT {', '.join(columns)} FROM stats.{name}")
        if name == "player_ratings":
            tables[name] = {(r[0], r[1], float(r[2]), r[3]) for r in rows}
        else:
            tables[name] = {tuple(r) for r in rows}
    return tables


def table_differences(expected: Tables, actual: Tables) -> list[str]:
    """Human-readable differences; empty when the tables are equal."""
    problems = []
    for name in TABLES:
        want, got = expected.get(name, set()), actual.get(name, set())
        if name == "player_ratings":
            want_by_key = {r[:2]: r for r in want}
            got_by_key = {r[:2]: r for r in got}
            for key in sorted(want_by_key.keys() | got_by_key.keys(), key=str):
                w, g = want_by_key.get(key), got_by_key.get(key)
                if (
                    w is None
                    or g is None
                    or w[3] != g[3]
                    or abs(w[2] - g[2]) > RATING_TOLERANCE + 1e-9
                ):
                    problems.append(f"player_ratings {key}: expected {w}, got {g}")
            continue
        for row in sorted(want - got, key=str):
            problems.append(f"{name}: missing {row}")
        for row in sorted(got - want, key=str):
            problems.append(f"{name}: unexpected {row}")
    return problems


async def assert_stats_match_reference(conn: Any) -> None:
    problems = table_differences(await expected_from_database(conn), await live_tables(conn))
    assert not problems, "\n".join(problems[:40])


# -- playing the worker --------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    tenant_id: UUID
    match_ids: list[int]
    player_ids: list[int]
    season_ids: list[int]
    rating_from_at: datetime | None
    rating_from_id: int | None

    def arguments(self) -> tuple[Any, ...]:
        return (
            self.tenant_id,
            self.match_ids,
            self.player_ids,
            self.season_ids,
            self.rating_from_at,
            self.rating_from_id,
        )


def _body(message: Any) -> dict[str, Any]:
    body = json.loads(message) if isinstance(message, str) else message
    assert isinstance(body, dict)
    return body


async def message_scope(conn: Any, bodies: Sequence[Mapping[str, Any]]) -> Scope:
    """The scope of messages of one tenant, as the worker computes it."""
    tenant = UUID(str(bodies[0]["tenant_id"]))
    sinces = [datetime.fromisoformat(b["since"]) for b in bodies if b.get("since")]
    match_ids = sorted({int(b["match_id"]) for b in bodies})
    row = await conn.fetchrow(
        "SELECT * FROM stats.message_scope($1, $2, $3, $4, $5)",
        tenant,
        match_ids,
        sorted({p for b in bodies for p in b.get("player_ids", [])}),
        sorted({s for b in bodies for s in b.get("season_ids", [])}),
        min(sinces) if sinces else None,
    )
    return Scope(
        tenant,
        match_ids,
        list(row["player_ids"]),
        list(row["season_ids"]),
        row["rating_from_at"],
        row["rating_from_id"],
    )


async def refresh(conn: Any, table: str, scope: Scope) -> int:
    written: int = await conn.fetchval(
        f"SELECT stats.refresh_{table}($1, $2, $3, $4, $5, $6)", *scope.arguments()
    )
    return written


async def apply_scope(executor: Any, scope: Scope, *, concurrently: bool = False) -> None:
    """Phase one (the ten, each in its own transaction), then the hall of fame.

    ``executor`` is a connection, or a pool when ``concurrently``.
    """
    if concurrently:
        await asyncio.gather(*(refresh(executor, t, scope) for t in FIRST_PHASE))
    else:
        for table in FIRST_PHASE:
            await refresh(executor, table, scope)
    await refresh(executor, "hall_of_fame", scope)


async def drain(
    executor: Any,
    queue: str = "stats_updates",
    *,
    concurrently: bool = False,
    coalesce: bool = False,
) -> int:
    """Process the queue until it is empty; returns the number of messages.

    With ``concurrently`` (``executor`` a pool), the messages read together are
    processed at the same time, each with its ten refreshes in parallel. With
    ``coalesce``, messages of one tenant read together share one scope.
    """
    processed = 0
    while True:
        rows = await executor.fetch("SELECT msg_id, message FROM pgmq.read($1, 60, 50)", queue)
        if not rows:
            return processed
        batches: list[tuple[list[int], list[dict[str, Any]]]] = []
        if coalesce:
            by_tenant: dict[str, tuple[list[int], list[dict[str, Any]]]] = {}
            for row in rows:
                body = _body(row["message"])
                ids, bodies = by_tenant.setdefault(str(body["tenant_id"]), ([], []))
                ids.append(row["msg_id"])
                bodies.append(body)
            batches = list(by_tenant.values())
        else:
            batches = [([row["msg_id"]], [_body(row["message"])]) for row in rows]

        async def run(msg_ids: list[int], bodies: list[dict[str, Any]]) -> None:
            scope = await message_scope(executor, bodies)
            await apply_scope(executor, scope, concurrently=concurrently)
            await executor.execute("SELECT pgmq.delete($1, $2::bigint[])", queue, msg_ids)

        if concurrently:
            await asyncio.gather(*(run(*batch) for batch in batches))
        else:
            for batch in batches:
                await run(*batch)
        processed += len(rows)


async def rebuild(conn: Any, tenant: UUID) -> None:
    """Everything of a tenant in one transaction (stats.rebuild_scope + refresh_all)."""
    async with conn.transaction():
        row = await conn.fetchrow("SELECT * FROM stats.rebuild_scope($1)", tenant)
        await conn.execute(
            "SELECT stats.refresh_all($1, $2, $3, $4, $5, $6)",
            tenant,
            row["match_ids"],
            row["player_ids"],
            row["season_ids"],
            row["rating_from_at"],
            row["rating_from_id"],
        )
