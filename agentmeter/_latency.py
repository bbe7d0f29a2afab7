"""A bounded log-scale histogram of durations, good for p50 / p95.

Buckets are 1/16 of a doubling wide (a value is known to within ~2.2%), so a
tool called a million times keeps at most a few hundred integers however long
the run. Histograms add bucket-wise, which is what makes
:meth:`~agentmeter.Tracker.merge` exact for latency distributions too.
"""

from __future__ import annotations

import math

_STEPS = 16  # buckets per doubling
ZERO_BUCKET = -(2**31)  # durations of exactly 0 ms


def bucket(ms: float) -> int:
    """The bucket index of a duration in milliseconds."""
    if ms <= 0.0:
        return ZERO_BUCKET
    return math.floor(math.log2(ms) * _STEPS)


def bucket_value(index: int) -> float:
    """A representative (geometric mid-point) duration for a bucket."""
    if index == ZERO_BUCKET:
        return 0.0
    return float(2.0 ** ((index + 0.5) / _STEPS))


def quantile(hist: dict[int, int], q: float, lo: float, hi: float) -> float | None:
    """The q-quantile (0..1) of a histogram, clamped to the exact observed min/max."""
    total = sum(hist.values())
    if total == 0:
        return None
    rank = q * (total - 1)
    seen = 0
    for index in sorted(hist):
        seen += hist[index]
        if seen > rank:
            return min(max(bucket_value(index), lo), hi)
    return hi
