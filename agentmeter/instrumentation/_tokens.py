"""One token estimator, for what a provider did not report. Offline, always.

- :func:`count_tokens` ``(text, model) -> (tokens, exact)``: with the model's own
  tokenizer when tiktoken is importable and knows the model (``exact=True``),
  else the heuristic below (``exact=False``).
- :func:`estimate_tokens` is its count alone; :func:`estimate_messages` sizes a
  chat prompt (LangChain ``BaseMessage``, LlamaIndex ``ChatMessage``, dicts
  whose ``content`` is a string or a list of content blocks, plain strings).

**The heuristic**: ``ceil(len(text) / 4)`` -- about 4 characters a token for
English text with OpenAI-style BPE tokenizers, so at least 1 token for any
non-empty text. It is what is used when no tokenizer can count for the model.

**Chat framing** (:func:`estimate_messages`), as OpenAI's chat formats add it:
3 tokens per message, plus its role, plus 1 and the name's tokens for a named
message, plus 3 for the reply's priming; tool calls count their name and their
arguments (as JSON). No messages at all is 0. Images, audio and other non-text
blocks are not estimated (0).

**Offline, never the network.** tiktoken downloads an encoding's BPE file on
first use. Here an encoding is only ever built from a file already on this
machine: the tiktoken cache (``$TIKTOKEN_CACHE_DIR``, ``$DATA_GYM_CACHE_DIR``,
``<tmp>/data-gym-cache``) or the copy llama-index-core ships in
``llama_index/core/_static/tiktoken_cache`` (found on ``sys.path``, without
importing llama_index), verified against tiktoken's expected hash. tiktoken's
own loader, which would download a missing file, is never called. When no file
is found the count falls back to the heuristic. Encoders are loaded lazily,
once per encoding; model-to-encoding answers and counts of recently seen
strings (an agent re-sends the same system prompt every turn) are cached, with
bounded memory.

**Errors.** The public functions raise ``TypeError`` for a ``text`` that is not a
``str``, a ``model`` that is not a ``str`` or ``None``, or ``messages`` that are
not iterable: those are programming errors, named in the message. Nothing else
raises: a tokenizer that fails falls back to the heuristic, and a message whose
content cannot be read counts its framing only.

No tokenizer and no framework is imported when this module is imported.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import os
import sys
import tempfile
import threading
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

__all__ = [
    "CHARS_PER_TOKEN",
    "count_tokens",
    "encoding_for_model",
    "estimate_messages",
    "estimate_tokens",
    "has_tokenizer",
    "heuristic_tokens",
    "message_text",
]

CHARS_PER_TOKEN: Final = 4
"""The heuristic's characters per token."""

PER_MESSAGE_TOKENS: Final = 3
PER_NAME_TOKENS: Final = 1
REPLY_PRIMING_TOKENS: Final = 3

_Encode = Callable[[str], int]

_LOCK = threading.Lock()
_ENCODERS: dict[str, _Encode | None] = {}  # encoding name -> counter, None = unavailable
_MODEL_ENCODING: dict[str, str | None] = {}  # model -> tiktoken encoding name or None
_MODEL_CACHE_MAX: Final = 4096
_COUNTS: dict[tuple[str, str], int] = {}
_COUNTS_MAX: Final = 8192
_CACHEABLE_LEN: Final = 16_384  # longer strings are rare and costly to hash and keep
_cache_dirs: tuple[str, ...] | None = None


def heuristic_tokens(text: str) -> int:
    """``ceil(len(text) / 4)``: the estimate when no tokenizer can count."""
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


# ------------------------------------------------------------------ offline tiktoken
def _tiktoken_cache_dirs() -> tuple[str, ...]:
    """Folders that may hold tiktoken's cached BPE files (named by sha1 of their URL)."""
    global _cache_dirs
    if _cache_dirs is None:
        dirs: list[str] = []
        for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
            value = os.environ.get(var)
            if value:
                dirs.append(value)
        dirs.append(os.path.join(tempfile.gettempdir(), "data-gym-cache"))
        for entry in sys.path:  # llama-index-core's bundled copy, without importing it
            path = os.path.join(entry or ".", "llama_index", "core", "_static", "tiktoken_cache")
            if os.path.isdir(path):
                dirs.append(path)
        _cache_dirs = tuple(dict.fromkeys(os.path.abspath(d) for d in dirs))
    return _cache_dirs


