"""What every endpoint of the HTTP side answers with: JSON, and one-line errors."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from importlib import metadata
from typing import Any
from uuid import UUID

import asyncpg
from starlette.responses import JSONResponse

DATABASE_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)
"""Failures of the database (or of reaching it): /health and the operator API answer 503."""


def package_version() -> str:
    try:
        return metadata.version("stats-worker")
    except metadata.PackageNotFoundError:
        return "unknown"


class JSON(JSONResponse):
    """JSON with datetimes as ISO-8601 and decimals and UUIDs made plain."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, default=plain, separators=(",", ":")).encode()


def plain(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def error_response(status_code: int, message: str, headers: dict[str, str] | None = None) -> JSON:
    return JSON({"error": message}, status_code, headers=headers)


def describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return f"{type(exc).__name__}: {exc}"
