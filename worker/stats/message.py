"""The body of a stats message (contract, "Messages and callbacks")."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, field_validator

from worker.core.errors import MalformedMessage

BigInt = Annotated[int, Strict(), Field(ge=-(2**63), le=2**63 - 1)]

MAX_HINT_IDS = 1000
"""Most player_ids (and season_ids) one message may name: a match's lineup is tens."""
EARLIEST_SINCE = datetime(1900, 1, 1, tzinfo=UTC)
LATEST_SINCE = datetime(2200, 1, 1, tzinfo=UTC)


class StatsMessage(BaseModel):
    """``{"tenant_id": uuid, "match_id": int, "player_ids": [int, …]}``.

    Unknown keys are ignored. The enqueue triggers add two hints a hand-written
    message may leave out: ``season_ids`` (seasons the match left) and ``since``
    (its old ``played_at``, where rating replays must start).
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    tenant_id: UUID
    match_id: BigInt
    player_ids: Annotated[tuple[BigInt, ...], Field(max_length=MAX_HINT_IDS)] = ()
    season_ids: Annotated[tuple[BigInt, ...], Field(max_length=MAX_HINT_IDS)] = ()
    since: datetime | None = None

    @field_validator("since")
    @classmethod
    def _since_is_a_usable_instant(cls, value: datetime | None) -> datetime | None:
        """A time PostgreSQL can hold, with a zone: anything else is refused here, not in SQL."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("must carry a time zone")
        try:
            instant = value.astimezone(UTC)
        except (OverflowError, ValueError):
            raise ValueError("is out of range") from None
        if not EARLIEST_SINCE <= instant < LATEST_SINCE:
            raise ValueError("must lie between 1900 and 2200")
        return instant


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
