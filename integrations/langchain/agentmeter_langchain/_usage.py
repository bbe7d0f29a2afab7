"""Reading token usage out of LangChain results (``usage_metadata``, ``llm_output``).

Conventions are agentmeter's (see the README's Conventions): ``input_tokens`` includes the cached
prompt tokens, ``output_tokens`` includes reasoning. A source that reports them
the other way (Anthropic's raw ``usage``, Gemini's thoughts) is normalised here.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

__all__ = ["Counts", "add_counts", "from_llm_output", "from_usage_metadata"]

# (input, output, cache_read, cache_write, reasoning)
Counts = tuple[int, int, int, int, int]


def _int(value: Any) -> int:
    if value.__class__ is int:
        return int(value)
    if value is None:
        return 0
    if isinstance(value, bool):
        return 0
    return int(value)


def _normalised(inp: int, out: int, cr: int, cw: int, rs: int) -> Counts:
    # Parts larger than their whole mean the source counted them apart from it
    # (Anthropic's raw input_tokens excludes cache; Gemini's output excludes thoughts).
    if cr + cw > inp:
        inp += cr + cw
    if rs > out:
        out += rs
    return inp, out, cr, cw, rs


def from_usage_metadata(um: Mapping[str, Any]) -> Counts:
    """Counts from an ``AIMessage.usage_metadata`` (LangChain's ``UsageMetadata``)."""
    inp = _int(um.get("input_tokens"))
    out = _int(um.get("output_tokens"))
    cr = cw = rs = 0
    details = um.get("input_token_details")
    if details:
        cr = _int(details.get("cache_read"))
        cw = _int(details.get("cache_creation"))
    details = um.get("output_token_details")
    if details:
        rs = _int(details.get("reasoning"))
    if cr + cw > inp or rs > out:
        return _normalised(inp, out, cr, cw, rs)
    return inp, out, cr, cw, rs


def add_counts(a: Counts | None, b: Counts) -> Counts:
    """Sum two count tuples (stream chunks carry usage in parts)."""
    if a is None:
        return b
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3], a[4] + b[4])


def from_llm_output(llm_output: Mapping[str, Any] | None) -> tuple[Counts, Decimal | None] | None:
    """Counts (and a provider-reported cost) from ``LLMResult.llm_output``, if it has any.

    Understands OpenAI-style ``token_usage`` (``prompt_tokens``, ``completion_tokens``
    with ``prompt_tokens_details.cached_tokens`` and
    ``completion_tokens_details.reasoning_tokens``) and Anthropic-style ``usage``
    (``input_tokens``, ``output_tokens``, ``cache_read_input_tokens``,
    ``cache_creation_input_tokens``; input excludes the cache there).
    """
    if not llm_output:
        return None
    tu = llm_output.get("token_usage")
    if isinstance(tu, Mapping) and tu:
        if "prompt_tokens" in tu or "completion_tokens" in tu:
            inp = _int(tu.get("prompt_tokens"))
            out = _int(tu.get("completion_tokens"))
            ptd = tu.get("prompt_tokens_details") or {}
            ctd = tu.get("completion_tokens_details") or {}
            cr = _int(ptd.get("cached_tokens")) if isinstance(ptd, Mapping) else 0
            cw = _int(ptd.get("cache_write_tokens")) if isinstance(ptd, Mapping) else 0
            rs = _int(ctd.get("reasoning_tokens")) if isinstance(ctd, Mapping) else 0
            return _normalised(inp, out, cr, cw, rs), reported_cost(tu)
        if "input_tokens" in tu:
            return from_usage_metadata(tu), reported_cost(tu)
    usage = llm_output.get("usage")
    if isinstance(usage, Mapping) and "input_tokens" in usage:
        inp = _int(usage.get("input_tokens"))
        cr = _int(usage.get("cache_read_input_tokens"))
        cw = _int(usage.get("cache_creation_input_tokens"))
        out = _int(usage.get("output_tokens"))
        # Anthropic's raw input_tokens excludes the cached parts: add them back.
        return (inp + cr + cw, out, cr, cw, 0), reported_cost(usage)
    return None


def reported_cost(usage: Mapping[str, Any]) -> Decimal | None:
    """A cost in USD the provider put in its usage block (OpenRouter's ``cost``), if any."""
    cost = usage.get("cost")
    if cost is None or isinstance(cost, bool) or not isinstance(cost, int | float | str):
        return None
    try:
        value = Decimal(str(cost))
    except Exception:
        return None
    return value if value.is_finite() and value >= 0 else None
