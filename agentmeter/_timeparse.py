"""The one rule for reading a time from a person: ``--since`` / ``--until`` and ``?since=``.

Both the command line and the REST API call :func:`parse_time`, so ``7d`` means the
same thing, and a bad value gets the same message, everywhere.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

__all__ = ["TIME_FORMATS", "parse_time"]

TIME_FORMATS = (
    "use an ISO 8601 date or time (2025-01-31, 2025-01-31T12:00:00Z; naive = UTC) "
    "or a duration ago (90s, 30m, 24h, 7d, 2w)"
)
_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(text: str, *, now: datetime | None = None) -> datetime:
    """An aware UTC-or-offset datetime from ISO 8601 (naive = UTC) or a duration ago.

    Args:
        text: ``2025-01-31``, ``2025-01-31T12:00:00Z``, ``2025-01-31T12:00+02:00``,
            or ``<n><unit>`` with unit ``s``, ``m``, ``h``, ``d`` or ``w`` (``7d`` = 7 days ago).
        now: The reference for durations (default: the current time).

    Raises:
        ValueError: with one message naming the accepted formats.
    """
    value = text.strip()
    m = _RELATIVE.match(value)
    if m:
        ref = now if now is not None else datetime.now(UTC)
        try:
            return ref - timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
        except OverflowError:
            raise ValueError(f"{text!r} is too far back; {TIME_FORMATS}") from None
    try:
        parsed = datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not a time: {TIME_FORMATS}") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
