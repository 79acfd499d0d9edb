"""How the command line shows jobs, callbacks and drift: plain text a person reads."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from worker.queue.jobs import FailedCallback, Job
from worker.stats.maintenance import RATING_TOLERANCE, Drift

SHORT_ERROR_CHARACTERS = 60


def shorten(text: str, limit: int) -> str:
    """``text`` on one line, cut at a word boundary with an ellipsis when it is longer."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    cut = flat[: limit - 1]
    if " " in cut:
        cut = cut.rsplit(" ", 1)[0]
    return f"{cut}…"


def when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def job_lines(found: list[Job], *, wide: bool) -> list[str]:
    """A header and one line per job; ``wide``: whole tenant ids and whole errors."""
    tenant_width = 36 if wide else 8
    queue_width = max([len("queue"), *(len(job.queue) for job in found)])
    lines = [
        f"{'msg_id':>8}  {'status':<9} {'queue':<{queue_width}}  {'tries':>5}  "
        f"{'updated (UTC)':<19}  {'tenant':<{tenant_width}}  {'match':>8}  {'ms':>8}  error"
    ]
    for job in found:
        ms = f"{job.duration_ms:.1f}" if job.duration_ms is not None else "-"
        tenant = str(job.tenant_id)[:tenant_width] if job.tenant_id else "-"
        error = job.last_error or ""
        error = " ".join(error.split()) if wide else shorten(error, SHORT_ERROR_CHARACTERS)
        if job.retried_as:
            error = f"(retried as {job.retried_as}) {error}".rstrip()
        match = job.match_id if job.match_id is not None else "-"
        lines.append(
            f"{job.msg_id:>8}  {job.status:<9} {job.queue:<{queue_width}}  {job.attempts:>5}  "
            f"{when(job.updated_at):<19}  {tenant:<{tenant_width}}  {match:>8}  {ms:>8}  {error}"
        )
    return lines


def callback_lines(failed: list[FailedCallback]) -> list[str]:
    lines = [f"{'id':>6}  {'created (UTC)':<19}  {'tries':>5}  {'tags':<30}  error"]
    for item in failed:
        tags = shorten(", ".join(item.tags), 30)
        error = shorten(item.last_error or "", SHORT_ERROR_CHARACTERS)
        lines.append(
            f"{item.id:>6}  {when(item.created_at):<19}  {item.attempts:>5}  {tags:<30}  {error}"
        )
    return lines


def _key_text(key: dict[str, Any]) -> str:
    return ", ".join(f"{column}={value}" for column, value in key.items())


def drift_lines(item: Drift) -> list[str]:
    """One row's difference: the row missing, extra, or each column that differs."""
    where = f"{item.table} ({_key_text(item.key)})"
    if item.live is None:
        return [f"{where}: missing (expected a row)"]
    if item.expected is None:
        return [f"{where}: extra row (expected none)"]
    columns = sorted(item.live.keys() | item.expected.keys())
    return [
        f"{where} {column}: expected {item.expected.get(column)!r}, found {item.live.get(column)!r}"
        for column in columns
        if _differs(item.live.get(column), item.expected.get(column))
    ]


def _differs(found: Any, expected: Any) -> bool:
    """As verify judges: numbers within its tolerance (ratings) are the same."""
    if isinstance(found, int | float) and isinstance(expected, int | float):
        return abs(found - expected) > RATING_TOLERANCE
    return bool(found != expected)


def drift_summary(drift: list[Drift], tenants: int) -> str:
    if not drift:
        return f"no drift in {tenants} tenant(s)"
    tables: dict[str, int] = {}
    for item in drift:
        tables[item.table] = tables.get(item.table, 0) + 1
    per_table = ", ".join(f"{table} {count}" for table, count in sorted(tables.items()))
    return f"drift: {len(drift)} row(s) differ in {tenants} tenant(s) ({per_table})"
