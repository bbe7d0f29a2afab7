"""Who spent it: the agent of every model call, hand-offs, agents used as tools, tools.

A hand-off is credited to the agent that ran (each model call to its own agent); the
LLM usage spent inside an agent used as a tool goes to the inner agent and to the
tool (its "tokens inside"), and is counted once -- as the SDK does, which shares one
``Usage`` between the outer run and the nested one.
"""

from __future__ import annotations

import agentmeter_openai_agents as amo
import pytest
from agents import Agent, ModelSettings, Runner, function_tool
from conftest import make_model
from oa_fakes import FakeOpenAI
from test_oa_usage import meter_usage, run_agent, sdk_usage, served

import agentmeter

pytestmark = [
    pytest.mark.filterwarnings("ignore::agentmeter.UnpricedModelWarning"),
    pytest.mark.timeout(60),
]

USAGE = ModelSettings(include_usage=True)


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


@function_tool
def flaky(city: str) -> str:
    """A tool that fails."""
    raise RuntimeError("the weather service is down")


@function_tool(failure_error_function=None)
def fatal(city: str) -> str:
    """A tool whose failure ends the run."""
    raise RuntimeError("fatal")


@pytest.mark.parametrize("mode", ["run", "streamed"])
async def test_a_handoff_is_credited_to_the_agent_that_ran(
    fake: FakeOpenAI, api: str, mode: str, oa_tracker: agentmeter.Tracker
) -> None:
    model = make_model(fake, api)
    specialist = Agent(name="specialist", model=model, model_settings=USAGE)
    triage = Agent(name="triage", model=model, handoffs=[specialist], model_settings=USAGE)
    result = await run_agent(
        triage, mode, "n=2", hooks=amo.AgentMeterRunHooks(oa_tracker, session_id="h")
    )
    assert result.last_agent.name == "specialist"
    snap = oa_tracker.snapshot()
    assert meter_usage(snap.totals) == sdk_usage(result) == served(fake)
    per_call = fake.served[0]
    for name in ("triage", "specialist"):
        a = snap.by_agent[name]
        assert (a.llm_calls, a.input_tokens, a.output_tokens) == (
            1,
            per_call.input_tokens,
            per_call.output_tokens,
        )
    assert oa_tracker.tool_stats() == {}  # a hand-off is not a tool call


@pytest.mark.parametrize("form", ["instrument", "as_tool_hooks"])
async def test_an_agent_as_tool_is_credited_to_the_inner_agent_and_counted_once(
    fake: FakeOpenAI, api: str, form: str, oa_tracker: agentmeter.Tracker
) -> None:
    model = make_model(fake, api)
    inner = Agent(name="researcher", model=model, model_settings=USAGE)
    hooks = amo.AgentMeterRunHooks(oa_tracker, session_id="nested")
    tool = inner.as_tool(
        "ask_researcher",
        "Ask the researcher.",
        hooks=hooks if form == "as_tool_hooks" else None,
    )
    outer = Agent(name="lead", model=model, tools=[tool], model_settings=USAGE)
    fake.args_for["ask_researcher"] = '{"input": "what about Paris? n=1"}'
    if form == "instrument":
        amo.instrument(oa_tracker)
        result = await Runner.run(outer, "n=1", run_config={"group_id": "nested"})
    else:
        result = await Runner.run(outer, "n=1", hooks=hooks)

    # lead asks the tool, the researcher answers (nested run), lead answers: 3 requests.
    assert len(fake.served) == 3
    snap = oa_tracker.snapshot()
    assert meter_usage(snap.totals) == sdk_usage(result) == served(fake)
    assert snap.by_agent["lead"].llm_calls == 2
    assert snap.by_agent["researcher"].llm_calls == 1
    stats = oa_tracker.tool_stats()["ask_researcher"]
    assert stats.calls == 1 and stats.failed == 0
    assert stats.llm_calls == 1  # the researcher's call, inside the tool
    assert stats.total_tokens == fake.served[1].input_tokens + fake.served[1].output_tokens
    assert snap.by_session["nested"].llm_calls == 3


async def test_tool_errors_and_durations(fake: FakeOpenAI, oa_tracker: agentmeter.Tracker) -> None:
    """A tool that raises: the SDK gives the model an error message and goes on; the
    call is a failure. A tool without a failure function ends the run: failed too."""
    hooks = amo.AgentMeterRunHooks(oa_tracker)
    agent = Agent(name="a", model=make_model(fake, "chat"), tools=[flaky], model_settings=USAGE)
    result = await Runner.run(agent, "n=1", hooks=hooks)
    assert result.final_output == fake.reply
    stats = oa_tracker.tool_stats()["flaky"]
    assert (stats.calls, stats.ok, stats.failed) == (1, 0, 1)
    assert stats.total_duration_ms > 0

    amo.instrument(oa_tracker)
    agent = Agent(name="b", model=make_model(fake, "chat"), tools=[fatal], model_settings=USAGE)
    with pytest.raises(Exception, match="fatal"):
        await Runner.run(agent, "n=1")
    stats = oa_tracker.tool_stats()["fatal"]
    assert (stats.calls, stats.failed) == (1, 1)


