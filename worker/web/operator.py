"""The operator API: job runs, dead letters and the queue, behind ``ADMIN_TOKEN``.

Every route needs ``Authorization: Bearer $ADMIN_TOKEN`` and is off (403) while
it is unset; bodies are read within ``MAX_REQUEST_BYTES`` and
``REQUEST_BODY_SECONDS``, and every input error is a 4xx with a one-line reason.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from worker.core import metrics
from worker.core.status import WorkerView
from worker.queue import control, jobs
from worker.queue.pgmq import send
from worker.web.guesses import FailedGuesses
from worker.web.responses import JSON, error_response

MAX_DELAY_SECONDS = 30 * 24 * 3600.0
MAX_LIST_LIMIT = 1000
MAX_REQUEST_BYTES = 65_536
"""Largest request body the operator API reads (413 beyond it)."""
REQUEST_BODY_SECONDS = 10.0
"""A request body that takes longer than this to arrive is refused (408)."""
MAX_MSG_ID = 2**63 - 1
AUTH_FAILURES_ALLOWED = 10
AUTH_FAILURE_WINDOW_SECONDS = 60.0


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


class OperatorApi:
    """The operator's endpoints; ``guesses`` counts wrong tokens (the console's too)."""

    def __init__(self, worker: WorkerView, guesses: FailedGuesses) -> None:
        self.pool = worker.pool
        self.settings = worker.settings
        self.queue_name = worker.settings.queue_name
        self.queues = jobs.operated_queues(self.queue_name)
        self.guesses = guesses

    def operator(self, endpoint: Endpoint) -> Endpoint:
        """``endpoint`` behind the bearer token (compared in constant time).

        A client that keeps guessing is refused for a while (429), counted
        in ``stats_worker_auth_failures_total``.
        """

        async def guarded(request: Request) -> Response:
            token = self.settings.admin_token
            expected = token.get_secret_value().encode() if token is not None else b""
            if not expected:
                return error_response(403, "operator API disabled: set ADMIN_TOKEN")
            client = request.client.host if request.client else "unknown"
            if self.guesses.blocked(client):
                return error_response(429, "too many failed token attempts", {"Retry-After": "60"})
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), expected
            ):
                self.guesses.failed(client)
                metrics.auth_failures_total.inc()
                return error_response(
                    401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"}
                )
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
        queue = self._queue(request)
        found = await jobs.list_jobs(self.pool, queue, status, int(limit_text))
        return JSON({"jobs": [job.as_json() for job in found]})

    async def get_job(self, request: Request) -> Response:
        msg_id, queue = _msg_id(request), self._queue(request)
        job = await jobs.get_job(self.pool, queue, msg_id)
        if job is None:
            raise HTTPException(404, f"no message {msg_id} in queue {queue}")
        return JSON(job.as_json())

    async def retry(self, request: Request) -> Response:
        msg_id, queue = _msg_id(request), self._queue(request)
        new_id = await jobs.retry_dead(self.pool, queue, msg_id)
        if new_id is not None:
            return JSON({"msg_id": new_id, "retry_of": msg_id, "queue": queue})
        job = await jobs.get_job(self.pool, queue, msg_id)
        if job is None:
            raise HTTPException(404, f"no message {msg_id} in queue {queue}")
        retried = f", already retried as {job.retried_as}" if job.retried_as else ""
        raise HTTPException(409, f"message {msg_id} is not a dead letter ({job.status}{retried})")

    async def queue(self, request: Request) -> Response:
        """The queue at a glance; ``paused`` is the worker's (one pause covers both queues)."""
        queue = self._queue(request)
        summary = await jobs.queue_summary(self.pool, queue)
        paused = await control.is_paused(self.pool, self.queue_name)
        return JSON({"queue": queue, "paused": paused, **summary})

    def _queue(self, request: Request) -> str:
        """``?queue=``: the live queue (the default) or its bulk queue; msg_ids are per queue."""
        asked = request.query_params.get("queue") or self.queue_name
        if asked not in self.queues:
            raise HTTPException(
                400, f"unknown queue {asked[:64]!r}; one of {', '.join(self.queues)}"
            )
        return asked

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
        return JSON({"msg_id": msg_id, "queue": self.queue_name, "visible_at": visible_at}, 201)


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
