"""Budgets stop the next model call or tool call BEFORE it is made.

The proof is the transport: a stopped request never reaches it. ``BudgetExceeded``
comes out of ``Runner.run``, ``run_sync`` and a streamed run's ``stream_events()``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import agentmeter_openai_agents as amo
import pytest
from agents import Agent, ModelSettings, Runner, function_tool
from conftest import make_model
from oa_fakes import FakeOpenAI
from test_oa_usage import run_agent

import agentmeter

pytestmark = [
    pytest.mark.filterwarnings("ignore::agentmeter.UnpricedModelWarning"),
    pytest.mark.timeout(60),
]

RAN: list[str] = []
USAGE = ModelSettings(include_usage=True)


@function_tool
def lookup(city: str) -> str:
    """Look a city up."""
    RAN.append(city)
    return f"{city}: 2.1M people"


def weather_agent(fake: FakeOpenAI, api: str) -> Agent[Any]:
    return Agent(
        name="planner",
        model=make_model(fake, api),
        tools=[lookup],
        model_settings=ModelSettings(include_usage=True),
    )


@pytest.mark.parametrize("mode", ["run", "run_sync", "streamed"])
async def test_a_scope_budget_stops_the_third_request(
    fake: FakeOpenAI, api: str, mode: str, oa_tracker: agentmeter.Tracker
) -> None:
    """Two requests fit in max_llm_calls=2; the third (second run) is never sent."""
    agent = weather_agent(fake, api)
    hooks = amo.AgentMeterRunHooks(oa_tracker)

    async def two_runs() -> None:
        with oa_tracker.meter("turn", budget=agentmeter.Budget(max_llm_calls=2)):
            await run_agent(agent, mode, "n=1", hooks=hooks)
            assert len(fake.requests) == 2
            await run_agent(agent, mode, "n=1", hooks=hooks)

    with pytest.raises(agentmeter.BudgetExceeded) as info:
        await two_runs()
    assert len(fake.requests) == 2  # the third request never reached the transport
    assert info.value.limit_name == "max_llm_calls"
    assert oa_tracker.snapshot().totals.llm_calls == 2


async def test_a_session_token_budget_stops_the_call_that_would_overspend(
    fake: FakeOpenAI, api: str, oa_tracker: agentmeter.Tracker
) -> None:
    """max_tokens=4000: the first call (2306) fits, the second is reserved and fits, its
    real usage overspends (4612), so the third request is stopped before it is sent."""
    amo.instrument(oa_tracker)
    oa_tracker.set_budget("s-42", agentmeter.Budget(max_tokens=4000))
    agent = weather_agent(fake, api)
    await Runner.run(agent, "n=1", context={"session_id": "s-42"})
    with pytest.raises(agentmeter.BudgetExceeded) as info:
        await Runner.run(agent, "n=1", context={"session_id": "s-42"})
    assert len(fake.requests) == 2
    assert info.value.limit_name == "max_tokens"
    assert oa_tracker.session("s-42").usage.total_tokens == 2 * (2006 + 300)


async def test_a_tool_call_budget_stops_the_tool_before_it_runs(
    fake: FakeOpenAI, oa_tracker: agentmeter.Tracker
) -> None:
    RAN.clear()
    agent = weather_agent(fake, "chat")
    hooks = amo.AgentMeterRunHooks(oa_tracker)
    with pytest.raises(agentmeter.BudgetExceeded) as info:
        with oa_tracker.meter("turn", budget=agentmeter.Budget(max_tool_calls=0)):
            await Runner.run(agent, "n=1", hooks=hooks)
    assert info.value.limit_name == "max_tool_calls"
    assert RAN == []  # the tool's body never ran
    assert len(fake.requests) == 1  # and no request followed
    snap = oa_tracker.snapshot()
    assert snap.totals.llm_calls == 1 and snap.totals.tool_calls == 0


async def test_budget_exceeded_out_of_a_streamed_run_under_instrument(
    fake: FakeOpenAI, api: str, oa_tracker: agentmeter.Tracker
) -> None:
    amo.instrument(oa_tracker)
    oa_tracker.set_budget("s-9", agentmeter.Budget(max_llm_calls=1))
    agent = weather_agent(fake, api)
    result = Runner.run_streamed(agent, "n=1", context={"session_id": "s-9"})
    with pytest.raises(agentmeter.BudgetExceeded):
        async for _ in result.stream_events():
            pass
    assert len(fake.requests) == 1
    # Nothing is left reserved: the session's budget sees exactly the one call.
    assert oa_tracker.session("s-9").usage.llm_calls == 1


async def test_concurrent_runs_never_jointly_overshoot(
    fake: FakeOpenAI, oa_tracker: agentmeter.Tracker
) -> None:
    """8 runs at once on a session allowed 5 model calls: exactly 5 requests are sent."""
    amo.instrument(oa_tracker)
    oa_tracker.set_budget("shared", agentmeter.Budget(max_llm_calls=5))
    agent = weather_agent(fake, "chat")
    results = await asyncio.gather(
        *(Runner.run(agent, "n=1", context={"session_id": "shared"}) for _ in range(8)),
        return_exceptions=True,
    )
    stopped = [r for r in results if isinstance(r, agentmeter.BudgetExceeded)]
    assert len(fake.requests) == 5
    assert oa_tracker.session("shared").usage.llm_calls == 5
    assert stopped and all(
        isinstance(r, agentmeter.BudgetExceeded) or r.final_output for r in results
    )


async def test_customer_and_agent_budgets(fake: FakeOpenAI, oa_tracker: agentmeter.Tracker) -> None:
    """A customer's budget counts across its sessions; an agent's stops that agent only."""
    amo.instrument(oa_tracker)
    oa_tracker.set_budget(budget=agentmeter.Budget(max_llm_calls=3), customer_id="acme")
    agent = weather_agent(fake, "responses")
    await Runner.run(agent, "n=1", context={"session_id": "a1", "customer_id": "acme"})
    with pytest.raises(agentmeter.BudgetExceeded):  # 3rd call of acme, in another session
        await Runner.run(agent, "n=1", context={"session_id": "a2", "customer_id": "acme"})
    assert len(fake.served) == 3
    assert oa_tracker.customer("acme").usage.llm_calls == 3

    oa_tracker.set_budget(budget=agentmeter.Budget(max_llm_calls=0), agent="specialist")
    specialist = Agent(name="specialist", model=make_model(fake, "chat"), model_settings=USAGE)
    triage = Agent(
        name="triage", model=make_model(fake, "chat"), handoffs=[specialist], model_settings=USAGE
    )
    before = len(fake.requests)
    with pytest.raises(agentmeter.BudgetExceeded) as info:
        await Runner.run(triage, "n=1", context={"session_id": "a3"})
    assert len(fake.requests) == before + 1  # triage's call was made, the specialist's not
    assert "specialist" in info.value.owner


async def test_model_resolution_as_the_sdk_resolves_it(
    fake: FakeOpenAI, oa_tracker: agentmeter.Tracker
) -> None:
    """A model name on the agent goes through the run's model provider; RunConfig.model
    overrides it: agentmeter records the model the SDK called."""
    from agents import OpenAIProvider, RunConfig

    provider = OpenAIProvider(openai_client=fake.client(), use_responses=True)
    agent = Agent(name="named", model="gpt-4o-mini", model_settings=USAGE)
    hooks = amo.AgentMeterRunHooks(oa_tracker)
    amo.instrument(oa_tracker)
    await Runner.run(agent, "x", run_config=RunConfig(model_provider=provider))
    await Runner.run(agent, "x", run_config=RunConfig(model_provider=provider, model="gpt-4.1"))
    await Runner.run(agent, "x", hooks=hooks, run_config=RunConfig(model_provider=provider))
    assert [r["body"]["model"] for r in fake.requests] == ["gpt-4o-mini", "gpt-4.1", "gpt-4o-mini"]
    by_model = oa_tracker.snapshot().by_model
    assert {m: u.llm_calls for m, u in by_model.items()} == {"gpt-4o-mini": 2, "gpt-4.1": 1}
