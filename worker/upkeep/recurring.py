"""The built-in recurring jobs: the nightly ``verify`` that alerts on drift, and retention."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from uuid import UUID

import httpx

from worker.core import metrics
from worker.core.database import Pool
from worker.core.settings import Settings
from worker.stats import maintenance
from worker.upkeep import retention
from worker.upkeep.alerts import post_alert
from worker.upkeep.scheduler import RecurringJob

log = logging.getLogger(__name__)

LISTED_TENANTS = 5


def builtin_jobs(
    settings: Settings, pool: Pool, client: httpx.AsyncClient, queue_names: Sequence[str]
) -> list[RecurringJob]:
    async def verify() -> str:
        return await verify_and_alert(settings, pool, client)

    async def purge() -> str:
        await retention.purge(pool, settings, queue_names)
        return "succeeded"

    return [
        RecurringJob("verify", settings.verify_schedule, verify),
        RecurringJob("purge", settings.retention_schedule, purge),
    ]


async def verify_and_alert(settings: Settings, pool: Pool, client: httpx.AsyncClient) -> str:
    """Verify every tenant; on drift set the metric and tell the webhook. Returns the result."""
    tenants = await maintenance.tenants(pool)
    drifted: dict[UUID, set[str]] = {}
    rows = 0
    for tenant in tenants:
        found = await maintenance.verify(pool, tenant)
        if found:
            drifted[tenant] = {item.table for item in found}
            rows += len(found)
    metrics.drift_rows.set(rows)
    fields: dict[str, object] = {"tenants": len(tenants), "drifted_tenants": len(drifted)}
    if not drifted:
        log.info("verify found no drift", extra=fields)
        return "succeeded"
    fields["rows"] = rows
    log.error("verify found drift", extra=fields)
    if settings.alert_webhook_url:
        await post_alert(
            client,
            settings.alert_webhook_url,
            drift_text(drifted, rows),
            seconds=settings.callback_timeout_seconds,
            what="drift alert",
            fields=fields,
        )
    return "drift"


def drift_text(drifted: dict[UUID, set[str]], rows: int) -> str:
    lines = [
        f":warning: stats-worker verify: {rows} statistics row(s) differ from a recompute "
        f"in {len(drifted)} tenant(s)"
    ]
    for tenant, tables in list(drifted.items())[:LISTED_TENANTS]:
        lines.append(f"tenant {tenant}: {', '.join(sorted(tables))}")
    if len(drifted) > LISTED_TENANTS:
        lines.append(f"+{len(drifted) - LISTED_TENANTS} more tenant(s)")
    lines.append("fix with: stats-worker rebuild --tenant ID (after finding the cause)")
    return "\n".join(lines)