class _NotOnThisMachine(Exception):
    """An encoding file that is not cached locally (it would need a download)."""


def _read_local(url: str, expected_hash: str | None) -> bytes:
    key = hashlib.sha1(url.encode()).hexdigest()
    for folder in _tiktoken_cache_dirs():
        path = os.path.join(folder, key)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            continue
        if expected_hash is None or hashlib.sha256(data).hexdigest() == expected_hash:
            return data
    raise _NotOnThisMachine(url)


def _offline_bpe(tiktoken_bpe_file: str, expected_hash: str | None = None) -> dict[bytes, int]:
    """tiktoken's ``load_tiktoken_bpe``, reading only local files."""
    decode = binascii.a2b_base64
    ranks: dict[bytes, int] = {}
    for line in _read_local(tiktoken_bpe_file, expected_hash).splitlines():
        if line:
            token, rank = line.split()
            ranks[decode(token)] = int(rank)
    return ranks


def _no_download(*args: Any, **kwargs: Any) -> Any:
    raise _NotOnThisMachine("an encoding in the old GPT-2 format")


def _build_offline(name: str) -> Any:
    """A ``tiktoken.Encoding`` built from local files only, or ``None``.

    tiktoken's constructors (``tiktoken_ext.openai_public``) hold each encoding's
    URL, hash, pattern and special tokens, and call a module-level loader that
    downloads. They are run here as copies whose loader is :func:`_offline_bpe`,
    so the download path is unreachable and tiktoken's own state is untouched.
    """
    import tiktoken
    from tiktoken_ext import openai_public  # type: ignore[import-untyped]

    constructors = getattr(openai_public, "ENCODING_CONSTRUCTORS", None)
    if not isinstance(constructors, dict) or name not in constructors:
        return None
    env: dict[str, Any] = dict(vars(openai_public))
    env["load_tiktoken_bpe"] = _offline_bpe
    env["data_gym_to_mergeable_bpe_ranks"] = _no_download
    for key, fn in list(env.items()):
        if isinstance(fn, types.FunctionType) and fn.__module__ == openai_public.__name__:
            env[key] = types.FunctionType(
                fn.__code__, env, fn.__name__, fn.__defaults__, fn.__closure__
            )
    ctor = env.get(constructors[name].__name__)
    if not callable(ctor):
        return None
    return tiktoken.Encoding(**ctor())


def _load(name: str) -> _Encode | None:
    """A token counter for a tiktoken encoding, or ``None`` (no tiktoken, no local file)."""
    try:
        import tiktoken.registry

        enc = tiktoken.registry.ENCODINGS.get(name)  # already loaded in this process
        if enc is None:
            enc = _build_offline(name)
    except Exception:
        return None
    if enc is None:
        return None
    encode = enc.encode_ordinary  # special-token text is counted as text

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


_UNKNOWN: Final = object()


def encoding_for_model(model: str | None) -> str | None:
    """The tiktoken encoding of ``model`` (``"openai/gpt-4o"`` -> ``"o200k_base"``), or ``None``.

    ``None`` when tiktoken is not installed or does not know the model. Never
    loads an encoding, never touches the network.
    """
    if not model or not isinstance(model, str):
        return None
    hit = _MODEL_ENCODING.get(model, _UNKNOWN)
    if hit is not _UNKNOWN:
        return hit  # type: ignore[return-value]
    name: str | None = None
    base = model.rsplit("/", 1)[-1]  # "openai/gpt-4o", "azure/gpt-4o-mini"
    try:
        import tiktoken.model

        name = tiktoken.model.encoding_name_for_model(base)
    except Exception:
        name = None
    if len(_MODEL_ENCODING) >= _MODEL_CACHE_MAX:
        _MODEL_ENCODING.clear()
    _MODEL_ENCODING[model] = name
    return name


