"""POSTing to the app's endpoints: one client, and answers read within bounds.

The cache invalidator (``worker/callback/invalidator.py``) and the alerts
(``worker/upkeep/alerts.py``) both post through here.
"""

from __future__ import annotations

import email.utils
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from worker.core.settings import Settings


def http_client(settings: Settings) -> httpx.AsyncClient:
    """The worker's one outgoing HTTP client (invalidations and alerts)."""
    return httpx.AsyncClient(
        timeout=settings.callback_timeout_seconds,
        follow_redirects=False,
        headers={"User-Agent": "stats-worker"},
    )


MAX_RESPONSE_BYTES = 4096
"""Most of an answer's body the worker reads: enough for an error message, never a flood."""


@dataclass(frozen=True)
class BoundedResponse:
    """An answer with at most MAX_RESPONSE_BYTES of its body read."""

    status_code: int
    headers: httpx.Headers
    url: httpx.URL
    text: str


async def post_bounded(client: httpx.AsyncClient, url: str, **options: object) -> BoundedResponse:
    """POST and read at most MAX_RESPONSE_BYTES of the answer, then drop the connection.

    A misbehaving endpoint may answer with hundreds of megabytes; httpx would
    read them all into memory for ``response.text``.
    """
    async with client.stream("POST", url, **options) as response:  # type: ignore[arg-type]
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk[: MAX_RESPONSE_BYTES - len(body)]
            if len(body) >= MAX_RESPONSE_BYTES:
                break
        return BoundedResponse(
            response.status_code,
            response.headers,
            response.url,
            body.decode(response.encoding or "utf-8", errors="replace"),
        )


MAX_RETRY_AFTER_SECONDS = 3600.0


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """A ``Retry-After`` header (seconds or HTTP-date) as seconds from now, or None."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)
