"""The operator's console at ``/admin``: server-rendered pages over the operator API's data.

Off while ``ADMIN_TOKEN`` is unset. A login form exchanges the token for an
HttpOnly, SameSite=Strict session cookie; every form carries a CSRF token tied
to that session, and a POST from another origin is refused. Pages refresh their
``<main>`` every few seconds with ``static/console.js`` (no build step, no CDN).
The console depends on :class:`~worker.web.console_pages.ConsoleHost`, never on
``worker.app``; its pages are in ``worker/web/console_pages.py``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

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
from worker.web.console_pages import ConsoleHost, ConsolePages
from worker.web.guesses import FailedGuesses

HERE = Path(__file__).resolve().parent
MAX_FORM_BYTES = 8192
Page = Callable[[Request], Awaitable[Response]]


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


def create_console(host: ConsoleHost, guesses: FailedGuesses) -> Starlette:
    """The console's routes, mounted by the HTTP app at ``/admin``.

    ``guesses`` is shared with the operator API: wrong tokens count against a
    client whichever door it knocks on.
    """
    console = Console(host, guesses)
    pages = ConsolePages(host, console.render)
    page, action = console.page, console.action
    routes = [
        Route("/login", console.login_form, methods=["GET"]),
        Route("/login", console.login, methods=["POST"]),
        Route("/logout", action(console.logout), methods=["POST"]),
        Route("/", page(pages.overview), methods=["GET"]),
        Route("/jobs", page(pages.job_list), methods=["GET"]),
        Route("/jobs/{msg_id:int}", page(pages.job_detail), methods=["GET"]),
        Route("/jobs/{msg_id:int}/retry", action(pages.retry), methods=["POST"]),
        Route("/dead", page(pages.dead_letters), methods=["GET"]),
        Route("/dead/retry", action(pages.retry_all), methods=["POST"]),
        Route("/callbacks", page(pages.failed_callbacks), methods=["GET"]),
        Route("/callbacks/resend", action(pages.resend), methods=["POST"]),
        Route("/pause", action(pages.pause), methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return Starlette(routes=routes)
