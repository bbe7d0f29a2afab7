"""Agents, workflows and tools: FunctionAgent with MockFunctionCallingLLM and FunctionTools."""

from __future__ import annotations

import asyncio
from typing import Any

import agentmeter_llamaindex as ami
import pytest
from llama_index.core.agent.workflow import AgentWorkflow, FunctionAgent
from llama_index.core.base.llms.types import ChatMessage, MessageRole, ToolCallBlock
from llama_index.core.llms.mock import MockFunctionCallingLLM, MockLLM
from llama_index.core.tools import FunctionTool, ToolMetadata, ToolOutput
from llama_index.core.tools.types import AsyncBaseTool
from llama_index.core.workflow import Context, StartEvent, StopEvent, Workflow, step

import agentmeter

pytestmark = [
    pytest.mark.filterwarnings("ignore::agentmeter.UnpricedModelWarning"),
    pytest.mark.filterwarnings("ignore::agentmeter_llamaindex.StreamUsageWarning"),
    pytest.mark.timeout(120),
]


def add(a: int = 1, b: int = 2) -> int:
    """Add two numbers."""
    return a + b


def boom(x: int = 0) -> int:
    """A tool that fails."""
    raise RuntimeError("boom")


class SoftFail(AsyncBaseTool):
    """A tool that reports failure in its output instead of raising."""

    @property
    def metadata(self) -> ToolMetadata:
        return ToolMetadata(name="soft_fail", description="Fails softly.")

    def call(self, *args: Any, **kwargs: Any) -> ToolOutput:
        return ToolOutput(
            content="no", tool_name="soft_fail", raw_input={}, raw_output=None, is_error=True
        )

    async def acall(self, *args: Any, **kwargs: Any) -> ToolOutput:
        return self.call()


def make_agent(*tools: Any, name: str = "calc") -> FunctionAgent:
    return FunctionAgent(
        tools=list(tools) or [FunctionTool.from_defaults(add), FunctionTool.from_defaults(boom)],
        llm=MockFunctionCallingLLM(),
        name=name,
    )


async def run(agent: Any, msg: str = "go", **kw: Any) -> Any:
    return await asyncio.wait_for(agent.run(msg, **kw), 30)


def test_function_agent_tools_and_attribution(
    inst: ami.Instrumentor, li_tracker: agentmeter.Tracker
) -> None:
    tools = [FunctionTool.from_defaults(add), FunctionTool.from_defaults(boom), SoftFail()]
    agent = make_agent(*tools)

    async def main() -> None:
        with li_tracker.meter("turn", session_id="s1") as scope:
            await run(agent)
        assert scope.usage.llm_calls == 2 and scope.usage.tool_calls == 3

    asyncio.run(main())
    snap = li_tracker.snapshot()
    tools = li_tracker.session("s1").tools
    assert (tools["add"].calls, tools["add"].ok, tools["add"].failed) == (1, 1, 0)
    assert (tools["boom"].calls, tools["boom"].failed) == (1, 1)
    assert (tools["soft_fail"].calls, tools["soft_fail"].failed) == (1, 1)  # ToolOutput.is_error
    assert tools["add"].total_duration_ms >= 0
    assert snap.by_agent["calc"].llm_calls == 2 and snap.by_agent["calc"].tool_calls == 3
    assert snap.totals.estimated_calls == 2  # the mock reports no usage
    assert not inst._open and not inst._llm


def test_run_id_is_the_session_without_one(
    inst: ami.Instrumentor, li_tracker: agentmeter.Tracker
) -> None:
    async def main() -> list[str]:
        ids = []
        for _ in range(2):
            handler = make_agent().run("go")
            await asyncio.wait_for(handler, 30)
            ids.append(handler.run_id)
        return ids

    run_ids = asyncio.run(main())
    snap = li_tracker.snapshot()
    assert set(snap.by_session) == set(run_ids)
    for rid in run_ids:
        assert snap.by_session[rid].llm_calls == 2 and snap.by_session[rid].tool_calls == 2


def test_tokens_spent_inside_a_tool_are_credited_to_it(
    inst: ami.Instrumentor, li_tracker: agentmeter.Tracker
) -> None:
    inner = MockLLM()

    async def research(topic: str = "meters") -> str:
        """Research with an LLM."""
        return str(await inner.acomplete(f"research {topic}"))

    async def main() -> None:
        with li_tracker.meter("turn", session_id="s-tool"):
            await run(make_agent(FunctionTool.from_defaults(async_fn=research)))

    asyncio.run(main())
    stats = li_tracker.session("s-tool").tools["research"]
    assert stats.calls == 1 and stats.llm_calls == 1
    assert stats.input_tokens > 0
    assert li_tracker.snapshot().totals.llm_calls == 3