def _check(text: object, model: object, fallback_encoding: object) -> None:
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if model is not None and not isinstance(model, str):
        raise TypeError(f"model must be a str or None, got {type(model).__name__}")
    if fallback_encoding is not None and not isinstance(fallback_encoding, str):
        raise TypeError(
            f"fallback_encoding must be a str or None, got {type(fallback_encoding).__name__}"
        )


def _counter(model: str | None, fallback_encoding: str | None) -> tuple[str, _Encode | None, bool]:
    """``(cache key, counter or None, exact)`` for a model."""
    name = encoding_for_model(model)
    if name is not None:
        enc = _encoder(name)
        if enc is not None:
            return name, enc, True
    if fallback_encoding:
        enc = _encoder(fallback_encoding)
        if enc is not None:
            return fallback_encoding, enc, False
    return "", None, False


def _count(text: str, key: str, enc: _Encode | None) -> int:
    if not text:
        return 0
    if enc is None:
        return heuristic_tokens(text)
    cacheable = len(text) <= _CACHEABLE_LEN
    if cacheable:
        hit = _COUNTS.get((key, text))
        if hit is not None:
            return hit
    try:
        n = enc(text)
    except Exception:
        return heuristic_tokens(text)
    if cacheable:
        if len(_COUNTS) >= _COUNTS_MAX:
            _COUNTS.clear()
        _COUNTS[(key, text)] = n
    return n


def count_tokens(
    text: str, model: str | None = None, *, fallback_encoding: str | None = None
) -> tuple[int, bool]:
    """Tokens of ``text`` for ``model``: ``(count, exact)``.

    ``exact`` is True when the model's own tokenizer counted (tiktoken knows the
    model and its encoding file is on this machine). Otherwise the count is the
    ~4 characters a token heuristic -- or, when ``fallback_encoding`` names a
    tiktoken encoding (``"cl100k_base"``), that encoding's count -- and ``exact``
    is False.

    Raises:
        TypeError: ``text`` is not a str, or ``model`` / ``fallback_encoding`` is
            neither a str nor None.
    """
    _check(text, model, fallback_encoding)
    key, enc, exact = _counter(model, fallback_encoding)
    return _count(text, key, enc), exact


def estimate_tokens(
    text: str, model: str | None = None, *, fallback_encoding: str | None = None
) -> int:
    """Tokens of ``text`` for ``model`` (:func:`count_tokens` without the flag)."""
    _check(text, model, fallback_encoding)
    key, enc, _ = _counter(model, fallback_encoding)
    return _count(text, key, enc)


def has_tokenizer(model: str | None) -> bool:
    """True when ``model``'s own tokenizer is available here (counts are exact)."""
    name = encoding_for_model(model)
    return name is not None and _encoder(name) is not None


# --------------------------------------------------------------------------- messages
_ROLES: Final = {"human": "user", "ai": "assistant", "AIMessageChunk": "assistant"}
_MAX_BLOCK_DEPTH: Final = 4


def _attr(obj: Any, key: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key)
    try:
        return getattr(obj, key, None)
    except Exception:
        return None


def _json(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, default=str, ensure_ascii=False)
    except Exception:
        return str(value)


def _blocks_text(content: Any, parts: list[str], depth: int = 0, skip_tools: bool = False) -> None:
    """The text of a content block list (OpenAI / Anthropic / LangChain blocks).

    ``skip_tools``: the message lists its tool calls apart (LangChain's
    ``tool_calls`` repeat Anthropic's ``tool_use`` blocks): count them once.
    """
    if depth > _MAX_BLOCK_DEPTH:
        return
    if isinstance(content, str):
        if content:
            parts.append(content)
        return
    if not isinstance(content, list | tuple):
        return
    for block in content:
        if isinstance(block, str):
            if block:
                parts.append(block)
            continue
        text = _attr(block, "text")
        if isinstance(text, str):
            if text:
                parts.append(text)
            continue
        thinking = _attr(block, "thinking")
        if isinstance(thinking, str):
            parts.append(thinking)
            continue
        name = _attr(block, "name") or _attr(block, "tool_name")
        if isinstance(name, str):  # tool_use / function_call / a tool-call block
            if skip_tools:
                continue
            parts.append(name)
            args = _attr(block, "input")
            if args is None:
                args = _attr(block, "arguments")
            if args is None:
                args = _attr(block, "tool_kwargs")
            if args is None:
                args = _attr(block, "args")
            if args is not None:
                parts.append(_json(args))
            continue
        inner = _attr(block, "content")  # tool_result
        if inner is not None:
            _blocks_text(inner, parts, depth + 1, skip_tools)


