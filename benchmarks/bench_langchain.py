"""Overhead of ``AgentMeterCallbackHandler`` on LangChain ``invoke`` / ``ainvoke``.

Measured in one run, on one machine, against LangChain's own
``UsageMetadataCallbackHandler`` (the anchor), which only sums
``usage_metadata`` per model: once as shipped (``run_inline = False``: LangChain
sends each event of an async run to a thread pool) and once with
``run_inline = True`` on a subclass. The model is a fake chat model returning
``usage_metadata``, so the numbers are the callback machinery plus the handler.
agentmeter's handler does more per call: model / provider / session / agent /
tool attribution, pricing, budget check, latency, de-duplication by run id.

Overhead = (time per call with the handler) - (time per call with no handler),
the median of N interleaved runs of ``FOLD_AT`` calls each (so that every run of
agentmeter's includes one fold of its log). Target: agentmeter overhead <= the
anchor's ``run_inline`` overhead.

Timing: process CPU time by default (robust on a loaded machine), ``--wall``
for wall-clock time; GC off during the runs. The handlers' own cost (start and
end events through ``handle_event``, without the model call) is the best of N.

Run: ``python benchmarks/bench_langchain.py [--quick] [--wall]`` (prints a markdown table).
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

from agentmeter_langchain import AgentMeterCallbackHandler
from langchain_core.callbacks import BaseCallbackHandler, UsageMetadataCallbackHandler
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

import agentmeter
from agentmeter._recorder import FOLD_AT

MODEL = "gpt-4o-mini"


class _UsageChat(BaseChatModel):
    """A fake chat model whose replies carry ``usage_metadata`` like a real provider's."""

    model_name: str = MODEL

    @property
    def _llm_type(self) -> str:
        return "bench-usage-chat"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        msg = AIMessage(
            content="ok",
            usage_metadata={
                "input_tokens": 12,
                "output_tokens": 3,
                "total_tokens": 15,
                "input_token_details": {"cache_read": 4},
            },
            response_metadata={"model_name": self.model_name, "model_provider": "openai"},
        )
        return ChatResult(generations=[ChatGeneration(message=msg)])

    async def _agenerate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        # A native async model (as real providers' clients are): no thread-pool hop.
        return self._generate(messages, stop, run_manager, **kw)

    def _get_ls_params(self, stop: Any = None, **kwargs: Any) -> Any:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "openai"
        params["ls_model_name"] = self.model_name
        return params


class _InlineUsageHandler(UsageMetadataCallbackHandler):
    run_inline = True


# CPU time of the whole process (every thread): unlike wall-clock time, it does not
# count the time this process waited for a CPU that other processes held, so a
# loaded machine does not swamp microsecond differences. ``--wall`` measures
# wall-clock time instead (it also counts thread-pool hand-offs as waiting).
CLOCK: Callable[[], float] = time.process_time


def _sync_loop(model: BaseChatModel, make: Callable[[], list[BaseCallbackHandler]]) -> Any:
    def run(n: int) -> float:
        config: dict[str, Any] = {"callbacks": make()}
        invoke = model.invoke
        t0 = CLOCK()
        for _ in range(n):
            invoke("hello there", config)  # type: ignore[arg-type]
        return CLOCK() - t0

    return run


def _async_loop(model: BaseChatModel, make: Callable[[], list[BaseCallbackHandler]]) -> Any:
    async def body(n: int, config: dict[str, Any]) -> float:
        ainvoke = model.ainvoke
        t0 = CLOCK()
        for _ in range(n):
            await ainvoke("hello there", config)  # type: ignore[arg-type]
        return CLOCK() - t0

    def run(n: int) -> float:
        return asyncio.run(body(n, {"callbacks": make()}))

    return run


def _measure(quick: bool) -> dict[str, dict[str, float]]:
    # Runs of FOLD_AT calls: the recorder folds its log every FOLD_AT records, so
    # each run of agentmeter's carries exactly one fold -- the batched work is
    # counted, never hidden by picking runs that happened to have none. The median
    # of the runs (not the best) is robust to a noisy neighbour without favouring a
    # variant whose cost comes in batches. The order of the variants rotates from
    # run to run, and GC stays off for the whole loop (a collection before each run
    # made the first variant after it ~20 us per call slower).
    n, repeats = (FOLD_AT, 9) if quick else (FOLD_AT, 31)
    model = _UsageChat()
    tracker = agentmeter.Tracker()
    handlers: dict[str, Callable[[], list[BaseCallbackHandler]]] = {
        "bare": list,
        "anchor": lambda: [UsageMetadataCallbackHandler()],
        "anchor_inline": lambda: [_InlineUsageHandler()],
        "agentmeter": lambda: [AgentMeterCallbackHandler(tracker, session_id="bench")],
    }
    out: dict[str, dict[str, float]] = {"invoke": {}, "ainvoke": {}}
    for op, loop in (("invoke", _sync_loop), ("ainvoke", _async_loop)):
        runs = {name: loop(model, make) for name, make in handlers.items()}
        for run in runs.values():  # warm up (imports, price lookup, caches)
            run(n)
        names = list(runs)
        times: dict[str, list[float]] = {name: [] for name in names}
        gc.collect()
        gc.disable()
        try:
            for i in range(repeats):
                k = i % len(names)
                for name in names[k:] + names[:k]:
                    times[name].append(runs[name](n) / n)
        finally:
            gc.enable()
        out[op] = {name: statistics.median(t) * 1e6 for name, t in times.items()}
    # Sanity: agentmeter counted every call it saw, with the reported usage.
    usage = tracker.snapshot().totals
    assert usage.llm_calls > 0 and usage.input_tokens == 12 * usage.llm_calls, usage
    return out


