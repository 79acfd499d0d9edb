"""The app's cache invalidation endpoint, stood in for by a real HTTP server.

It listens on 127.0.0.1 (a free port) in the bench's event loop, answers 204
and notes when each POST arrived, so that latency is measured up to the
moment the app would drop its caches.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass(frozen=True)
class Arrival:
    at: float
    """time.perf_counter() when the request was handled."""
    tags: tuple[str, ...]


class CallbackReceiver:
    def __init__(
        self, sock: socket.socket, *, failure_rate: float = 0.0, keep_arrivals: bool = True
    ) -> None:
        self._sock = sock
        self.port: int = sock.getsockname()[1]
        self.received = 0
        self.refused = 0
        self._failure_rate = failure_rate
        """Share of requests answered 500 at random (a flaky app, for the soak)."""
        self._keep_arrivals = keep_arrivals
        self._random = random.Random(1)
        self._arrivals: asyncio.Queue[Arrival] = asyncio.Queue()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/invalidate"

    def forget(self) -> None:
        """Drop arrivals not taken yet (before a measurement starts)."""
        while not self._arrivals.empty():
            self._arrivals.get_nowait()

    async def next_arrival(self, within: float) -> Arrival:
        """The next arrival; TimeoutError after ``within`` seconds without one."""
        try:
            async with asyncio.timeout(within):
                return await self._arrivals.get()
        except TimeoutError:
            raise TimeoutError(f"no cache invalidation arrived within {within:g} s") from None

    async def wait_for_tag(self, tag: str, within: float) -> Arrival:
        """The first arrival (from now) whose tags include ``tag``."""
        deadline = time.perf_counter() + within
        while True:
            arrival = await self.next_arrival(max(0.0, deadline - time.perf_counter()))
            if tag in arrival.tags:
                return arrival

    async def _handle(self, request: Request) -> Response:
        at = time.perf_counter()
        body = json.loads(await request.body() or b"{}")
        self.received += 1
        if self._random.random() < self._failure_rate:
            self.refused += 1
            return Response("flaky on purpose", status_code=500)
        if self._keep_arrivals:
            self._arrivals.put_nowait(Arrival(at, tuple(body.get("tags", ()))))
        return Response(status_code=204)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/invalidate", self._handle, methods=["POST"])])


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Ctrl-C belongs to the bench (and the worker's own handlers), not to us.
        yield


@contextlib.asynccontextmanager
async def receiving(
    *, failure_rate: float = 0.0, keep_arrivals: bool = True
) -> AsyncIterator[CallbackReceiver]:
    """A receiver listening for the block's duration."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    receiver = CallbackReceiver(sock, failure_rate=failure_rate, keep_arrivals=keep_arrivals)
    config = uvicorn.Config(
        receiver.app(),
        http="h11",
        ws="none",
        lifespan="off",
        log_config=None,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=1,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="bench-receiver")
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield receiver
    finally:
        server.should_exit = True
        await task
        sock.close()
