"""Synthetic leagues for the demo and the benchmark, deterministic for a seed.

A league is generated in memory, then written the way the app writes it:
scheduled matches with their lineups first, completed later, one transaction
per match, so the enqueue triggers fire exactly as in production. History that
only sets the scene is bulk-copied with triggers off instead.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from worker.core.database import Connection
from worker.core.queries import query

_FIRST = ("Ana", "Ben", "Caro", "Dev", "Eli", "Fia", "Gus", "Hana", "Ivo", "Jade", "Kai", "Lu",
          "Mo", "Nia", "Oli", "Pia", "Quin", "Rui", "Sol", "Tea", "Uma", "Vic", "Wes", "Xan",
          "Yara", "Zed")  # fmt: skip
_LAST = ("Silva", "Okafor", "Novak", "Berg", "Costa", "Haas", "Ito", "Kaur", "Lind", "Moreau",
         "Nagy", "Ortiz", "Park", "Quist", "Rossi", "Sato", "Toth", "Urban", "Varga")  # fmt: skip
_CLUBS = ("Riverside", "Old Town", "Harbour", "Northfield", "Eastgate", "Millbrook", "Southbank",
          "Westwood", "Hillcrest", "Lakeside")  # fmt: skip


@dataclass(frozen=True)
class Line:
    player_id: int
    team: str
    goals: int
    assists: int
    own_goals: int
    is_mvp: bool


@dataclass
class Match:
    id: int
    tenant_id: uuid.UUID
    season_id: int | None
    played_at: datetime
    status: str
    team_a_score: int | None
    team_b_score: int | None
    lineup: list[Line] = field(default_factory=list)


@dataclass
class Tenant:
    id: uuid.UUID
    name: str
    players: dict[int, str] = field(default_factory=dict)
    seasons: dict[int, tuple[str, date, date]] = field(default_factory=dict)
    matches: list[Match] = field(default_factory=list)


@dataclass
class League:
    tenants: list[Tenant]

    def matches(self) -> Iterator[Match]:
        for tenant in self.tenants:
            yield from tenant.matches


def generate_league(
    *,
    seed: int,
    tenants: int,
    players: int,
    matches: int,
    seasons: int = 3,
    season_matches: int | None = None,
    side_min: int = 5,
    side_max: int = 7,
    start: datetime = datetime(2024, 1, 6, 18, 0, tzinfo=UTC),
) -> League:
    """A league of completed matches (a few cancelled ones, a few outside any season).

    ``matches`` of each tenant are split into ``seasons`` equal seasons, the last
    taking the remainder; with ``season_matches``, into seasons of that many
    matches instead (as many as it takes, the last holding what is left), so
    tenants of different histories have seasons of one size.
    """
    rng = random.Random(seed)
    league = League([])
    next_player, next_season, next_match = 1, 1, 1
    for t in range(tenants):
        tenant_id = uuid.UUID(int=rng.getrandbits(128), version=4)
        tenant = Tenant(tenant_id, f"{_CLUBS[t % len(_CLUBS)]} Sunday League {t + 1}")
        names = [f"{first} {last}" for first in _FIRST for last in _LAST]
        for i, name in enumerate(rng.sample(names, min(players, len(names)))):
            tenant.players[next_player + i] = name
        next_player += players
        season_ids = []
        if season_matches is not None:
            per_season = season_matches
            seasons = max(1, -(-matches // season_matches))
        else:
            per_season = max(1, matches // seasons)
        for s in range(seasons):
            first_day = (start + timedelta(days=7 * per_season * s)).date()
            last_day = first_day + timedelta(days=7 * per_season - 1)
            tenant.seasons[next_season] = (f"Season {s + 1}", first_day, last_day)
            season_ids.append(next_season)
            next_season += 1
        roster = list(tenant.players)
        for m in range(matches):
            season = season_ids[min(m // per_season, seasons - 1)]
            played_at = start + timedelta(days=7 * m // 2, hours=rng.randint(0, 3))
            match = _play(
                rng,
                next_match,
                tenant_id,
                season,
                played_at,
                roster=roster,
                side_min=side_min,
                side_max=side_max,
            )
            if rng.random() < 0.03:
                match.season_id = None  # a friendly, outside any season
            if rng.random() < 0.02:
                match.status, match.team_a_score, match.team_b_score = "cancelled", None, None
            tenant.matches.append(match)
            next_match += 1
        league.tenants.append(tenant)
    return league


def _play(
    rng: random.Random,
    match_id: int,
    tenant_id: uuid.UUID,
    season_id: int,
    played_at: datetime,
    *,
    roster: list[int],
    side_min: int,
    side_max: int,
) -> Match:
    side = rng.randint(side_min, min(side_max, len(roster) // 2))
    picked = rng.sample(roster, 2 * side)
    teams = {"A": picked[:side], "B": picked[side:]}
    lines: list[Line] = []
    score = {"A": 0, "B": 0}
    for team, members in teams.items():
        other = "B" if team == "A" else "A"
        for player in members:
            goals = rng.choices((0, 1, 2, 3), weights=(62, 25, 9, 4))[0]
            own_goals = 1 if rng.random() < 0.02 else 0
            score[team] += goals
            score[other] += own_goals
            lines.append(
                Line(player, team, goals, rng.choice((0, 0, 0, 1, 1, 2)), own_goals, False)
            )
    mvp = rng.randrange(len(lines))
    lines[mvp] = Line(**{**lines[mvp].__dict__, "is_mvp": True})
    return Match(
        match_id, tenant_id, season_id, played_at, "completed", score["A"], score["B"], lines
    )


async def write_clubs(connection: Connection, league: League) -> None:
    """Tenants, players and seasons (nothing here enqueues a message)."""
    await connection.copy_records_to_table(
        "tenants", records=[(t.id, t.name) for t in league.tenants], columns=["id", "name"]
    )
    await connection.copy_records_to_table(
        "players",
        records=[(pid, t.id, name) for t in league.tenants for pid, name in t.players.items()],
        columns=["id", "tenant_id", "name"],
    )
    await connection.copy_records_to_table(
        "seasons",
        records=[(sid, t.id, *info) for t in league.tenants for sid, info in t.seasons.items()],
        columns=["id", "tenant_id", "name", "starts_on", "ends_on"],
    )


async def write_history(connection: Connection, matches: list[Match]) -> None:
    """Bulk-load matches as they are, with the enqueue triggers off (a rebuild follows)."""
    async with connection.transaction():
        await connection.execute(query("disable_enqueue_triggers"))
        await _copy_matches(connection, matches, scheduled=False)


async def write_scheduled(connection: Connection, matches: list[Match]) -> None:
    """Matches as the app first creates them: scheduled, lineups picked, no score."""
    await _copy_matches(connection, matches, scheduled=True)


MATCH_COLUMNS = ["id", "tenant_id", "season_id", "played_at", "status", "team_a_score",
                 "team_b_score"]  # fmt: skip
LINE_COLUMNS = ["match_id", "player_id", "team", "goals", "assists", "own_goals", "is_mvp"]


def _match_row(match: Match, *, scheduled: bool) -> tuple[object, ...]:
    if scheduled:
        return (
            match.id,
            match.tenant_id,
            match.season_id,
            match.played_at,
            "scheduled",
            None,
            None,
        )
    return (match.id, match.tenant_id, match.season_id, match.played_at, match.status,
            match.team_a_score, match.team_b_score)  # fmt: skip


def _line_row(match: Match, line: Line, *, scheduled: bool) -> tuple[object, ...]:
    if scheduled:
        return (match.id, line.player_id, line.team, 0, 0, 0, False)
    return (match.id, line.player_id, line.team, line.goals, line.assists, line.own_goals,
            line.is_mvp)  # fmt: skip


async def _copy_matches(connection: Connection, matches: list[Match], *, scheduled: bool) -> None:
    await connection.copy_records_to_table(
        "matches",
        records=[_match_row(m, scheduled=scheduled) for m in matches],
        columns=MATCH_COLUMNS,
    )
    await connection.copy_records_to_table(
        "match_players",
        records=[_line_row(m, line, scheduled=scheduled) for m in matches for line in m.lineup],
        columns=LINE_COLUMNS,
    )


async def complete_match(connection: Connection, match: Match) -> None:
    """Record a played match the way the app does: one transaction, one message."""
    async with connection.transaction():
        await connection.executemany(
            query("record_line"),
            [
                (match.id, line.player_id, line.goals, line.assists, line.own_goals, line.is_mvp)
                for line in match.lineup
            ],
        )
        await connection.execute(
            query("complete_match"), match.id, match.status, match.team_a_score, match.team_b_score
        )