async def test_a_failed_model_call_is_recorded_failed_and_gives_its_reservation_back(
    oa_tracker: agentmeter.Tracker,
) -> None:
    broken = FakeOpenAI()
    broken.handle = lambda request: __import__("httpx").Response(  # type: ignore[method-assign]
        500, json={"error": {"message": "overloaded", "type": "server_error"}}
    )
    amo.instrument(oa_tracker)
    oa_tracker.set_budget("s", agentmeter.Budget(max_llm_calls=2))
    agent = Agent(name="a", model=make_model(broken, "responses"))
    with pytest.raises(Exception, match="overloaded"):
        await Runner.run(agent, "hi", context={"session_id": "s"})
    totals = oa_tracker.snapshot().totals
    assert totals.llm_calls == 1 and totals.failed_llm_calls == 1 and totals.total_tokens == 0
    # The reservation was settled (a failed call counts as one): had it leaked, used 1 +
    # reserved 1 would leave no room for the good call below.
    fine = FakeOpenAI()
    agent = Agent(name="a", model=make_model(fine, "responses"))
    await Runner.run(agent, "hi", context={"session_id": "s"})


async def test_per_run_hooks_settle_a_failed_call_on_request(
    oa_tracker: agentmeter.Tracker,
) -> None:
    """A failed model call fires no hook: with hooks of one's own (no instrument()), the
    call stays pending until ``hooks.settle(error)`` (or its run's context is freed)."""
    import httpx

    broken = FakeOpenAI()
    broken.handle = lambda request: httpx.Response(500, json={"error": {"message": "down"}})  # type: ignore[method-assign]
    hooks = amo.AgentMeterRunHooks(oa_tracker)
    agent = Agent(name="a", model=make_model(broken, "chat"))
    with pytest.raises(Exception, match="down") as info:
        await Runner.run(agent, "hi", hooks=hooks)
    assert oa_tracker.snapshot().totals.llm_calls == 0  # pending
    hooks.settle(info.value)
    hooks.settle(info.value)  # once only
    totals = oa_tracker.snapshot().totals
    assert (totals.llm_calls, totals.failed_llm_calls) == (1, 1)


async def test_a_cancelled_streamed_run_records_its_call_in_flight_as_abandoned(
    fake: FakeOpenAI, api: str, oa_tracker: agentmeter.Tracker
) -> None:
    import asyncio

    amo.instrument(oa_tracker)
    fake.delay = 5.0
    agent = Agent(name="slow", model=make_model(fake, api), model_settings=USAGE)
    result = Runner.run_streamed(agent, "n=1", context={"session_id": "c"})
    for _ in range(200):  # until the request is in flight
        if fake.requests:
            break
        await asyncio.sleep(0.01)
    assert fake.requests and fake.served == []
    result.cancel()
    async for _ in result.stream_events():
        pass
    for _ in range(100):
        if oa_tracker.snapshot().totals.llm_calls:
            break
        await asyncio.sleep(0.01)
    totals = oa_tracker.snapshot().totals
    # The prompt was sent: abandoned calls keep an estimate of it, flagged.
    assert (totals.llm_calls, totals.failed_llm_calls, totals.estimated_calls) == (1, 1, 1)
    assert totals.output_tokens == 0
    assert oa_tracker.session("c").usage.llm_calls == 1


@pytest.mark.parametrize("mode", ["run", "streamed"])
async def test_a_metered_tool_that_is_also_an_sdk_tool_counts_once(
    fake: FakeOpenAI, mode: str, oa_tracker: agentmeter.Tracker
) -> None:
    """The decorator records under the SDK tool call's agentmeter id (a call-id provider
    bound to the tool's function span), the hooks under the same id: one call each."""

    @function_tool
    @oa_tracker.metered_tool(category="weather")
    def forecast(city: str) -> str:
        """Forecast."""
        return "rain"

    @function_tool
    @oa_tracker.metered_tool
    def broken_forecast(city: str) -> str:
        """Forecast that fails."""
        raise RuntimeError("no data")

    hooks = amo.AgentMeterRunHooks(oa_tracker)
    for tool in (forecast, broken_forecast):
        agent = Agent(name="w", model=make_model(fake, "responses"), tools=[tool])
        await run_agent(agent, mode, "n=1", hooks=hooks)
    stats = oa_tracker.tool_stats()
    assert (stats["forecast"].calls, stats["forecast"].failed) == (1, 0)
    assert (stats["broken_forecast"].calls, stats["broken_forecast"].failed) == (1, 1)
    assert oa_tracker.snapshot().by_category["weather"].calls == 1


async def test_a_tool_that_times_out_is_a_failed_call(
    fake: FakeOpenAI, oa_tracker: agentmeter.Tracker
) -> None:
    """The SDK answers the model with its timeout message and goes on: failed, timed."""
    import asyncio

    @function_tool(timeout=0.05)
    async def slow(city: str) -> str:
        """A slow tool."""
        await asyncio.sleep(5)
        return "late"

    agent = Agent(name="t", model=make_model(fake, "chat"), tools=[slow], model_settings=USAGE)
    result = await Runner.run(agent, "n=1", hooks=amo.AgentMeterRunHooks(oa_tracker))
    assert result.final_output == fake.reply
    stats = oa_tracker.tool_stats()["slow"]
    assert (stats.calls, stats.failed) == (1, 1)
    assert stats.max_duration_ms >= 40


async def test_per_run_hooks_settle_a_tool_that_ended_the_run(
    fake: FakeOpenAI, oa_tracker: agentmeter.Tracker
) -> None:
    """Without instrument(): no end hook fires for a tool whose exception ended the run;
    ``hooks.settle(error)`` records it failed (instrument() does it by itself)."""
    hooks = amo.AgentMeterRunHooks(oa_tracker)
    agent = Agent(name="f", model=make_model(fake, "chat"), tools=[fatal], model_settings=USAGE)
    with pytest.raises(Exception, match="fatal") as info:
        await Runner.run(agent, "n=1", hooks=hooks)
    assert "fatal" not in oa_tracker.tool_stats()  # pending
    hooks.settle(info.value)
    stats = oa_tracker.tool_stats()["fatal"]
    assert (stats.calls, stats.failed) == (1, 1)
