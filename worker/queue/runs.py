"""What a settle writes: each message's job-run record, and the batch of outcomes.

A :class:`Batch` is everything one ``settle_messages`` statement writes; the
settler (``worker/queue/outcomes.py``) fills it and flushes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID


@dataclass
class JobRun:
    """What the job-run record of one message says."""

    msg_id: int
    status: str
    attempts: int
    enqueued_at: datetime
    started_at: datetime
    tenant_id: UUID | None = None
    match_id: int | None = None
    finished_at: datetime | None = None
    duration_ms: float | None = None
    error: str | None = None
    read_ct: int = 0
    """The read this run belongs to: the settle acts only while it is the latest."""
    failures: int = 0
    """Failed runs of this message, this one included if it failed."""


@dataclass
class Batch:
    runs: dict[int, JobRun] = field(default_factory=dict)
    acks: list[int] = field(default_factory=list)
    retries: dict[int, float] = field(default_factory=dict)
    dead: list[int] = field(default_factory=list)
    tags: set[str] = field(default_factory=set)
    released: list[int] = field(default_factory=list)
    """Write-ahead invalidations whose tags this batch now owes itself."""

    def __bool__(self) -> bool:
        return bool(
            self.runs or self.acks or self.retries or self.dead or self.tags or self.released
        )

    def halves(self) -> list[Batch]:
        """The cache tags alone, then each half of the outcomes (see ``Settler._write_apart``)."""
        ids = list(self.runs)
        parts = [Batch(tags=self.tags, released=self.released)]
        for half in (ids[: len(ids) // 2], ids[len(ids) // 2 :]):
            chosen = set(half)
            parts.append(
                Batch(
                    runs={i: self.runs[i] for i in half},
                    acks=[i for i in self.acks if i in chosen],
                    retries={i: d for i, d in self.retries.items() if i in chosen},
                    dead=[i for i in self.dead if i in chosen],
                )
            )
        return [part for part in parts if part]


@dataclass(frozen=True)
class Invalidation:
    callback_id: int
    tags: tuple[str, ...]
