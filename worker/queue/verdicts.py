"""What a run comes to: succeeded, retried after a backoff, dead, or given back.

Each verdict is reported to the settler (which writes it), counted in
``stats_worker_messages_total`` and logged with the message id, tenant and match.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from worker.core import metrics
from worker.core.backoff import backoff_seconds
from worker.core.errors import RetryLater, error_text
from worker.core.handlers import Handler
from worker.core.settings import Settings
from worker.queue.outcomes import Settler
from worker.queue.pgmq import Message
from worker.queue.runs import JobRun

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Verdicts:
    """The verdicts of one queue's runs; see the module docstring."""

    def __init__(
        self, *, settings: Settings, queue_name: str, handler: Handler[Any], settler: Settler
    ) -> None:
        self._settings = settings
        self._handler = handler
        self._settler = settler
        self._labels = {"queue": queue_name}
        self._outcomes = {
            outcome: metrics.messages_total.labels(queue=queue_name, outcome=outcome)
            for outcome in ("succeeded", "retried", "dead")
        }
        self._duration = metrics.job_duration_seconds.labels(queue=queue_name)

    def record(self, message: Message, payload: Any, started_at: datetime) -> JobRun:
        """The run record of ``message`` (its payload None when it did not parse)."""
        subject = self._handler.subject(payload) if payload is not None else None
        return JobRun(
            msg_id=message.msg_id,
            status="running",
            attempts=message.attempt,
            enqueued_at=message.enqueued_at,
            started_at=started_at,
            read_ct=message.read_ct,
            failures=message.failures,
            tenant_id=subject.tenant_id if subject else None,
            match_id=subject.match_id if subject else None,
        )

    def finish(self, runs: list[JobRun], started: float) -> None:
        elapsed = time.perf_counter() - started
        self._duration.observe(elapsed)
        finished_at = utcnow()
        for run in runs:
            run.status, run.finished_at, run.duration_ms = "succeeded", finished_at, elapsed * 1000

    def succeeded(self, runs: list[JobRun], tags: Sequence[str]) -> None:
        self._settler.succeeded(runs, tags)
        self._outcomes["succeeded"].inc(len(runs))
        if log.isEnabledFor(logging.INFO):
            for run in runs:
                log.info("message succeeded", extra=log_fields(run, coalesced=len(runs)))

    def failed_all(
        self, group: list[tuple[Message, Any]], runs: list[JobRun], exc: Exception
    ) -> None:
        delay = exc.delay_seconds if isinstance(exc, RetryLater) else None
        for (message, _), run in zip(group, runs, strict=True):
            self.failed(message, run, error_text(exc), delay)

    def failed(self, message: Message, run: JobRun, error: str, delay: float | None) -> None:
        run.failures = message.failures + 1
        if run.failures >= self._settings.max_attempts:
            limit = self._settings.max_attempts
            reason = f"attempts exhausted ({run.failures}/{limit}): {error}"
            self.dead(message, run, reason, "attempts_exhausted")
            return
        if delay is None:
            delay = backoff_seconds(
                run.failures, self._settings.retry_base_seconds, self._settings.retry_max_seconds
            )
        run.status, run.error = "retrying", error
        self._settler.retry(run, delay)
        self._outcomes["retried"].inc()
        fields = log_fields(run, retry_in_s=round(delay, 3))
        log.warning("message failed, will retry", extra=fields)

    def dead(self, message: Message, run: JobRun, reason: str, kind: str) -> None:
        run.status, run.error = "dead", reason
        run.finished_at = run.finished_at or utcnow()
        self._settler.dead(run)
        self._outcomes["dead"].inc()
        metrics.dead_letters_total.labels(reason=kind, **self._labels).inc()
        log.error("message dead-lettered", extra=log_fields(run, reason_kind=kind))

    def release(self, runs: list[JobRun], why: str) -> None:
        """Give unfinished messages back to the queue now rather than at their timeout."""
        for run in runs:
            run.status, run.error = "retrying", why
            self._settler.retry(run, 0.0)


def log_fields(run: JobRun, **more: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "msg_id": run.msg_id,
        "tenant_id": str(run.tenant_id) if run.tenant_id else None,
        "match_id": run.match_id,
        "attempt": run.attempts,
        "duration_ms": round(run.duration_ms, 2) if run.duration_ms is not None else None,
    }
    if run.error:
        fields["error"] = run.error
    fields.update(more)
    return fields
