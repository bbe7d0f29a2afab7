"""Budgets stop a request before it reaches the model (pydantic-ai's own UsageLimits check
after the response was paid for), and a tool call before the tool runs."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from agentmeter_pydantic_ai import AgentMeter
from pa_fakes import FakeOpenAI, chat_body, chat_stream, recorded, tool_call_body, usage
from pydantic_ai import Agent
from pydantic_ai.exceptions import UsageLimitExceeded
from pydantic_ai.usage import UsageLimits

import agentmeter

pytestmark = pytest.mark.timeout(60)


def _looping_agent(fake: FakeOpenAI, tracker: agentmeter.Tracker, **meter: object) -> Agent:
    """An agent whose model asks for a tool twice, then answers: three requests."""
    fake.queue_json(tool_call_body("step", {"n": 1}, usage(100, 10)))
    fake.queue_json(tool_call_body("step", {"n": 22}, usage(150, 10)))
    fake.queue_json(chat_body("done", usage(200, 5)))
    agent = Agent(
        fake.chat_model(), name="looper", capabilities=[AgentMeter(tracker=tracker, **meter)]
    )
    ran: list[int] = []

    @agent.tool_plain
    def step(n: int) -> str:
        ran.append(n)
        return f"step {n} done"

    agent.ran = ran  # type: ignore[attr-defined]
    return agent


async def test_budget_stops_the_third_request_before_the_transport(
    pa_tracker: agentmeter.Tracker, fake_openai: FakeOpenAI
) -> None:
    agent = _looping_agent(fake_openai, pa_tracker)
    with pa_tracker.meter("job", session_id="s-b", budget=agentmeter.Budget(max_llm_calls=2)):
        with pytest.raises(agentmeter.BudgetExceeded):
            await agent.run("loop")
    assert len(fake_openai.requests) == 2  # the third request was never sent
    u = pa_tracker.session("s-b").usage
    assert (u.llm_calls, u.input_tokens, u.output_tokens) == (2, 250, 20)
    assert u.tool_calls == 2 and agent.ran == [1, 22]  # type: ignore[attr-defined]


async def test_pydantic_ai_usage_limits_check_after_paying(
    pa_tracker: agentmeter.Tracker, fake_openai: FakeOpenAI
) -> None:
    """The contrast: UsageLimits(input_tokens_limit) raises only once the response that
    crossed it came back -- that request was sent and billed."""
    agent = _looping_agent(fake_openai, pa_tracker, session_id="s-ul")
    with pytest.raises(UsageLimitExceeded):
        await agent.run("loop", usage_limits=UsageLimits(input_tokens_limit=200))
    assert len(fake_openai.requests) == 2  # the second request crossed 200 and was paid for
    assert pa_tracker.session("s-ul").usage.input_tokens == 250


def test_budget_exceeded_out_of_run_sync(
    pa_tracker: agentmeter.Tracker, fake_openai: FakeOpenAI
) -> None:
    agent = _looping_agent(fake_openai, pa_tracker, session_id="s-sync")
    pa_tracker.set_budget("s-sync", agentmeter.Budget(max_llm_calls=1))
    with pytest.raises(agentmeter.BudgetExceeded):
        agent.run_sync("loop")
    assert len(fake_openai.requests) == 1
    assert pa_tracker.session("s-sync").usage.llm_calls == 1


async def test_budget_exceeded_out_of_run_stream(
    pa_tracker: agentmeter.Tracker, fake_openai: FakeOpenAI
) -> None:
    final = recorded("openai_chat_stream_final_usage_chunk")
    fake_openai.queue_sse(chat_stream("streamed", final))
    agent = Agent(fake_openai.chat_model(), capabilities=[AgentMeter(tracker=pa_tracker)])
    budget = agentmeter.Budget(max_tokens=1600)
    with pa_tracker.meter("job", session_id="s-rs", budget=budget):
        async with agent.run_stream("first") as run:
            await run.get_output()
        assert pa_tracker.session("s-rs").usage.total_tokens == 1500
        with pytest.raises(agentmeter.BudgetExceeded):
            async with agent.run_stream("second, too long for what is left " * 40) as run:
                await run.get_output()
    assert len(fake_openai.requests) == 1


@dataclass
class Deps:
    session_id: str
    customer_id: str


async def test_session_budget_from_deps(
    pa_tracker: agentmeter.Tracker, fake_openai: FakeOpenAI
) -> None:
    fake_openai.queue_json(chat_body("one", usage(40, 2)), times=3)
    agent = Agent(
        fake_openai.chat_model(), deps_type=Deps, capabilities=[AgentMeter(tracker=pa_tracker)]
    )
    pa_tracker.set_budget("s-deps", agentmeter.Budget(max_tokens=90))
    deps = Deps("s-deps", "acme")
    await agent.run("a", deps=deps)
    await agent.run("b", deps=deps)
    with pytest.raises(agentmeter.BudgetExceeded):
        await agent.run("c", deps=deps)
    assert len(fake_openai.requests) == 2
    assert pa_tracker.session("s-deps").usage.total_tokens == 84
    assert pa_tracker.customer("acme").usage.llm_calls == 2


async def test_tool_budget_stops_the_tool_before_it_runs(
    pa_tracker: agentmeter.Tracker, fake_openai: FakeOpenAI
) -> None:
    agent = _looping_agent(fake_openai, pa_tracker)
    with pa_tracker.meter("job", session_id="s-tb", budget=agentmeter.Budget(max_tool_calls=1)):
        with pytest.raises(agentmeter.BudgetExceeded):
            await agent.run("loop")
    assert agent.ran == [1]  # type: ignore[attr-defined]  # the second call never ran
    u = pa_tracker.session("s-tb").usage
    assert u.tool_calls == 1 and u.llm_calls == 2
    assert len(fake_openai.requests) == 2


async def test_customer_budget_across_sessions(
    pa_tracker: agentmeter.Tracker, fake_openai: FakeOpenAI
) -> None:
    fake_openai.queue_json(chat_body("one", usage(40, 2)), times=3)
    agent = Agent(
        fake_openai.chat_model(), deps_type=Deps, capabilities=[AgentMeter(tracker=pa_tracker)]
    )
    pa_tracker.set_budget(customer_id="acme", budget=agentmeter.Budget(max_llm_calls=2))
    await agent.run("a", deps=Deps("s-1", "acme"))
    await agent.run("b", deps=Deps("s-2", "acme"))
    with pytest.raises(agentmeter.BudgetExceeded):
        await agent.run("c", deps=Deps("s-3", "acme"))
    await agent.run("d", deps=Deps("s-4", "other"))  # another customer is not capped
    assert len(fake_openai.requests) == 3
    assert pa_tracker.customer("acme").usage.llm_calls == 2


async def test_budget_exceeded_out_of_iter(
    pa_tracker: agentmeter.Tracker, fake_openai: FakeOpenAI
) -> None:
    agent = _looping_agent(fake_openai, pa_tracker)
    with pa_tracker.meter("job", session_id="s-it", budget=agentmeter.Budget(max_llm_calls=1)):
        with pytest.raises(agentmeter.BudgetExceeded):
            async with agent.iter("loop") as agent_run:
                async for _ in agent_run:
                    pass
    assert len(fake_openai.requests) == 1
    assert agent.ran == [1]  # type: ignore[attr-defined]
