"""Calls in flight end exactly once, in every way a LlamaIndex call can end.

Also: the integration stands on agentmeter's public API only, and attribution
follows the caller's scopes call by call (also across threads).
"""

from __future__ import annotations

import ast
import gc
import threading
from pathlib import Path
from typing import Any

import agentmeter_llamaindex as ami
import pytest
from llama_index.core.base.llms.types import CompletionResponse, CompletionResponseGen, LLMMetadata
from llama_index.core.callbacks import CallbackManager
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.instrumentation.dispatcher import instrument_tags
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from llama_index.core.llms.mock import MockLLM
from llama_index.core.tools import FunctionTool
from test_li_llm import ANTHROPIC, count, events

import agentmeter

pytestmark = [
    pytest.mark.filterwarnings("ignore::agentmeter.UnpricedModelWarning"),
    pytest.mark.filterwarnings("ignore::agentmeter_llamaindex.StreamUsageWarning"),
    pytest.mark.timeout(60),
]

PACKAGE = Path(ami.__file__).parent


class _Streams(CustomLLM):
    """A CustomLLM whose stream reports Anthropic's start usage, then breaks or goes on."""

    breaks: bool = False

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="claude-3-5-haiku-latest")

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text="ok")

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        start = {"type": "message_start", "message": {"usage": {**ANTHROPIC["usage"]}}}
        start["message"]["usage"]["output_tokens"] = 1

        def gen() -> CompletionResponseGen:
            yield CompletionResponse(text="", delta="", raw=start)
            if self.breaks:
                raise ConnectionResetError("stream broke")
            yield CompletionResponse(text="ok then", delta="ok then")

        return gen()


def test_imports_only_public_agentmeter() -> None:
    """agentmeter and agentmeter.instrumentation, and none of their private names."""
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                if name.split(".")[0] == "agentmeter":
                    assert name in {"agentmeter", "agentmeter.instrumentation"}, (path.name, name)
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("agentmeter"):
                assert all(not a.name.startswith("_") for a in node.names), path.name


def test_abandoned_after_a_partial_report_keeps_the_reported_part(
    inst: ami.Instrumentor, li_tracker: agentmeter.Tracker
) -> None:
    seen = events(li_tracker)
    gen = _Streams().stream_complete("x")
    next(gen)  # message_start: input and cache reported, output not yet
    gen.close()
    del gen
    gc.collect()
    u = li_tracker.snapshot().totals
    assert (u.llm_calls, u.estimated_calls) == (1, 1)
    assert (u.input_tokens, u.cache_read_tokens, u.cache_write_tokens) == (1210, 1000, 200)
    assert u.output_tokens == 1
    assert seen[0].metadata == {"stream": "abandoned", "chunks": 1}
    assert not inst._llm


def test_stream_that_breaks_is_a_failed_call_with_what_it_used(
    inst: ami.Instrumentor, li_tracker: agentmeter.Tracker
) -> None:
    seen = events(li_tracker)
    with pytest.raises(ConnectionResetError):
        for _ in _Streams(breaks=True).stream_complete("x"):
            pass
    u = li_tracker.snapshot().totals
    assert (u.llm_calls, u.failed_llm_calls) == (1, 1)
    assert u.input_tokens == 1210  # what the provider reported before the break
    assert seen[0].status == "error" and seen[0].error == "ConnectionResetError"
    assert not inst._llm


def test_refused_call_holds_no_reservation(li_tracker: agentmeter.Tracker) -> None:
    handler = ami.AgentMeterCallbackHandler(li_tracker)
    llm = MockLLM(callback_manager=CallbackManager([handler]))
    with li_tracker.meter("job", budget=agentmeter.Budget(max_llm_calls=1)) as scope:
        llm.complete("one")
        for _ in range(3):
            with pytest.raises(agentmeter.BudgetExceeded):
                llm.complete("two")
        status = scope.budget_status
    assert status is not None and set(status.reserved.values()) == {0}
    assert scope.usage.llm_calls == 1 and not handler._reserved
    assert li_tracker.snapshot().totals.llm_calls == 1  # refused calls are not recorded


