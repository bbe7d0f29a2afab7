"""Budgets through the legacy CallbackManager handler: the refused call is never made."""

from __future__ import annotations

import asyncio

import agentmeter_llamaindex as ami
import pytest
from li_fakes import FakeOpenAI
from llama_index.core import Settings
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.callbacks import CallbackManager
from llama_index.core.llms.mock import MockLLM
from llama_index.embeddings.openai import OpenAIEmbedding
from llama_index.llms.openai import OpenAI

import agentmeter

pytestmark = [
    pytest.mark.filterwarnings("ignore::agentmeter.UnpricedModelWarning"),
    pytest.mark.filterwarnings("ignore::agentmeter_llamaindex.StreamUsageWarning"),
    pytest.mark.timeout(60),
]

MSGS = [ChatMessage(role="user", content="Say hello")]


def guarded_llm(server: FakeOpenAI, handler: ami.AgentMeterCallbackHandler, **kw: object) -> OpenAI:
    return OpenAI(
        model="gpt-4o-mini",
        api_key="sk-test",
        max_retries=0,
        http_client=server.client(),
        async_http_client=server.async_client(),
        callback_manager=CallbackManager([handler]),
        **kw,  # type: ignore[arg-type]
    )


def test_the_call_that_would_exceed_is_never_made(
    li_tracker: agentmeter.Tracker, openai_server: FakeOpenAI
) -> None:
    handler = ami.AgentMeterCallbackHandler(li_tracker)
    inst = ami.instrumentor()
    assert inst is not None and inst.tracker is li_tracker  # the handler instruments
    llm = guarded_llm(openai_server, handler)
    budget = agentmeter.Budget(max_tokens=1225)  # the 1st call (1220) fits, not a 2nd
    with li_tracker.meter("job", budget=budget) as scope:
        llm.chat(MSGS)  # 1220 tokens: fits
        assert len(openai_server.requests) == 1
        with pytest.raises(agentmeter.BudgetExceeded) as info:
            llm.chat(MSGS)  # 1220 used + this prompt's estimate: refused
        assert info.value.limit_name == "max_tokens"
        with pytest.raises(agentmeter.BudgetExceeded):
            for _ in llm.stream_chat(MSGS):
                pass
        with pytest.raises(agentmeter.BudgetExceeded):
            asyncio.run(llm.achat(MSGS))
    assert len(openai_server.requests) == 1  # counted at the transport
    assert scope.usage.llm_calls == 1 and scope.usage.total_tokens == 1220
    status = scope.budget_status
    assert status is not None
    assert inst.errors == []


def test_session_budget_with_settings_callback_manager(
    li_tracker: agentmeter.Tracker, openai_server: FakeOpenAI
) -> None:
    Settings.callback_manager = CallbackManager([ami.AgentMeterCallbackHandler(li_tracker)])
    llm = OpenAI(
        model="gpt-4o-mini", api_key="sk-test", max_retries=0, http_client=openai_server.client()
    )  # built after: picks the handler up
    li_tracker.set_budget("tenant-1", agentmeter.Budget(max_llm_calls=2))
    with li_tracker.meter("turn", session_id="tenant-1"):
        llm.chat(MSGS)
        llm.chat(MSGS)
        with pytest.raises(agentmeter.BudgetExceeded):
            llm.chat(MSGS)
    assert len(openai_server.requests) == 2
    assert li_tracker.session("tenant-1").usage.llm_calls == 2


def test_chat_over_complete_is_checked_once(li_tracker: agentmeter.Tracker) -> None:
    handler = ami.AgentMeterCallbackHandler(li_tracker)
    llm = MockLLM(callback_manager=CallbackManager([handler]))
    with li_tracker.meter("job", budget=agentmeter.Budget(max_llm_calls=1)) as scope:
        llm.chat(MSGS)  # chat -> complete: one call, one reservation
        with pytest.raises(agentmeter.BudgetExceeded):
            llm.chat(MSGS)
    assert scope.usage.llm_calls == 1
    assert li_tracker.snapshot().totals.llm_calls == 1


