"""The request's maximum output tokens, for the worst-case reservation of a hard cap.

With it, ``start_llm(max_output_tokens=...)`` reserves the call's worst case (the
estimated prompt plus the whole output allowance, priced at the model's rates), so
a call cannot take a cost or token budget past its limit. Without it the
reservation counts the prompt only and a budget can be overshot by the output of
the calls in flight.

Where LangChain says it: ``ls_max_tokens`` in the run metadata is LangChain's
provider-neutral value and the one the request is sent with (``ChatOpenAI`` sends
an ``invoke(..., max_tokens=50)`` over its constructor's ``max_tokens``, and
``ls_max_tokens`` says 50 while the invocation params hold both). Without it, the
invocation params' ``max_tokens`` (``ChatAnthropic``: always set, default by
model), ``max_completion_tokens`` (``ChatOpenAI``), ``max_output_tokens``
(Gemini) -- the largest of those present, so the bound is never too small.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LIMIT_KEYS", "MAX_LIMIT", "output_limit"]

MAX_LIMIT = 2**53 - 1
"""The largest limit taken as given (agentmeter's count bound)."""
LIMIT_KEYS = frozenset(("max_tokens", "max_completion_tokens", "max_output_tokens"))
"""The invocation-params keys that may hold a limit: a run whose params hold none of
them (checked in C with ``keys().isdisjoint``) sets none there."""


def output_limit(metadata: dict[str, Any] | None, params: dict[str, Any] | None) -> int | None:
    """The request's output-token limit, or ``None`` when it sets none (or not validly).

    On every model call's path: the usual cases (``ls_max_tokens`` set, or no
    limit at all) cost a few dict lookups.
    """
    if metadata:
        n = metadata.get("ls_max_tokens")
        if n.__class__ is int and 0 < n <= MAX_LIMIT:
            return int(n)
    if not isinstance(params, dict):
        return None
    get = params.get
    a, b, c = get("max_tokens"), get("max_completion_tokens"), get("max_output_tokens")
    if a is None and b is None and c is None:
        return None
    best = None
    for v in (a, b, c):
        if v.__class__ is int and 0 < v <= MAX_LIMIT and (best is None or v > best):
            best = v
    return best
