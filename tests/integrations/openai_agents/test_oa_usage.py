"""Usage of every model call, side by side with the SDK's own counters and the transport.

Each run: the model asks for a tool, the tool runs, the model answers -- two requests,
over the SDK's real ``OpenAIChatCompletionsModel`` and ``OpenAIResponsesModel``, in
``Runner.run``, ``run_sync`` (in a thread: it needs a loop of its own) and
``run_streamed``, metered by per-run hooks or by ``instrument()``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import agentmeter_openai_agents as amo
import pytest
from agents import Agent, ModelSettings, Runner, function_tool
from conftest import make_model
from oa_fakes import FakeOpenAI

import agentmeter

pytestmark = [
    pytest.mark.filterwarnings("ignore::agentmeter.UnpricedModelWarning"),
    pytest.mark.timeout(60),
]

CALLS: list[str] = []


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    CALLS.append(city)
    return f"sunny in {city}"


async def run_agent(agent: Agent[Any], mode: str, text: str, **kw: Any) -> Any:
    if mode == "run":
        return await Runner.run(agent, text, **kw)
    if mode == "run_sync":
        return await asyncio.to_thread(Runner.run_sync, agent, text, **kw)
    result = Runner.run_streamed(agent, text, **kw)
    async for _ in result.stream_events():
        pass
    return result


def sdk_usage(result: Any) -> tuple[int, int, int, int, int]:
    u = result.context_wrapper.usage
    return (
        u.requests,
        u.input_tokens,
        u.output_tokens,
        u.input_tokens_details.cached_tokens,
        u.output_tokens_details.reasoning_tokens,
    )


def meter_usage(u: Any) -> tuple[int, int, int, int, int]:
    return (u.llm_calls, u.input_tokens, u.output_tokens, u.cache_read_tokens, u.reasoning_tokens)


def served(fake: FakeOpenAI) -> tuple[int, int, int, int, int]:
    s = fake.served
    return (
        len(s),
        sum(x.input_tokens for x in s),
        sum(x.output_tokens for x in s),
        sum(x.cached_tokens for x in s),
        sum(x.reasoning_tokens for x in s),
    )


@pytest.mark.parametrize("mode", ["run", "run_sync", "streamed"])
@pytest.mark.parametrize("form", ["hooks", "instrument"])
async def test_usage_equals_the_sdk_and_the_transport(
    fake: FakeOpenAI, api: str, mode: str, form: str, oa_tracker: agentmeter.Tracker
) -> None:
    settings = ModelSettings(include_usage=True)  # our base_url is not api.openai.com
    agent = Agent(
        name="weather", model=make_model(fake, api), tools=[get_weather], model_settings=settings
    )
    kw: dict[str, Any] = {}
    if form == "hooks":
        kw["hooks"] = amo.AgentMeterRunHooks(oa_tracker, session_id="s1")
    else:
        amo.instrument(oa_tracker, session_id="s1")
    CALLS.clear()
    result = await run_agent(agent, mode, "weather in Paris? n=3", **kw)

    assert CALLS == ["Paris"]
    snap = oa_tracker.snapshot()
    assert sdk_usage(result) == served(fake) == meter_usage(snap.totals)
    assert served(fake) == (2, 3 * 2 * 2006, 3 * 2 * 300, 3 * 2 * 1920, 3 * 2 * 64)
    assert snap.totals.estimated_calls == 0
    assert snap.by_agent["weather"].llm_calls == 2
    assert snap.by_session["s1"].total_tokens == snap.totals.total_tokens
    model = "gpt-4o-mini" if api == "chat" else "o1-2024-12-17"
    assert set(snap.by_model) == {model}
    assert snap.totals.cost_usd is not None and snap.totals.cost_usd > 0  # priced, as OpenAI's
    tools = oa_tracker.tool_stats()
    assert tools["get_weather"].calls == 1 and tools["get_weather"].failed == 0


async def test_a_chat_stream_without_usage_is_estimated_not_zero(
    fake: FakeOpenAI, oa_tracker: agentmeter.Tracker
) -> None:
    """The SDK asks a non-OpenAI base_url for no stream usage: its counters say 0 tokens.
    agentmeter records an estimate, flagged, and says how to get the real numbers."""
    from agentmeter_openai_agents import hooks as hooks_module

    hooks_module._warned.clear()  # warned once per model per process: start afresh
    agent = Agent(name="weather", model=make_model(fake, "chat"), tools=[get_weather])
    hooks = amo.AgentMeterRunHooks(oa_tracker)
    with pytest.warns(amo.UnreportedUsageWarning, match="include_usage=True"):
        result = await run_agent(agent, "streamed", "weather? n=1", hooks=hooks)
    assert [s.with_usage for s in fake.served] == [False, False]
    assert sdk_usage(result)[1:] == (0, 0, 0, 0)  # the SDK's own counters miss it all
    totals = oa_tracker.snapshot().totals
    assert totals.llm_calls == 2 and totals.estimated_calls == 2
    assert totals.input_tokens > 0 and totals.output_tokens > 0


async def test_a_streamed_run_counts_each_call_once(
    fake: FakeOpenAI, api: str, oa_tracker: agentmeter.Tracker
) -> None:
    """Hooks and instrument() together, and a second consumer of the events: once."""
    amo.instrument(oa_tracker)
    agent = Agent(
        name="weather",
        model=make_model(fake, api),
        tools=[get_weather],
        model_settings=ModelSettings(include_usage=True),
    )
    result = Runner.run_streamed(agent, "n=2", hooks=amo.AgentMeterRunHooks(oa_tracker))
    events = [e async for e in result.stream_events()]
    assert events
    assert meter_usage(oa_tracker.snapshot().totals) == served(fake) == sdk_usage(result)
    assert oa_tracker.tool_stats()["get_weather"].calls == 1
