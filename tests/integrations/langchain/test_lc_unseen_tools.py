"""A tool budget the handler cannot enforce is said once, loudly (never silently unenforced).

A handler given only to a chat model's constructor (``ChatX(callbacks=[h])``)
sees that model's runs, never the agent's tool runs, so a tool budget cannot stop
those tools. The handler notices it from a model run whose parent run it never
saw start and, when a budget limits tools there, warns once
(``BudgetNotEnforcedWarning``) with the fix. A handler in the run's config, or
``instrument()``'s, sees the whole tree and never warns. Real ``create_agent`` and
LangGraph agents with a fake chat model that calls tools.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from _lc_fakes import UsageChat
from agentmeter_langchain import AgentMeterCallbackHandler, BudgetNotEnforcedWarning, instrument
from langchain_core.tools import tool

import agentmeter

pytestmark = pytest.mark.timeout(60)

RAN: list[str] = []


@tool
def search(query: str) -> str:
    """Searches the web (a paid API)."""
    RAN.append("search")
    return "result"


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    RAN.clear()
    yield
    RAN.clear()


def _create_agent(model: UsageChat) -> Any:
    from langchain.agents import create_agent

    return create_agent(model, [search])


def _react_agent(model: UsageChat) -> Any:
    from langgraph.prebuilt import create_react_agent

    return create_react_agent(model, [search])


AGENTS: dict[str, Callable[[UsageChat], Any]] = {
    "create_agent": _create_agent,
    "langgraph": _react_agent,
}


def _unenforced(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, BudgetNotEnforcedWarning)]


def _run(
    agent: Any, times: int, cfg: dict[str, Any] | None = None
) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")  # a second warning would show, not be deduplicated
        for _ in range(times):
            agent.invoke({"messages": [("user", "search twice")]}, config=cfg or {})
    return record


@pytest.mark.parametrize("kind", sorted(AGENTS))
def test_model_constructor_handler_warns_once_about_tool_limits(
    kind: str, lc_tracker: agentmeter.Tracker, caplog: pytest.LogCaptureFixture
) -> None:
    handler = AgentMeterCallbackHandler(lc_tracker)
    model = UsageChat(tool_script=("search", "search"), callbacks=[handler])
    agent = AGENTS[kind](model)
    with (
        caplog.at_level(logging.WARNING, logger="agentmeter.langchain"),
        lc_tracker.meter("run", budget=agentmeter.Budget(tool_limits={"search": 1})),
    ):
        record = _run(agent, 2)  # 2 runs of 2 model calls each
    messages = _unenforced(record)
    assert len(messages) == 1, messages  # once per handler, not per call or run
    assert 'config={"callbacks": [handler]}' in messages[0]
    assert "agentmeter_langchain.instrument()" in messages[0]
    assert "NOT enforced" in messages[0]
    assert sum("NOT enforced" in r.getMessage() for r in caplog.records) == 1
    # What the warning is about: the handler saw no tool run, so nothing stopped them.
    assert RAN == ["search"] * 4
    assert lc_tracker.snapshot().totals.llm_calls == 4  # the model calls are metered


@pytest.mark.parametrize(
    "setup",
    ["priced_tool_cost_budget", "tool_budget", "session_max_tool_calls"],
)
def test_every_kind_of_tool_budget_is_named(setup: str, lc_tracker: agentmeter.Tracker) -> None:
    handler = AgentMeterCallbackHandler(lc_tracker, session_id="s1")
    agent = _react_agent(UsageChat(tool_script=("search",), callbacks=[handler]))
    if setup == "priced_tool_cost_budget":
        lc_tracker.set_tool_price("search", Decimal("0.01"))
        lc_tracker.set_budget("s1", agentmeter.Budget(max_cost_usd="10"))
    elif setup == "tool_budget":
        lc_tracker.set_budget(budget=agentmeter.Budget(max_tool_calls=5), tool="search")
    else:
        lc_tracker.set_budget("s1", agentmeter.Budget(max_tool_calls=5))
    assert len(_unenforced(_run(agent, 1))) == 1


@pytest.mark.parametrize("kind", sorted(AGENTS))
@pytest.mark.parametrize("mode", ["config_callbacks", "instrument"])
def test_a_handler_that_sees_the_tree_never_warns(
    kind: str, mode: str, lc_tracker: agentmeter.Tracker
) -> None:
    agent = AGENTS[kind](UsageChat(tool_script=("search", "search")))
    if mode == "instrument":
        instrument(lc_tracker)
        cfg: dict[str, Any] = {}
    else:
        cfg = {"callbacks": [AgentMeterCallbackHandler(lc_tracker)]}
    with (
        pytest.raises(agentmeter.BudgetExceeded, match="search"),
        lc_tracker.meter("run", budget=agentmeter.Budget(tool_limits={"search": 1})),
    ):
        # The budget holds: the second tool call is refused before its body.
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            agent.invoke({"messages": [("user", "search twice")]}, config=cfg)
    assert _unenforced(record) == []
    assert RAN == ["search"]


def test_no_warning_without_a_tool_budget(lc_tracker: agentmeter.Tracker) -> None:
    """A model-only budget is enforced by a constructor handler: nothing to say."""
    handler = AgentMeterCallbackHandler(lc_tracker)
    agent = _create_agent(UsageChat(tool_script=("search",), callbacks=[handler]))
    with lc_tracker.meter("run", budget=agentmeter.Budget(max_llm_calls=10)):
        record = _run(agent, 1)
    record += _run(agent, 1)  # no budget at all
    assert _unenforced(record) == []
    # A tool budget set later is still noticed (the check is not decided too early).
    with lc_tracker.meter("run", budget=agentmeter.Budget(tool_limits={"search": 1})):
        assert len(_unenforced(_run(agent, 2))) == 1


def test_no_warning_when_budgets_are_not_enforced(lc_tracker: agentmeter.Tracker) -> None:
    handler = AgentMeterCallbackHandler(lc_tracker, enforce_budgets=False)
    agent = _create_agent(UsageChat(tool_script=("search",), callbacks=[handler]))
    with lc_tracker.meter("run", budget=agentmeter.Budget(tool_limits={"search": 0})):
        assert _unenforced(_run(agent, 1)) == []


def test_a_model_invoked_on_its_own_never_warns(lc_tracker: agentmeter.Tracker) -> None:
    """No parent run: nothing around the model that could call tools."""
    handler = AgentMeterCallbackHandler(lc_tracker)
    model = UsageChat(callbacks=[handler])
    with (
        lc_tracker.meter("run", budget=agentmeter.Budget(tool_limits={"search": 0})),
        warnings.catch_warnings(record=True) as record,
    ):
        warnings.simplefilter("always")
        model.invoke("hello")
        model.invoke("hello", config={"callbacks": [handler]})
    assert _unenforced(record) == []
    assert lc_tracker.snapshot().totals.llm_calls == 2
