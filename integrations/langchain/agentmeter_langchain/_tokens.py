"""Token counting for what providers did not report: tiktoken when it can, else ~4 chars/token.

Only the rare paths use this (embeddings, streams without usage, budget estimates),
never the recording of a call whose usage was reported.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

__all__ = ["count_texts", "estimate_chars", "estimate_messages", "message_chars"]

# model -> encode_batch function, or None when tiktoken cannot count for it (not
# installed, unknown model, or its encoding file cannot be fetched offline). A
# failure is remembered so that it is paid once per model, not per call.
_ENCODERS: dict[str, Callable[[list[str]], list[list[int]]] | None] = {}
_LOCK = threading.Lock()
_OPENAI_PREFIXES = ("gpt-", "text-embedding-", "o1", "o3", "o4", "chatgpt-", "davinci", "babbage")


def _encoder(model: str) -> Callable[[list[str]], list[list[int]]] | None:
    try:
        return _ENCODERS[model]
    except KeyError:
        pass
    with _LOCK:
        if model in _ENCODERS:
            return _ENCODERS[model]
        fn: Callable[[list[str]], list[list[int]]] | None = None
        bare = model.rsplit("/", 1)[-1]
        if bare.startswith(_OPENAI_PREFIXES):
            try:
                import tiktoken

                fn = tiktoken.encoding_for_model(bare).encode_ordinary_batch
            except Exception:  # not installed, unknown model, offline: estimate instead
                fn = None
        _ENCODERS[model] = fn
        return fn


def estimate_chars(chars: int) -> int:
    """~4 characters per token (rounded up); at least 1 for non-empty text."""
    return (chars + 3) // 4


def count_texts(texts: Sequence[str], model: str | None) -> tuple[int, bool]:
    """Tokens in ``texts`` for ``model``: ``(count, estimated)``.

    Exact (tiktoken) for OpenAI models when tiktoken and its encoding are available,
    otherwise an estimate of ~4 characters per token, flagged ``estimated=True``.
    """
    fn = _encoder(model) if model else None
    if fn is not None:
        try:
            return sum(map(len, fn(list(texts)))), False
        except Exception:
            pass
    return sum(estimate_chars(len(t)) for t in texts), True


def _content_chars(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    n = 0
    if isinstance(content, list):
        for block in content:
            if isinstance(block, str):
                n += len(block)
            elif isinstance(block, dict):
                text = block.get("text")
                if isinstance(text, str):
                    n += len(text)
    return n


def message_chars(message: Any) -> int:
    """Characters of one message's text and tool calls (what the provider tokenises)."""
    n = _content_chars(getattr(message, "content", message))
    calls = getattr(message, "tool_calls", None)
    if calls:
        for call in calls:
            n += len(str(call.get("name", ""))) + len(str(call.get("args", "")))
    return n


def estimate_messages(messages: Iterable[Any]) -> int:
    """Estimated prompt tokens of a list of messages (or strings).

    ~4 characters per token plus a few tokens of per-message framing, as chat
    formats add (role markers, separators).
    """
    tokens = 0
    for m in messages:
        tokens += estimate_chars(message_chars(m)) + 4
    return tokens
