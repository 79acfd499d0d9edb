"""Failed token attempts per client: the operator API and the console's login share it."""

from __future__ import annotations

import time


class FailedGuesses:
    """Failed token attempts per client over a sliding window."""

    def __init__(self, allowed: int, window_seconds: float) -> None:
        self._allowed = allowed
        self._window = window_seconds
        self._seen: dict[str, list[float]] = {}

    def _recent(self, client: str) -> list[float]:
        cutoff = time.monotonic() - self._window
        recent = [t for t in self._seen.get(client, []) if t > cutoff]
        if recent:
            self._seen[client] = recent
        else:
            self._seen.pop(client, None)
        return recent

    def blocked(self, client: str) -> bool:
        return len(self._recent(client)) >= self._allowed

    def failed(self, client: str) -> None:
        if len(self._seen) > 10_000:  # bounded whatever the number of clients
            self._seen.clear()
        self._recent(client)
        self._seen.setdefault(client, []).append(time.monotonic())
