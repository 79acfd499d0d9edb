"""The console's session and CSRF tokens: stateless, signed with ADMIN_TOKEN.

A session cookie is ``expiry.signature``; a form's CSRF token is a signature of
the session it belongs to, so a page from another origin can neither read nor
forge it. Changing ADMIN_TOKEN ends every session.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SESSION_COOKIE = "stats_worker_session"
SESSION_SECONDS = 12 * 3600


def _sign(secret: str, purpose: str, value: str) -> str:
    key = hashlib.sha256(f"stats-worker console:{secret}".encode()).digest()
    return hmac.new(key, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()


def token_matches(secret: str, offered: str) -> bool:
    return hmac.compare_digest(offered.encode(), secret.encode())


def new_session(secret: str, now: float | None = None) -> str:
    expiry = str(int((now or time.time()) + SESSION_SECONDS))
    return f"{expiry}.{_sign(secret, 'session', expiry)}"


def session_valid(secret: str, cookie: str | None, now: float | None = None) -> bool:
    if not cookie or "." not in cookie:
        return False
    expiry, signature = cookie.split(".", 1)
    if not expiry.isdigit() or int(expiry) < (now or time.time()):
        return False
    return hmac.compare_digest(signature, _sign(secret, "session", expiry))


def csrf_token(secret: str, session: str) -> str:
    return _sign(secret, "csrf", session)


def csrf_valid(secret: str, session: str, offered: str | None) -> bool:
    return offered is not None and hmac.compare_digest(offered, csrf_token(secret, session))


def same_origin(origin: str | None, host: str | None, scheme: str) -> bool:
    """A form may come without Origin (old browsers); one with another origin is refused."""
    if origin is None:
        return True
    return host is not None and origin in {
        f"{scheme}://{host}",
        f"http://{host}",
        f"https://{host}",
    }
