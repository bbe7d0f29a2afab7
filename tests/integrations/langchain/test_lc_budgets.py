"""Budgets stop the LangChain call that would overspend, before it reaches the model."""

from __future__ import annotations

import asyncio

import pytest
from _lc_fakes import UsageChat, chat_usage
from agentmeter_langchain import AgentMeterCallbackHandler
from langchain_core.tools import tool

import agentmeter

PER_CALL = chat_usage(1)["input_tokens"] + chat_usage(1)["output_tokens"]


def test_scope_budget_blocks_the_call_sync(lc_tracker: agentmeter.Tracker) -> None:
    model = UsageChat()
    handler = AgentMeterCallbackHandler(lc_tracker)
    cfg = {"callbacks": [handler]}
    with (
        pytest.raises(agentmeter.BudgetExceeded, match="max_llm_calls"),
        lc_tracker.meter("turn", budget=agentmeter.Budget(max_llm_calls=2)),
    ):
        for _ in range(10):
            model.invoke("hi", config=cfg)
    assert model.requests == 2
    assert lc_tracker.snapshot().totals.llm_calls == 2
    assert handler._runs == {}


async def test_scope_budget_blocks_the_call_async(lc_tracker: agentmeter.Tracker) -> None:
    model = UsageChat()
    handler = AgentMeterCallbackHandler(lc_tracker)
    cfg = {"callbacks": [handler]}
    with pytest.raises(agentmeter.BudgetExceeded, match="max_tokens"):
        async with lc_tracker.meter("turn", budget=agentmeter.Budget(max_tokens=2 * PER_CALL)):
            for _ in range(10):
                await asyncio.wait_for(model.ainvoke("hi", config=cfg), 10)
    assert model.requests == 2


def test_stream_is_blocked_before_it_starts(lc_tracker: agentmeter.Tracker) -> None:
    model = UsageChat()
    handler = AgentMeterCallbackHandler(lc_tracker)
    lc_tracker.set_budget("s", agentmeter.Budget(max_llm_calls=0))
    with pytest.raises(agentmeter.BudgetExceeded):
        list(model.stream("hi", config={"callbacks": [handler], "metadata": {"session_id": "s"}}))
    assert model.requests == 0


async def test_concurrent_calls_cannot_jointly_overshoot(lc_tracker: agentmeter.Tracker) -> None:
    model = UsageChat()
    handler = AgentMeterCallbackHandler(lc_tracker)
    lc_tracker.set_budget("shared", agentmeter.Budget(max_llm_calls=3))
    cfg = {"callbacks": [handler], "metadata": {"session_id": "shared"}}
    results = await asyncio.wait_for(
        asyncio.gather(
            *(model.ainvoke("hi", config=cfg) for _ in range(8)), return_exceptions=True
        ),
        20,
    )
    refused = [r for r in results if isinstance(r, agentmeter.BudgetExceeded)]
    assert len(refused) == 5 and model.requests == 3
    assert lc_tracker.session("shared").usage.llm_calls == 3


def test_default_session_budget_from_thread_id(lc_tracker: agentmeter.Tracker) -> None:
    lc_tracker.configure(default_session_budget=agentmeter.Budget(max_llm_calls=1))
    model = UsageChat()
    handler = AgentMeterCallbackHandler(lc_tracker)
    for sid in ("t1", "t2"):
        # LangGraph puts the thread_id into the run metadata (plain LangChain does not)
        cfg = {"callbacks": [handler], "metadata": {"thread_id": sid}}
        model.invoke("hi", config=cfg)
        with pytest.raises(agentmeter.BudgetExceeded):
            model.invoke("hi", config=cfg)
    assert model.requests == 2


def test_enforce_budgets_false_only_meters(lc_tracker: agentmeter.Tracker) -> None:
    model = UsageChat()
    handler = AgentMeterCallbackHandler(lc_tracker, enforce_budgets=False)
    with lc_tracker.meter("turn", budget=agentmeter.Budget(max_llm_calls=1)) as scope:
        model.invoke("a", config={"callbacks": [handler]})
        model.invoke("b", config={"callbacks": [handler]})
    assert model.requests == 2 and scope.usage.llm_calls == 2


