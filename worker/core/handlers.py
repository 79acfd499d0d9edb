"""The handler interface and the per-queue registry.

A handler turns message bodies into payloads, says which payloads may be
recomputed together, and does the work. The consumer engine knows nothing
else about what a job means, so other job types reuse it by registering a
handler for their own queue.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar
from uuid import UUID

P = TypeVar("P")


@dataclass(frozen=True)
class Subject:
    """Who a message is about, for job records and log lines."""

    tenant_id: UUID | None = None
    match_id: int | None = None


class Handler(Protocol, Generic[P]):
    def parse(self, body: Any) -> P:
        """Decode a body; raise :class:`~worker.core.errors.MalformedMessage` if impossible."""
        ...

    def subject(self, payload: P) -> Subject: ...

    def group_key(self, payload: P) -> Hashable | None:
        """Payloads read together with the same non-None key run as one group."""
        ...

    def group_field(self) -> str | None:
        """The top-level body field whose text is ``str(group_key)``, or None.

        With it, a read passes over the messages of a group that already has a
        full recompute waiting, so one group's backlog cannot hold up the rest.
        """
        ...

    async def run(
        self, payloads: Sequence[P], before_changes: Callable[[], Awaitable[None]]
    ) -> Sequence[str]:
        """Do the work for a group; return the cache tags to invalidate after commit.

        Await ``before_changes()`` before the first statement that may change
        anything: the engine's write-ahead invalidation commits by then (see
        ``owed_tags``). Reading before it is free, and saves a live match the wait.
        """
        ...

    def owed_tags(self, payloads: Sequence[P]) -> Sequence[str]:
        """Tags to invalidate when ``run`` failed: part of its work may have committed."""
        ...


HandlerRegistry = Mapping[str, Handler[Any]]
"""Queue name → the handler for its messages."""
