"""The HTTP side, served in the worker's own event loop.

``/health`` and ``/metrics`` are open; the operator API (``/jobs``, ``/queue``)
needs ``Authorization: Bearer $ADMIN_TOKEN`` and is off while ``ADMIN_TOKEN``
is unset. uvicorn runs without its signal handlers: the worker owns SIGTERM
and SIGINT and stops the server by cancelling :func:`serve`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hmac
import json
import logging
import re
import socket
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib import metadata
from typing import Annotated, Any
from uuid import UUID

import asyncpg
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

from worker.core import metrics
from worker.core.settings import Settings
from worker.core.status import WorkerView
from worker.queue import control, jobs
from worker.queue.pgmq import Queue, QueueDepth, send
from worker.web.console import create_console
from worker.web.guesses import FailedGuesses
from worker.web.refresher import QueueSnapshots

log = logging.getLogger(__name__)

HEALTH_TIMEOUT_SECONDS = 2.0
GRACEFUL_SHUTDOWN_SECONDS = 3
MAX_DELAY_SECONDS = 30 * 24 * 3600.0
MAX_LIST_LIMIT = 1000
MAX_REQUEST_BYTES = 65_536
"""Largest request body the operator API reads (413 beyond it)."""
REQUEST_BODY_SECONDS = 10.0
"""A request body that takes longer than this to arrive is refused (408)."""
MAX_CONNECTIONS = 100
"""Concurrent HTTP connections; uvicorn answers 503 beyond it."""
IDLE_CONNECTION_SECONDS = 5
REQUEST_HEAD_SECONDS = 10.0
"""A connection that has not sent a whole request head this long after it opened
(or after its last response) is closed."""
MAX_MSG_ID = 2**63 - 1
AUTH_FAILURES_ALLOWED = 10
AUTH_FAILURE_WINDOW_SECONDS = 60.0
DATABASE_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)
"""Failures of the database (or of reaching it): /health and the operator API answer 503."""


def package_version() -> str:
    try:
        return metadata.version("stats-worker")
    except metadata.PackageNotFoundError:
        return "unknown"


class _JSON(JSONResponse):
    """JSON with datetimes as ISO-8601 and decimals and UUIDs made plain."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, default=_plain, separators=(",", ":")).encode()


