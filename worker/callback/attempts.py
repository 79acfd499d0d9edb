"""One attempt at delivering an invalidation, and what the endpoint's answer means.

A 2xx is delivered; a 5xx or 429 is retried (after its ``Retry-After`` when it
gives one); a 3xx or another 4xx is a configuration error, given up at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from worker.callback.posting import BoundedResponse, retry_after_seconds

LOCATION_MAX_CHARS = 200
"""A redirect's ``Location`` comes from outside: log no more of it than this."""
Scrub = Callable[[str], str]
"""Blots every secret out of a text (a :class:`~worker.core.redact.Redactor`)."""


@dataclass(frozen=True)
class Attempt:
    status_class: str
    """Label of ``callback_attempts_total``: 2xx, 3xx, 4xx, 5xx or error."""
    status: int | None = None
    error: str | None = None
    """None when delivered."""
    retry: bool = True
    retry_after: float | None = None
    advice: str | None = None
    """What the error line says when this attempt ends the row; None: the usual."""


def judge(response: BoundedResponse, scrub: Scrub) -> Attempt:
    """What an answer of the cache endpoint means: delivered, retry (when), or give up."""
    status = response.status_code
    if 200 <= status < 300:
        return Attempt("2xx", status)
    if 300 <= status < 400:
        return _redirected(response, scrub)
    status_class = f"{status // 100}xx" if status >= 400 else "error"
    body = " ".join(response.text.split())[:200]
    error = scrub(f"HTTP {status}: {body}" if body else f"HTTP {status}")
    if status == 429 or status >= 500:
        header = response.headers.get("retry-after") if status in (429, 503) else None
        return Attempt(status_class, status, error, retry_after=retry_after_seconds(header))
    return Attempt(status_class, status, error, retry=False)


def _redirected(response: BoundedResponse, scrub: Scrub) -> Attempt:
    # The client follows no redirect: the bearer secret must not travel to
    # wherever a Location points, and a 301/302 would turn the POST into a
    # GET that revalidates nothing. Asking again gets the same answer, so
    # this is a configuration error, like a 4xx.
    status = response.status_code
    location = _location(response, scrub)
    where = f" to {location}" if location else " without a Location"
    return Attempt(
        "3xx",
        status,
        f"HTTP {status} redirect{where}",
        retry=False,
        advice=(
            f"cache endpoint redirected ({status}){where}: set CACHE_INVALIDATION_URL"
            " to the final URL; a redirect to a login page means the app's auth"
            " middleware guards the route"
        ),
    )


def _location(response: BoundedResponse, scrub: Scrub) -> str | None:
    """The redirect's target: absolute, scrubbed, printable, at most LOCATION_MAX_CHARS."""
    value = response.headers.get("location", "").strip()
    if not value:
        return None
    with contextlib.suppress(httpx.InvalidURL, ValueError):
        # A relative Location ("/login") means little without the host it is on.
        value = str(response.url.join(value))
    # Scrubbed before it is cut, so no part of the secret survives the cut.
    value = "".join(c if c.isprintable() else "?" for c in scrub(value))
    if len(value) > LOCATION_MAX_CHARS:
        return value[: LOCATION_MAX_CHARS - 1] + "…"
    return value
