"""Budget periods: which period a moment falls in, and the clock that says "now".

A calendar period (day, week from Monday, month) starts at local midnight in the
budget's time zone; a :class:`~datetime.timedelta` period is a fixed window aligned
to the Unix epoch, so every process computes the same window from its own clock.
The period's start, in ISO 8601 with its UTC offset, is the suffix of the store key:
``customer:acme|2026-12-01T00:00:00+00:00``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

__all__ = ["EXPIRY_MARGIN_S", "Clock", "as_clock", "to_datetime", "window"]

# How long a store keeps a finished period's key: calls that started in it may
# still settle into it, and a status read just after the boundary still finds it.
EXPIRY_MARGIN_S = 3600.0

Clock = Callable[[], float]


def as_clock(clock: Callable[[], Any] | None) -> Clock:
    """A clock returning Unix seconds, from one returning seconds or aware datetimes."""
    if clock is None:
        return time.time
    if not callable(clock):
        raise TypeError(f"clock must be a callable, got {type(clock).__name__}")

    def seconds() -> float:
        now = clock()
        if isinstance(now, datetime):
            if now.tzinfo is None:
                raise ValueError("clock must return an aware datetime (with a tzinfo)")
            return now.timestamp()
        if isinstance(now, bool) or not isinstance(now, int | float):
            raise TypeError(f"clock must return Unix seconds or a datetime, got {now!r}")
        return float(now)

    seconds()  # a clock that returns nonsense is refused when it is given, not mid-call
    return seconds


@lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _midnight(d: date, tz: ZoneInfo) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=tz)


def window(period: str | timedelta, tz_name: str, now: float) -> tuple[float, float, str]:
    """``(start, end, start in ISO 8601)`` of the period containing ``now`` (Unix seconds)."""
    if isinstance(period, timedelta):
        width = int(period.total_seconds())
        start_i = (int(now) // width) * width
        iso = datetime.fromtimestamp(start_i, UTC).isoformat()
        return float(start_i), float(start_i + width), iso
    tz = _zone(tz_name)
    today = datetime.fromtimestamp(now, tz).date()
    if period == "day":
        first, nxt = today, today + timedelta(days=1)
    elif period == "week":
        first = today - timedelta(days=today.weekday())
        nxt = first + timedelta(days=7)
    else:  # month
        first = today.replace(day=1)
        nxt = (first + timedelta(days=32)).replace(day=1)
    start, end = _midnight(first, tz), _midnight(nxt, tz)
    return start.timestamp(), end.timestamp(), start.isoformat()


def to_datetime(ts: float | None, tz_name: str = "UTC") -> datetime | None:
    """Unix seconds as an aware datetime in ``tz_name`` (``None`` stays ``None``)."""
    return None if ts is None else datetime.fromtimestamp(ts, _zone(tz_name))
