"""pydantic-ai's own TestModel and FunctionModel: tools with retries and failures, sessions,
customers and agents from the run, concurrency, delegation, streams."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from agentmeter_pydantic_ai import AgentMeter
from pydantic_ai import Agent, ModelRetry, RunContext
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, FunctionModel
from pydantic_ai.models.test import TestModel
from pydantic_ai.usage import RequestUsage

import agentmeter

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.filterwarnings("ignore::agentmeter.UnpricedModelWarning"),
]


def _events(tracker: agentmeter.Tracker) -> list[agentmeter.UsageEvent]:
    seen: list[agentmeter.UsageEvent] = []
    tracker.subscribe(seen.append)
    return seen


def _tool_then_answer(usages: list[tuple[int, int]]) -> FunctionModel:
    """A model that calls ``lookup`` until a tool result says "ok", then answers; each
    response reports the next of ``usages``."""
    it = iter(usages)

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        inp, out = next(it)
        last = messages[-1].parts[-1]
        if getattr(last, "part_kind", "") == "tool-return" and "ok" in str(last.content):
            return ModelResponse(
                parts=[TextPart("answer")], usage=RequestUsage(input_tokens=inp, output_tokens=out)
            )
        return ModelResponse(
            parts=[ToolCallPart("lookup", {"q": "x"})],
            usage=RequestUsage(input_tokens=inp, output_tokens=out),
        )

    return FunctionModel(respond, model_name="fn-model")


async def test_testmodel_usage_equals_pydantic_ai_and_agent_name(
    pa_tracker: agentmeter.Tracker,
) -> None:
    events = _events(pa_tracker)
    agent = Agent(TestModel(), name="tester", capabilities=[AgentMeter(tracker=pa_tracker)])

    @agent.tool_plain
    def add(a: int, b: int) -> int:
        return a + b

    with pa_tracker.meter("turn", session_id="s-t"):
        result = await agent.run("add things")
    u = pa_tracker.session("s-t").usage
    assert (u.input_tokens, u.output_tokens) == (
        result.usage.input_tokens,
        result.usage.output_tokens,
    )
    assert u.llm_calls == result.usage.requests == 2
    assert u.tool_calls == result.usage.tool_calls == 1
    assert {e.agent_id for e in events} == {"tester"}
    assert pa_tracker.snapshot().by_agent["tester"].llm_calls == 2


async def test_model_retry_and_failures_each_counted_once(pa_tracker: agentmeter.Tracker) -> None:
    events = _events(pa_tracker)
    agent = Agent(
        _tool_then_answer([(10, 2)] * 4),
        name="retrier",
        retries=3,
        capabilities=[AgentMeter(tracker=pa_tracker, session_id="s-r")],
    )
    attempts: list[int] = []

    @agent.tool
    def lookup(ctx: RunContext[None], q: str) -> str:
        attempts.append(ctx.retry)
        if len(attempts) < 3:
            raise ModelRetry(f"not yet ({len(attempts)})")
        return "ok"

    result = await agent.run("find")
    assert result.output == "answer" and attempts == [0, 1, 2]
    [stats] = pa_tracker.session("s-r").tools.values()
    assert (stats.calls, stats.ok, stats.failed) == (3, 1, 2)
    tool_events = [e for e in events if e.kind == "tool"]
    assert [e.error for e in tool_events] == ["ModelRetry", "ModelRetry", None]
    assert len({e.call_id for e in tool_events}) == 3
    u = pa_tracker.session("s-r").usage
    assert u.llm_calls == result.usage.requests == 4
    assert (u.input_tokens, u.output_tokens) == (40, 8)


async def test_tool_exception_is_a_failed_call_and_propagates(
    pa_tracker: agentmeter.Tracker,
) -> None:
    agent = Agent(
        _tool_then_answer([(10, 2)] * 2),
        capabilities=[AgentMeter(tracker=pa_tracker, session_id="s-x")],
    )

    @agent.tool_plain
    def lookup(q: str) -> str:
        raise KeyError("boom")

    with pytest.raises(KeyError):
        await agent.run("find")
    [stats] = pa_tracker.session("s-x").tools.values()
    assert (stats.calls, stats.failed) == (1, 1)
    u = pa_tracker.session("s-x").usage
    assert (u.llm_calls, u.failed_tool_calls) == (1, 1)


@dataclass
class Deps:
    session_id: str
    customer_id: str | None = None


async def test_eight_concurrent_runs_exact_per_session(pa_tracker: agentmeter.Tracker) -> None:
    agent = Agent(
        TestModel(),
        name="conc",
        deps_type=Deps,
        capabilities=[AgentMeter(tracker=pa_tracker)],
    )

    @agent.tool
    async def wait(ctx: RunContext[Deps], n: int) -> str:
        await asyncio.sleep(0.001 * (n % 3))
        return ctx.deps.session_id

    async def one(i: int) -> Any:
        return await agent.run(f"run {i} " * (i + 1), deps=Deps(f"s{i}", f"c{i % 2}"))

    results = await asyncio.gather(*(one(i) for i in range(8)))
    for i, result in enumerate(results):
        u = pa_tracker.session(f"s{i}").usage
        assert (u.input_tokens, u.output_tokens) == (
            result.usage.input_tokens,
            result.usage.output_tokens,
        ), i
        assert u.llm_calls == result.usage.requests
        assert u.tool_calls == result.usage.tool_calls == 1
    totals = pa_tracker.snapshot().totals
    assert totals.input_tokens == sum(r.usage.input_tokens for r in results)
    assert totals.llm_calls == sum(r.usage.requests for r in results)
    for c in ("c0", "c1"):
        mine = [r for i, r in enumerate(results) if f"c{i % 2}" == c]
        assert pa_tracker.customer(c).usage.output_tokens == sum(
            r.usage.output_tokens for r in mine
        )


async def test_session_from_and_customer_from(pa_tracker: agentmeter.Tracker) -> None:
    agent = Agent(
        TestModel(call_tools=[]),
        capabilities=[
            AgentMeter(
                tracker=pa_tracker,
                session_from=lambda ctx: ctx.conversation_id,
                customer_from=lambda ctx: "cust-fn",
            )
        ],
    )
    result = await agent.run("hi", conversation_id="conv-1")
    assert pa_tracker.session("conv-1").usage.output_tokens == result.usage.output_tokens
    assert pa_tracker.customer("cust-fn").usage.llm_calls == 1


async def test_dict_deps_and_per_run_capability(pa_tracker: agentmeter.Tracker) -> None:
    agent = Agent(TestModel(call_tools=[]), name="plain")
    await agent.run(
        "hi",
        deps={"session_id": "s-dict", "customer_id": "c-dict"},
        capabilities=[AgentMeter(tracker=pa_tracker)],
    )
    await agent.run("unmetered")  # no capability on this run: nothing recorded
    assert pa_tracker.session("s-dict").usage.llm_calls == 1
    assert pa_tracker.customer("c-dict").usage.llm_calls == 1
    assert pa_tracker.snapshot().totals.llm_calls == 1


async def test_agent_and_run_capabilities_count_once_run_values_win(
    pa_tracker: agentmeter.Tracker,
) -> None:
    events = _events(pa_tracker)
    agent = Agent(
        TestModel(),
        name="doubled",
        capabilities=[AgentMeter(tracker=pa_tracker, session_id="agent-level")],
    )

    @agent.tool_plain
    def ping() -> str:
        return "pong"

    result = await agent.run(
        "go", capabilities=[AgentMeter(tracker=pa_tracker, session_id="run-level")]
    )
    assert pa_tracker.session("run-level").usage.llm_calls == result.usage.requests == 2
    assert pa_tracker.session("run-level").usage.tool_calls == 1
    assert pa_tracker.snapshot().totals.llm_calls == 2
    assert {e.session_id for e in events} == {"run-level"}


async def test_delegated_agent_inside_a_tool_is_credited_to_the_tool(
    pa_tracker: agentmeter.Tracker,
) -> None:
    inner = Agent(
        TestModel(call_tools=[]), name="inner", capabilities=[AgentMeter(tracker=pa_tracker)]
    )
    outer = Agent(TestModel(), name="outer", capabilities=[AgentMeter(tracker=pa_tracker)])

    @outer.tool
    async def delegate(ctx: RunContext[None], question: str) -> str:
        result = await inner.run(question, usage=ctx.usage)
        return result.output

    with pa_tracker.meter("turn", session_id="s-del"):
        result = await outer.run("delegate it")
    by_agent = pa_tracker.snapshot().by_agent
    assert by_agent["inner"].llm_calls == 1 and by_agent["outer"].llm_calls == 2
    [stats] = pa_tracker.session("s-del").tools.values()
    assert stats.tool == "delegate" and stats.llm_calls == 1
    # pydantic-ai's shared usage (usage=ctx.usage) and agentmeter agree on the whole.
    assert pa_tracker.session("s-del").usage.input_tokens == result.usage.input_tokens
    assert pa_tracker.session("s-del").usage.llm_calls == result.usage.requests == 3


async def test_function_model_stream_counted_once(pa_tracker: agentmeter.Tracker) -> None:
    async def stream(messages: list[ModelMessage], info: AgentInfo) -> Any:
        for word in ("streamed ", "text ", "here"):
            yield word

    agent = Agent(
        FunctionModel(stream_function=stream, model_name="fn-stream"),
        capabilities=[AgentMeter(tracker=pa_tracker, session_id="s-fs")],
    )
    async with agent.run_stream("go") as run:
        out = await run.get_output()
    assert out == "streamed text here"
    u = pa_tracker.session("s-fs").usage
    assert u.llm_calls == 1
    assert (u.input_tokens, u.output_tokens) == (run.usage.input_tokens, run.usage.output_tokens)


async def test_streamed_tool_calls(pa_tracker: agentmeter.Tracker) -> None:
    async def stream(messages: list[ModelMessage], info: AgentInfo) -> Any:
        if len(messages) == 1:
            yield {0: DeltaToolCall(name="ping", json_args="{}", tool_call_id="c1")}
        else:
            yield "after the tool"

    agent = Agent(
        FunctionModel(stream_function=stream, model_name="fn-stream"),
        capabilities=[AgentMeter(tracker=pa_tracker, session_id="s-st")],
    )

    @agent.tool_plain
    def ping() -> str:
        return "pong"

    async with agent.run_stream("go") as run:
        assert await run.get_output() == "after the tool"
    u = pa_tracker.session("s-st").usage
    assert (u.llm_calls, u.tool_calls) == (2, 1)
    assert u.llm_calls == run.usage.requests
    assert u.input_tokens == run.usage.input_tokens


def test_run_sync(pa_tracker: agentmeter.Tracker) -> None:
    agent = Agent(TestModel(), capabilities=[AgentMeter(tracker=pa_tracker, session_id="s-sync")])
    result = agent.run_sync("sync please")
    u = pa_tracker.session("s-sync").usage
    assert (u.input_tokens, u.output_tokens, u.llm_calls) == (
        result.usage.input_tokens,
        result.usage.output_tokens,
        result.usage.requests,
    )


@pytest.mark.parametrize("is_async", [False, True])
async def test_metered_tool_decorator_inside_counts_once(
    pa_tracker: agentmeter.Tracker, is_async: bool
) -> None:
    agent = Agent(TestModel(), capabilities=[AgentMeter(tracker=pa_tracker, session_id="s-dec")])
    if is_async:

        @agent.tool_plain
        @pa_tracker.metered_tool
        async def ping() -> str:
            return "pong"
    else:

        @agent.tool_plain
        @pa_tracker.metered_tool
        def ping() -> str:  # run in a worker thread by pydantic-ai
            return "pong"

    await agent.run("go")
    [stats] = pa_tracker.session("s-dec").tools.values()
    assert (stats.tool, stats.calls) == ("ping", 1)
    assert pa_tracker.snapshot().totals.tool_calls == 1


async def test_parallel_tool_calls_each_counted_once(pa_tracker: agentmeter.Tracker) -> None:
    agent = Agent(TestModel(), capabilities=[AgentMeter(tracker=pa_tracker, session_id="s-par")])
    ran: list[str] = []

    @agent.tool_plain
    async def first() -> str:
        await asyncio.sleep(0.01)
        ran.append("first")
        return "1"

    @agent.tool_plain
    async def second() -> str:
        ran.append("second")
        if ran.count("second") == 1:
            raise ModelRetry("once more")
        return "2"

    result = await agent.run("both at once")
    tools = pa_tracker.session("s-par").tools
    assert tools["first"].calls == ran.count("first")
    assert tools["second"].calls == ran.count("second") and tools["second"].failed == 1
    assert pa_tracker.session("s-par").usage.tool_calls == len(ran)
    assert pa_tracker.session("s-par").usage.llm_calls == result.usage.requests


async def test_run_with_event_stream_handler_counted_once(pa_tracker: agentmeter.Tracker) -> None:
    seen: list[object] = []

    async def handler(ctx: RunContext[None], events: Any) -> None:
        async for event in events:
            seen.append(event)

    agent = Agent(TestModel(), capabilities=[AgentMeter(tracker=pa_tracker, session_id="s-ev")])

    @agent.tool_plain
    def ping() -> str:
        return "pong"

    result = await agent.run("go", event_stream_handler=handler)
    assert seen  # the run streamed
    u = pa_tracker.session("s-ev").usage
    assert (u.llm_calls, u.tool_calls) == (result.usage.requests, result.usage.tool_calls)
    assert (u.input_tokens, u.output_tokens) == (
        result.usage.input_tokens,
        result.usage.output_tokens,
    )


async def test_session_and_customer_from_run_metadata(pa_tracker: agentmeter.Tracker) -> None:
    agent = Agent(TestModel(call_tools=[]), capabilities=[AgentMeter(tracker=pa_tracker)])
    result = await agent.run("hi", metadata={"session_id": "s-meta", "customer_id": "c-meta"})
    assert pa_tracker.session("s-meta").usage.llm_calls == result.usage.requests == 1
    assert pa_tracker.customer("c-meta").usage.llm_calls == 1
    # deps win over metadata
    await agent.run("again", deps={"session_id": "s-deps"}, metadata={"session_id": "s-meta"})
    assert pa_tracker.session("s-deps").usage.llm_calls == 1
    assert pa_tracker.session("s-meta").usage.llm_calls == 1


async def test_fallback_model_of_metered_models_counts_each_request_once(
    pa_tracker: agentmeter.Tracker,
) -> None:
    from agentmeter_pydantic_ai import metered
    from pydantic_ai.exceptions import ModelAPIError
    from pydantic_ai.models.fallback import FallbackModel

    async def down(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        raise ModelAPIError("primary", "overloaded")

    async def up(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(
            parts=[TextPart("from the backup")],
            usage=RequestUsage(input_tokens=30, output_tokens=4),
        )

    model = FallbackModel(
        metered(FunctionModel(down, model_name="primary"), tracker=pa_tracker),
        metered(FunctionModel(up, model_name="backup"), tracker=pa_tracker),
    )
    events = _events(pa_tracker)
    agent = Agent(model, capabilities=[AgentMeter(tracker=pa_tracker, session_id="s-fb")])
    result = await agent.run("hello")
    assert result.output == "from the backup"
    llm = [e for e in events if e.kind != "tool"]
    assert len(llm) == 1 and llm[0].model == "backup"  # the model that answered
    u = pa_tracker.session("s-fb").usage
    assert (u.llm_calls, u.input_tokens, u.output_tokens) == (1, 30, 4)
    assert u.llm_calls == result.usage.requests
