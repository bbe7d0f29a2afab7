"""The layout of one accounting row: the counters every aggregate keeps.

Records append rows of these values to the tracker's log; folding sums them
column-wise into the per-key cells and the scopes. Keeping the layout in one
place lets the hot path build plain tuples while the value objects
(:class:`~agentmeter.Usage`) read them by name.
"""

from __future__ import annotations

from collections.abc import Sequence

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


# Row layouts. A pending row is ``(key, *values)`` where ``key`` is the tuple
# ``(session, model, provider, agent, tool, scope, kind)`` and ``kind`` says which
# counters the values are, in order. Each row also counts one call into
# ``COUNTS[kind]`` (None: no call counter). Short rows keep recording and
# folding cheap: an LLM row carries 10 values, not all 19 counters.
LLM, EMBEDDING, TOOL, CACHE = "L", "E", "T", "C"
LAYOUTS: dict[str, tuple[int, ...]] = {
    LLM: tuple(
        INDEX[f]
        for f in (
            "input_tokens",
            "output_tokens",
            "cache_read_tokens",
            "cache_write_tokens",
            "reasoning_tokens",
            "failed_llm_calls",
            "estimated_calls",
            "cost_micros",
            "unpriced_calls",
            "llm_latency_ms",
        )
    ),
    EMBEDDING: tuple(
        INDEX[f]
        for f in (
            "embedding_tokens",
            "estimated_calls",
            "cost_micros",
            "unpriced_calls",
        )
    ),
    # A tool row's cost is its price per call (agentmeter.set_tool_price), 0 when unpriced.
    TOOL: tuple(INDEX[f] for f in ("failed_tool_calls", "tool_duration_ms", "cost_micros")),
    CACHE: tuple(INDEX[f] for f in ("cache_hits", "cache_misses", "tokens_saved")),
}
COUNTS: dict[str, int | None] = {
    LLM: INDEX["llm_calls"],
    EMBEDDING: INDEX["embedding_calls"],
    TOOL: INDEX["tool_calls"],
    CACHE: None,
}


def expand(kind: str, count: int, sums: Sequence[int | float]) -> list[int | float]:
    """A full counter row from a run of ``count`` rows of ``kind`` and their value sums."""
    row = zeros()
    for i, v in zip(LAYOUTS[kind], sums, strict=True):
        row[i] = v
    c = COUNTS[kind]
    if c is not None:
        row[c] = count
    return row
