"""Secrets never reach an output: every log line, stored error and printed line is redacted.

The secrets are whatever the settings hold (the database passwords, the cache
secret, the admin token, the alert webhook's URL, whose path is its secret),
each also in its URL-encoded spellings, since an echoing server or a
redirect's ``Location`` may hand them back in either.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from urllib.parse import quote, unquote, urlsplit

from worker.core.settings import Settings

MASK = "***"
_SHORTEST = 4
"""Shorter values are not redacted: masking "abc" everywhere would garble logs."""


def _password_forms(dsn: str) -> list[str]:
    """The password of a DSN as written and decoded, however malformed the DSN.

    With an unencoded ``#``, ``@`` or ``/`` a URL parser sees only part of it,
    so the userinfo (up to the last ``@``) is taken apart by hand too.
    """
    forms = []
    with_scheme = dsn.split("://", 1)[-1]
    userinfo = with_scheme.rsplit("@", 1)[0] if "@" in with_scheme else ""
    if ":" in userinfo:
        forms.append(userinfo.split(":", 1)[1])
    try:
        parsed = urlsplit(dsn).password
    except ValueError:
        parsed = None
    if parsed:
        forms.append(parsed)
    return forms + [unquote(form) for form in forms]


def secret_values(settings: Settings) -> list[str]:
    values: list[str] = []
    for dsn in (settings.database_url, settings.direct_database_url):
        if dsn is not None:
            values += _password_forms(dsn.get_secret_value())
    for secret in (settings.internal_secret, settings.admin_token):
        if secret is not None:
            values.append(secret.get_secret_value())
    if settings.alert_webhook_url:
        values += [settings.alert_webhook_url, *_path_tails(settings.alert_webhook_url)]
    return values


def _path_tails(url: str) -> list[str]:
    """Every tail of a webhook URL's path from a ``/`` on (``T0/B0/xyz``, ``B0/xyz``, ``xyz``).

    A Slack-style webhook's secret is its path, or the end of it; an echo may
    quote any part. Tails shorter than 8 characters are left alone.
    """
    segments = [s for s in urlsplit(url).path.split("/") if s]
    tails = ["/".join(segments[i:]) for i in range(len(segments))]
    return [tail for tail in tails if len(tail) >= 8]


class Redactor:
    @classmethod
    def of(cls, settings: Settings) -> Redactor:
        """The redactor of every secret ``settings`` hold."""
        return cls(secret_values(settings))

    def __init__(self, secrets: Iterable[str]) -> None:
        forms = set()
        for secret in secrets:
            if len(secret) >= _SHORTEST:
                forms |= {secret, quote(secret, safe=""), quote(secret)}
        # Longest first: a secret that contains another is masked whole.
        self._forms = sorted(forms, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for form in self._forms:
            if form in text:
                text = text.replace(form, MASK)
        return text


class RedactingFilter(logging.Filter):
    """Redacts a record's message, its structured fields and its traceback."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self._redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = self._redact(record.getMessage()), None
        for key, value in list(record.__dict__.items()):
            if key not in {"msg", "message"} and isinstance(value, str):
                setattr(record, key, self._redact(value))
        if record.exc_info:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_info, record.exc_text = None, self._redact(text)
        return True
