"""A LangGraph prebuilt ReAct agent with tools, many sessions at once: exact per-session numbers.

Each session's run is deterministic (see ``_lc_fakes.UsageChat``): the model asks
for five tools, gets their results, answers. One tool fails by raising, one
returns an error ``ToolMessage``, one makes its own LLM call (credited to it), one
is also ``@metered_tool`` (counted once).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

pytest.importorskip("langgraph")

from _lc_fakes import UsageChat, chat_usage
from agentmeter_langchain import AgentMeterCallbackHandler, current_tool_run_id
from langchain_core.tools import BaseTool, ToolException, tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.prebuilt import ToolNode, create_react_agent

import agentmeter

TOOLS = ("search", "boom", "flaky", "summarize", "lookup")
# model turn 1: [human]; turn 2: [human, ai, 5 tool results]; plus summarize's inner call
TURN1, TURN2, INNER = chat_usage(1), chat_usage(2 + len(TOOLS)), chat_usage(1)
SESSION_IN = TURN1["input_tokens"] + TURN2["input_tokens"] + INNER["input_tokens"]
SESSION_OUT = TURN1["output_tokens"] + TURN2["output_tokens"] + INNER["output_tokens"]


def make_agent(tracker: agentmeter.Tracker) -> tuple[Any, UsageChat, dict[str, list[Any]]]:
    inner = UsageChat(model_name="inner-model", reply="a summary")
    seen: dict[str, list[Any]] = {"lookup_call_ids": []}

    @tool
    def search(query: str) -> str:
        """Search the web."""
        return f"results for {query}"

    @tool
    def boom(query: str) -> str:
        """Always fails."""
        raise ValueError("boom")

    @tool
    def flaky(query: str) -> str:
        """Fails softly: LangChain turns the error into a ToolMessage(status='error')."""
        raise ToolException("flaky backend")

    flaky.handle_tool_error = True

    @tool
    def summarize(query: str) -> str:
        """Summarises with an LLM (its tokens are this tool's)."""
        return str(inner.invoke(f"summarize {query}").content)

    @tool
    @tracker.metered_tool(category="kb")
    def lookup(query: str) -> str:
        """Looks something up (also metered by the decorator)."""
        seen["lookup_call_ids"].append(current_tool_run_id())
        return "found"

    tools: list[BaseTool] = [search, boom, flaky, summarize, lookup]
    model = UsageChat(tool_script=TOOLS, reply="final answer")
    agent = create_react_agent(
        model, ToolNode(tools, handle_tool_errors=True), checkpointer=InMemorySaver()
    )
    return agent, model, seen


def _inputs(i: int) -> dict[str, Any]:
    return {"messages": [("user", f"question {i}")]}


def _config(handler: AgentMeterCallbackHandler, session: str) -> dict[str, Any]:
    return {"callbacks": [handler], "configurable": {"thread_id": session}}


def _assert_sessions_exact(tracker: agentmeter.Tracker, sessions: list[str]) -> None:
    snap = tracker.snapshot()
    assert set(snap.by_session) == set(sessions)
    for sid in sessions:
        s = tracker.session(sid)
        assert s.usage.llm_calls == 3, sid
        assert s.usage.input_tokens == SESSION_IN, sid
        assert s.usage.output_tokens == SESSION_OUT, sid
        assert s.usage.estimated_calls == 0
        assert s.usage.tool_calls == len(TOOLS) and s.usage.failed_tool_calls == 2
        tools = s.tools
        assert set(tools) == set(TOOLS)
        for name in TOOLS:
            assert tools[name].calls == 1, (sid, name)
        assert tools["boom"].failed == 1 and tools["flaky"].failed == 1
        assert tools["search"].ok == tools["summarize"].ok == tools["lookup"].ok == 1
        # the LLM call made inside summarize is credited to it
        assert tools["summarize"].llm_calls == 1
        assert tools["summarize"].input_tokens == INNER["input_tokens"]
        assert tools["search"].llm_calls == 0
        assert tools["lookup"].category == "kb"
        assert set(s.by_model) == {"fake-usage-model", "inner-model"}
    totals = snap.totals
    assert totals.llm_calls == 3 * len(sessions)
    assert totals.tool_calls == len(TOOLS) * len(sessions)
    assert snap.by_tool["lookup"].calls == len(sessions)  # decorator + handler: once


def test_react_agent_one_session(lc_tracker: agentmeter.Tracker) -> None:
    agent, model, seen = make_agent(lc_tracker)
    handler = AgentMeterCallbackHandler(lc_tracker)
    out = agent.invoke(_inputs(0), config=_config(handler, "solo"))
    assert out["messages"][-1].content == "final answer"
    assert model.requests == 2
    _assert_sessions_exact(lc_tracker, ["solo"])
    assert seen["lookup_call_ids"][0] is not None  # the provider gave the tool's run id
    snap = lc_tracker.snapshot()
    assert snap.by_agent["agent"].llm_calls == 2  # the LangGraph node
    assert snap.by_agent["tools"].llm_calls == 1  # summarize's call runs in the tools node
    assert handler._runs == {}


def test_react_agent_sessions_in_threads(lc_tracker: agentmeter.Tracker) -> None:
    agent, _, _ = make_agent(lc_tracker)
    handler = AgentMeterCallbackHandler(lc_tracker)
    sessions = [f"thread-{i}" for i in range(6)]
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            agent.invoke(_inputs(i), config=_config(handler, sessions[i]))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(sessions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and not any(t.is_alive() for t in threads)
    _assert_sessions_exact(lc_tracker, sessions)
    assert handler._runs == {}


async def test_react_agent_abatch(lc_tracker: agentmeter.Tracker) -> None:
    agent, _, _ = make_agent(lc_tracker)
    handler = AgentMeterCallbackHandler(lc_tracker)
    sessions = [f"batch-{i}" for i in range(5)]
    configs = [_config(handler, s) for s in sessions]
    await asyncio.wait_for(agent.abatch([_inputs(i) for i in range(5)], configs), 60)
    _assert_sessions_exact(lc_tracker, sessions)


async def test_react_agent_gather_with_instrument(lc_tracker: agentmeter.Tracker) -> None:
    from agentmeter_langchain import instrument

    agent, _, _ = make_agent(lc_tracker)
    instrument(lc_tracker)  # no callbacks passed at all
    sessions = [f"gather-{i}" for i in range(5)]
    await asyncio.wait_for(
        asyncio.gather(
            *(
                agent.ainvoke(_inputs(i), config={"configurable": {"thread_id": s}})
                for i, s in enumerate(sessions)
            )
        ),
        60,
    )
    _assert_sessions_exact(lc_tracker, sessions)


def test_agent_inside_a_scope_and_session_budget(lc_tracker: agentmeter.Tracker) -> None:
    agent, model, _ = make_agent(lc_tracker)
    handler = AgentMeterCallbackHandler(lc_tracker)
    with lc_tracker.meter("request") as scope:
        agent.invoke(_inputs(0), config=_config(handler, "scoped-1"))
    assert scope.usage.llm_calls == 3
    assert scope.usage.input_tokens == SESSION_IN
    # A session budget that the first model turn exhausts: the second turn is never sent.
    lc_tracker.set_budget("capped", agentmeter.Budget(max_tokens=TURN1["input_tokens"] + 10))
    before = model.requests
    with pytest.raises(agentmeter.BudgetExceeded):
        agent.invoke(_inputs(1), config=_config(handler, "capped"))
    assert model.requests - before == 1


def test_tool_call_budget_stops_tools_before_they_run(lc_tracker: agentmeter.Tracker) -> None:
    agent, _, seen = make_agent(lc_tracker)
    handler = AgentMeterCallbackHandler(lc_tracker)
    lc_tracker.set_budget("no-tools", agentmeter.Budget(max_tool_calls=0))
    # ToolNode(handle_tool_errors=True) turns every tool exception, BudgetExceeded
    # included, into an error ToolMessage for the model: the run goes on, no tool ran.
    out = agent.invoke(_inputs(0), config=_config(handler, "no-tools"))
    assert "max_tool_calls" in str(out["messages"][2].content)
    assert seen["lookup_call_ids"] == []
    usage = lc_tracker.session("no-tools").usage
    assert usage.tool_calls == 0 and usage.llm_calls == 2  # summarize's LLM never called

    # With LangGraph's default error handling the BudgetExceeded reaches the caller.
    @tool
    def search(query: str) -> str:
        """Search the web."""
        raise AssertionError("must not run")

    strict = create_react_agent(UsageChat(tool_script=("search",)), [search])
    with pytest.raises(agentmeter.BudgetExceeded, match="max_tool_calls"):
        strict.invoke(_inputs(1), config=_config(handler, "no-tools"))
