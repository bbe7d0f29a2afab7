"""Hypothesis: any mix of concurrent runs -- tool calls, retries, streams, sessions and
customers -- is accounted exactly: per session and customer, agentmeter equals the sum of
pydantic-ai's own usage of the runs billed there."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from agentmeter_pydantic_ai import AgentMeter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic_ai import Agent, ModelRetry, RunContext
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, FunctionModel
from pydantic_ai.usage import RequestUsage

import agentmeter

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.filterwarnings("ignore::agentmeter.UnpricedModelWarning"),
]


@dataclass
class Plan:
    """One run: how many tool calls before answering, which attempts retry, its usage."""

    session_id: str
    customer_id: str
    tool_calls: int
    retry_first: bool
    stream: bool
    usages: list[tuple[int, int, int]]  # (input, output, cache read) per response


plans = st.builds(
    Plan,
    session_id=st.sampled_from(["s1", "s2", "s3"]),
    customer_id=st.sampled_from(["c1", "c2"]),
    tool_calls=st.integers(0, 3),
    retry_first=st.booleans(),
    stream=st.booleans(),
    usages=st.lists(
        st.tuples(st.integers(1, 5000), st.integers(1, 500), st.integers(0, 1)),
        min_size=6,
        max_size=6,
    ),
)


def _model(plan: Plan) -> FunctionModel:
    step = {"n": 0}

    def usage() -> RequestUsage:
        inp, out, cached = plan.usages[step["n"] % len(plan.usages)]
        step["n"] += 1
        return RequestUsage(
            input_tokens=inp, output_tokens=out, cache_read_tokens=inp * cached // 2
        )

    def done_calls(messages: list[ModelMessage]) -> int:
        return sum(
            1
            for m in messages
            for p in m.parts
            if getattr(p, "part_kind", "") in ("tool-return", "retry-prompt")
        )

    def wanted(messages: list[ModelMessage]) -> bool:
        return done_calls(messages) < plan.tool_calls + (
            1 if plan.retry_first and plan.tool_calls else 0
        )

    async def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if not wanted(messages):
            return ModelResponse(parts=[TextPart("done")], usage=usage())
        call = ToolCallPart("work", {"i": done_calls(messages)})
        return ModelResponse(parts=[call], usage=usage())

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[Any]:
        # FunctionModel estimates a stream's usage itself; both sides read that same usage.
        if not wanted(messages):
            yield "done"
            return
        n = done_calls(messages)
        yield {0: DeltaToolCall(name="work", json_args=f'{{"i": {n}}}', tool_call_id=f"c{n}")}

    return FunctionModel(respond, stream_function=stream, model_name="prop-model")


async def _run(plan: Plan, tracker: agentmeter.Tracker) -> Any:
    agent = Agent(
        _model(plan), name="prop", deps_type=Plan, capabilities=[AgentMeter(tracker=tracker)]
    )
    attempts = {"n": 0}

    @agent.tool
    async def work(ctx: RunContext[Plan], i: int) -> str:
        attempts["n"] += 1
        await asyncio.sleep(0)
        if ctx.deps.retry_first and attempts["n"] == 1:
            raise ModelRetry("again")
        return f"ok {i}"

    if plan.stream:
        async with agent.run_stream("go", deps=plan) as run:
            await run.get_output()
        return run.usage
    return (await agent.run("go", deps=plan)).usage


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(plans, min_size=1, max_size=8))
def test_concurrent_runs_are_exact_per_session_and_customer(runs: list[Plan]) -> None:
    tracker = agentmeter.Tracker()

    async def main() -> list[Any]:
        return await asyncio.gather(*(_run(p, tracker) for p in runs))

    usages = asyncio.run(main())
    for key, attr in (("session_id", tracker.session), ("customer_id", tracker.customer)):
        for value in {getattr(p, key) for p in runs}:
            mine = [u for p, u in zip(runs, usages, strict=True) if getattr(p, key) == value]
            ours = attr(value).usage
            assert ours.input_tokens == sum(u.input_tokens for u in mine)
            assert ours.output_tokens == sum(u.output_tokens for u in mine)
            assert ours.cache_read_tokens == sum(u.cache_read_tokens for u in mine)
            assert ours.llm_calls == sum(u.requests for u in mine)
            assert ours.tool_calls == sum(u.tool_calls for u in mine) + sum(
                1 for p in runs if getattr(p, key) == value and p.retry_first and p.tool_calls
            )
    assert tracker.snapshot().totals.llm_calls == sum(u.requests for u in usages)
