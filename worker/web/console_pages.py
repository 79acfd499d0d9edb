"""The console's pages and actions: the operator API's data, rendered, and its buttons.

Each page reads through :mod:`worker.queue.jobs` and :mod:`worker.queue.control`;
guarding (session, CSRF, origin) and rendering are ``worker/web/console.py``'s.
The console covers the live queue and its bulk queue: a job of the bulk queue
carries ``?queue=`` in its links and forms (each queue numbers its own messages).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from worker.core.status import WorkerView
from worker.queue import control, jobs

PAGE_SIZE = 50
Render = Callable[..., Response]
"""``render(request, template, status_code=200, **context)``: a page as HTML."""


ConsoleHost = WorkerView
"""What the console needs of the running worker: what the HTTP side reads of it."""


class ConsolePages:
    def __init__(self, host: ConsoleHost, render: Render) -> None:
        self.host = host
        self.queue_name = host.settings.queue_name
        self.queues = jobs.operated_queues(self.queue_name)
        self._render = render

    def render(
        self, request: Request, name: str, status_code: int = 200, **context: Any
    ) -> Response:
        return self._render(
            request, name, status_code, queues=self.queues, job_href=self.job_href, **context
        )

    def job_href(self, queue: str, msg_id: int) -> str:
        """A job's page; a job of the bulk queue names its queue."""
        asked = "" if queue == self.queue_name else "?" + urlencode({"queue": queue})
        return f"/admin/jobs/{msg_id}{asked}"

    def _queue(self, asked: str | None) -> str | None:
        """The queue a page or form names (the live one when it names none); None if unknown."""
        if not asked:
            return self.queue_name
        return asked if asked in self.queues else None

    # -- pages -------------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        pool = self.host.pool
        status = self.host.status
        bulk = self.queues[1]
        return self.render(
            request,
            "overview.html",
            summary=await jobs.queue_summary(pool, self.queue_name),
            bulk_queue=bulk,
            bulk=await jobs.queue_summary(pool, bulk),
            paused=await control.is_paused(pool, self.queue_name),
            replicas=await control.recent_replicas(pool, self.queue_name),
            listener="connected" if status.listener_connected else "polling",
            in_flight=status.in_flight,
        )

    async def job_list(self, request: Request) -> Response:
        params = request.query_params
        status = params.get("status") or None
        if status is not None and status not in jobs.JOB_STATUSES:
            status = None
        tenant = _uuid(params.get("tenant"))
        hours = _number(params.get("hours"))
        since = datetime.now(UTC) - timedelta(hours=hours) if hours else None
        before = _number(params.get("before"))
        queue = self._queue(params.get("queue")) or self.queue_name
        found = await jobs.list_jobs(
            self.host.pool,
            queue,
            status,
            PAGE_SIZE,
            tenant=tenant,
            since=since,
            before_msg_id=before,
        )
        filters = {
            "status": status or "",
            "tenant": str(tenant or ""),
            "hours": hours or "",
            "queue": queue,
        }
        return self.render(
            request,
            "jobs.html",
            jobs=found,
            filters=filters,
            statuses=jobs.JOB_STATUSES,
            older=found[-1].msg_id if len(found) == PAGE_SIZE else None,
        )

    async def job_detail(self, request: Request) -> Response:
        msg_id = int(request.path_params["msg_id"])
        queue = self._queue(request.query_params.get("queue"))
        job = None if queue is None else await jobs.get_job(self.host.pool, queue, msg_id)
        if job is None:
            return self.render(request, "missing.html", 404, msg_id=msg_id)
        return self.render(request, "job.html", job=job)

    async def dead_letters(self, request: Request) -> Response:
        """Both queues' dead letters, newest first, each with its queue."""
        found = await jobs.list_jobs_of(self.host.pool, self.queues, "dead", PAGE_SIZE)
        return self.render(request, "dead.html", jobs=found)

    async def failed_callbacks(self, request: Request) -> Response:
        found = await jobs.failed_callbacks(self.host.pool, PAGE_SIZE)
        return self.render(request, "callbacks.html", callbacks=found)

    # -- actions -----------------------------------------------------------------

    async def retry(self, request: Request, form: dict[str, str]) -> Response:
        msg_id = int(request.path_params["msg_id"])
        queue = self._queue(form.get("queue"))
        if queue is None:
            return self.render(request, "missing.html", 404, msg_id=msg_id)
        new_id = await jobs.retry_dead(self.host.pool, queue, msg_id)
        return RedirectResponse(self.job_href(queue, new_id or msg_id), 303)

    async def retry_all(self, request: Request, form: dict[str, str]) -> Response:
        await jobs.retry_all_dead(self.host.pool, self.queues)
        return RedirectResponse("/admin/jobs", 303)

    async def resend(self, request: Request, form: dict[str, str]) -> Response:
        one = _number(form.get("id"))
        await jobs.resend_callbacks(self.host.pool, [one] if one else None)
        self.host.callbacks_due()
        return RedirectResponse("/admin/callbacks", 303)

    async def pause(self, request: Request, form: dict[str, str]) -> Response:
        if form.get("paused") == "true":
            await control.pause(self.host.pool, self.queue_name)
        else:
            await control.resume(self.host.pool, self.queue_name)
        return RedirectResponse("/admin/", 303)


def _number(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() and len(text) <= 18 else None


def _uuid(text: str | None) -> UUID | None:
    try:
        return UUID(text) if text else None
    except ValueError:
        return None
