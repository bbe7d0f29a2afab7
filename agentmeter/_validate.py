"""Argument checks for the public recording functions.

They run before any state is touched, so a rejected call changes nothing.
Each check is a couple of type tests: they sit on the hot path.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

_INT = int
_BOOL = bool


def count(name: str, value: Any) -> int:
    """A non-negative integer count (bools rejected: ``True`` is not a token count)."""
    if type(value) is _INT:
        if value >= 0:
            return value
        raise ValueError(f"{name} must be >= 0, got {value}")
    if isinstance(value, _BOOL) or not isinstance(value, _INT):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}: {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return int(value)


def opt_duration(name: str, value: Any) -> float | None:
    """An optional non-negative finite number of milliseconds."""
    if value is None:
        return None
    return duration(name, value)


def duration(name: str, value: Any) -> float:
    """A non-negative finite number of milliseconds."""
    if isinstance(value, _BOOL) or not isinstance(value, int | float | Decimal):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}: {value!r}")
    v = float(value)
    if math.isnan(v) or math.isinf(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if v < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return v


def opt_cost_micros(name: str, value: Any) -> int | None:
    """An optional non-negative dollar amount, converted to integer micro-USD (half up)."""
    if value is None:
        return None
    if isinstance(value, _BOOL) or not isinstance(value, int | float | Decimal):
        raise TypeError(f"{name} must be a number of dollars, got {type(value).__name__}")
    dec = (
        value
        if isinstance(value, Decimal)
        else Decimal(repr(value) if isinstance(value, float) else value)
    )
    if not dec.is_finite():
        raise ValueError(f"{name} must be finite, got {value!r}")
    if dec < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return int((dec * 1_000_000).to_integral_value(rounding="ROUND_HALF_UP"))


def name(arg: str, value: Any, *, optional: bool = True) -> str | None:
    """A non-empty string identifier (model, tool, session, agent ...) of valid text."""
    if value is None:
        if optional:
            return None
        raise TypeError(f"{arg} is required")
    if type(value) is not str:
        raise TypeError(f"{arg} must be a str, got {type(value).__name__}: {value!r}")
    if not value:
        raise ValueError(f"{arg} must not be empty")
    if not value.isascii():
        text(arg, value)
    return value


def text(arg: str, value: str) -> str:
    """``value`` if it is valid Unicode text: a lone surrogate (from a bad decode) would
    be accepted here and make every later JSON export of the tracker fail."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{arg} must be valid text: it holds a lone surrogate at position {exc.start} "
            f"({value!r})"
        ) from None
    return value


def call_id(value: Any) -> object:
    """A call id: str, int or uuid.UUID (LangChain run ids) ."""
    if value is None or type(value) is int:
        return value
    if type(value) is str:
        if not value:
            raise ValueError("call_id must not be empty")
        return value if value.isascii() else text("call_id", value)
    from uuid import UUID

    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, str):
        return name("call_id", str(value))
    if isinstance(value, bool):
        raise TypeError("call_id must be a str, int or UUID, got bool")
    if isinstance(value, int):
        return int(value)
    raise TypeError(f"call_id must be a str, int or UUID, got {type(value).__name__}")


def error(value: Any) -> str | None:
    """An optional error description: a str of valid text."""
    if value is None:
        return None
    if type(value) is not str:
        raise TypeError(f"error must be a str, got {type(value).__name__}: {value!r}")
    return value if value.isascii() else text("error", value)


def kind(value: Any, allowed: frozenset[str]) -> str:
    """One of ``allowed`` (an unhashable value gets a TypeError naming ``kind``)."""
    if type(value) is not str:
        raise TypeError(f"kind must be a str, got {type(value).__name__}: {value!r}")
    if value not in allowed:
        if value == "embedding":
            raise ValueError("kind='embedding': use record_embedding()")
        raise ValueError(f"kind must be one of {sorted(allowed)}, got {value!r}")
    return value


def flag(arg: str, value: Any) -> bool:
    """A real ``bool`` (``1`` or ``"yes"`` are refused: they hide bugs)."""
    if type(value) is not bool:
        raise TypeError(f"{arg} must be a bool, got {type(value).__name__}: {value!r}")
    return value


def metadata(value: Any) -> dict[str, Any] | None:
    """Free-form subscriber data: a dict (its contents are the caller's)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TypeError(f"metadata must be a dict, got {type(value).__name__}")
    return value


def names(**values: Any) -> None:
    """Check several optional identifiers at once (``_validate.names(session_id=...)``)."""
    for arg, value in values.items():
        name(arg, value)


def parts(
    input_tokens: int, cache_read: int, cache_write: int, output_tokens: int, reasoning: int
) -> None:
    """Cache tokens are part of the input, reasoning tokens part of the output."""
    if cache_read + cache_write > input_tokens:
        raise ValueError(
            "cache_read_tokens + cache_write_tokens must not exceed input_tokens (they are "
            f"part of it): {cache_read} + {cache_write} > {input_tokens}"
        )
    if reasoning > output_tokens:
        raise ValueError(
            f"reasoning_tokens ({reasoning}) must not exceed output_tokens ({output_tokens}): "
            "they are part of it"
        )


MAX_TAGS = 32
MAX_TAG_KEY = 64
MAX_TAG_VALUE = 256


def tags(value: Any) -> dict[str, str] | None:
    """Free-form ``{str: str}`` labels, bounded: at most ``MAX_TAGS`` pairs, keys of
    1..``MAX_TAG_KEY`` characters, values of at most ``MAX_TAG_VALUE``.

    Returns a copy (later changes to the caller's dict do not reach stored events).
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TypeError(f"tags must be a dict of str to str, got {type(value).__name__}")
    if len(value) > MAX_TAGS:
        raise ValueError(f"tags may hold at most {MAX_TAGS} pairs, got {len(value)}")
    for k, v in value.items():
        if type(k) is not str:
            raise TypeError(f"tags keys must be str, got {type(k).__name__}: {k!r}")
        if not k or len(k) > MAX_TAG_KEY:
            raise ValueError(f"tags key must be 1..{MAX_TAG_KEY} characters, got {k!r}")
        if type(v) is not str:
            raise TypeError(f"tags[{k!r}] must be a str, got {type(v).__name__}: {v!r}")
        if len(v) > MAX_TAG_VALUE:
            raise ValueError(f"tags[{k!r}] must be at most {MAX_TAG_VALUE} characters")
        if not (k.isascii() and v.isascii()):
            text("tags key", k)
            text(f"tags[{k!r}]", v)
    return dict(value)
