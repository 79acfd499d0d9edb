"""Summaries of timing samples, and the memory high-water mark."""

from __future__ import annotations

import math
import resource
import sys
from array import array
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import psutil


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), interpolating between the nearest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """count, p50, p95, p99, mean, max of samples in seconds, as milliseconds."""
    ms = [s * 1000 for s in seconds]
    return {
        "count": len(ms),
        "p50": percentile(ms, 50),
        "p95": percentile(ms, 95),
        "p99": percentile(ms, 99),
        "mean": sum(ms) / len(ms) if ms else math.nan,
        "max": max(ms, default=math.nan),
    }


class TableTimings:
    """Seconds per aggregation (and per step, e.g. ``scope``), one sample per run."""

    def __init__(self) -> None:
        # Arrays of doubles: thousands of runs cost kilobytes, not megabytes.
        self.samples: dict[str, array[float]] = defaultdict(lambda: array("d"))

    def add(self, seconds: Mapping[str, float]) -> None:
        for name, value in seconds.items():
            self.samples[name].append(value)

    def summary(self, order: Iterable[str]) -> dict[str, dict[str, float]]:
        """Median and p95 in ms per name, in ``order`` (names without samples left out)."""
        return {
            name: {
                "p50": percentile(self.samples[name], 50) * 1000,
                "p95": percentile(self.samples[name], 95) * 1000,
            }
            for name in order
            if self.samples.get(name)
        }


def peak_rss_mb() -> float:
    """This process's resident-set high-water mark (``getrusage`` ``ru_maxrss``)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def current_rss_mb() -> float:
    return psutil.Process().memory_info().rss / (1024 * 1024)
