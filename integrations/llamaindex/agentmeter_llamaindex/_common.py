"""What the instrumentation and the callback handler share: model names, tags, token counts."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from llama_index.core.base.llms.types import ChatResponse, CompletionResponse

from agentmeter.instrumentation import estimate_messages, estimate_tokens, message_text

__all__ = [
    "FALLBACK_ENCODING",
    "count",
    "count_messages",
    "model_of",
    "output_limit",
    "response_text",
    "tag",
]

FALLBACK_ENCODING = "cl100k_base"
"""llama-index's own default tokenizer: for a model tiktoken does not know, counts
match its ``TokenCountingHandler`` (and are flagged estimated)."""

_PROVIDERS = (
    ("azure", "azure"),
    ("openai", "openai"),
    ("anthropic", "anthropic"),
    ("gemini", "google"),
    ("google", "google"),
    ("vertex", "google"),
    ("mistral", "mistral"),
    ("groq", "groq"),
    ("cohere", "cohere"),
    ("bedrock", "aws"),
)


def model_of(model_dict: dict[str, Any]) -> tuple[str, str | None, str]:
    """``(model, provider, class name)`` from a LlamaIndex ``to_payload()`` dict."""
    return _model_of(
        model_dict.get("class_name"), model_dict.get("model"), model_dict.get("model_name")
    )


@lru_cache(maxsize=1024)
def _model_of(cls: Any, model: Any, model_name: Any) -> tuple[str, str | None, str]:
    name = model or model_name
    cls_s = str(cls) if cls else "llm"
    low = cls_s.lower()
    provider = next((p for needle, p in _PROVIDERS if needle in low), None)
    return (str(name) if name and name != "unknown" else cls_s), provider, cls_s


def tag(tags: dict[str, Any] | None, short: str) -> str | None:
    """``session_id`` / ``agent_id`` from ``instrument_tags`` (also ``agentmeter.``-prefixed)."""
    if not tags:
        return None
    value = tags.get(short)
    if value is None:
        value = tags.get("agentmeter." + short)
    return value if isinstance(value, str) and value else None


_COUNTS: dict[tuple[str | None, str], int] = {}


def count(text: Any, model: str | None) -> int:
    """Tokens of ``text``: the model's own tokenizer, else llama-index's default one.

    Memoised (bounded): agents send the same prompts again and again, and this is on
    the path of every estimated call."""
    if not isinstance(text, str):
        return 0
    key = (model, text)
    n = _COUNTS.get(key)
    if n is None:
        n = estimate_tokens(text, model, fallback_encoding=FALLBACK_ENCODING)
        if len(text) <= 16_384:
            if len(_COUNTS) >= 4096:
                _COUNTS.clear()
            _COUNTS[key] = n
    return n


def count_messages(messages: Any, model: str | None) -> int:
    """Estimated prompt tokens of chat messages, framing included."""
    try:
        return estimate_messages(messages, model, fallback_encoding=FALLBACK_ENCODING)
    except TypeError:
        return 0


def response_text(response: Any) -> str:
    """The text of a ChatResponse / CompletionResponse, tool calls included (for estimates)."""
    # isinstance first: a missing attribute on a pydantic model is slow to probe.
    if isinstance(response, CompletionResponse):
        return response.text or ""
    if isinstance(response, ChatResponse):
        return message_text(response.message)
    return ""


_LIMIT_KEYS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
_MAX = 2**53 - 1


def output_limit(llm: Any) -> int | None:
    """The output-token limit an LLM sends with its requests, or ``None``.

    Its ``max_tokens`` field (llama-index's OpenAI, Anthropic and most provider
    LLMs) and ``additional_kwargs`` (``max_tokens`` / ``max_completion_tokens`` /
    ``max_output_tokens``, merged into the request): the largest, so the worst
    case is never understated. ``metadata.num_output`` is not one: a
    ``CustomLLM`` declares it without sending it.
    """
    best = None
    extra = getattr(llm, "additional_kwargs", None)
    values = [getattr(llm, "max_tokens", None)]
    if isinstance(extra, dict):
        values.extend(extra.get(k) for k in _LIMIT_KEYS)
    for v in values:
        if v.__class__ is int and 0 < v <= _MAX and (best is None or v > best):
            best = v
    return best
