"""Reading token usage out of LangChain results: an adapter over agentmeter's normaliser.

The rules (cache inside the input, reasoning inside the output, langchain-anthropic's
TTL keys, malformed values) live in ``agentmeter.instrumentation``; this module keeps
the tuple shape the handler reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from agentmeter.instrumentation._usage import (
    UsageCounts,
    from_langchain,
    from_langchain_llm_output,
)
from agentmeter.instrumentation._usage import reported_cost as _reported_cost

__all__ = ["Counts", "add_counts", "from_llm_output", "from_usage_metadata", "reported_cost"]

# (input, output, cache_read, cache_write, reasoning)
Counts = tuple[int, int, int, int, int]


def _tuple(c: UsageCounts) -> Counts:
    return (
        c.input_tokens,
        c.output_tokens,
        c.cache_read_tokens,
        c.cache_write_tokens,
        c.reasoning_tokens,
    )


def from_usage_metadata(um: Mapping[str, Any]) -> Counts:
    """Counts from an ``AIMessage.usage_metadata`` (LangChain's ``UsageMetadata``).

    Never raises; unusable values count 0 (``agentmeter.instrumentation.from_langchain``
    says which, and whether the whole input / output was reported).
    """
    counts = from_langchain(um)
    return (0, 0, 0, 0, 0) if counts is None else _tuple(counts)


def add_counts(a: Counts | None, b: Counts) -> Counts:
    """Sum two count tuples (stream chunks carry usage in parts)."""
    if a is None:
        return b
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3], a[4] + b[4])


def from_llm_output(llm_output: Mapping[str, Any] | None) -> tuple[Counts, Decimal | None] | None:
    """Counts (and a provider-reported cost) from ``LLMResult.llm_output``, if it reports any.

    ``token_usage`` / ``usage`` in any provider shape; ``None`` when neither holds
    a valid whole input or output count (the caller estimates).
    """
    if not llm_output:
        return None
    counts = from_langchain_llm_output(llm_output)
    if counts is None or not (counts.reported_input or counts.reported_output):
        return None
    return _tuple(counts), counts.cost_usd


def reported_cost(usage: Mapping[str, Any]) -> Decimal | None:
    """A cost in USD the provider put in its usage block (OpenRouter's ``cost``), if any."""
    return _reported_cost(usage)
