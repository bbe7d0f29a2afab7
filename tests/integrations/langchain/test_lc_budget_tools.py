"""Priced tools and per-tool limits through LangChain's tool path.

A tool with a price (``agentmeter.set_tool_price``) and a per-tool limit
(``Budget(tool_limits=...)``) is reserved in ``on_tool_start``, before the tool's
body runs, and refused there: ``BudgetExceeded`` reaches the caller and the body
never ran. Direct ``tool.invoke``, a LangGraph agent and ``create_agent``; per-run
handlers and ``instrument()``; a tool that is also ``@agentmeter.metered_tool``
is reserved and counted once.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from _lc_fakes import UsageChat
from agentmeter_langchain import AgentMeterCallbackHandler, instrument
from langchain_core.tools import tool

import agentmeter

pytestmark = pytest.mark.timeout(60)

RAN: list[str] = []


@tool
def search(query: str) -> str:
    """Searches the web (a paid API)."""
    RAN.append("search")
    return "result"


@tool
async def asearch(query: str) -> str:
    """Searches the web, asynchronously."""
    RAN.append("asearch")
    return "result"


def _cfg(mode: str, tracker: agentmeter.Tracker) -> dict[str, Any]:
    if mode == "instrument":
        instrument(tracker)
        return {}
    return {"callbacks": [AgentMeterCallbackHandler(tracker)]}


@pytest.fixture(autouse=True)
def _clean() -> None:
    RAN.clear()


@pytest.mark.parametrize("mode", ["run_handler", "instrument"])
def test_per_tool_limit_refuses_before_the_body(mode: str, lc_tracker: agentmeter.Tracker) -> None:
    cfg = _cfg(mode, lc_tracker)
    with lc_tracker.meter("run", budget=agentmeter.Budget(tool_limits={"search": 2})) as scope:
        search.invoke({"query": "a"}, config=cfg)
        search.invoke({"query": "b"}, config=cfg)
        with pytest.raises(agentmeter.BudgetExceeded, match="search"):
            search.invoke({"query": "c"}, config=cfg)
        with pytest.raises(agentmeter.BudgetExceeded, match="search"):
            asyncio.run(asyncio.wait_for(search.ainvoke({"query": "d"}, config=cfg), 10))
    assert RAN == ["search", "search"]
    assert scope.usage.tool_calls == 2
    assert lc_tracker.snapshot().by_tool["search"].calls == 2


@pytest.mark.parametrize("mode", ["run_handler", "instrument"])
def test_limit_is_per_tool_name(mode: str, lc_tracker: agentmeter.Tracker) -> None:
    cfg = _cfg(mode, lc_tracker)
    with lc_tracker.meter("run", budget=agentmeter.Budget(tool_limits={"search": 0})):
        with pytest.raises(agentmeter.BudgetExceeded):
            search.invoke({"query": "a"}, config=cfg)
        asyncio.run(asyncio.wait_for(asearch.ainvoke({"query": "b"}, config=cfg), 10))
    assert RAN == ["asearch"]


@pytest.mark.parametrize("mode", ["run_handler", "instrument"])
def test_priced_tool_reserves_its_cost_before_it_runs(
    mode: str, lc_tracker: agentmeter.Tracker
) -> None:
    lc_tracker.set_tool_price("search", Decimal("0.01"))
    cfg = _cfg(mode, lc_tracker)
    with lc_tracker.meter("run", budget=agentmeter.Budget(max_cost_usd="0.025")) as scope:
        search.invoke({"query": "a"}, config=cfg)
        search.invoke({"query": "b"}, config=cfg)
        with pytest.raises(agentmeter.BudgetExceeded, match="max_cost_usd"):
            search.invoke({"query": "c"}, config=cfg)  # 0.03 > 0.025
    assert RAN == ["search", "search"]
    assert scope.usage.cost_usd == Decimal("0.02")
    assert lc_tracker.snapshot().by_tool["search"].cost_usd == Decimal("0.02")


@pytest.mark.parametrize("mode", ["run_handler", "instrument"])
def test_priced_tool_in_a_langgraph_agent(mode: str, lc_tracker: agentmeter.Tracker) -> None:
    """The model's calls are unpriced here: the budget is spent by the tool alone."""
    from langgraph.prebuilt import create_react_agent

    lc_tracker.set_tool_price("search", Decimal("0.05"))
    model = UsageChat(tool_script=("search", "search"))
    agent = create_react_agent(model, [search])
    cfg = _cfg(mode, lc_tracker)
    with (
        pytest.raises(agentmeter.BudgetExceeded, match="max_cost_usd"),
        lc_tracker.meter("run", budget=agentmeter.Budget(max_cost_usd="0.05")),
    ):
        agent.invoke({"messages": [("user", "search twice")]}, config=cfg)
    assert RAN == ["search"]  # the second call was refused before its body
    assert lc_tracker.snapshot().totals.tool_calls == 1


def test_per_tool_limit_in_create_agent(lc_tracker: agentmeter.Tracker) -> None:
    from langchain.agents import create_agent

    model = UsageChat(tool_script=("search", "search", "search"))
    agent = create_agent(model, [search])
    cfg = _cfg("run_handler", lc_tracker)
    with (
        pytest.raises(agentmeter.BudgetExceeded, match="search"),
        lc_tracker.meter("run", budget=agentmeter.Budget(tool_limits={"search": 2})),
    ):
        agent.invoke({"messages": [("user", "search thrice")]}, config=cfg)
    assert len(RAN) == 2


def test_session_tool_limit(lc_tracker: agentmeter.Tracker) -> None:
    lc_tracker.set_budget("s1", agentmeter.Budget(tool_limits={"search": 1}))
    cfg = {**_cfg("run_handler", lc_tracker), "metadata": {"session_id": "s1"}}
    search.invoke({"query": "a"}, config=cfg)
    with pytest.raises(agentmeter.BudgetExceeded):
        search.invoke({"query": "b"}, config=cfg)
    search.invoke({"query": "c"})  # another session (none): not limited
    assert RAN == ["search", "search"]
    assert lc_tracker.session("s1").usage.tool_calls == 1


def test_metered_tool_seen_by_the_handler_is_reserved_once(
    lc_tracker: agentmeter.Tracker,
) -> None:
    lc_tracker.set_tool_price("lookup", Decimal("0.01"))

    @tool
    @lc_tracker.metered_tool(name="lookup")
    def lookup(query: str) -> str:
        """Looks something up (also metered by the decorator)."""
        RAN.append("lookup")
        return "found"

    cfg = _cfg("run_handler", lc_tracker)
    budget = agentmeter.Budget(tool_limits={"lookup": 1}, max_cost_usd="0.015")
    with lc_tracker.meter("run", budget=budget) as scope:
        lookup.invoke({"query": "a"}, config=cfg)  # one call: the handler's and the decorator's
        with pytest.raises(agentmeter.BudgetExceeded):
            lookup.invoke({"query": "b"}, config=cfg)
    assert RAN == ["lookup"]
    assert scope.usage.tool_calls == 1 and scope.usage.cost_usd == Decimal("0.01")