def test_handler_without_metering_gives_every_reservation_back(
    li_tracker: agentmeter.Tracker,
) -> None:
    handler = ami.AgentMeterCallbackHandler(li_tracker, instrument=False)
    llm = MockLLM(callback_manager=CallbackManager([handler]))
    with li_tracker.meter("job", budget=agentmeter.Budget(max_llm_calls=2)) as scope:
        for _ in range(5):  # nothing records them, so nothing is spent
            llm.complete("hello")
        status = scope.budget_status
    assert status is not None and set(status.reserved.values()) == {0}
    assert not handler._reserved


def test_attribution_follows_the_callers_scope_call_by_call(
    inst: ami.Instrumentor, li_tracker: agentmeter.Tracker
) -> None:
    llm = MockLLM(max_tokens=3)
    for i in range(6):
        with li_tracker.meter("turn", session_id=f"s{i % 2}", agent_id="a"):
            llm.complete("in")
            with li_tracker.meter("inner", agent_id=f"sub{i % 3}"):
                llm.complete("deeper")
        llm.complete("outside")
        with instrument_tags({"session_id": "tagged"}):
            llm.complete("tagged")

    def worker(k: int) -> None:
        for _ in range(20):
            with li_tracker.meter("thread", session_id=f"t{k}"):
                llm.complete("threaded")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    snap = li_tracker.snapshot()
    assert snap.by_session["s0"].llm_calls == 6 and snap.by_session["s1"].llm_calls == 6
    assert snap.by_session["tagged"].llm_calls == 6
    assert {k: snap.by_session[f"t{k}"].llm_calls for k in range(3)} == {0: 20, 1: 20, 2: 20}
    assert snap.by_agent["a"].llm_calls == 6
    assert sum(snap.by_agent[f"sub{j}"].llm_calls for j in range(3)) == 6
    assert snap.totals.llm_calls == 6 * 4 + 60
    assert sum(u.llm_calls for u in snap.by_session.values()) == snap.totals.llm_calls - 6


def test_embeddings_follow_instrument_tags(
    inst: ami.Instrumentor, li_tracker: agentmeter.Tracker
) -> None:
    embed = MockEmbedding(embed_dim=4)
    with li_tracker.meter("rag", session_id="scope-session"):
        embed.get_query_embedding("from the scope")
        with instrument_tags({"session_id": "tag-session", "agent_id": "retriever"}):
            embed.get_query_embedding("from the tags")
    snap = li_tracker.snapshot()
    assert snap.by_session["scope-session"].embedding_calls == 1
    assert snap.by_session["tag-session"].embedding_calls == 1
    assert snap.by_agent["retriever"].embedding_calls == 1
    assert snap.totals.embedding_tokens == count("from the scope") + count("from the tags")
    assert snap.totals.estimated_calls == 2  # MockEmbedding: not its own tokenizer


class WaitingForEvent(Exception):  # the name of the exception LlamaIndex workflows pause with
    """Raised by a human-in-the-loop tool that pauses its workflow."""


def test_paused_tool_is_not_recorded_and_its_scope_closes(
    inst: ami.Instrumentor, li_tracker: agentmeter.Tracker
) -> None:
    def ask_human(question: str = "ok?") -> str:
        """Ask a human."""
        raise WaitingForEvent(question)

    def fine(x: int = 1) -> int:
        """A tool that works."""
        assert li_tracker.current_scope() is not None  # the tool's scope
        return x

    with li_tracker.meter("turn", session_id="s-pause") as turn:
        with pytest.raises(WaitingForEvent):
            FunctionTool.from_defaults(ask_human).call()
        assert li_tracker.current_scope() is turn  # the paused tool's scope was closed
        FunctionTool.from_defaults(fine).call()
    tools = li_tracker.session("s-pause").tools
    assert "ask_human" not in tools and tools["fine"].calls == 1
    assert not inst._open
