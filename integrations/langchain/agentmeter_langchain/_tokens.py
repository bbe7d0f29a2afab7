"""Token counting for what providers did not report: an adapter over agentmeter's estimator.

``agentmeter.instrumentation`` counts with tiktoken when it knows the model and its
encoding is on this machine (never downloading), else ~4 characters a token.
Only the rare paths use this (embeddings, streams without usage, budget estimates),
never the recording of a call whose usage was reported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from agentmeter.instrumentation._tokens import CHARS_PER_TOKEN, count_tokens, message_text
from agentmeter.instrumentation._tokens import estimate_messages as _estimate_messages

__all__ = ["count_texts", "estimate_chars", "estimate_messages", "message_chars"]

_ENCODERS: dict[str, Callable[[list[str]], list[list[int]]] | None] = {}
"""Per-model batch tokenizers that take precedence over the estimator (tests set fakes)."""


def estimate_chars(chars: int) -> int:
    """~4 characters per token (rounded up); at least 1 for non-empty text."""
    return (chars + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN if chars > 0 else 0


def count_texts(texts: Sequence[str], model: str | None) -> tuple[int, bool]:
    """Tokens in ``texts`` for ``model``: ``(count, estimated)``.

    Exact for models whose tokenizer is available offline, otherwise ~4
    characters per token, flagged ``estimated=True``.
    """
    fn = _ENCODERS.get(model) if model else None
    if fn is not None:
        try:
            return sum(map(len, fn(list(texts)))), False
        except Exception:
            pass
    name = model if isinstance(model, str) else None
    total = 0
    exact = count_tokens("", name)[1]
    for text in texts:
        n, ok = count_tokens(text if isinstance(text, str) else str(text), name)
        total += n
        exact = exact and ok
    return total, not exact


def message_chars(message: Any) -> int:
    """Characters of one message's text and tool calls (what the provider tokenises)."""
    return len(message_text(message))


def estimate_messages(messages: Iterable[Any] | None) -> int:
    """Estimated prompt tokens of a list of messages (or strings), chat framing included."""
    if messages is None:
        return 0
    try:
        return _estimate_messages(messages)
    except TypeError:
        return 0