def test_reservations_are_settled_or_released(li_tracker: agentmeter.Tracker) -> None:
    handler = ami.AgentMeterCallbackHandler(li_tracker)
    llm = MockLLM(callback_manager=CallbackManager([handler]))
    budget = agentmeter.Budget(max_tokens=10_000)
    with li_tracker.meter("job", budget=budget) as scope:
        for _ in range(5):
            llm.chat(MSGS)
            llm.complete("plain")
        status = scope.budget_status
    assert status is not None
    assert scope.usage.llm_calls == 10
    assert set(status.reserved.values()) == {0}  # nothing left booked by calls that ended
    assert not handler._reserved


def test_embedding_refused_when_budget_spent(
    li_tracker: agentmeter.Tracker, openai_server: FakeOpenAI
) -> None:
    handler = ami.AgentMeterCallbackHandler(li_tracker)
    embed = OpenAIEmbedding(
        model="text-embedding-3-small",
        api_key="sk-test",
        max_retries=0,
        http_client=openai_server.client(),
        callback_manager=CallbackManager([handler]),
    )
    with li_tracker.meter("job", budget=agentmeter.Budget(max_tokens=5)):
        embed.get_query_embedding("a query that is longer than five tokens")
        with pytest.raises(agentmeter.BudgetExceeded):
            embed.get_query_embedding("again")
    assert len(openai_server.requests) == 1


def test_no_budget_no_tokenizing_and_nothing_blocked(
    li_tracker: agentmeter.Tracker, openai_server: FakeOpenAI
) -> None:
    handler = ami.AgentMeterCallbackHandler(li_tracker, instrument=False)
    assert ami.instrumentor() is None
    llm = guarded_llm(openai_server, handler)
    for _ in range(3):
        llm.chat(MSGS)
    assert len(openai_server.requests) == 3
    assert not handler._reserved


def test_session_from_instrument_tags_is_budgeted(li_tracker: agentmeter.Tracker) -> None:
    """The handler checks the session the call will be recorded under (tags win)."""
    from llama_index.core.instrumentation.dispatcher import instrument_tags

    handler = ami.AgentMeterCallbackHandler(li_tracker)
    llm = MockLLM(callback_manager=CallbackManager([handler]))
    li_tracker.set_budget("tagged", agentmeter.Budget(max_llm_calls=1))
    blocked = 0
    for i in range(4):
        try:
            with instrument_tags({"session_id": "tagged"}):
                llm.complete(f"hello {i}")
        except agentmeter.BudgetExceeded:
            blocked += 1
    assert blocked == 3 and li_tracker.session("tagged").usage.llm_calls == 1


def test_handler_keeps_the_users_instrumentation(li_tracker: agentmeter.Tracker) -> None:
    mine = ami.instrument(li_tracker, stream_usage=True, session_from_run_id=False)
    ami.AgentMeterCallbackHandler(li_tracker)
    assert ami.instrumentor() is mine and mine.stream_usage and not mine.session_from_run_id


def test_unread_streams_do_not_hold_reservations_forever(
    li_tracker: agentmeter.Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agentmeter_llamaindex import callback

    monkeypatch.setattr(callback, "_MAX_RESERVED", 2)
    handler = ami.AgentMeterCallbackHandler(li_tracker)
    llm = MockLLM(callback_manager=CallbackManager([handler]))
    with li_tracker.meter("job", budget=agentmeter.Budget(max_llm_calls=3)) as scope:
        for _ in range(3):
            llm.stream_complete("never read")  # their end events never fire
        assert len(handler._reserved) <= 2
        assert scope.budget_status is not None
        assert scope.budget_status.reserved["max_llm_calls"] <= 2
        llm.complete("still allowed")