def _measure_events(quick: bool) -> dict[str, float]:
    """The handlers' own cost: one call's start and end events through ``handle_event``.

    Same dispatch as ``invoke`` (including the anchor's fallback from
    ``on_chat_model_start`` to ``on_llm_start``), without the rest of the model call,
    so far less noise. Microseconds per call.
    """
    import uuid

    from langchain_core.callbacks.manager import handle_event
    from langchain_core.messages import HumanMessage
    from langchain_core.outputs import LLMResult

    n, repeats = (200, 15) if quick else (300, 61)
    model = _UsageChat()
    messages: list[list[BaseMessage]] = [[HumanMessage("hello there")]]
    metadata = {**model._get_ls_params(), "ls_integration": "langchain_chat_model"}
    result = LLMResult(generations=[[model._generate(messages[0]).generations[0]]])
    serialized = model._serialized
    tracker = agentmeter.Tracker()
    handlers: dict[str, BaseCallbackHandler] = {
        "anchor_inline": _InlineUsageHandler(),
        "agentmeter": AgentMeterCallbackHandler(tracker, session_id="bench"),
    }

    def loop(handler: BaseCallbackHandler) -> float:
        ids = [uuid.uuid4() for _ in range(n)]
        hs = [handler]
        t0 = CLOCK()
        for run_id in ids:
            handle_event(
                hs, "on_chat_model_start", "ignore_chat_model", serialized, messages,
                run_id=run_id, parent_run_id=None, tags=[], metadata=metadata,
                invocation_params={"model": MODEL}, options={}, name=None, batch_size=1,
            )  # fmt: skip
            handle_event(hs, "on_llm_end", "ignore_llm", result, run_id=run_id, tags=[])
        return (CLOCK() - t0) / n

    best = {name: float("inf") for name in handlers}
    for _ in range(repeats):
        for name, handler in handlers.items():
            gc.collect()
            gc.disable()
            try:
                best[name] = min(best[name], loop(handler))
            finally:
                gc.enable()
    return {name: t * 1e6 for name, t in best.items()}


def rows(quick: bool = False) -> list[dict[str, str]]:
    """One row per operation: agentmeter's overhead against the anchor's run_inline one."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = _measure(quick)
        events = _measure_events(quick)
    result = []
    for op, t in m.items():
        ours = t["agentmeter"] - t["bare"]
        anchor_inline = t["anchor_inline"] - t["bare"]
        anchor = t["anchor"] - t["bare"]
        ratio = ours / anchor_inline if anchor_inline > 0 else float("inf")
        result.append(
            {
                "operation": (
                    f"LangChain `{op}` overhead of the handler "
                    f"(bare call {t['bare']:.0f} us, {CLOCK_NAME})"
                ),
                "measured": f"{ours:+.1f} us ({ratio:.2f}x anchor run_inline)",
                "anchor": (
                    f"`UsageMetadataCallbackHandler`: {anchor:+.1f} us "
                    f"({anchor_inline:+.1f} us with run_inline)"
                ),
                "target": "<= anchor run_inline overhead, while doing more",
                "verdict": "ok" if ours <= anchor_inline else "miss",
            }
        )
    ours, anchor_inline = events["agentmeter"], events["anchor_inline"]
    result.append(
        {
            "operation": (
                "handler's own cost per call: start + end events through LangChain's "
                f"`handle_event` ({CLOCK_NAME})"
            ),
            "measured": f"{ours:.1f} us ({ours / anchor_inline:.2f}x anchor)",
            "anchor": f"`UsageMetadataCallbackHandler` (run_inline): {anchor_inline:.1f} us",
            "target": "<= anchor, while doing more",
            "verdict": "ok" if ours <= anchor_inline else "miss",
        }
    )
    return result


CLOCK_NAME = "process CPU time"


def main(argv: list[str]) -> int:
    global CLOCK, CLOCK_NAME
    quick = "--quick" in argv
    if "--wall" in argv:
        CLOCK, CLOCK_NAME = time.perf_counter, "wall-clock"
    table = rows(quick)
    keys = ["operation", "measured", "anchor", "target", "verdict"]
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in table:
        print("| " + " | ".join(row[k] for k in keys) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
