"""Overhead of agentmeter's run hooks on OpenAI Agents SDK runs.

Bare and metered are timed in the same run, interleaved, on a ``Model`` of the SDK's
interface that answers at once with usage (input with a cached part, output with a
reasoning part) as ``gpt-4o-mini`` (so agentmeter prices every call):

- a model call: what the SDK runs of agentmeter's per model call --
  ``AgentMeterRunHooks.on_llm_start`` (attribution, model resolution, the budget
  check) then ``on_llm_end`` (reading ``ModelResponse.usage``, pricing, the record) --
  against the base ``RunHooks`` the SDK awaits anyway when no hooks are given;
- a tool call: ``on_tool_start`` + ``on_tool_end`` the same way;
- a whole ``Runner.run`` of one model call, bare, with ``hooks=AgentMeterRunHooks()``
  and under ``instrument()``: context only, since the SDK's own run (tasks per hook,
  guardrails, items) costs about a millisecond here and the difference is within its
  noise on a shared machine.

Overhead = metered - bare, per call. The anchor, timed in the same run, is the SDK's
own usage accounting of one response: ``Usage.add(response.usage)`` (what the run loop
does to ``context_wrapper.usage`` for every response: totals and a per-request entry).
The statistic is a low quantile (p10) of per-call times.

Run: ``python benchmarks/bench_openai_agents.py [--quick]`` (prints a markdown table).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from _harness import low_quantile as _low
from _harness import time_awaited as _time_calls
from _harness import time_sync as _time_sync

PROMPT = "Explain in one sentence what agentmeter measures for an AI agent run."


async def _measure(quick: bool) -> list[dict[str, str]]:
    os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")
    from agentmeter_openai_agents import AgentMeterRunHooks, instrument, uninstrument
    from agents import (
        Agent,
        FunctionTool,
        Model,
        ModelResponse,
        RunContextWrapper,
        RunHooks,
        Runner,
        Usage,
        set_trace_processors,
        set_tracing_disabled,
    )
    from agents.run import AgentRunner
    from agents.tool_context import ToolContext
    from openai.types.responses import ResponseOutputMessage, ResponseOutputText
    from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

    import agentmeter

    set_trace_processors([])
    set_tracing_disabled(True)

    def usage() -> Usage:
        return Usage(
            requests=1,
            input_tokens=52,
            output_tokens=12,
            total_tokens=64,
            input_tokens_details=InputTokensDetails(cached_tokens=16, cache_write_tokens=0),
            output_tokens_details=OutputTokensDetails(reasoning_tokens=4),
        )

    message = ResponseOutputMessage(
        id="msg_1",
        type="message",
        role="assistant",
        status="completed",
        content=[ResponseOutputText(type="output_text", text="It meters.", annotations=[])],
    )

    class Instant(Model):
        """Answers at once, with usage (the SDK's Model interface)."""

        model = "gpt-4o-mini"

        async def get_response(self, *args: Any, **kwargs: Any) -> ModelResponse:
            return ModelResponse(output=[message], usage=usage(), response_id="resp_1")

        async def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            raise NotImplementedError
            yield  # pragma: no cover

    tracker = agentmeter.Tracker()
    agent = Agent(name="bench", model=Instant())
    base = RunHooks[Any]()
    ours = AgentMeterRunHooks(tracker, session_id="bench")
    ctx = RunContextWrapper(context=None)
    items: list[Any] = [{"role": "user", "content": PROMPT}]
    response = ModelResponse(output=[message], usage=usage(), response_id="resp_1")
    tool = FunctionTool(
        name="lookup",
        description="Look up.",
        params_json_schema={"type": "object", "properties": {}},
        on_invoke_tool=lambda c, a: asyncio.sleep(0, "ok"),
    )
    tctx = ToolContext(context=None, tool_name="lookup", tool_call_id="call_1", tool_arguments="{}")

    def model_call(h: Any) -> Callable[[], Awaitable[object]]:
        async def call() -> object:
            await h.on_llm_start(ctx, agent, "Be brief.", items)
            await h.on_llm_end(ctx, agent, response)
            return None

        return call

    def tool_call(h: Any) -> Callable[[], Awaitable[object]]:
        async def call() -> object:
            await h.on_tool_start(tctx, agent, tool)
            await h.on_tool_end(tctx, agent, tool, "ok")
            return None

        return call

    # instrument() stays installed for the whole measurement; the bare and per-run-hooks
    # cases call the SDK's own AgentRunner directly, past it.
    sdk_runner = AgentRunner()

    async def run_bare() -> object:
        return await sdk_runner.run(agent, PROMPT)

    async def run_hooks() -> object:
        return await sdk_runner.run(agent, PROMPT, hooks=ours)

    async def run_instrumented() -> object:
        return await Runner.run(agent, PROMPT)

    def accounting() -> None:  # the SDK's own accounting of one response
        Usage().add(response.usage)

    calls, rounds = (100, 6) if quick else (300, 20)
    anchor_us = _low(_time_sync(accounting, calls * rounds)) * 1e6
    anchor = f"the SDK's own accounting of a response (`Usage.add`): {anchor_us:.1f} us"
    cases: dict[str, tuple[dict[str, Callable[[], Awaitable[object]]], str]] = {
        "model call (`on_llm_start` + `on_llm_end`)": (
            {"bare": model_call(base), "agentmeter": model_call(ours)},
            "llm",
        ),
        "tool call (`on_tool_start` + `on_tool_end`)": (
            {"bare": tool_call(base), "agentmeter": tool_call(ours)},
            "tool",
        ),
        "whole `Runner.run`, one model call": (
            {"bare": run_bare, "agentmeter": run_hooks, "instrument()": run_instrumented},
            "llm",
        ),
    }
    out: list[dict[str, str]] = []
    instrument(tracker, session_id="bench")
    try:
        await _cases(cases, tracker, calls, rounds, anchor_us, anchor, out)
    finally:
        uninstrument()
    return out


async def _cases(
    cases: dict[str, tuple[dict[str, Callable[[], Awaitable[object]]], str]],
    tracker: Any,
    calls: int,
    rounds: int,
    anchor_us: float,
    anchor: str,
    out: list[dict[str, str]],
) -> None:
    for name, (fns, counts) in cases.items():
        whole = "Runner.run" in name
        n = calls if not whole else max(10, calls // 10)
        pooled: dict[str, list[float]] = {key: [] for key in fns}
        for fn in fns.values():  # warm-up: prices, caches
            await _time_calls(fn, 10)
        tracker.reset()
        for i in range(rounds):
            order = list(fns) if i % 2 == 0 else list(reversed(fns))
            for key in order:
                pooled[key].extend(await _time_calls(fns[key], n))
        best = {key: _low(times) for key, times in pooled.items()}
        totals = tracker.snapshot().totals
        counted = totals.llm_calls if counts == "llm" else totals.tool_calls
        metered = len(fns) - 1
        expected = n * rounds * metered
        bare_us = best["bare"] * 1e6
        parts = []
        for key in fns:
            if key == "bare":
                continue
            overhead = (best[key] - best["bare"]) * 1e6
            ratio = overhead / anchor_us if anchor_us else float("inf")
            label = "" if key == "agentmeter" else f"{key}: "
            parts.append(
                f"{label}+{overhead:.1f} us ({ratio:.2f}x anchor, {overhead / bare_us:.0%} of bare)"
            )
        ok = counted == expected
        out.append(
            {
                "operation": (
                    f"OpenAI Agents SDK {name}: overhead of agentmeter (bare {bare_us:.1f} us)"
                ),
                "measured": "; ".join(parts) + f", counted {counted}/{expected}",
                "anchor": anchor,
                "target": (
                    "counted once (context: the run's own cost)"
                    if whole
                    else "every call counted once (the anchor counts tokens only: no "
                    "price, session, agent or budget)"
                ),
                "verdict": "ok" if ok else "miss",
            }
        )


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