def test_failed_call_gives_its_reservation_back(lc_tracker: agentmeter.Tracker) -> None:
    handler = AgentMeterCallbackHandler(lc_tracker)
    failing = UsageChat(fail_with="down")
    lc_tracker.set_budget("r", agentmeter.Budget(max_tokens=PER_CALL + 5))
    cfg = {"callbacks": [handler], "metadata": {"session_id": "r"}}
    for _ in range(5):
        with pytest.raises(RuntimeError):
            failing.invoke("hi", config=cfg)
    status = lc_tracker.budget_status("r")
    assert status is not None and status.reserved["max_tokens"] == 0
    UsageChat().invoke("hi", config=cfg)  # the failures did not eat the budget


def test_metered_tool_called_by_langchain_counts_once(lc_tracker: agentmeter.Tracker) -> None:
    inner = UsageChat(model_name="inner-model")

    @tool
    @lc_tracker.metered_tool(category="db")
    def query_db(sql: str) -> str:
        """Run a query (and ask an LLM about it)."""
        return str(inner.invoke(sql).content)

    handler = AgentMeterCallbackHandler(lc_tracker)
    with lc_tracker.meter("req", session_id="tool-s"):
        query_db.invoke({"sql": "select 1"}, config={"callbacks": [handler]})
        query_db.invoke({"sql": "select 2"}, config={"callbacks": [handler]})
    query_db.invoke({"sql": "select 3"})  # no handler: the decorator alone counts it
    stats = lc_tracker.tool_stats()["query_db"]
    assert stats.calls == 3 and stats.ok == 3 and stats.category == "db"
    assert stats.llm_calls == 2  # the third LLM call had no handler to meter it
    assert lc_tracker.session("tool-s").tools["query_db"].calls == 2


def test_tool_seen_by_two_handlers_counts_once_and_scopes_unwind(
    lc_tracker: agentmeter.Tracker,
) -> None:
    from agentmeter_langchain import instrument

    @tool
    def ping(x: str) -> str:
        """Ping."""
        scope = lc_tracker.current_scope()
        assert scope is not None and scope.tool == "ping" and scope.session_id == "two"
        return "pong"

    instrument(lc_tracker)
    explicit = AgentMeterCallbackHandler(lc_tracker)
    cfg = {"callbacks": [explicit], "metadata": {"session_id": "two"}}
    for _ in range(3):
        ping.invoke({"x": "a"}, config=cfg)
    assert lc_tracker.current_scope() is None  # nothing left on the scope stack
    assert lc_tracker.session("two").tools["ping"].calls == 3


def test_two_handlers_on_one_tracker_book_the_budget_once() -> None:
    """instrument() plus an explicit handler both see each run: one reservation."""
    from agentmeter_langchain import AgentMeterCallbackHandler, instrument, uninstrument

    t = agentmeter.Tracker()
    instrument(t)
    try:
        handler = AgentMeterCallbackHandler(t)
        model = UsageChat()
        with t.meter("turn", budget=agentmeter.Budget(max_llm_calls=1)) as scope:
            model.invoke("hi", config={"callbacks": [handler]})
            with pytest.raises(agentmeter.BudgetExceeded):
                model.invoke("again", config={"callbacks": [handler]})
        assert model.requests == 1 and scope.usage.llm_calls == 1
    finally:
        uninstrument()


def test_empty_session_metadata_means_no_session() -> None:
    from agentmeter_langchain import AgentMeterCallbackHandler

    t = agentmeter.Tracker()
    handler = AgentMeterCallbackHandler(t)
    UsageChat().invoke("hi", config={"callbacks": [handler], "metadata": {"session_id": ""}})
    assert t.snapshot().totals.llm_calls == 1 and t.sessions() == []