def _tool_calls_text(calls: Any, parts: list[str]) -> None:
    if not isinstance(calls, list | tuple):
        return
    for call in calls:
        fn = _attr(call, "function")  # OpenAI format: {"function": {"name", "arguments"}}
        source = fn if fn is not None else call
        name = _attr(source, "name")
        if isinstance(name, str):
            parts.append(name)
        args = _attr(source, "arguments")
        if args is None:
            args = _attr(source, "args")
        if args is not None:
            parts.append(_json(args))


def message_text(message: Any) -> str:
    """The text a message carries, tool calls included (what a provider tokenises).

    Understands plain strings, content-block lists, dicts (``content`` as a
    string or a list of blocks, OpenAI ``tool_calls``), LangChain messages (``content``,
    ``tool_calls``) and LlamaIndex messages (``content``, ``blocks``). Never
    raises: what cannot be read is left out.
    """
    if isinstance(message, str):
        return message
    parts: list[str] = []
    if isinstance(message, list | tuple):  # a bare content-block list (a stream chunk's)
        _blocks_text(message, parts)
        return "\n".join(parts)
    try:
        calls = _attr(message, "tool_calls")
        content = _attr(message, "content")
        if content is not None:
            _blocks_text(content, parts, skip_tools=bool(calls))
        blocks = None if isinstance(message, Mapping) else _attr(message, "blocks")
        if isinstance(blocks, list | tuple):
            for block in blocks:  # LlamaIndex: text is in .content, add the rest
                if isinstance(content, str) and isinstance(_attr(block, "text"), str):
                    continue
                _blocks_text([block], parts)
        _tool_calls_text(calls, parts)
    except Exception:
        pass
    return "\n".join(parts)


def _role_and_name(message: Any) -> tuple[str, str]:
    if isinstance(message, str):
        return "", ""
    role = _attr(message, "role")
    if role is None:
        kind = _attr(message, "type")
        role = _ROLES.get(kind, kind) if isinstance(kind, str) else None
    role = getattr(role, "value", role)  # LlamaIndex's MessageRole enum
    name = _attr(message, "name")
    return (role if isinstance(role, str) else ""), (name if isinstance(name, str) else "")


def _flatten(messages: Iterable[Any]) -> Iterable[Any]:
    """Messages, with one level of nesting undone (LangChain passes ``[[msgs]]``)."""
    for m in messages:
        if isinstance(m, list | tuple):
            yield from m
        else:
            yield m


def estimate_messages(
    messages: Iterable[Any], model: str | None = None, *, fallback_encoding: str | None = None
) -> int:
    """Estimated prompt tokens of a list of chat messages (or strings), framing included.

    Raises:
        TypeError: ``messages`` is not iterable, or ``model`` /
            ``fallback_encoding`` is neither a str nor None.
    """
    if isinstance(messages, str | bytes):
        messages = [messages]
    elif isinstance(messages, Mapping) or not isinstance(messages, Iterable):
        if not isinstance(messages, Mapping):
            raise TypeError(f"messages must be an iterable, got {type(messages).__name__}")
        messages = [messages]  # one dict message
    _check("", model, fallback_encoding)
    key, enc, _ = _counter(model, fallback_encoding)
    total = 0
    seen = False
    for m in _flatten(messages):
        seen = True
        try:
            role, name = _role_and_name(m)
            text = message_text(m)
        except Exception:
            role = name = text = ""
        total += PER_MESSAGE_TOKENS + _count(role, key, enc) + _count(text, key, enc)
        if name:
            total += PER_NAME_TOKENS + _count(name, key, enc)
    return total + REPLY_PRIMING_TOKENS if seen else 0
