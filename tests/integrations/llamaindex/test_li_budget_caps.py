"""Hard caps through LlamaIndex: the LLM's ``max_tokens`` reaches the reservation.

llama-index's real ``OpenAI`` client over an httpx mock transport that answers
every request with the worst case it allowed: a prompt of exactly the size
agentmeter estimates and ``max_tokens`` of output. With the limit known a cost or
token cap is never exceeded (direct calls, async, streams, a query engine's
prompt); without one -- the contrast that shows the test can fail -- the last
call overshoots by its output, the documented bound.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import agentmeter_llamaindex as ami
import pytest
from agentmeter_llamaindex._common import count_messages, output_limit
from li_fakes import FakeOpenAI
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.llms.mock import MockLLM
from llama_index.llms.openai import OpenAI

import agentmeter

pytestmark = [
    pytest.mark.filterwarnings("ignore::agentmeter.UnpricedModelWarning"),
    pytest.mark.timeout(60),
]

MSGS = [ChatMessage(role="user", content="Summarise the quarterly report in three bullets.")]
MAX_OUT = 300


def _server() -> FakeOpenAI:
    est = count_messages(MSGS, "gpt-4o-mini")
    return FakeOpenAI(prompt_tokens=est, cached_tokens=0, completion_tokens=MAX_OUT)


def _llm(server: FakeOpenAI, **kw: Any) -> OpenAI:
    return OpenAI(
        model="gpt-4o-mini",
        api_key="sk-test",
        max_retries=0,
        http_client=server.client(),
        async_http_client=server.async_client(),
        **kw,
    )


def _per_call_cost(**kw: Any) -> Decimal:
    t = agentmeter.Tracker()
    inst = ami.instrument(t)
    _llm(_server(), **kw).chat(MSGS)
    ami.uninstrument()
    cost = t.snapshot().totals.cost_usd
    assert inst.errors == [] and cost is not None and cost > 0
    return cost


def _spend(tracker: agentmeter.Tracker, llm: OpenAI, budget: agentmeter.Budget) -> int:
    made = 0
    with tracker.meter("job", budget=budget):
        for _ in range(10):
            try:
                llm.chat(MSGS)
            except agentmeter.BudgetExceeded:
                break
            made += 1
    return made


def test_cost_cap_with_max_tokens_is_never_exceeded(li_tracker: agentmeter.Tracker) -> None:
    cap = _per_call_cost(max_tokens=MAX_OUT) * Decimal("2.5")
    server = _server()
    llm = _llm(server, max_tokens=MAX_OUT)
    ami.instrument(li_tracker)
    assert _spend(li_tracker, llm, agentmeter.Budget(max_cost_usd=cap)) == 2
    totals = li_tracker.snapshot().totals
    assert totals.cost_usd is not None and totals.cost_usd <= cap
    assert len(server.requests) == 2 and server.requests[0]["body"]["max_tokens"] == MAX_OUT


def test_without_an_output_limit_the_last_call_overshoots(li_tracker: agentmeter.Tracker) -> None:
    per_call = _per_call_cost()
    cap = per_call * Decimal("2.5")
    llm = _llm(_server())
    ami.instrument(li_tracker)
    assert _spend(li_tracker, llm, agentmeter.Budget(max_cost_usd=cap)) == 3
    cost = li_tracker.snapshot().totals.cost_usd
    assert cost is not None and cap < cost <= cap + per_call


def test_token_cap_from_additional_kwargs(li_tracker: agentmeter.Tracker) -> None:
    est = count_messages(MSGS, "gpt-4o-mini")
    server = _server()
    llm = _llm(server, additional_kwargs={"max_completion_tokens": MAX_OUT})
    ami.instrument(li_tracker)
    cap = int((est + MAX_OUT) * 2.5)
    with li_tracker.meter("job", budget=agentmeter.Budget(max_tokens=cap)) as scope:
        llm.chat(MSGS)
        llm.chat(MSGS)
        with pytest.raises(agentmeter.BudgetExceeded, match="max_tokens"):
            llm.chat(MSGS)
    assert scope.usage.total_tokens == 2 * (est + MAX_OUT) <= cap
    assert server.requests[0]["body"]["max_completion_tokens"] == MAX_OUT


def test_async_stream_and_concurrent_calls_stay_under_the_cap(
    li_tracker: agentmeter.Tracker,
) -> None:
    cap = _per_call_cost(max_tokens=MAX_OUT) * Decimal("3.5")
    server = _server()
    llm = _llm(server, max_tokens=MAX_OUT)
    ami.instrument(li_tracker, stream_usage=True)

    async def main() -> list[Any]:
        async with li_tracker.meter("job", budget=agentmeter.Budget(max_cost_usd=cap)):
            async for _ in await llm.astream_chat(MSGS):
                pass
            return await asyncio.wait_for(
                asyncio.gather(*(llm.achat(MSGS) for _ in range(6)), return_exceptions=True), 30
            )

    results = asyncio.run(main())
    assert sum(isinstance(r, agentmeter.BudgetExceeded) for r in results) == 4
    totals = li_tracker.snapshot().totals
    assert totals.llm_calls == 3 and len(server.requests) == 3
    assert totals.cost_usd is not None and totals.cost_usd <= cap


def test_max_output_tokens_budget_refuses_up_front(li_tracker: agentmeter.Tracker) -> None:
    server = _server()
    llm = _llm(server, max_tokens=MAX_OUT)
    ami.instrument(li_tracker)
    with (
        li_tracker.meter("job", budget=agentmeter.Budget(max_output_tokens=MAX_OUT - 1)),
        pytest.raises(agentmeter.BudgetExceeded, match="max_output_tokens"),
    ):
        llm.chat(MSGS)  # could write MAX_OUT tokens: refused before it is sent
    assert server.requests == []


def test_output_limit_reader() -> None:
    assert output_limit(OpenAI(model="gpt-4o-mini", api_key="x", max_tokens=42)) == 42
    assert output_limit(OpenAI(model="gpt-4o-mini", api_key="x")) is None
    both = OpenAI(
        model="gpt-4o-mini", api_key="x", max_tokens=10, additional_kwargs={"max_tokens": 20}
    )
    assert output_limit(both) == 20  # the larger: the worst case is never understated
    assert output_limit(MockLLM()) is None
    assert output_limit(MockLLM(max_tokens=7)) == 7  # MockLLM does honour its max_tokens
    assert output_limit(object()) is None
