"""pydantic-ai's ``RequestUsage`` in agentmeter's conventions, and a prompt to estimate from.

pydantic-ai already normalises every provider to inclusive buckets, the same as
agentmeter's: ``input_tokens`` includes ``cache_read_tokens`` and
``cache_write_tokens`` (and ``input_audio_tokens``), ``output_tokens`` includes
``output_audio_tokens``. Reasoning is not a field but a key of ``details``, named
by the provider: ``reasoning_tokens`` (OpenAI Chat and Responses, Groq, xAI),
``thinking_tokens`` (Anthropic), ``thoughts_tokens`` (Google); each is part of
the output. So this reader maps field to field and applies the rules of
``agentmeter.instrumentation``'s readers: a count is a non-negative int (anything
else is ignored and named in ``malformed``), a part larger than its whole makes the
whole ``max(whole, parts)``, and a report of nothing (every count 0: pydantic-ai's
default when the provider sent no usage) is ``None`` -- the call is estimated.

``RequestUsage.cost`` is not passed on: it is pydantic-ai's own genai-prices
estimate, not a charge the provider reported, and agentmeter prices the tokens
itself (with overrides the user set).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, overload

from agentmeter.instrumentation import UsageCounts

__all__ = ["from_request_usage", "prompt_of", "response_text"]

_MAX = 2**53 - 1
# `details` keys that name the reasoning part of the output, by provider.
_REASONING_KEYS = ("reasoning_tokens", "thinking_tokens", "thoughts_tokens")


def _count(obj: Any, name: str, bad: list[str], missing: list[str]) -> int:
    try:
        value = getattr(obj, name, None)
    except Exception:
        bad.append(name)
        return 0
    if value is None:
        missing.append(name)
        return 0
    if value.__class__ is int and 0 <= value <= _MAX:
        return int(value)
    bad.append(name)
    return 0


def _reasoning(details: Any, bad: list[str]) -> int:
    if not isinstance(details, dict):
        if details is not None:
            bad.append("details")
        return 0
    for key in _REASONING_KEYS:
        value = details.get(key)
        if value is None:
            continue
        if value.__class__ is int and 0 <= value <= _MAX:
            return int(value)
        bad.append(f"details.{key}")
    return 0


def _fast(usage: Any, complete: bool) -> UsageCounts | None:
    """The common case (a complete RequestUsage of valid, consistent counts), or None."""
    if not complete:
        return None
    try:
        d = usage.__dict__
        inp, out = d["input_tokens"], d["output_tokens"]
        cr, cw = d["cache_read_tokens"], d["cache_write_tokens"]
        ai, ao = d["input_audio_tokens"], d["output_audio_tokens"]
        details = d["details"]
    except Exception:
        return None
    if not (
        inp.__class__ is int
        and out.__class__ is int
        and cr.__class__ is int
        and cw.__class__ is int
        and ai.__class__ is int
        and ao.__class__ is int
        and details.__class__ is dict
        and 0 <= cr + cw <= inp <= _MAX
        and 0 <= out <= _MAX
        and 0 <= ai <= inp
        and 0 <= ao <= out
        and cr >= 0
        and cw >= 0
        and (inp or out)
    ):
        return None
    rs = 0
    if details:
        for key in _REASONING_KEYS:
            value = details.get(key)
            if value is not None:
                if value.__class__ is not int or not 0 <= value <= out:
                    return None
                rs = value
                break
    return UsageCounts(inp, out, cr, cw, rs, ai, ao)


def from_request_usage(usage: Any, *, complete: bool = True) -> UsageCounts | None:
    """agentmeter's counts of one pydantic-ai ``RequestUsage`` (``None``: nothing reported).

    Args:
        usage: ``ModelResponse.usage`` (or any object with its attributes).
        complete: ``False`` for the usage of a stream that ended early: a side
            reported as 0 there is unknown, not zero, and is estimated.

    Never raises: unusable values are ignored and named in ``malformed``.
    """
    if usage is None:
        return None
    fast = _fast(usage, complete)
    if fast is not None:
        return fast
    bad: list[str] = []
    missing: list[str] = []
    inp = _count(usage, "input_tokens", bad, missing)
    out = _count(usage, "output_tokens", bad, missing)
    cr = _count(usage, "cache_read_tokens", bad, missing)
    cw = _count(usage, "cache_write_tokens", bad, missing)
    ai = _count(usage, "input_audio_tokens", bad, missing)
    ao = _count(usage, "output_audio_tokens", bad, missing)
    try:
        details = getattr(usage, "details", None)
    except Exception:
        details, bad = None, [*bad, "details"]
    rs = _reasoning(details, bad)
    if not (inp or out or cr or cw or rs or ai or ao) and not bad:
        return None  # pydantic-ai's default RequestUsage(): the provider reported nothing
    reported_input = "input_tokens" not in bad + missing and (complete or inp > 0)
    reported_output = "output_tokens" not in bad + missing and (complete or out > 0)
    # The whole includes its parts (pydantic-ai's documented convention): a report
    # that says otherwise contradicts itself, and the smallest consistent whole wins.
    inp = max(inp, cr + cw, ai)
    out = max(out, rs, ao)
    return UsageCounts(
        inp,
        out,
        cache_read_tokens=cr,
        cache_write_tokens=cw,
        reasoning_tokens=rs,
        audio_input_tokens=ai,
        audio_output_tokens=ao,
        malformed=tuple(bad),
        reported_input=reported_input,
        reported_output=reported_output,
    )


def _part_text(part: Any) -> str:
    """The text one message part carries (what a provider tokenises); "" if none."""
    content = getattr(part, "content", None)
    if isinstance(content, str):
        text = content
    elif isinstance(content, list | tuple):
        text = "\n".join(c for c in content if isinstance(c, str))
    else:
        text = ""
    kind = getattr(part, "part_kind", "")
    if kind in ("tool-return", "retry-prompt"):
        render = getattr(part, "model_response_str", None) or getattr(part, "model_response", None)
        if callable(render):
            rendered = render()
            if isinstance(rendered, str):
                text = rendered
    elif kind == "tool-call":
        args = getattr(part, "args_as_json_str", None)
        name = getattr(part, "tool_name", "")
        text = f"{name} {args() if callable(args) else ''}"
    return text


class _Prompt(Sequence[dict[str, str]]):
    """pydantic-ai messages as ``{"role", "content"}`` dicts, flattened only when read.

    agentmeter estimates a prompt only when a budget applies or the provider
    reported no usage; building the texts eagerly would cost every call.
    """

    __slots__ = ("_flat", "_messages")

    def __init__(self, messages: Sequence[Any]) -> None:
        self._messages = messages
        self._flat: list[dict[str, str]] | None = None

    def _items(self) -> list[dict[str, str]]:
        flat = self._flat
        if flat is None:
            flat = []
            for message in self._messages:
                try:
                    instructions = getattr(message, "instructions", None)
                    if isinstance(instructions, str) and instructions:
                        flat.append({"role": "system", "content": instructions})
                    role = "assistant" if getattr(message, "kind", "") == "response" else "user"
                    for part in getattr(message, "parts", ()):
                        text = _part_text(part)
                        if text:
                            flat.append({"role": role, "content": text})
                except Exception:  # an unreadable message adds nothing to the estimate
                    continue
            self._flat = flat
        return flat

    @overload
    def __getitem__(self, index: int) -> dict[str, str]: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[dict[str, str]]: ...
    def __getitem__(self, index: int | slice) -> dict[str, str] | Sequence[dict[str, str]]:
        return self._items()[index]

    def __len__(self) -> int:
        return len(self._items())

    def __iter__(self) -> Iterator[dict[str, str]]:
        return iter(self._items())


def prompt_of(messages: Sequence[Any]) -> Sequence[dict[str, str]]:
    """The prompt of a model request, for ``agentmeter.instrumentation.start_llm``."""
    return _Prompt(messages)


def response_text(response: Any) -> str:
    """The text of a ``ModelResponse`` (text, thinking, tool calls), to estimate its output."""
    try:
        return "\n".join(t for t in (_part_text(p) for p in response.parts) if t)
    except Exception:
        return ""
