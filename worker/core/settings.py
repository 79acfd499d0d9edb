"""Every knob of the worker, read once from the environment.

Nothing else in the package reads ``os.environ``: the CLI builds one frozen
:class:`Settings` and passes it down.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import platformdirs
from cronsim import CronSim, CronSimError
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

QUEUE_NAME_PATTERN = re.compile(r"[a-z_][a-z0-9_]{0,46}")
"""Matched whole (``fullmatch``): a trailing newline is not part of a name."""
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

ROLE_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_$-]{0,62}")

SCHEDULE_OFF = "off"
"""The schedule of a recurring job that never runs."""

PositiveFloat = Annotated[float, Field(gt=0)]
PositiveInt = Annotated[int, Field(gt=0)]


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("stats-worker")) / "pgdata"


class Settings(BaseSettings):
    """Configuration of one worker process (see README, "Settings")."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_file=None)

    database_url: SecretStr | None = None
    """PostgreSQL DSN. Unset: required, unless ``embedded`` (demo and bench use an
    embedded server anyway)."""
    embedded: bool = False
    """Without ``database_url``, start an embedded PostgreSQL in ``embedded_data_dir``.
    Off by default, so that a deploy which lost its DATABASE_URL fails loudly instead
    of quietly working on a throwaway database inside the container."""
    embedded_data_dir: Path = Field(default_factory=default_data_dir)
    startup_timeout_seconds: PositiveFloat = 60.0
    """How long ``run`` and ``migrate`` wait for the database to accept connections:
    on deploy the worker and its database often (re)start together."""
    direct_database_url: SecretStr | None = None
    """A direct or session-pooler DSN for what needs a session (LISTEN, migrate),
    when ``database_url`` goes through a transaction pooler."""
    database_statement_cache_size: Annotated[int, Field(ge=0)] | None = None
    """asyncpg's prepared-statement cache. Unset: 100, or 0 when ``database_url``
    turns out to be a transaction pooler (which cannot keep prepared statements)."""
    stats_read_roles: str = ""
    """Comma-separated roles that migrate grants read access to the stats tables."""
    pool_min_size: Annotated[int, Field(ge=0)] = 2
    pool_max_size: PositiveInt = 16

    queue_name: str = "stats_updates"
    visibility_timeout_seconds: PositiveInt = 30
    max_attempts: PositiveInt = 5
    concurrency: PositiveInt = 8
    """Recomputes running at once; never two for one group key (tenant)."""
    bulk_concurrency: PositiveInt = 2
    """Recomputes of the bulk queue (``<QUEUE_NAME>_bulk``) running at once, on top
    of ``concurrency``: bulk work never takes a live match's slot."""
    poll_interval_seconds: PositiveFloat = 2.0
    batch_size: PositiveInt = 256
    """Most messages one recompute runs. With coalescing, a tenant's messages that
    arrive while its recompute runs wait (renewed) and merge into its next one, up
    to this many; then reads pass over that tenant, so its backlog never holds up
    the others. At most four times this many wait at once, across tenants."""
    retry_base_seconds: PositiveFloat = 2.0
    retry_max_seconds: PositiveFloat = 300.0
    shutdown_grace_seconds: Annotated[float, Field(ge=0)] = 20.0
    coalesce: bool = True
    """Merge messages of one tenant read together into one recompute."""
    watchdog_seconds: Annotated[float, Field(ge=0)] = 600.0
    """`run` exits non-zero (the platform restarts it) after this long without
    progress; 0 turns the watchdog off."""
    stall_after_seconds: PositiveFloat = 60.0
    """/health reports 503 when the consumer has not polled for this long."""
    migrate_on_start: bool = True

    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    host: str = "::"
    admin_token: SecretStr | None = None

    cache_invalidation_url: str | None = None
    internal_secret: SecretStr | None = None
    callback_timeout_seconds: PositiveFloat = 5.0
    callback_max_attempts: PositiveInt = 10
    callback_retry_base_seconds: PositiveFloat = 1.0
    callback_retry_max_seconds: PositiveFloat = 120.0

    alert_webhook_url: str | None = None
    alert_min_interval_seconds: Annotated[float, Field(ge=0)] = 60.0

    metrics_refresh_seconds: PositiveFloat = 5.0

    job_runs_retention_days: PositiveFloat = 30.0
    """Finished job-run records (succeeded, or dead with no archived message left)
    older than this are purged."""
    archive_retention_days: PositiveFloat = 30.0
    """Dead letters (pgmq's archive) older than this are purged."""
    callbacks_retention_days: PositiveFloat = 14.0
    """Failed cache invalidations older than this are purged (pending ones never are)."""
    retention_batch_size: PositiveInt = 500
    """Rows one purge statement deletes: small, so no lock is held for long."""
    retention_schedule: str = "17 * * * *"
    """When the retention purge runs (cron, UTC; ``off`` for never)."""
    verify_schedule: str = "30 3 * * *"
    """When ``verify`` runs and alerts on drift (cron, UTC; ``off`` for never)."""
    leader_lease_seconds: Annotated[float, Field(ge=1)] = 15.0
    """Within this long of the leader's death another replica runs the recurring jobs."""
    log_format: str = "auto"
    log_level: str = "INFO"

    @field_validator("queue_name")
    @classmethod
    def _queue_name_is_an_identifier(cls, value: str) -> str:
        if not QUEUE_NAME_PATTERN.fullmatch(value):
            raise ValueError("must be lowercase letters, digits and _ (at most 47 characters)")
        return value

    @field_validator("retention_schedule", "verify_schedule")
    @classmethod
    def _cron_or_off(cls, value: str) -> str:
        value = value.strip()
        if value == SCHEDULE_OFF:
            return value
        try:
            CronSim(value, datetime.now(UTC))
        except CronSimError as exc:
            raise ValueError(f"not a cron expression ({exc}) nor {SCHEDULE_OFF!r}") from None
        return value

    @field_validator("stats_read_roles")
    @classmethod
    def _roles_are_names(cls, value: str) -> str:
        for role in _split_roles(value):
            if not ROLE_NAME_PATTERN.fullmatch(role):
                raise ValueError(f"{role!r} is not a role name (letters, digits, _, $, -)")
        return value

    @property
    def read_roles(self) -> tuple[str, ...]:
        return _split_roles(self.stats_read_roles)

    def session_dsn(self, dsn: str) -> str:
        """Where LISTEN and migrate connect: ``direct_database_url``, else ``dsn``."""
        direct = self.direct_database_url
        return direct.get_secret_value() if direct is not None else dsn

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        if value.upper() not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return value.upper()

    @field_validator("log_format")
    @classmethod
    def _known_log_format(cls, value: str) -> str:
        if value not in {"auto", "json", "text"}:
            raise ValueError("must be auto, json or text")
        return value


def _split_roles(value: str) -> tuple[str, ...]:
    return tuple(role.strip() for role in value.split(",") if role.strip())


class SettingsError(Exception):
    """Start-up configuration is invalid; the message names the variable."""


def _is_secret(name: str) -> bool:
    return any(word in name for word in ("URL", "SECRET", "TOKEN", "PASSWORD"))


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment, turning validation errors into one line."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = "_".join(str(part) for part in error["loc"]).upper()
            shown = "" if _is_secret(name) else f" (got {error.get('input')!r})"
            problems.append(f"{name}: {error['msg']}{shown}")
        raise SettingsError("invalid setting " + "; ".join(problems)) from None