def test_unknown_tool_is_a_failed_call(
    inst: ami.Instrumentor, li_tracker: agentmeter.Tracker
) -> None:
    def hallucinate(messages: Any, **kwargs: Any) -> ChatMessage:
        if any(m.role == MessageRole.TOOL for m in messages):
            return ChatMessage(role="assistant", content="done")
        return ChatMessage(
            role="assistant",
            blocks=[ToolCallBlock(tool_call_id="c1", tool_name="nope", tool_kwargs={})],
        )

    agent = FunctionAgent(
        tools=[FunctionTool.from_defaults(add)],
        llm=MockFunctionCallingLLM(response_generator=hallucinate),
    )
    asyncio.run(run(agent))
    stats = li_tracker.snapshot().by_tool
    assert (stats["nope"].calls, stats["nope"].failed) == (1, 1)
    assert "add" not in stats


def test_metered_tool_decorator_and_handler_count_once(
    inst: ami.Instrumentor, li_tracker: agentmeter.Tracker
) -> None:
    @li_tracker.metered_tool(category="math")
    def multiply(a: int = 2, b: int = 3) -> int:
        """Multiply."""
        return a * b

    asyncio.run(run(make_agent(FunctionTool.from_defaults(multiply))))
    stats = li_tracker.snapshot().by_tool["multiply"]
    assert stats.calls == 1 and stats.category == "math"


def test_multi_agent_workflow_follows_the_running_agent(
    inst: ami.Instrumentor, li_tracker: agentmeter.Tracker
) -> None:
    async def lookup(q: str = "x") -> str:
        """Look something up."""
        return "found"

    researcher = FunctionAgent(
        name="researcher",
        description="Looks things up.",
        tools=[FunctionTool.from_defaults(async_fn=lookup)],
        llm=MockFunctionCallingLLM(),
    )
    workflow = AgentWorkflow(agents=[researcher], root_agent="researcher")
    asyncio.run(run(workflow))
    snap = li_tracker.snapshot()
    assert snap.by_agent["researcher"].llm_calls == 2
    assert snap.by_agent["researcher"].tool_calls == 1


def test_custom_workflow_steps_inherit_caller_scope(
    inst: ami.Instrumentor, li_tracker: agentmeter.Tracker
) -> None:
    llm = MockLLM()

    class Flow(Workflow):
        @step
        async def first(self, ctx: Context, ev: StartEvent) -> StopEvent:
            tasks = [llm.acomplete(f"part {i}") for i in range(3)]
            await asyncio.gather(*tasks)
            return StopEvent(result="done")

    async def main() -> None:
        with li_tracker.meter("job", session_id="s-flow", agent_id="me") as scope:
            await asyncio.wait_for(Flow(timeout=20).run(), 30)
        assert scope.usage.llm_calls == 3

    asyncio.run(main())
    snap = li_tracker.snapshot()
    assert snap.by_session["s-flow"].llm_calls == 3 and snap.by_agent["me"].llm_calls == 3


def test_many_concurrent_runs_exact_per_session(
    inst: ami.Instrumentor, li_tracker: agentmeter.Tracker
) -> None:
    n = 25
    agent = make_agent()

    async def one(i: int) -> None:
        async with li_tracker.meter("turn", session_id=f"s{i}"):
            await run(agent, f"request {i % 3}")

    async def main() -> None:
        await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), 60)

    asyncio.run(main())
    # Reference: one run alone, in a fresh tracker.
    ref = agentmeter.Tracker()
    ami.instrument(ref)
    per_prompt = {}
    for k in range(3):
        asyncio.run(run(agent, f"request {k}"))
        per_prompt[k] = ref.snapshot_and_reset().totals
    for i in range(n):
        s = li_tracker.session(f"s{i}")
        want = per_prompt[i % 3]
        assert (s.usage.llm_calls, s.usage.tool_calls, s.usage.failed_tool_calls) == (2, 2, 1)
        assert (s.usage.input_tokens, s.usage.output_tokens) == (
            want.input_tokens,
            want.output_tokens,
        )
    assert li_tracker.snapshot().totals.llm_calls == 2 * n
    assert inst.errors == []
