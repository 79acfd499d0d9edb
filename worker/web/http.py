"""The HTTP side's app, served in the worker's own event loop (``worker/web/server.py``).

``/health`` and ``/metrics`` are open (``worker/web/health.py``); the operator
API (``/jobs``, ``/queue``, ``worker/web/operator.py``) needs ``Authorization:
Bearer $ADMIN_TOKEN`` and is off while ``ADMIN_TOKEN`` is unset, as is the
console at ``/admin`` (``worker/web/console.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from worker.core.status import WorkerView
from worker.web.console import create_console
from worker.web.guesses import FailedGuesses
from worker.web.health import Health
from worker.web.operator import AUTH_FAILURE_WINDOW_SECONDS, AUTH_FAILURES_ALLOWED, OperatorApi
from worker.web.refresher import QueueSnapshots
from worker.web.responses import DATABASE_ERRORS, error_response

log = logging.getLogger(__name__)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, exc.detail, dict(exc.headers or {}))


async def _database_error(request: Request, exc: Exception) -> Response:
    """503 when the database is unreachable; a value it refuses is the caller's (400)."""
    log.warning("operator request failed", extra={"path": request.url.path, "error": repr(exc)})
    if isinstance(exc, asyncpg.DataError):
        return error_response(
            400, f"the database refused a value: {str(exc).splitlines()[0][:200]}"
        )
    return error_response(503, "database unreachable")


async def _to_console(request: Request) -> Response:
    return RedirectResponse("/admin/", 303)


def create_app(worker: WorkerView, snapshots: QueueSnapshots | None = None) -> Starlette:
    """The worker's HTTP app; ``snapshots`` are the refresher's queue depths, if it runs."""
    health = Health(worker, snapshots if snapshots is not None else QueueSnapshots())
    guesses = FailedGuesses(AUTH_FAILURES_ALLOWED, AUTH_FAILURE_WINDOW_SECONDS)
    endpoints = OperatorApi(worker, guesses)
    guard = endpoints.operator
    routes: list[BaseRoute] = [
        Route("/health", health.health, methods=["GET"]),
        Route("/metrics", health.metrics, methods=["GET"]),
        Route("/jobs", guard(endpoints.list_jobs), methods=["GET"]),
        Route("/jobs", guard(endpoints.enqueue), methods=["POST"]),
        Route("/jobs/{msg_id:int}", guard(endpoints.get_job), methods=["GET"]),
        Route("/jobs/{msg_id:int}/retry", guard(endpoints.retry), methods=["POST"]),
        Route("/queue", guard(endpoints.queue), methods=["GET"]),
    ]
    if worker.settings.admin_token is not None:
        routes.append(Mount("/admin", create_console(worker, guesses)))
        routes.append(Route("/", _to_console, methods=["GET"]))
    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        HTTPException: _http_error,
        **dict.fromkeys(DATABASE_ERRORS, _database_error),
    }
    return Starlette(routes=routes, exception_handlers=handlers)
