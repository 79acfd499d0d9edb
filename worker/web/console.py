"""The operator's console at ``/admin``: server-rendered pages over the operator API's data.

Off while ``ADMIN_TOKEN`` is unset. A login form exchanges the token for an
HttpOnly, SameSite=Strict session cookie; every form carries a CSRF token tied
to that session, and a POST from another origin is refused. Pages refresh their
``<main>`` every few seconds with ``static/console.js`` (no build step, no CDN).
The console depends on :class:`ConsoleHost`, never on ``worker.app``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs
from uuid import UUID

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from worker.core.database import Pool
from worker.core.settings import Settings
from worker.core.status import WorkerStatus
from worker.queue import control, jobs
from worker.web.console_auth import (
    SESSION_COOKIE,
    SESSION_SECONDS,
    csrf_token,
    csrf_valid,
    new_session,
    same_origin,
    session_valid,
    token_matches,
)
from worker.web.guesses import FailedGuesses

HERE = Path(__file__).resolve().parent
PAGE_SIZE = 50
MAX_FORM_BYTES = 8192
Page = Callable[[Request], Awaitable[Response]]


class ConsoleHost(Protocol):
    """What the console needs of the running worker."""

    @property
    def pool(self) -> Pool: ...
    @property
    def settings(self) -> Settings: ...
    @property
    def status(self) -> WorkerStatus: ...


def _templates() -> Environment:
    environment = Environment(
        loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True)
    )
    environment.filters["when"] = _when
    environment.filters["pretty"] = lambda value: json.dumps(value, indent=2, default=str)
    return environment


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


class Console:
    def __init__(self, host: ConsoleHost, guesses: FailedGuesses) -> None:
        self.host = host
        self.guesses = guesses
        self.queue_name = host.settings.queue_name
        token = host.settings.admin_token
        self.secret = token.get_secret_value() if token is not None else ""
        self.templates = _templates()

    # -- rendering and guarding --------------------------------------------------

    def render(
        self, request: Request, name: str, status_code: int = 200, **context: Any
    ) -> Response:
        session = request.cookies.get(SESSION_COOKIE, "")
        html = self.templates.get_template(name).render(
            csrf=csrf_token(self.secret, session) if session else "",
            queue=self.queue_name,
            path=request.url.path,
            **context,
        )
        return HTMLResponse(html, status_code, headers=_SECURITY_HEADERS)

    def page(self, endpoint: Page) -> Page:
        """A page: without a valid session, the login form instead."""

        async def guarded(request: Request) -> Response:
            if not session_valid(self.secret, request.cookies.get(SESSION_COOKIE)):
                return RedirectResponse("/admin/login", 303)
            return await endpoint(request)

        return guarded

    def action(self, endpoint: Callable[[Request, dict[str, str]], Awaitable[Response]]) -> Page:
        """A POST: a valid session, the same origin and the session's CSRF token, or 403."""

        async def guarded(request: Request) -> Response:
            session = request.cookies.get(SESSION_COOKIE, "")
            form = await _form(request)
            allowed = (
                session_valid(self.secret, session)
                and _same_origin(request)
                and csrf_valid(self.secret, session, form.get("csrf"))
            )
            if not allowed:
                return self.render(request, "refused.html", 403)
            return await endpoint(request, form)

        return guarded

    # -- login -------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        return self.render(request, "login.html", error=None)

    async def login(self, request: Request) -> Response:
        form = await _form(request)
        if not _same_origin(request):
            return self.render(request, "refused.html", 403)
        client = request.client.host if request.client else "unknown"
        if self.guesses.blocked(client):
            error = "Too many wrong tokens: wait a minute."
            return self.render(request, "login.html", 429, error=error)
        if not token_matches(self.secret, form.get("token", "")):
            self.guesses.failed(client)
            return self.render(request, "login.html", 401, error="That is not the admin token.")
        response = RedirectResponse("/admin/", 303)
        response.set_cookie(
            SESSION_COOKIE,
            new_session(self.secret),
            max_age=SESSION_SECONDS,
            path="/admin",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    async def logout(self, request: Request, form: dict[str, str]) -> Response:
        response = RedirectResponse("/admin/login", 303)
        response.delete_cookie(SESSION_COOKIE, path="/admin")
        return response

    # -- pages -------------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        pool = self.host.pool
        status = self.host.status
        return self.render(
            request,
            "overview.html",
            summary=await jobs.queue_summary(pool, self.queue_name),
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
        found = await jobs.list_jobs(
            self.host.pool,
            self.queue_name,
            status,
            PAGE_SIZE,
            tenant=tenant,
            since=since,
            before_msg_id=before,
        )
        filters = {"status": status or "", "tenant": str(tenant or ""), "hours": hours or ""}
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
        job = await jobs.get_job(self.host.pool, self.queue_name, msg_id)
        if job is None:
            return self.render(request, "missing.html", 404, msg_id=msg_id)
        return self.render(request, "job.html", job=job)

    async def dead_letters(self, request: Request) -> Response:
        found = await jobs.list_jobs(self.host.pool, self.queue_name, "dead", PAGE_SIZE)
        return self.render(request, "dead.html", jobs=found)

    async def failed_callbacks(self, request: Request) -> Response:
        found = await jobs.failed_callbacks(self.host.pool, PAGE_SIZE)
        return self.render(request, "callbacks.html", callbacks=found)

    # -- actions -----------------------------------------------------------------

    async def retry(self, request: Request, form: dict[str, str]) -> Response:
        msg_id = int(request.path_params["msg_id"])
        new_id = await jobs.retry_dead(self.host.pool, self.queue_name, msg_id)
        return RedirectResponse(f"/admin/jobs/{new_id or msg_id}", 303)

    async def retry_all(self, request: Request, form: dict[str, str]) -> Response:
        await jobs.retry_all_dead(self.host.pool, self.queue_name)
        return RedirectResponse("/admin/jobs", 303)

    async def resend(self, request: Request, form: dict[str, str]) -> Response:
        one = _number(form.get("id"))
        await jobs.resend_callbacks(self.host.pool, [one] if one else None)
        return RedirectResponse("/admin/callbacks", 303)

    async def pause(self, request: Request, form: dict[str, str]) -> Response:
        if form.get("paused") == "true":
            await control.pause(self.host.pool, self.queue_name)
        else:
            await control.resume(self.host.pool, self.queue_name)
        return RedirectResponse("/admin/", 303)


_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _same_origin(request: Request) -> bool:
    return same_origin(
        request.headers.get("origin"), request.headers.get("host"), request.url.scheme
    )


async def _form(request: Request) -> dict[str, str]:
    """A small urlencoded form, first value of each field (anything larger is empty)."""
    if request.method != "POST":
        return {}
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return {}
    fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=50)
    return {name: values[0] for name, values in fields.items()}


def _number(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() and len(text) <= 18 else None


def _uuid(text: str | None) -> UUID | None:
    try:
        return UUID(text) if text else None
    except ValueError:
        return None


def create_console(host: ConsoleHost, guesses: FailedGuesses) -> Starlette:
    """The console's routes, mounted by the HTTP app at ``/admin``.

    ``guesses`` is shared with the operator API: wrong tokens count against a
    client whichever door it knocks on.
    """
    console = Console(host, guesses)
    page, action = console.page, console.action
    routes = [
        Route("/login", console.login_form, methods=["GET"]),
        Route("/login", console.login, methods=["POST"]),
        Route("/logout", action(console.logout), methods=["POST"]),
        Route("/", page(console.overview), methods=["GET"]),
        Route("/jobs", page(console.job_list), methods=["GET"]),
        Route("/jobs/{msg_id:int}", page(console.job_detail), methods=["GET"]),
        Route("/jobs/{msg_id:int}/retry", action(console.retry), methods=["POST"]),
        Route("/dead", page(console.dead_letters), methods=["GET"]),
        Route("/dead/retry", action(console.retry_all), methods=["POST"]),
        Route("/callbacks", page(console.failed_callbacks), methods=["GET"]),
        Route("/callbacks/resend", action(console.resend), methods=["POST"]),
        Route("/pause", action(console.pause), methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return Starlette(routes=routes)
