"""The handler's calls in flight: ends without a start, settlement, embeddings' tokenizer."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from _lc_fakes import UsageChat, chat_usage
from agentmeter_langchain import AgentMeterCallbackHandler, MeteredEmbeddings
from langchain_core.embeddings import Embeddings
from langchain_core.messages import HumanMessage
from langchain_core.outputs import LLMResult
from langchain_core.tools import tool

import agentmeter
from agentmeter.instrumentation import LLMCall, ToolCall


def _result(model: UsageChat) -> LLMResult:
    return LLMResult(generations=[[model._generate([HumanMessage("hi")]).generations[0]]])


def test_runs_are_calls_in_flight(lc_tracker: agentmeter.Tracker) -> None:
    handler = AgentMeterCallbackHandler(lc_tracker, session_id="s", customer_id="c")
    run_id = uuid.uuid4()
    handler.on_chat_model_start(
        {"id": ["x", "UsageChat"]},
        [[HumanMessage("hi")]],
        run_id=run_id,
        metadata={"ls_model_name": "fake-usage-model", "ls_provider": "fakeprov"},
    )
    call = handler._runs[run_id.int]
    assert isinstance(call, LLMCall) and not call.done
    assert call.call_id == str(run_id) and call.model == "fake-usage-model"
    assert call.attribution.session_id == "s" and call.attribution.customer_id == "c"
    handler.on_llm_end(_result(UsageChat()), run_id=run_id)
    assert call.done and handler._runs == {}
    assert lc_tracker.session("s").usage.input_tokens == chat_usage(1)["input_tokens"]


def test_end_without_a_start_is_still_recorded(lc_tracker: agentmeter.Tracker) -> None:
    """A handler added mid-run (or one whose map evicted the run) still counts the call."""
    events: list[agentmeter.UsageEvent] = []
    lc_tracker.subscribe(events.append)
    handler = AgentMeterCallbackHandler(lc_tracker, session_id="late", agent_id="a")
    handler.on_llm_end(_result(UsageChat()), run_id=uuid.uuid4())
    assert len(events) == 1
    e = events[0]
    assert (e.model, e.provider, e.session_id, e.agent_id) == (
        "fake-usage-model",
        "fakeprov",
        "late",
        "a",
    )
    assert e.input_tokens == chat_usage(1)["input_tokens"] and not e.estimated
    handler.on_llm_error(RuntimeError("x"), run_id=uuid.uuid4())
    assert events[1].status == "error" and events[1].model == "unknown"


def test_model_unknown_at_start_is_the_class_then_the_response(
    lc_tracker: agentmeter.Tracker,
) -> None:
    handler = AgentMeterCallbackHandler(lc_tracker)
    run_id = uuid.uuid4()
    handler.on_chat_model_start({"id": ["a", "MyChat"]}, [[HumanMessage("hi")]], run_id=run_id)
    call = handler._runs[run_id.int]
    assert isinstance(call, LLMCall) and call.model == "MyChat"
    handler.on_llm_end(_result(UsageChat(model_name="served-model")), run_id=run_id)
    assert set(lc_tracker.snapshot().by_model) == {"served-model"}


def test_tool_runs_are_tool_calls_and_end_without_start_counts(
    lc_tracker: agentmeter.Tracker,
) -> None:
    @tool
    def ping(x: str) -> str:
        """Ping."""
        scope = lc_tracker.current_scope()
        assert scope is not None and scope.tool == "ping"
        return "pong"

    handler = AgentMeterCallbackHandler(lc_tracker, session_id="t")
    seen: list[Any] = []
    original = handler.on_tool_start

    def spy(*args: Any, **kwargs: Any) -> None:
        original(*args, **kwargs)
        seen.append(handler._runs[kwargs["run_id"].int])

    handler.on_tool_start = spy  # type: ignore[method-assign]
    ping.invoke({"x": "a"}, config={"callbacks": [handler]})
    assert isinstance(seen[0], ToolCall) and seen[0].done and seen[0].name == "ping"
    handler.on_tool_end("out", run_id=uuid.uuid4(), name="unseen")
    tools = lc_tracker.session("t").tools
    assert tools["ping"].calls == 1 and tools["unseen"].calls == 1
    assert lc_tracker.current_scope() is None


def test_tool_refused_by_budget_leaves_nothing_open(lc_tracker: agentmeter.Tracker) -> None:
    from agentmeter_langchain import current_tool_run_id

    @tool
    def never(x: str) -> str:
        """Must not run."""
        raise AssertionError("ran")

    handler = AgentMeterCallbackHandler(lc_tracker)
    lc_tracker.set_budget("nt", agentmeter.Budget(max_tool_calls=0))
    cfg = {"callbacks": [handler], "metadata": {"session_id": "nt"}}
    with pytest.raises(agentmeter.BudgetExceeded, match="max_tool_calls"):
        never.invoke({"x": "a"}, config=cfg)
    assert handler._runs == {} and lc_tracker.current_scope() is None
    assert current_tool_run_id() is None


def test_budget_refusal_books_nothing_and_settles(lc_tracker: agentmeter.Tracker) -> None:
    handler = AgentMeterCallbackHandler(lc_tracker)
    model = UsageChat()
    lc_tracker.set_budget("b", agentmeter.Budget(max_llm_calls=1))
    cfg = {"callbacks": [handler], "metadata": {"session_id": "b"}}
    model.invoke("hi", config=cfg)
    with pytest.raises(agentmeter.BudgetExceeded):
        model.invoke("hi", config=cfg)
    status = lc_tracker.budget_status("b")
    assert status is not None and status.reserved["max_llm_calls"] == 0
    assert handler._runs == {} and model.requests == 1


class _Plain(Embeddings):
    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [[1.0] for _ in texts]

    def embed_query(self, text: str) -> list[float]:
        return [1.0]


def test_embeddings_customer_and_a_failing_token_counter(
    lc_tracker: agentmeter.Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(text: str) -> int:
        raise RuntimeError("tokenizer down")

    emb = MeteredEmbeddings(_Plain(), lc_tracker, customer_id="acme", token_counter=broken)
    with pytest.raises(RuntimeError, match="tokenizer down"):  # strict mode: re-raised
        emb.embed_query("x" * 8)
    monkeypatch.setenv("AGENTMETER_STRICT", "0")  # as in production: logged, estimated
    assert emb.embed_query("x" * 8) == [1.0]
    ok = MeteredEmbeddings(_Plain(), lc_tracker, customer_id="acme", token_counter=len)
    ok.embed_query("x" * 8)
    usage = lc_tracker.customer("acme").usage
    assert usage.embedding_calls == 2 and usage.embedding_tokens == 2 + 8
    assert usage.estimated_calls == 1
    with pytest.raises(TypeError, match="token_counter"):
        MeteredEmbeddings(_Plain(), token_counter="nope")  # type: ignore[arg-type]


def test_empty_or_odd_metadata_values_mean_none(lc_tracker: agentmeter.Tracker) -> None:
    events: list[agentmeter.UsageEvent] = []
    lc_tracker.subscribe(events.append)
    handler = AgentMeterCallbackHandler(lc_tracker)
    md = {"ls_model_name": "", "ls_provider": "", "agent_id": "", "customer_id": ""}
    UsageChat().invoke("hi", config={"callbacks": [handler], "metadata": md})
    assert len(events) == 1  # recorded, not dropped for an invalid empty name
    assert events[0].model == "fake-usage-model"  # from the response
    assert events[0].agent_id is None and events[0].customer_id is None
    run_id = uuid.uuid4()
    handler.on_chat_model_start({}, [[HumanMessage("hi")]], run_id=run_id, metadata=md)
    call = handler._runs.pop(run_id.int)
    assert isinstance(call, LLMCall)
    assert (call.model, call.provider) == ("unknown", None)
    call.cancel()
