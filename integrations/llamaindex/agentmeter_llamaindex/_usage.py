"""Reported token usage, read from LlamaIndex responses.

``response.raw`` is the provider's own response (an SDK object or a dict). The
shapes understood, normalised to agentmeter's convention (input includes cached
tokens, output includes reasoning tokens):

- OpenAI chat / completions: ``usage.prompt_tokens``, ``completion_tokens``,
  ``prompt_tokens_details.cached_tokens``, ``completion_tokens_details.reasoning_tokens``;
- OpenAI responses API: ``usage.input_tokens`` / ``output_tokens`` with
  ``input_tokens_details`` / ``output_tokens_details``;
- Anthropic: ``usage.input_tokens`` (which *excludes* cache), ``output_tokens``,
  ``cache_read_input_tokens``, ``cache_creation_input_tokens``; in streams the
  ``message_start`` event carries it under ``message.usage``;
- Gemini: ``usage_metadata.prompt_token_count``, ``candidates_token_count``,
  ``cached_content_token_count``, ``thoughts_token_count`` (thoughts are not part
  of the candidates there, so they are added to the output).

Then ``response.additional_kwargs`` (``prompt_tokens`` / ``completion_tokens``, as
llama-index's OpenAI sets them). ``None`` means nothing was reported.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

__all__ = ["Counts", "from_additional_kwargs", "from_raw", "from_response", "merge"]


class Counts(NamedTuple):
    """Token counts of one call, in agentmeter's convention."""

    input: int
    output: int
    cache_read: int = 0
    cache_write: int = 0
    reasoning: int = 0
    cost_usd: float | None = None


def _get(obj: Any, key: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(key)
    return getattr(obj, key, None)


def _int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and math.isfinite(value) and value >= 0:
        return int(value)
    return None


def _cost(usage: Any) -> float | None:
    value = _get(usage, "cost")  # e.g. OpenRouter reports the charge in USD
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if ok and math.isfinite(value) and value >= 0 else None


def _clean(inp: int, out: int, cr: int, cw: int, rs: int, cost: float | None) -> Counts:
    # Cache and reasoning counts are parts of input / output; a provider that
    # reports them otherwise must not make the record invalid.
    return Counts(max(inp, cr + cw), max(out, rs), cr, cw, rs, cost)


def _from_usage(usage: Any) -> Counts | None:
    prompt = _int(_get(usage, "prompt_tokens"))
    completion = _int(_get(usage, "completion_tokens"))
    if prompt is not None or completion is not None:  # OpenAI chat / completions
        cached = _int(_get(_get(usage, "prompt_tokens_details"), "cached_tokens")) or 0
        reasoning = _int(_get(_get(usage, "completion_tokens_details"), "reasoning_tokens")) or 0
        return _clean(prompt or 0, completion or 0, cached, 0, reasoning, _cost(usage))
    inp = _int(_get(usage, "input_tokens"))
    out = _int(_get(usage, "output_tokens"))
    if inp is None and out is None:
        return None
    cache_read = _int(_get(usage, "cache_read_input_tokens"))
    cache_write = _int(_get(usage, "cache_creation_input_tokens"))
    if cache_read is not None or cache_write is not None:
        # Anthropic: input_tokens counts only the uncached part of the prompt.
        cr, cw = cache_read or 0, cache_write or 0
        return _clean((inp or 0) + cr + cw, out or 0, cr, cw, 0, _cost(usage))
    # OpenAI responses API (input includes cached tokens) or a plain pair.
    cached = _int(_get(_get(usage, "input_tokens_details"), "cached_tokens")) or 0
    reasoning = _int(_get(_get(usage, "output_tokens_details"), "reasoning_tokens")) or 0
    return _clean(inp or 0, out or 0, cached, 0, reasoning, _cost(usage))


def _from_gemini(meta: Any) -> Counts | None:
    prompt = _int(_get(meta, "prompt_token_count"))
    candidates = _int(_get(meta, "candidates_token_count"))
    if prompt is None and candidates is None:
        return None
    tool_prompt = _int(_get(meta, "tool_use_prompt_token_count")) or 0
    cached = _int(_get(meta, "cached_content_token_count")) or 0
    thoughts = _int(_get(meta, "thoughts_token_count")) or 0
    inp, out = (prompt or 0) + tool_prompt, (candidates or 0) + thoughts
    return _clean(inp, out, cached, 0, thoughts, None)


def from_raw(raw: Any) -> Counts | None:
    """Usage in a provider response object or dict, or ``None``."""
    if raw is None:
        return None
    usage = _get(raw, "usage")
    if usage is None:
        usage = _get(_get(raw, "message"), "usage")  # Anthropic stream: message_start
    if usage is not None:
        counts = _from_usage(usage)
        if counts is not None:
            return counts
    meta = _get(raw, "usage_metadata")
    if meta is not None:
        return _from_gemini(meta)
    return None


def from_additional_kwargs(kwargs: Any) -> Counts | None:
    """Usage that an integration copied into ``response.additional_kwargs``."""
    if not kwargs:
        return None
    return _from_usage(kwargs)


def from_response(response: Any) -> Counts | None:
    """Usage reported with a ChatResponse / CompletionResponse, or ``None``."""
    if response is None:
        return None
    counts = from_raw(getattr(response, "raw", None))
    if counts is None:
        counts = from_additional_kwargs(getattr(response, "additional_kwargs", None))
    return counts


def merge(a: Counts | None, b: Counts | None) -> Counts | None:
    """Combine two reports of one streamed call (streams report cumulative counts)."""
    if a is None:
        return b
    if b is None:
        return a
    cost = b.cost_usd if b.cost_usd is not None else a.cost_usd
    return Counts(
        max(a.input, b.input),
        max(a.output, b.output),
        max(a.cache_read, b.cache_read),
        max(a.cache_write, b.cache_write),
        max(a.reasoning, b.reasoning),
        cost,
    )
