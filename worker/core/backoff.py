"""Backoff between attempts: of a failed message, and of an undelivered invalidation."""

from __future__ import annotations

import random


def backoff_seconds(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with equal jitter: half fixed, half random."""
    ceiling: float = min(cap, base * 2.0 ** max(0, attempt - 1))
    jitter: float = random.uniform(0, ceiling / 2)
    return ceiling / 2 + jitter
