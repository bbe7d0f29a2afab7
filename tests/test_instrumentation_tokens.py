"""The token estimator: tiktoken when it knows the model (offline only), else ~4 chars a token."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentmeter.instrumentation import _tokens
from agentmeter.instrumentation._tokens import (
    count_tokens,
    encoding_for_model,
    estimate_messages,
    estimate_tokens,
    has_tokenizer,
    heuristic_tokens,
    message_text,
)

CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
TEXT = "agentmeter meters what AI agents spend: tokens, cost and tool calls."


def _reset() -> None:
    _tokens._ENCODERS.clear()
    _tokens._MODEL_ENCODING.clear()
    _tokens._COUNTS.clear()
    _tokens._cache_dirs = None


@pytest.fixture
def fresh() -> Iterator[None]:
    """Empty caches before and after (other tests get a clean estimator back)."""
    _reset()
    yield
    _reset()


def _forbid_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"network or tiktoken download attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    try:
        import tiktoken.load
    except ImportError:
        return
    monkeypatch.setattr(tiktoken.load, "read_file", refuse)
    monkeypatch.setattr(tiktoken.load, "read_file_cached", refuse)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to download an encoding or open a socket fails the test."""
    _forbid_network(monkeypatch)


def _local_cl100k() -> Path | None:
    key = hashlib.sha1(CL100K_URL.encode()).hexdigest()
    for folder in _tokens._tiktoken_cache_dirs():
        path = Path(folder) / key
        if path.is_file():
            return path
    return None


# --------------------------------------------------------------------- heuristic
@pytest.mark.parametrize(
    ("text", "tokens"), [("", 0), ("a", 1), ("abcd", 1), ("abcde", 2), ("x" * 40, 10)]
)
def test_heuristic_is_ceil_chars_over_four(text: str, tokens: int) -> None:
    assert heuristic_tokens(text) == tokens
    assert count_tokens(text, "claude-sonnet-4-5") == (tokens, False)
    assert estimate_tokens(text) == tokens


def test_unknown_models_are_estimated(fresh: None, no_network: None) -> None:
    for model in (None, "", "claude-3-5-sonnet", "gemini-2.5-pro", "my-finetune", "azure/deploy-1"):
        n, exact = count_tokens(TEXT, model)
        assert (n, exact) == (heuristic_tokens(TEXT), False)
        assert not has_tokenizer(model)
        assert encoding_for_model(model) is None


