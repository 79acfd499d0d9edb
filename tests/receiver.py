"""A real HTTP server on 127.0.0.1 that records what it receives and answers as told.

Stands in for the app's cache invalidation endpoint and for a Slack webhook.
It runs (uvicorn + Starlette) in the test's event loop, can be stopped to look
down (connection refused) and started again on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    """Lower-case names."""
    body: Any
    at: float
    """time.monotonic() on arrival."""


@dataclass(frozen=True)
class Answer:
    status: int = 204
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    delay: float = 0.0


class Receiver:
    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.port = 0
        self._script: deque[Answer] = deque()
        self._usual = Answer()
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._arrived = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def answer_next(self, times: int, status: int, **options: Any) -> None:
        """Answer the next ``times`` requests so, then as usual."""
        self._script.extend([Answer(status, **options)] * times)

    def answer_always(self, status: int, **options: Any) -> None:
        self._usual = Answer(status, **options)

    async def start(self) -> None:
        """Listen (again) on 127.0.0.1; the first start picks a free port."""
        app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            lifespan="off",
            ws="none",
            log_config=None,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening: from now on connections are refused."""
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
        self._server = self._task = None

    async def wait_for_requests(self, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{len(self.requests)} requests arrived, not {count}")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)
        return self.requests

    async def _handle(self, request: Request) -> Response:
        raw = await request.body()
        self.requests.append(
            Received(
                path=request.url.path,
                headers={k.lower(): v for k, v in request.headers.items()},
                body=json.loads(raw) if raw else None,
                at=time.monotonic(),
            )
        )
        self._arrived.set()
        answer = self._script.popleft() if self._script else self._usual
        if answer.delay:
            await asyncio.sleep(answer.delay)
        return Response(answer.body, status_code=answer.status, headers=answer.headers)


@contextlib.asynccontextmanager
async def receiving() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()
