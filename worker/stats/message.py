"""The body of a stats message (contract, "Messages and callbacks")."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError

from worker.errors import MalformedMessage

BigInt = Annotated[int, Strict(), Field(ge=-(2**63), le=2**63 - 1)]


class StatsMessage(BaseModel):
    """``{"tenant_id": uuid, "match_id": int, "player_ids": [int, …]}``.

    Unknown keys are ignored. The enqueue triggers add two hints a hand-written
    message may leave out: ``season_ids`` (seasons the match left) and ``since``
    (its old ``played_at``, where rating replays must start).
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    tenant_id: UUID
    match_id: BigInt
    player_ids: tuple[BigInt, ...] = ()
    season_ids: tuple[BigInt, ...] = ()
    since: datetime | None = None


def parse_stats_message(body: Any) -> StatsMessage:
    if not isinstance(body, dict):
        raise MalformedMessage(f"message body must be a JSON object, got {type(body).__name__}")
    try:
        return StatsMessage.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        raise MalformedMessage(f"not a stats message: {problems}") from None