def _plain(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _error(status_code: int, message: str, headers: dict[str, str] | None = None) -> _JSON:
    return _JSON({"error": message}, status_code, headers=headers)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return f"{type(exc).__name__}: {exc}"


def _depth_json(depth: QueueDepth) -> dict[str, int]:
    return {
        "depth": depth.length,
        "visible": depth.visible,
        "oldest_age_seconds": depth.oldest_age_seconds or 0,
    }


class EnqueueRequest(BaseModel):
    """Body of ``POST /jobs``: the message, and when it becomes visible (default now)."""

    model_config = ConfigDict(extra="forbid")

    body: dict[str, Any]
    delay_seconds: (
        Annotated[float, Field(ge=0, le=MAX_DELAY_SECONDS, allow_inf_nan=False)] | None
    ) = None
    run_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _one_way_to_say_when(self) -> EnqueueRequest:
        if self.delay_seconds is not None and self.run_at is not None:
            raise ValueError("give delay_seconds or run_at, not both")
        if self.run_at is not None:
            ahead = (self.run_at - datetime.now(UTC)).total_seconds()
            if ahead > MAX_DELAY_SECONDS:
                raise ValueError(f"run_at is more than {MAX_DELAY_SECONDS / 86400:g} days ahead")
            if self.run_at.year < 2000:
                raise ValueError("run_at is before the year 2000")
        if "\\u0000" in json.dumps(self.body):
            raise ValueError("body holds \\u0000, which PostgreSQL cannot store in jsonb")
        return self

    def visible_at(self) -> datetime:
        if self.run_at is not None:
            return self.run_at
        return datetime.now(UTC) + timedelta(seconds=self.delay_seconds or 0.0)


Endpoint = Callable[[Request], Awaitable[Response]]


class _Endpoints:
    def __init__(self, worker: WorkerView, snapshots: QueueSnapshots) -> None:
        self.worker = worker
        self.pool = worker.pool
        self.settings = worker.settings
        self.queue_name = worker.settings.queue_name
        self.snapshots = snapshots
        self.version = package_version()
        self.guesses = FailedGuesses(AUTH_FAILURES_ALLOWED, AUTH_FAILURE_WINDOW_SECONDS)

    # -- open ------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        status = self.worker.status
        poll_age = status.poll_age_seconds()
        body: dict[str, Any] = {
            "status": "ok",
            "database": "ok",
            "last_poll_age_seconds": round(poll_age, 3),
            "listener": "connected" if status.listener_connected else "polling",
            "queue": None,
            "in_flight": status.in_flight,
            "stopping": status.stopping,
            "paused": status.paused,
            "version": self.version,
        }
        try:
            body["queue"] = _depth_json(await self._probe_database())
        except DATABASE_ERRORS as exc:
            # Who asks may be anyone: the details (addresses, errors) go to the log.
            log.warning("health check: database unreachable", extra={"error": _describe(exc)})
            body.update(status="unavailable", database="unreachable")
            body["reason"] = "database unreachable"
            return _JSON(body, 503)
        if not status.stopping and poll_age > self.settings.stall_after_seconds:
            body["status"] = "stalled"
            body["reason"] = (
                f"the consumer has not polled for {poll_age:.0f}s "
                f"(STALL_AFTER_SECONDS={self.settings.stall_after_seconds:g})"
            )
            return _JSON(body, 503)
        return _JSON(body)

    async def _probe_database(self) -> QueueDepth:
        """One small query: ``SELECT 1`` when the refresher's depth is fresh, else the depth."""
        max_age = 3 * self.settings.metrics_refresh_seconds
        async with asyncio.timeout(HEALTH_TIMEOUT_SECONDS):
            cached = self.snapshots.fresh(self.queue_name, max_age)
            if cached is not None:
                await self.pool.fetchval("SELECT 1")
                return cached
            depth = await Queue(self.pool, self.queue_name).depth()
        self.snapshots.record(self.queue_name, depth)
        return depth

    async def metrics(self, request: Request) -> Response:
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    # -- operator API ------------------------------------------------------------------

    def operator(self, endpoint: Endpoint) -> Endpoint:
        """``endpoint`` behind the bearer token (compared in constant time).

        A client that keeps guessing is refused for a while (429), counted
        in ``stats_worker_auth_failures_total``.
        """

        async def guarded(request: Request) -> Response:
            token = self.settings.admin_token
            expected = token.get_secret_value().encode() if token is not None else b""
            if not expected:
                return _error(403, "operator API disabled: set ADMIN_TOKEN")
            client = request.client.host if request.client else "unknown"
            if self.guesses.blocked(client):
                return _error(429, "too many failed token attempts", {"Retry-After": "60"})
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), expected
            ):
                self.guesses.failed(client)
                metrics.auth_failures_total.inc()
                return _error(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
            return await endpoint(request)

        return guarded

    async def list_jobs(self, request: Request) -> Response:
        status = request.query_params.get("status") or None
        if status is not None and status not in jobs.JOB_STATUSES:
            raise HTTPException(
                400, f"unknown status {status!r}; one of {', '.join(jobs.JOB_STATUSES)}"
            )
        limit_text = request.query_params.get("limit", "50")
        if (
            not re.fullmatch(r"[0-9]{1,4}", limit_text)
            or not 1 <= int(limit_text) <= MAX_LIST_LIMIT
        ):
            raise HTTPException(400, f"limit must be a whole number from 1 to {MAX_LIST_LIMIT}")
        found = await jobs.list_jobs(self.pool, self.queue_name, status, int(limit_text))
        return _JSON({"jobs": [job.as_json() for job in found]})

    async def get_job(self, request: Request) -> Response:
        msg_id = _msg_id(request)
        job = await jobs.get_job(self.pool, self.queue_name, msg_id)
        if job is None:
            raise HTTPException(404, f"no message {msg_id} in queue {self.queue_name}")
        return _JSON(job.as_json())

    async def retry(self, request: Request) -> Response:
        msg_id = _msg_id(request)
        new_id = await jobs.retry_dead(self.pool, self.queue_name, msg_id)
        if new_id is not None:
            return _JSON({"msg_id": new_id, "retry_of": msg_id})
        job = await jobs.get_job(self.pool, self.queue_name, msg_id)
        if job is None:
            raise HTTPException(404, f"no message {msg_id} in queue {self.queue_name}")
        retried = f", already retried as {job.retried_as}" if job.retried_as else ""
        raise HTTPException(409, f"message {msg_id} is not a dead letter ({job.status}{retried})")

    async def queue(self, request: Request) -> Response:
        summary = await jobs.queue_summary(self.pool, self.queue_name)
        paused = await control.is_paused(self.pool, self.queue_name)
        return _JSON({"queue": self.queue_name, "paused": paused, **summary})

    async def enqueue(self, request: Request) -> Response:
        raw = await _bounded_body(request)
        try:
            wanted = EnqueueRequest.model_validate_json(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
                for error in exc.errors()
            )
            raise HTTPException(400, problems) from None
        visible_at = wanted.visible_at()
        msg_id = await send(self.pool, self.queue_name, wanted.body, visible_at)
        return _JSON({"msg_id": msg_id, "queue": self.queue_name, "visible_at": visible_at}, 201)


def _msg_id(request: Request) -> int:
    msg_id: int = request.path_params["msg_id"]
    if msg_id > MAX_MSG_ID:
        raise HTTPException(404, f"no message {msg_id}: message ids end at {MAX_MSG_ID}")
    return msg_id


async def _bounded_body(request: Request) -> bytes:
    """The request body, refused past MAX_REQUEST_BYTES (413) or REQUEST_BODY_SECONDS (408)."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > MAX_REQUEST_BYTES:
        raise HTTPException(413, f"request body over {MAX_REQUEST_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(REQUEST_BODY_SECONDS):
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_REQUEST_BYTES:
                    raise HTTPException(413, f"request body over {MAX_REQUEST_BYTES} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise HTTPException(
            408, f"request body not sent within {REQUEST_BODY_SECONDS:g} s"
        ) from None
    return b"".join(chunks)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error(exc.status_code, exc.detail, dict(exc.headers or {}))


async def _database_error(request: Request, exc: Exception) -> Response:
    """503 when the database is unreachable; a value it refuses is the caller's (400)."""
    log.warning("operator request failed", extra={"path": request.url.path, "error": repr(exc)})
    if isinstance(exc, asyncpg.DataError):
        return _error(400, f"the database refused a value: {str(exc).splitlines()[0][:200]}")
    return _error(503, "database unreachable")


async def _to_console(request: Request) -> Response:
    return RedirectResponse("/admin/", 303)


def create_app(worker: WorkerView, snapshots: QueueSnapshots | None = None) -> Starlette:
    """The worker's HTTP app; ``snapshots`` are the refresher's queue depths, if it runs."""
    endpoints = _Endpoints(worker, snapshots if snapshots is not None else QueueSnapshots())
    guard = endpoints.operator
    routes: list[BaseRoute] = [
        Route("/health", endpoints.health, methods=["GET"]),
        Route("/metrics", endpoints.metrics, methods=["GET"]),
        Route("/jobs", guard(endpoints.list_jobs), methods=["GET"]),
        Route("/jobs", guard(endpoints.enqueue), methods=["POST"]),
        Route("/jobs/{msg_id:int}", guard(endpoints.get_job), methods=["GET"]),
        Route("/jobs/{msg_id:int}/retry", guard(endpoints.retry), methods=["POST"]),
        Route("/queue", guard(endpoints.queue), methods=["GET"]),
    ]
    if worker.settings.admin_token is not None:
        routes.append(Mount("/admin", create_console(worker, endpoints.guesses)))
        routes.append(Route("/", _to_console, methods=["GET"]))
    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        HTTPException: _http_error,
        **dict.fromkeys(DATABASE_ERRORS, _database_error),
    }
    return Starlette(routes=routes, exception_handlers=handlers)


