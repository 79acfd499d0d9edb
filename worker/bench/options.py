"""What the benchmark builds and how much it measures."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

BENCH_DATABASE = "stats_worker_bench"


@dataclass(frozen=True)
class BenchOptions:
    """Sizes of the reference league and of each measurement (defaults: the full run)."""

    seed: int = 11
    tenants: int = 20
    players: int = 60
    """Per tenant."""
    matches: int = 2000
    """History per tenant, loaded before anything is measured."""
    season_matches: int = 100
    """Matches per season (a season is about a year at two matches a week)."""
    side_min: int = 5
    side_max: int = 7
    latency_matches: int = 200
    backlog_messages: int = 5000
    one_by_one_messages: int = 1250
    """Fewer than the backlog (time), on fewer tenants: as deep per tenant as the
    backlog, because a message costs more the deeper its tenant's backlog (Elo is
    replayed up to the tenant's latest match); see :meth:`one_by_one_tenants`."""
    noop_messages: int = 20000
    scale_out_messages: int = 750
    """Corrections drained by 1, 2 and 4 worker processes in turn."""
    growth_small: int = 1000
    """History of the small growth tenant (matches)."""
    growth_large: int = 20000
    growth_matches: int = 30
    """Matches appended, one at a time, to each growth tenant (and to the lone tenant
    alone, then among many)."""
    many_tenants: int = 200
    """Tenants of the reference size in the database of the tenant-count measurement."""
    backfill_messages: int = 10000
    """Messages of the backfill (another tenant's history) on the bulk queue."""
    backfill_live_matches: int = 30
    """Live matches measured idle, then again during that backfill."""
    database: str = BENCH_DATABASE

    @classmethod
    def preset(cls, *, quick: bool) -> BenchOptions:
        if not quick:
            return cls()
        return cls(
            tenants=4,
            players=30,
            matches=200,
            season_matches=50,
            latency_matches=40,
            backlog_messages=400,
            one_by_one_messages=200,
            noop_messages=2000,
            scale_out_messages=120,
            growth_small=100,
            growth_large=1000,
            growth_matches=10,
            many_tenants=20,
            backfill_messages=1000,
            backfill_live_matches=10,
        )

    def with_overrides(self, **overrides: Any) -> BenchOptions:
        """These options with every override that is not None."""
        fields = {f.name for f in dataclasses.fields(self)}
        changes = {k: v for k, v in overrides.items() if k in fields and v is not None}
        options = dataclasses.replace(self, **changes)
        options.validate()
        return options

    def validate(self) -> None:
        for name in ("tenants", "players", "matches", "season_matches", "latency_matches",
                     "backlog_messages", "one_by_one_messages", "noop_messages",
                     "scale_out_messages",
                     "growth_small", "growth_large", "growth_matches",
                     "many_tenants", "backfill_messages",
                     "backfill_live_matches"):  # fmt: skip
            if getattr(self, name) <= 0:
                raise ValueError(f"bench: --{name.replace('_', '-')} must be positive")
        if not 1 <= self.side_min <= self.side_max or 2 * self.side_min > self.players:
            raise ValueError("bench: a side needs 1 <= side_min <= side_max, 2 sides <= players")

    def one_by_one_tenants(self) -> int:
        """Tenants the one-by-one drain is spread over: its depth per tenant is the backlog's."""
        share = self.one_by_one_messages / self.backlog_messages
        return max(1, min(self.tenants, round(self.tenants * share)))

    def pending_per_tenant(self) -> int:
        """Scheduled matches each reference tenant gets for the measured phases.

        A few more than a tenant's share: about 2% of generated matches are
        cancelled (they enqueue nothing, so none is measured).
        """
        shared = (self.latency_matches + self.backlog_messages) / self.tenants
        one_by_one = self.one_by_one_messages / self.one_by_one_tenants()
        return math.ceil((shared + one_by_one) * 1.05) + 3

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