# ---------------------------------------------------------------------- tiktoken
def test_known_models_are_exact_and_match_llama_index(
    fresh: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("tiktoken")
    if _local_cl100k() is None:
        pytest.skip("no local cl100k_base file (llama-index-core ships one)")
    utils = pytest.importorskip("llama_index.core.utils")
    expected = len(utils.get_tokenizer()(TEXT))  # llama-index's own cl100k_base, its way
    _forbid_network(monkeypatch)  # from here on, ours: never a download
    n, exact = count_tokens(TEXT, "gpt-4")
    assert exact and has_tokenizer("gpt-4") and has_tokenizer("openai/gpt-4")
    assert encoding_for_model("openai/gpt-4o") == "o200k_base"
    assert n == expected
    # An unknown model counted with a fallback encoding: that count, not exact.
    assert count_tokens(TEXT, "my-model", fallback_encoding="cl100k_base") == (n, False)
    assert count_tokens("", "gpt-4") == (0, True)
    # Special-token text is counted as text, never rejected.
    assert count_tokens("<|endoftext|>", "gpt-4")[0] > 1


def test_counts_are_cached_and_bounded(fresh: None, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def fake(text: str) -> int:
        calls.append(text)
        return len(text.split())

    monkeypatch.setitem(_tokens._ENCODERS, "cl100k_base", fake)
    monkeypatch.setitem(_tokens._MODEL_ENCODING, "gpt-4", "cl100k_base")
    monkeypatch.setattr(_tokens, "_COUNTS_MAX", 8)
    assert count_tokens("one two three", "gpt-4") == (3, True)
    assert count_tokens("one two three", "gpt-4") == (3, True)
    assert calls == ["one two three"]  # the second one came from the cache
    for i in range(50):
        count_tokens(f"text {i}", "gpt-4")
    assert len(_tokens._COUNTS) <= 8
    long = "w " * (_tokens._CACHEABLE_LEN + 1)
    count_tokens(long, "gpt-4")
    assert ("cl100k_base", long) not in _tokens._COUNTS


def test_model_cache_is_bounded(fresh: None) -> None:
    for i in range(_tokens._MODEL_CACHE_MAX + 100):
        encoding_for_model(f"tenant-{i}-finetune")
    assert len(_tokens._MODEL_ENCODING) <= _tokens._MODEL_CACHE_MAX


def test_a_failing_tokenizer_falls_back(fresh: None, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(text: str) -> int:
        raise RuntimeError("tokenizer crashed")

    monkeypatch.setitem(_tokens._ENCODERS, "cl100k_base", broken)
    monkeypatch.setitem(_tokens._MODEL_ENCODING, "gpt-4", "cl100k_base")
    assert count_tokens(TEXT, "gpt-4")[0] == heuristic_tokens(TEXT)


# ------------------------------------------------------------------ offline only
def test_no_local_file_means_the_heuristic_not_a_download(
    fresh: None, no_network: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = pytest.importorskip("tiktoken.registry")
    monkeypatch.setattr(registry, "ENCODINGS", {})
    monkeypatch.setattr(_tokens, "_tiktoken_cache_dirs", lambda: ())
    assert count_tokens(TEXT, "gpt-4o") == (heuristic_tokens(TEXT), False)
    assert not has_tokenizer("gpt-4o")
    assert encoding_for_model("gpt-4o") == "o200k_base"  # known, just not loadable here


def test_tiktoken_cache_dir_is_used_and_verified(
    fresh: None, no_network: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    registry = pytest.importorskip("tiktoken.registry")
    monkeypatch.setattr(registry, "ENCODINGS", {})  # nothing loaded in this process yet
    source = _local_cl100k()
    if source is None:
        pytest.skip("no local cl100k_base file to copy")
    key = hashlib.sha1(CL100K_URL.encode()).hexdigest()
    shutil.copy(source, tmp_path / key)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(sys, "path", [])  # hide llama-index's copy
    monkeypatch.setattr(_tokens.tempfile, "gettempdir", lambda: str(tmp_path / "none"))
    _reset()
    assert _tokens._tiktoken_cache_dirs() == (
        str(tmp_path),
        str(tmp_path / "none" / "data-gym-cache"),
    )
    n, exact = count_tokens(TEXT, "gpt-4")
    assert exact and n < heuristic_tokens(TEXT) * 2
    # A corrupted file fails tiktoken's hash: not used, and not re-downloaded.
    (tmp_path / key).write_bytes(b"corrupted")
    _reset()
    assert count_tokens(TEXT, "gpt-4") == (heuristic_tokens(TEXT), False)


def test_tiktoken_is_not_imported_by_importing_the_estimator() -> None:
    code = (
        "import sys\n"
        "import agentmeter.instrumentation._tokens, agentmeter.instrumentation._usage\n"
        "bad = [m for m in ('tiktoken', 'llama_index', 'langchain_core', 'openai', 'anthropic',"
        " 'google.genai') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, env=env)


# ------------------------------------------------------------------- bad input
@pytest.mark.parametrize("text", [None, 3, b"bytes", ["a"]])
def test_non_str_text_is_a_type_error(text: Any) -> None:
    with pytest.raises(TypeError, match="text"):
        count_tokens(text)
    with pytest.raises(TypeError, match="text"):
        estimate_tokens(text)


def test_bad_model_and_messages_are_type_errors() -> None:
    with pytest.raises(TypeError, match="model"):
        count_tokens("x", 4)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="fallback_encoding"):
        count_tokens("x", fallback_encoding=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="messages"):
        estimate_messages(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="messages"):
        estimate_messages(7)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="model"):
        estimate_messages([], model=1)  # type: ignore[arg-type]


def test_lone_surrogates_do_not_raise(fresh: None) -> None:
    text = "bad \ud800 text"
    assert count_tokens(text)[0] == heuristic_tokens(text)
    assert estimate_tokens(text, "gpt-4") > 0


# -------------------------------------------------------------------- messages
H = "claude-sonnet-4-5"  # a model without a local tokenizer: the heuristic, predictably


def test_message_framing() -> None:
    # 3 per message + role ("user": 1) + text ("abcd": 1), + 3 for the reply.
    assert estimate_messages([{"role": "user", "content": "abcd"}], H) == 3 + 1 + 1 + 3
    named = {"role": "user", "name": "bob", "content": "abcd"}
    assert estimate_messages([named], H) == 8 + 1 + 1
    assert estimate_messages([], H) == 0
    two = [{"role": "system", "content": "x" * 8}, {"role": "user", "content": "y" * 8}]
    assert estimate_messages(two, H) == (3 + 2 + 2) + (3 + 1 + 2) + 3
    assert estimate_messages("a prompt", H) == 3 + 2 + 3  # a plain string is one message
    assert estimate_messages(["abcd", "efgh"], H) == (3 + 1) * 2 + 3


def test_content_blocks_and_tool_calls() -> None:
    blocks = {
        "role": "user",
        "content": [
            {"type": "text", "text": "abcd"},
            {"type": "image_url", "image_url": {"url": "data:..."}},
            {"type": "tool_result", "content": [{"type": "text", "text": "result"}]},
        ],
    }
    assert message_text(blocks) == "abcd\nresult"
    openai_calls = {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"function": {"name": "search", "arguments": '{"q": "x"}'}}],
    }
    assert message_text(openai_calls) == 'search\n{"q": "x"}'
    thinking = [{"type": "thinking", "thinking": "hmm"}, {"type": "text", "text": "ok"}]
    assert message_text(thinking) == "hmm\nok"


def test_langchain_messages() -> None:
    messages = pytest.importorskip("langchain_core.messages")
    human = messages.HumanMessage("abcd")
    ai = messages.AIMessage(
        content=[
            {"type": "text", "text": "hi"},
            {"type": "tool_use", "name": "search", "input": {"q": "x"}, "id": "1"},
        ],
        tool_calls=[{"name": "search", "args": {"q": "x"}, "id": "1"}],
    )
    assert message_text(ai) == 'hi\nsearch\n{"q": "x"}'  # the tool call counted once
    # LangChain hands chat prompts over as a list of lists.
    assert estimate_messages([[human]], H) == 3 + 1 + 1 + 3  # "human" is the user role
    assert estimate_messages([[human, ai]], H) > estimate_messages([[human]], H)


def test_llamaindex_messages() -> None:
    types = pytest.importorskip("llama_index.core.base.llms.types")
    msg = types.ChatMessage(role="user", content="abcd")
    assert message_text(msg) == "abcd"
    assert estimate_messages([msg], H) == 3 + 1 + 1 + 3
    call = types.ChatMessage(
        role="assistant",
        blocks=[
            types.TextBlock(text="calling"),
            types.ToolCallBlock(tool_name="search", tool_kwargs={"q": "x"}),
        ],
    )
    assert message_text(call) == 'calling\nsearch\n{"q": "x"}'


def test_unreadable_messages_count_their_framing() -> None:
    class Broken:
        @property
        def content(self) -> str:
            raise RuntimeError("no")

    assert message_text(Broken()) == ""
    assert estimate_messages([Broken(), object(), 5], H) == 3 * 3 + 3
