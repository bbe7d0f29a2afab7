"""Overhead of agentmeter's pydantic-ai capability on ``Agent.run`` / ``run_stream``.

Bare and metered are timed in the same run, interleaved, on a ``FunctionModel``
answering as ``gpt-4o-mini`` with usage (so both sides price it):

- a model request: the bare ``model.request`` vs what the agent graph runs per request
  with the capability -- ``AgentMeter.before_model_request`` (which puts a
  ``MeteredModel`` in the request context), then ``MeteredModel.request``: attribution,
  the budget check, reading ``RequestUsage``, pricing and the record;
- a streamed request (``request_stream``, drained), the same way;
- a whole ``Agent.run`` of one request, with and without the capability: context only,
  since pydantic-ai's own run (graph, tasks) costs milliseconds here and the difference
  is within its noise on a shared machine.

Overhead = metered - bare, per request. The anchor, timed in the same run, is
pydantic-ai's own usage accounting of one response: ``ModelResponse.cost()``
(genai-prices, what the agent graph runs for every response) plus ``RunUsage.incr``.
The statistic is a low quantile (p10) of per-call times.

Run: ``python benchmarks/bench_pydantic_ai.py [--quick]`` (prints a markdown table).
"""

from __future__ import annotations

import argparse
import asyncio
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

from _harness import low_quantile as _low
from _harness import time_awaited as _time_calls
from _harness import time_sync as _time_sync

PROMPT = "Explain in one sentence what agentmeter measures for an AI agent run."


async def _measure(quick: bool) -> list[dict[str, str]]:
    from agentmeter_pydantic_ai import AgentMeter
    from pydantic_ai import Agent
    from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart
    from pydantic_ai.models import ModelRequestContext, ModelRequestParameters
    from pydantic_ai.models.function import AgentInfo, FunctionModel
    from pydantic_ai.tools import RunContext
    from pydantic_ai.usage import RequestUsage, RunUsage

    import agentmeter

    def usage() -> RequestUsage:
        return RequestUsage(input_tokens=52, output_tokens=12, cache_read_tokens=16)

    async def answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        # async: no worker thread per request, whose handoff would dominate the noise
        return ModelResponse(parts=[TextPart("It meters tokens, cost and tools.")], usage=usage())

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> Any:
        for word in ("It ", "meters ", "tokens."):
            yield word

    model = FunctionModel(answer, stream_function=stream, model_name="gpt-4o-mini")
    tracker = agentmeter.Tracker()
    capability = AgentMeter(tracker=tracker, session_id="bench")
    run_ctx = RunContext(deps=None, model=model, usage=RunUsage())
    run_cap = await capability.for_run(run_ctx)
    messages: list[ModelMessage] = [ModelRequest.user_text_prompt(PROMPT)]
    params = ModelRequestParameters()

    async def metered_model() -> Any:
        # What the agent graph does per request with the capability: its hook, then the
        # request through the MeteredModel it put in the request context.
        req = ModelRequestContext(
            model=model, messages=messages, model_settings=None, model_request_parameters=params
        )
        req = await run_cap.before_model_request(run_ctx, req)
        return req.model

    async def request_bare() -> object:
        return await model.request(messages, None, params)

    async def request_ours() -> object:
        return await (await metered_model()).request(messages, None, params)

    async def stream_bare() -> object:
        async with model.request_stream(messages, None, params) as sr:
            async for _ in sr:
                pass
        return sr.get()

    async def stream_ours() -> object:
        async with (await metered_model()).request_stream(messages, None, params) as sr:
            async for _ in sr:
                pass
        return sr.get()

    bare_agent = Agent(model)
    our_agent = Agent(model, capabilities=[AgentMeter(tracker=tracker, session_id="bench")])

    async def run_bare() -> object:
        return await bare_agent.run(PROMPT)

    async def run_ours() -> object:
        return await our_agent.run(PROMPT)

    def accounting() -> None:  # pydantic-ai's own usage accounting of one response
        response = ModelResponse(
            parts=[TextPart("x")], usage=usage(), model_name="gpt-4o-mini", provider_name="openai"
        )
        response.usage.cost = response.cost().total_price
        RunUsage().incr(response.usage)

    calls, rounds = (100, 6) if quick else (300, 20)
    anchor_us = _low(_time_sync(accounting, calls * rounds)) * 1e6
    anchor = f"pydantic-ai's own accounting of a response (cost + incr): {anchor_us:.1f} us"
    cases: dict[str, tuple[Callable[[], Awaitable[object]], Callable[[], Awaitable[object]]]] = {
        "model request (`before_model_request` + `MeteredModel.request`)": (
            request_bare,
            request_ours,
        ),
        "streamed request (`MeteredModel.request_stream`, drained)": (stream_bare, stream_ours),
        "whole `Agent.run`, one request": (run_bare, run_ours),
    }
    out: list[dict[str, str]] = []
    for name, (bare, ours) in cases.items():
        n = calls if "Agent.run" not in name else max(10, calls // 10)
        pooled: dict[str, list[float]] = {"bare": [], "agentmeter": []}
        fns = {"bare": bare, "agentmeter": ours}
        for fn in fns.values():  # warm-up: prices, caches
            await _time_calls(fn, 10)
        tracker.reset()
        for i in range(rounds):
            order = list(fns) if i % 2 == 0 else list(reversed(fns))
            for key in order:
                pooled[key].extend(await _time_calls(fns[key], n))
        best = {key: _low(times) for key, times in pooled.items()}
        counted = tracker.snapshot().totals.llm_calls
        expected = n * rounds
        overhead = (best["agentmeter"] - best["bare"]) * 1e6
        bare_us = best["bare"] * 1e6
        ratio = overhead / anchor_us if anchor_us else float("inf")
        whole = "Agent.run" in name
        ok = counted == expected and (whole or overhead <= anchor_us)
        out.append(
            {
                "operation": f"pydantic-ai {name}: overhead of agentmeter (bare {bare_us:.1f} us)",
                "measured": (
                    f"+{overhead:.1f} us ({ratio:.2f}x anchor, {overhead / bare_us:.0%} of bare),"
                    f" counted {counted}/{expected}"
                ),
                "anchor": anchor,
                "target": (
                    "counted once (context: the run's own cost)"
                    if whole
                    else "<= the anchor, every request counted once"
                ),
                "verdict": "ok" if ok else "miss",
            }
        )
    return out


def rows(quick: bool = False) -> list[dict[str, str]]:
    """Benchmark rows: operation, measured, anchor, target, verdict."""
    import agentmeter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", agentmeter.UnpricedModelWarning)
        return asyncio.run(_measure(quick))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter repeats")
    args = parser.parse_args()
    table = rows(quick=args.quick)
    keys = ["operation", "measured", "anchor", "target", "verdict"]
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in table:
        print("| " + " | ".join(row[k] for k in keys) + " |")


if __name__ == "__main__":
    main()
