"""Token counting with the model's own tokenizer, offline.

tiktoken downloads its BPE files on first use; llama-index-core ships the two
that matter (``cl100k_base`` and ``o200k_base``) in its ``_static/tiktoken_cache``
folder, so they are loaded from there and nothing touches the network. When no
encoding can be loaded, counts fall back to ~4 characters per token (always
reported as estimated by the callers).

Counts of recently seen strings are cached: an agent re-sends the same system
prompt and history on every turn, and tokenizing them again is the dominant cost
of an estimate.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["count", "count_messages", "encoding_for", "is_openai_tokenized"]

_Encode = Callable[[str], int]

_LOCK = threading.Lock()
_ENCODERS: dict[str, _Encode | None] = {}
_MODEL_ENCODING: dict[str, tuple[str, bool]] = {}
_CACHE: dict[tuple[str, str], int] = {}
_CACHE_MAX = 8192
_CACHEABLE_LEN = 16_384  # longer strings are rare and costly to hash-and-keep
_DEFAULT = "cl100k_base"  # llama-index's own default tokenizer (gpt-3.5-turbo)


def _static_cache_dir() -> str | None:
    try:
        import llama_index.core as core
    except ImportError:  # pragma: no cover - llama-index-core is a dependency
        return None
    root = os.path.dirname(os.path.abspath(core.__file__))
    path = os.path.join(root, "_static", "tiktoken_cache")
    return path if os.path.isdir(path) else None


def _load(name: str) -> _Encode | None:
    """Load a tiktoken encoding from llama-index's bundled cache (never the network)."""
    try:
        import tiktoken
    except ImportError:  # pragma: no cover - tiktoken comes with llama-index-core
        return None
    static = _static_cache_dir()
    # tiktoken reads TIKTOKEN_CACHE_DIR when it loads; point it at the bundled files
    # for the duration of the load only (what llama-index's get_tokenizer does too).
    prev = os.environ.get("TIKTOKEN_CACHE_DIR")
    try:
        if static is not None:
            os.environ["TIKTOKEN_CACHE_DIR"] = static
        enc = tiktoken.get_encoding(name)
    except Exception:
        return None
    finally:
        if prev is None:
            os.environ.pop("TIKTOKEN_CACHE_DIR", None)
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = prev
    encode = enc.encode_ordinary  # no special-token handling: count text as text

    def n_tokens(text: str) -> int:
        return len(encode(text))

    return n_tokens


def _encoder(name: str) -> _Encode | None:
    try:
        return _ENCODERS[name]
    except KeyError:
        pass
    with _LOCK:
        if name not in _ENCODERS:
            _ENCODERS[name] = _load(name)
        return _ENCODERS[name]


def encoding_for(model: str | None) -> tuple[str, bool]:
    """``(encoding name, whether it is the model's own tokenizer)`` for a model name."""
    key = model or ""
    hit = _MODEL_ENCODING.get(key)
    if hit is not None:
        return hit
    result = (_DEFAULT, False)
    if model:
        base = model.rsplit("/", 1)[-1]  # "openai/gpt-4o" -> "gpt-4o"
        try:
            import tiktoken.model

            result = (tiktoken.model.encoding_name_for_model(base), True)
        except Exception:
            result = (_DEFAULT, False)
    _MODEL_ENCODING[key] = result
    return result


def is_openai_tokenized(model: str | None) -> bool:
    """True when tiktoken knows the model (its count is the provider's count)."""
    return encoding_for(model)[1] and _encoder(encoding_for(model)[0]) is not None


def count(text: str, model: str | None = None) -> int:
    """Number of tokens of ``text`` for ``model`` (its tokenizer, else cl100k_base)."""
    if not text:
        return 0
    name = encoding_for(model)[0]
    key = (name, text)
    cacheable = len(text) <= _CACHEABLE_LEN
    if cacheable:
        hit = _CACHE.get(key)
        if hit is not None:
            return hit
    enc = _encoder(name)
    n = enc(text) if enc is not None else (len(text) + 3) // 4
    if cacheable:
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.clear()
        _CACHE[key] = n
    return n


def count_messages(messages: Sequence[Any], model: str | None = None) -> int:
    """Estimated prompt tokens of chat messages (OpenAI's framing: 3 per message + 3)."""
    total = 3
    for m in messages:
        role = getattr(m, "role", "")
        total += 3 + count(str(getattr(role, "value", role)), model)
        total += count(message_text(m), model)
    return total


def message_text(message: Any) -> str:
    """The text a message carries, tool calls included (for estimates)."""
    try:
        content = message.content
    except Exception:
        content = None
    parts = [content] if isinstance(content, str) and content else []
    for block in getattr(message, "blocks", ()) or ():
        name = getattr(block, "tool_name", None)
        if name:
            parts.append(str(name))
            parts.append(str(getattr(block, "tool_kwargs", "")))
    return "\n".join(parts)
