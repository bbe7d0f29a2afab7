"""Every LangChain path a user takes stops at its budget, before the model is called,
and reaches the caller as ``BudgetExceeded`` without LangChain's "Error in ...
callback" warning (see agentmeter_langchain/_quiet.py for why that takes a filter).

Paths: a per-run handler (``config={"callbacks": [...]}``), a handler on the
model, and ``instrument()``; each over invoke / ainvoke / stream / astream /
batch / abatch, ``langchain.agents.create_agent`` and LangGraph's
``create_react_agent`` (sync and async), and tool calls refused by a budget.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest
from _lc_fakes import UsageChat
from agentmeter_langchain import (
    AgentMeterCallbackHandler,
    instrument,
    set_quiet_budget_stops,
)
from langchain_core.tools import tool

import agentmeter

pytestmark = pytest.mark.timeout(60)

MODES = ("run_handler", "model_handler", "instrument")
LC_LOGGER = "langchain_core.callbacks.manager"


def _callback_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """LangChain's callback-error lines, and any warning or error about the refusal."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING
        and (
            (r.name == LC_LOGGER and "callback" in r.getMessage())
            or "BudgetExceeded" in r.getMessage()
        )
    ]


def _refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "agentmeter.langchain" and "budget refused" in r.getMessage()
    ]


def _setup(
    mode: str, tracker: agentmeter.Tracker, **model_kw: Any
) -> tuple[UsageChat, dict[str, Any]]:
    """A model and the run config for ``mode`` (the handler wired the way ``mode`` says)."""
    if mode == "instrument":
        instrument(tracker)
        return UsageChat(**model_kw), {}
    handler = AgentMeterCallbackHandler(tracker)
    if mode == "model_handler":
        return UsageChat(callbacks=[handler], **model_kw), {}
    return UsageChat(**model_kw), {"callbacks": [handler]}


def _invoke(m: UsageChat, cfg: dict[str, Any]) -> None:
    m.invoke("hi", config=cfg)


def _stream(m: UsageChat, cfg: dict[str, Any]) -> None:
    for _ in m.stream("hi", config=cfg):
        pass


def _batch(m: UsageChat, cfg: dict[str, Any]) -> None:
    m.batch(["a", "b", "c"], config=cfg)


async def _ainvoke(m: UsageChat, cfg: dict[str, Any]) -> None:
    await m.ainvoke("hi", config=cfg)


async def _astream(m: UsageChat, cfg: dict[str, Any]) -> None:
    async for _ in m.astream("hi", config=cfg):
        pass


async def _abatch(m: UsageChat, cfg: dict[str, Any]) -> None:
    await m.abatch(["a", "b", "c"], config=cfg)


