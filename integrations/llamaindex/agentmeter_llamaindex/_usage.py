"""Reported token usage, read from LlamaIndex responses: an adapter over agentmeter's normaliser.

``response.raw`` (the provider's own response, an SDK object or a dict: OpenAI chat
and Responses, Anthropic and its stream events, Gemini's ``usage_metadata``,
Bedrock), then ``response.additional_kwargs``; the rules live in
``agentmeter.instrumentation``. ``None`` means nothing valid was reported (the
caller estimates, never records a silent 0).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from agentmeter.instrumentation import UsageCounts, from_llamaindex, normalise_usage

__all__ = ["Counts", "from_additional_kwargs", "from_raw", "from_response", "merge"]


class Counts(NamedTuple):
    """Token counts of one call, in agentmeter's convention."""

    input: int
    output: int
    cache_read: int = 0
    cache_write: int = 0
    reasoning: int = 0
    cost_usd: float | None = None


def _counts(c: UsageCounts | None) -> Counts | None:
    if c is None or not (c.reported_input or c.reported_output):
        return None
    cost = float(c.cost_usd) if c.cost_usd is not None else None
    return Counts(
        c.input_tokens,
        c.output_tokens,
        c.cache_read_tokens,
        c.cache_write_tokens,
        c.reasoning_tokens,
        cost,
    )


def from_raw(raw: Any) -> Counts | None:
    """Usage in a provider response object or dict, or ``None``."""
    if raw is None:
        return None
    return _counts(normalise_usage(raw))


def from_additional_kwargs(kwargs: Any) -> Counts | None:
    """Usage that an integration copied into ``response.additional_kwargs``."""
    if not kwargs:
        return None
    return _counts(normalise_usage(kwargs))


def from_response(response: Any) -> Counts | None:
    """Usage reported with a ChatResponse / CompletionResponse, or ``None``."""
    if response is None:
        return None
    return _counts(from_llamaindex(response))


def merge(a: Counts | None, b: Counts | None) -> Counts | None:
    """Combine two reports of one streamed call (streams report cumulative counts)."""
    if a is None:
        return b
    if b is None:
        return a
    cost = b.cost_usd if b.cost_usd is not None else a.cost_usd
    cr, cw = max(a.cache_read, b.cache_read), max(a.cache_write, b.cache_write)
    rs = max(a.reasoning, b.reasoning)
    return Counts(max(a.input, b.input, cr + cw), max(a.output, b.output, rs), cr, cw, rs, cost)
