"""Start-up: wait for the database rather than crash on a restart race.

On deploy the worker and its database often start together, and a platform's
database restarts under a running worker; dying on the first refused connection
only adds a crash loop. So ``run`` and ``migrate`` first probe the database with
exponential backoff, up to ``STARTUP_TIMEOUT_SECONDS``, and give up at once on
what waiting cannot fix (credentials, a database that does not exist).

A DSN's password may contain any character, so nothing here prints a DSN: the
lines name the host and port, and exception text is scrubbed of the password.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from urllib.parse import parse_qsl, unquote

import asyncpg

from worker.core.database import connect_kwargs
from worker.core.settings import Settings

log = logging.getLogger(__name__)

FIRST_DELAY_SECONDS = 0.25
MAX_DELAY_SECONDS = 5.0
TRY_TIMEOUT_SECONDS = (1.0, 10.0)
"""Bounds of one probe's connect timeout: at least 1 s so the last try can succeed,
at most 10 s so a black-holed address still gets several tries."""

_RETRYABLE = (
    OSError,  # refused, reset, unreachable, name not resolved yet
    TimeoutError,
    asyncpg.CannotConnectNowError,  # starting up, shutting down, in recovery
    asyncpg.TooManyConnectionsError,
    asyncpg.PostgresConnectionError,  # closed in the middle of the handshake
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)


class DatabaseUnreachable(Exception):
    """The database did not answer in time, or refused for good; the message says why."""


def retryable(exc: BaseException) -> bool:
    """Whether waiting can fix ``exc``: a server that is down, starting, full or restarting.

    Everything else (InvalidPasswordError, InvalidAuthorizationSpecificationError,
    InvalidCatalogNameError, a DSN that does not parse) fails the same way every try.
    """
    if isinstance(exc, ssl.SSLCertVerificationError):
        return False  # an OSError, but a certificate does not start verifying later
    return isinstance(exc, _RETRYABLE)


def database_address(dsn: str) -> str:
    """``host:port`` of a DSN, for humans; never any of its credentials.

    Everything up to the last ``@`` is dropped unparsed: a password that was not
    percent-encoded may hold ``/``, ``:`` or ``@`` and would fool a URL parser.
    """
    _, found, rest = dsn.partition("://")
    if not found:
        return "(a DSN that is not a URL)"
    address = rest.rpartition("@")[2]
    for stop in "/?#":
        address = address.partition(stop)[0]
    if address:
        return address
    query = dict(parse_qsl(rest.partition("?")[2]))
    return query.get("host", "the default host")


def _secrets(dsn: str) -> set[str]:
    """Every spelling of the DSN's password that could be echoed, raw and decoded."""
    rest = dsn.partition("://")[2]
    userinfo = rest.rpartition("@")[0] if "@" in rest else ""
    found = {userinfo.partition(":")[2]}
    found.update(value for key, value in parse_qsl(rest.partition("?")[2]) if key == "password")
    found |= {unquote(value) for value in found}
    return {value for value in found if value}


def describe_error(exc: BaseException, dsn: str) -> str:
    """``ClassName: message`` of a connect error, safe to print.

    Socket and server messages name hosts and roles; asyncpg's own DSN parsing
    errors can quote pieces of the DSN (the password among them), so theirs are
    withheld. What is shown is still scrubbed of the password.
    """
    name = type(exc).__name__
    if not isinstance(exc, OSError | TimeoutError | asyncpg.PostgresError):
        return f"{name} (the message is withheld: it may quote the DSN)"
    text = str(exc)
    for secret in sorted(_secrets(dsn), key=len, reverse=True):
        text = text.replace(secret, "***")
    return f"{name}: {text}" if text else name


async def _probe(dsn: str, connect_timeout: float) -> None:
    # asyncpg's own timeout covers the whole handshake, TLS and authentication too.
    connection = await asyncpg.connect(dsn, timeout=connect_timeout, **connect_kwargs(0))
    await connection.close()


def _jittered(delay: float) -> float:
    # Half of it random, so replicas restarted together do not knock in step.
    return delay / 2 + random.random() * delay / 2


async def wait_for_database(dsn: str, settings: Settings) -> None:
    """Return once ``dsn`` accepts a connection; raise :class:`DatabaseUnreachable`.

    Retries what a (re)starting server raises, with doubling delays, for
    ``STARTUP_TIMEOUT_SECONDS``; each failed try is one warning line.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + settings.startup_timeout_seconds
    address = database_address(dsn)
    delay = FIRST_DELAY_SECONDS
    attempt = 0
    while True:
        attempt += 1
        low, high = TRY_TIMEOUT_SECONDS
        try:
            await _probe(dsn, min(max(deadline - loop.time(), low), high))
        except Exception as exc:
            error = describe_error(exc, dsn)
            if not retryable(exc):
                raise DatabaseUnreachable(
                    f"cannot connect to the database at {address} (not retried): {error}"
                ) from None
            left = deadline - loop.time()
            if left <= 0:
                raise DatabaseUnreachable(
                    f"database at {address} not reachable after "
                    f"{loop.time() - started:.0f} s ({attempt} tries): {error}"
                ) from None
            pause = min(_jittered(delay), left)
            log.warning(
                "database not reachable yet",
                extra={
                    "database": address,
                    "attempt": attempt,
                    "retry_in_seconds": round(pause, 2),
                    "error": error,
                },
            )
            await asyncio.sleep(pause)
            delay = min(delay * 2, MAX_DELAY_SECONDS)
        else:
            if attempt > 1:
                log.info("database reachable", extra={"database": address, "attempt": attempt})
            return
