"""Serving the HTTP app with uvicorn, inside the worker's event loop, within bounds.

uvicorn runs without its signal handlers: the worker owns SIGTERM and SIGINT
and stops the server by cancelling :func:`serve`. A request head must arrive
within ``REQUEST_HEAD_SECONDS``; at most ``MAX_CONNECTIONS`` at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Callable, Iterator

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

from worker.core.settings import Settings

log = logging.getLogger(__name__)

GRACEFUL_SHUTDOWN_SECONDS = 3
MAX_CONNECTIONS = 100
"""Concurrent HTTP connections; uvicorn answers 503 beyond it."""
IDLE_CONNECTION_SECONDS = 5
REQUEST_HEAD_SECONDS = 10.0
"""A connection that has not sent a whole request head this long after it opened
(or after its last response) is closed."""


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