SYNC: dict[str, Callable[[UsageChat, dict[str, Any]], None]] = {
    "invoke": _invoke,
    "stream": _stream,
    "batch": _batch,
}
ASYNC = {"ainvoke": _ainvoke, "astream": _astream, "abatch": _abatch}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("surface", sorted(SYNC))
def test_sync_surfaces_stop_cleanly(
    mode: str, surface: str, lc_tracker: agentmeter.Tracker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    model, cfg = _setup(mode, lc_tracker)
    with (
        pytest.raises(agentmeter.BudgetExceeded, match="max_llm_calls"),
        lc_tracker.meter("turn", budget=agentmeter.Budget(max_llm_calls=0)),
    ):
        SYNC[surface](model, cfg)
    assert model.requests == 0  # refused before the model was called
    assert lc_tracker.snapshot().totals.llm_calls == 0
    assert _callback_warnings(caplog) == []
    assert _refusals(caplog), "the refusal is still said, once, at INFO"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("surface", sorted(ASYNC))
async def test_async_surfaces_stop_cleanly(
    mode: str, surface: str, lc_tracker: agentmeter.Tracker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    model, cfg = _setup(mode, lc_tracker)
    with pytest.raises(agentmeter.BudgetExceeded, match="max_llm_calls"):
        async with lc_tracker.meter("turn", budget=agentmeter.Budget(max_llm_calls=0)):
            await asyncio.wait_for(ASYNC[surface](model, cfg), 20)
    assert model.requests == 0
    assert _callback_warnings(caplog) == []
    assert _refusals(caplog)


@pytest.mark.parametrize("mode", MODES)
def test_session_budget_stops_the_second_call(
    mode: str, lc_tracker: agentmeter.Tracker, caplog: pytest.LogCaptureFixture
) -> None:
    """A session budget (not a scope's) through run metadata, on every wiring."""
    model, cfg = _setup(mode, lc_tracker)
    cfg = {**cfg, "metadata": {"session_id": "s1"}}
    lc_tracker.set_budget("s1", agentmeter.Budget(max_llm_calls=1))
    model.invoke("one", config=cfg)
    with pytest.raises(agentmeter.BudgetExceeded):
        model.invoke("two", config=cfg)
    assert model.requests == 1
    assert lc_tracker.session("s1").usage.llm_calls == 1
    assert _callback_warnings(caplog) == []


# ------------------------------------------------------------------ agents
@tool
def search(query: str) -> str:
    """Searches (records that it ran)."""
    RAN.append(query)
    return "result"


RAN: list[str] = []


def _agent(kind: str, model: UsageChat) -> Any:
    if kind == "create_agent":
        from langchain.agents import create_agent

        return create_agent(model, [search])
    from langgraph.prebuilt import create_react_agent

    return create_react_agent(model, [search])


AGENTS = ("create_agent", "create_react_agent")
INPUT = {"messages": [("user", "find it")]}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", AGENTS)
def test_agent_run_stops_before_the_model(
    mode: str, kind: str, lc_tracker: agentmeter.Tracker, caplog: pytest.LogCaptureFixture
) -> None:
    model, cfg = _setup(mode, lc_tracker, tool_script=("search",))
    agent = _agent(kind, model)
    with (
        pytest.raises(agentmeter.BudgetExceeded),
        lc_tracker.meter("run", budget=agentmeter.Budget(max_llm_calls=1)),
    ):
        agent.invoke(INPUT, config=cfg)  # call 1 asks for the tool; call 2 is refused
    assert model.requests == 1
    assert lc_tracker.snapshot().totals.llm_calls == 1
    assert _callback_warnings(caplog) == []


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", AGENTS)
async def test_agent_async_run_stops_before_the_model(
    mode: str, kind: str, lc_tracker: agentmeter.Tracker, caplog: pytest.LogCaptureFixture
) -> None:
    model, cfg = _setup(mode, lc_tracker, tool_script=("search",))
    agent = _agent(kind, model)
    with pytest.raises(agentmeter.BudgetExceeded):
        async with lc_tracker.meter("run", budget=agentmeter.Budget(max_llm_calls=0)):
            await asyncio.wait_for(agent.ainvoke(INPUT, config=cfg), 20)
    assert model.requests == 0
    assert _callback_warnings(caplog) == []


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", AGENTS)
def test_agent_stream_stops_before_the_model(
    mode: str, kind: str, lc_tracker: agentmeter.Tracker, caplog: pytest.LogCaptureFixture
) -> None:
    model, cfg = _setup(mode, lc_tracker, tool_script=("search",))
    agent = _agent(kind, model)
    with (
        pytest.raises(agentmeter.BudgetExceeded),
        lc_tracker.meter("run", budget=agentmeter.Budget(max_llm_calls=0)),
    ):
        for _ in agent.stream(INPUT, config=cfg, stream_mode="messages"):
            pass
    assert model.requests == 0
    assert _callback_warnings(caplog) == []


# A handler given to the model's constructor sees that model's runs only, never the
# agent's tools (LangChain does not pass constructor callbacks down): tool budgets
# need a per-run handler or instrument() -- said in the README.
@pytest.mark.parametrize("mode", ("run_handler", "instrument"))
@pytest.mark.parametrize("kind", AGENTS)
def test_tool_refused_before_it_runs(
    mode: str, kind: str, lc_tracker: agentmeter.Tracker, caplog: pytest.LogCaptureFixture
) -> None:
    RAN.clear()
    model, cfg = _setup(mode, lc_tracker, tool_script=("search",))
    agent = _agent(kind, model)
    with (
        pytest.raises(agentmeter.BudgetExceeded, match="max_tool_calls"),
        lc_tracker.meter("run", budget=agentmeter.Budget(max_tool_calls=0)),
    ):
        agent.invoke(INPUT, config=cfg)
    assert RAN == []  # the tool body never ran
    assert model.requests == 1
    assert lc_tracker.snapshot().totals.tool_calls == 0
    assert _callback_warnings(caplog) == []


# ------------------------------------------------------------ the filter
def test_other_callback_errors_are_still_logged(
    lc_tracker: agentmeter.Tracker, caplog: pytest.LogCaptureFixture
) -> None:
    """Only agentmeter's budget refusals are dropped; a broken handler is still reported."""
    from langchain_core.callbacks import BaseCallbackHandler

    class Broken(BaseCallbackHandler):
        def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
            raise agentmeter.BudgetExceeded("not agentmeter's handler")

    class AgentMeterCallbackHandlerLookalike(BaseCallbackHandler):
        def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
            raise ValueError("boom")

    model = UsageChat()
    model.invoke("hi", config={"callbacks": [Broken(), AgentMeterCallbackHandlerLookalike()]})
    warned = _callback_warnings(caplog)
    assert any("Broken.on_chat_model_start" in w for w in warned)
    assert any("Lookalike.on_chat_model_start" in w and "boom" in w for w in warned)
    assert model.requests == 1


def test_quiet_stops_can_be_turned_off(
    lc_tracker: agentmeter.Tracker, caplog: pytest.LogCaptureFixture
) -> None:
    model = UsageChat()
    cfg = {"callbacks": [AgentMeterCallbackHandler(lc_tracker)]}
    set_quiet_budget_stops(False)
    try:
        with (
            pytest.raises(agentmeter.BudgetExceeded),
            lc_tracker.meter("turn", budget=agentmeter.Budget(max_llm_calls=0)),
        ):
            model.invoke("hi", config=cfg)
        assert any(
            "AgentMeterCallbackHandler.on_chat_model_start" in w and "BudgetExceeded" in w
            for w in _callback_warnings(caplog)
        )
    finally:
        set_quiet_budget_stops(True)
    caplog.clear()
    with (
        pytest.raises(agentmeter.BudgetExceeded),
        lc_tracker.meter("turn", budget=agentmeter.Budget(max_llm_calls=0)),
    ):
        model.invoke("hi", config=cfg)
    assert _callback_warnings(caplog) == []
    with pytest.raises(TypeError, match="enabled"):
        set_quiet_budget_stops("no")  # type: ignore[arg-type]
