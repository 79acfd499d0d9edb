"""Cache invalidation: POST the tags a settled batch owes to the app.

The settler writes each invalidation to ``stats_worker.callbacks`` in the
transaction that acks its messages, leased to this process for
``CALLBACK_LEASE_SECONDS``, and hands it to :meth:`CacheInvalidator.submit`;
:meth:`CacheInvalidator.run` sends it at once. A failed attempt is written back
to the row with the time of the next one. The same task sweeps the table for
rows whose time has come (retries, and rows a crashed worker left), claims
them with ``FOR UPDATE SKIP LOCKED`` and a fresh lease so no two processes send
one row at once, and merges their tags into one POST. The table is the truth
and memory only the fast path: an invalidation survives a crash and never
costs a recompute.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from worker.callback.attempts import Attempt, judge
from worker.callback.posting import post_bounded
from worker.core import metrics
from worker.core.backoff import backoff_seconds
from worker.core.database import DATABASE_ERRORS, Pool
from worker.core.queries import query
from worker.core.redact import Redactor
from worker.core.settings import Settings
from worker.core.waits import wait_event
from worker.queue.outcomes import CALLBACK_LEASE_SECONDS
from worker.queue.runs import Invalidation

log = logging.getLogger(__name__)

ROWS_PER_POST = 100
"""Most invalidations merged into one POST."""
SWEEP_MAX_IDLE_SECONDS = 10.0
"""Sweep at least this often: rows of other processes may fall due meanwhile."""
SWEEP_MIN_IDLE_SECONDS = 0.05
LEASE_MARGIN_SECONDS = 1.0


@dataclass(frozen=True)
class _Owed:
    callback_id: int
    tags: Sequence[str]
    attempts: int
    """Attempts made before this one."""


class CacheInvalidator:
    """Delivers cache invalidations; see the module docstring."""

    def __init__(self, pool: Pool, settings: Settings, client: httpx.AsyncClient) -> None:
        self._pool = pool
        self._client = client
        self._url = settings.cache_invalidation_url
        secret = settings.internal_secret.get_secret_value() if settings.internal_secret else ""
        self._redact = Redactor.of(settings)
        self._headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        self._timeout = settings.callback_timeout_seconds
        self._max_attempts = settings.callback_max_attempts
        self._retry_base = settings.callback_retry_base_seconds
        self._retry_max = settings.callback_retry_max_seconds
        self._lease = max(CALLBACK_LEASE_SECONDS, 3 * self._timeout)
        # A submitted row is sent without claiming it only while the settler's
        # lease is sure to outlast the POST; later, the sweep claims it properly.
        self._fast_path_seconds = CALLBACK_LEASE_SECONDS - self._timeout - LEASE_MARGIN_SECONDS
        self._submitted: list[tuple[float, Invalidation]] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def submit(self, invalidation: Invalidation) -> None:
        """Send this invalidation (already in the table) as soon as possible."""
        self._submitted.append((time.monotonic(), invalidation))
        self._idle.clear()
        self._wake.set()

    def wake(self) -> None:
        """Rows were made due by someone else (a resend): look at the table now."""
        self._wake.set()

    async def drained(self) -> None:
        """Wait until every submitted invalidation had its first attempt."""
        await self._idle.wait()

    async def run(self) -> None:
        """The delivery task: send what is submitted, sweep what is due, forever."""
        if self._url is None:
            log.warning("CACHE_INVALIDATION_URL is not set: cache invalidation is off")
        failures = 0
        while True:
            self._wake.clear()
            try:
                idle = await self._round()
                failures = 0
            except DATABASE_ERRORS as exc:
                failures += 1
                log.warning("cache invalidation bookkeeping failed", extra={"error": repr(exc)})
                idle = min(0.2 * 2**failures, 10.0)
            finally:
                if not self._submitted:
                    self._idle.set()
            if idle > 0:
                await wait_event(self._wake, idle)

    async def send_due_now(self) -> None:
        """One attempt at every invalidation due (a command's, e.g. ``rebuild``).

        What fails stays in the table with its next attempt, for a running worker.
        """
        if self._url is not None:
            await self._round()

    async def _round(self) -> float:
        """Deliver one batch of submitted or due rows; return how long to idle."""
        submitted = self._take_submitted()
        if submitted:
            await self._deliver(submitted)
        due = [
            _Owed(row["id"], row["tags"], row["attempts"])
            for row in await self._pool.fetch(
                query("claim_due_callbacks"), ROWS_PER_POST, self._lease
            )
        ]
        if due:
            await self._deliver(due)
        if due or self._submitted:
            return 0.0
        seconds: float | None = await self._pool.fetchval(query("next_callback_due"))
        if seconds is None:
            return SWEEP_MAX_IDLE_SECONDS
        return min(max(seconds, SWEEP_MIN_IDLE_SECONDS), SWEEP_MAX_IDLE_SECONDS)

    def _take_submitted(self) -> list[_Owed]:
        taken = self._submitted[:ROWS_PER_POST]
        del self._submitted[:ROWS_PER_POST]
        now = time.monotonic()
        fresh = []
        for submitted_at, invalidation in taken:
            if now - submitted_at < self._fast_path_seconds:
                fresh.append(_Owed(invalidation.callback_id, invalidation.tags, 0))
            else:
                log.info(
                    "cache invalidation left to the sweep: its lease is nearly over",
                    extra={"callback_id": invalidation.callback_id},
                )
        return fresh

    async def _deliver(self, rows: list[_Owed]) -> None:
        ids = [row.callback_id for row in rows]
        if self._url is None:
            await self._pool.execute(query("delete_callbacks"), ids)
            return
        tags = sorted({tag for row in rows for tag in row.tags})
        attempt = await self._post(self._url, tags)
        metrics.callback_attempts_total.labels(status_class=attempt.status_class).inc()
        if attempt.error is None:
            await self._pool.execute(query("delete_callbacks"), ids)
            log.info(
                "cache invalidated",
                extra={"callback_ids": ids, "status": attempt.status, "tags": len(tags)},
            )
        else:
            await self._record_failure(rows, attempt)

    async def _post(self, url: str, tags: list[str]) -> Attempt:
        try:
            # httpx times each phase; this bounds the whole exchange.
            async with asyncio.timeout(self._timeout):
                response = await post_bounded(
                    self._client,
                    url,
                    json={"tags": tags},
                    headers=self._headers,
                    timeout=self._timeout,
                )
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            return Attempt("error", error=self._scrub(_short(exc)), retry=False)
        except TimeoutError:
            return Attempt("error", error=f"no answer within {self._timeout:g}s")
        except httpx.HTTPError as exc:
            return Attempt("error", error=self._scrub(_short(exc)))
        return judge(response, self._scrub)

    async def _record_failure(self, rows: list[_Owed], attempt: Attempt) -> None:
        attempts = [row.attempts + 1 for row in rows]
        give_up = [not attempt.retry or n >= self._max_attempts for n in attempts]
        delays = [
            0.0 if stop else self._retry_delay(n, attempt)
            for n, stop in zip(attempts, give_up, strict=True)
        ]
        await self._pool.execute(
            query("record_callback_failure"),
            [row.callback_id for row in rows],
            attempts,
            delays,
            give_up,
            attempt.error,
        )
        retrying = [
            (row, d) for row, d, stop in zip(rows, delays, give_up, strict=True) if not stop
        ]
        if retrying:
            log.warning(
                "cache invalidation failed, will retry",
                extra={
                    "callback_ids": [row.callback_id for row, _ in retrying],
                    "attempts": max(row.attempts + 1 for row, _ in retrying),
                    "status": attempt.status,
                    "error": attempt.error,
                    "retry_in_s": round(min(d for _, d in retrying), 3),
                },
            )
        for row, n, stop in zip(rows, attempts, give_up, strict=True):
            if stop:
                self._gave_up(row, n, attempt)

    def _retry_delay(self, attempts: int, attempt: Attempt) -> float:
        if attempt.retry_after is not None:
            return attempt.retry_after
        return backoff_seconds(attempts, self._retry_base, self._retry_max)

    def _gave_up(self, row: _Owed, attempts: int, attempt: Attempt) -> None:
        reason = "attempts_exhausted" if attempt.retry else "rejected"
        metrics.callback_failures_total.labels(reason=reason).inc()
        message = attempt.advice or (
            "cache invalidation rejected: check CACHE_INVALIDATION_URL and INTERNAL_SECRET"
            if reason == "rejected"
            else "cache invalidation failed: attempts exhausted"
        )
        log.error(
            message,
            extra={
                "callback_id": row.callback_id,
                "attempts": attempts,
                "status": attempt.status,
                "error": attempt.error,
            },
        )

    def _scrub(self, text: str) -> str:
        """The text with every secret blotted out, fit for logs and the table."""
        return self._redact(text)


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:500]