# -- serving -----------------------------------------------------------------------


def bind_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket; ``::`` (the default) takes IPv4 too, or is 0.0.0.0 without IPv6."""
    wildcard = host in {"", "::"}
    try:
        return _bind(host or "::", port, dual_stack=wildcard)
    except OSError as exc:
        if wildcard and exc.errno in {errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL}:
            log.warning("no IPv6 here: listening on IPv4 only", extra={"port": port})
            return _bind("0.0.0.0", port, dual_stack=False)
        reason = exc.strerror or str(exc)
        raise OSError(exc.errno, f"cannot listen on HOST={host} PORT={port}: {reason}") from exc


def _bind(host: str, port: int, *, dual_stack: bool) -> socket.socket:
    family, _, _, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and dual_stack:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class _BoundedH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline for each request head.

    uvicorn closes a connection idle between requests, but one that never sends
    a whole request (or trickles its headers a byte at a time) would stay open
    for ever. Each request's head must now arrive within REQUEST_HEAD_SECONDS.
    """

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_deadline()

    def _arm_head_deadline(self) -> None:
        waiting_for = self.cycle
        self.loop.call_later(REQUEST_HEAD_SECONDS, self._head_overdue, waiting_for)

    def _head_overdue(self, waiting_for: object) -> None:
        if self.cycle is waiting_for and not self.transport.is_closing():
            self.transport.close()  # no new request began since the deadline was set


class _EmbeddedServer(uvicorn.Server):
    """uvicorn that leaves the signals alone and says when it listens."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn would take over SIGTERM/SIGINT and raise them again when it
        # stops, which the worker would read as a second signal.
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._on_started()


async def serve(
    app: ASGIApp, settings: Settings, on_started: Callable[[int], None] | None = None
) -> None:
    """Serve ``app`` on ``HOST``:``PORT`` until cancelled; ``on_started(port)`` once listening.

    Cancelling closes the listener and gives responses under way a moment to
    finish. With ``PORT=0`` the port the system chose is the one passed on.
    """
    sock = bind_socket(settings.host, settings.port)
    port: int = sock.getsockname()[1]

    def started() -> None:
        log.info("http listening", extra={"host": settings.host, "port": port})
        if on_started is not None:
            on_started(port)

    config = uvicorn.Config(
        app,
        http=_BoundedH11,
        ws="none",
        lifespan="off",
        log_config=None,
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        limit_concurrency=MAX_CONNECTIONS,
        timeout_keep_alive=IDLE_CONNECTION_SECONDS,
        h11_max_incomplete_event_size=16_384,
    )
    server = _EmbeddedServer(config, started)
    serving = asyncio.create_task(server.serve(sockets=[sock]), name="http")
    try:
        await asyncio.shield(serving)
    except asyncio.CancelledError:
        server.should_exit = True
        try:
            await serving
        finally:
            serving.cancel()
        raise
    finally:
        sock.close()
