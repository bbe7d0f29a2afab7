"""Token counting with the model's own tokenizer, offline: an adapter over agentmeter's estimator.

``agentmeter.instrumentation`` counts with tiktoken when it knows the model, from
encoding files already on this machine (llama-index-core ships ``cl100k_base`` and
``o200k_base`` in its ``_static/tiktoken_cache`` folder); nothing touches the
network. For a model tiktoken does not know, counts use ``cl100k_base`` --
llama-index's own default tokenizer, so they match its ``TokenCountingHandler``
-- and are reported as estimated by the callers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agentmeter.instrumentation import (
    encoding_for_model,
    estimate_messages,
    estimate_tokens,
    has_tokenizer,
)
from agentmeter.instrumentation import message_text as _message_text

__all__ = ["count", "count_messages", "encoding_for", "is_openai_tokenized", "message_text"]

_DEFAULT = "cl100k_base"  # llama-index's own default tokenizer (gpt-3.5-turbo)


def encoding_for(model: str | None) -> tuple[str, bool]:
    """``(encoding name, whether it is the model's own tokenizer)`` for a model name."""
    name = encoding_for_model(model)
    return (name, True) if name is not None else (_DEFAULT, False)


def is_openai_tokenized(model: str | None) -> bool:
    """True when tiktoken knows the model (its count is the provider's count)."""
    return has_tokenizer(model)


def count(text: str, model: str | None = None) -> int:
    """Number of tokens of ``text`` for ``model`` (its tokenizer, else cl100k_base)."""
    if not isinstance(text, str):
        return 0
    return estimate_tokens(
        text, model if isinstance(model, str) else None, fallback_encoding=_DEFAULT
    )


def count_messages(messages: Sequence[Any], model: str | None = None) -> int:
    """Estimated prompt tokens of chat messages (OpenAI's framing: 3 per message + 3)."""
    name = model if isinstance(model, str) else None
    try:
        return estimate_messages(messages, name, fallback_encoding=_DEFAULT)
    except TypeError:
        return 0


def message_text(message: Any) -> str:
    """The text a message carries, tool calls included (for estimates)."""
    return _message_text(message)
