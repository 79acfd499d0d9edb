"""What a handler can say about a failure: each maps to exactly one queue outcome.

- :class:`RetryLater` — retry after the given delay (or the usual backoff).
- :class:`GiveUp` — this message can never succeed: dead-letter it at once.
- any other exception — retry with exponential backoff until ``MAX_ATTEMPTS``,
  then dead-letter.
"""

from __future__ import annotations


def error_text(exc: BaseException) -> str:
    """An exception as one bounded line for logs and job records: its type and message."""
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:2000]


class JobError(Exception):
    """Base of the errors a handler raises on purpose."""


class RetryLater(JobError):
    def __init__(self, reason: str, delay_seconds: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay_seconds = delay_seconds


class GiveUp(JobError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MalformedMessage(GiveUp):
    """The body does not decode into the handler's message shape."""
