"""Live matches before bulk work: a second pgmq queue with slots of its own.

Bulk work (a backfill sent as messages, a mass re-enqueue, anything put on
``<QUEUE_NAME>_bulk``) goes to a second queue, read by a consumer of its own
with ``BULK_CONCURRENCY`` recompute slots. The live queue keeps all of
``CONCURRENCY``: however deep the bulk queue, a live match never waits for a
slot; at most it waits for the one bulk recompute of its own tenant that holds
the per-(table, tenant) locks. The bulk consumer coalesces per tenant as the
live one does, so a 10,000-match backfill of one tenant is a few large
recomputes, not 10,000 small ones; and each of them refreshes one statistic at
a time (``app.default_handlers``), so a bulk slot keeps at most one backend
busy while a live recompute runs its ten at once.
"""

from __future__ import annotations

from worker.core.settings import Settings

BULK_SUFFIX = "_bulk"


def bulk_queue_name(queue_name: str) -> str:
    """The lower-priority queue that goes with ``queue_name``."""
    return queue_name + BULK_SUFFIX


def is_bulk(queue_name: str) -> bool:
    return queue_name.endswith(BULK_SUFFIX)


def settings_for(settings: Settings, queue_name: str) -> Settings:
    """The consumer settings of a queue: the bulk one gets its own, smaller, slot count."""
    if not is_bulk(queue_name):
        return settings
    return settings.model_copy(update={"concurrency": settings.bulk_concurrency})
