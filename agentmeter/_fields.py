"""The layout of one accounting row: the counters every aggregate keeps.

Records append rows of these values to the tracker's log; folding sums them
column-wise into the per-key cells and the scopes. Keeping the layout in one
place lets the hot path build plain tuples while the value objects
(:class:`~agentmeter.Usage`) read them by name.
"""

from __future__ import annotations

FIELDS: tuple[str, ...] = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "llm_calls",
    "failed_llm_calls",
    "estimated_calls",
    "cost_micros",
    "unpriced_calls",
    "llm_latency_ms",
    "embedding_tokens",
    "embedding_calls",
    "tool_calls",
    "failed_tool_calls",
    "tool_duration_ms",
    "cache_hits",
    "cache_misses",
    "tokens_saved",
)
N = len(FIELDS)
INDEX = {name: i for i, name in enumerate(FIELDS)}
# Columns holding float milliseconds; every other column is an int.
FLOAT_FIELDS = frozenset({"llm_latency_ms", "tool_duration_ms"})


def zeros() -> list[int | float]:
    """A fresh, all-zero counter row."""
    return [0] * N
