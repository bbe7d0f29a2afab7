"""The package stands on agentmeter's public API only, and exports what it documents."""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import agentmeter_openai_agents as amo
from agents.exceptions import AgentsException

import agentmeter

PACKAGE = Path(amo.__file__).parent


def test_imports_only_public_agentmeter() -> None:
    """agentmeter and agentmeter.instrumentation, and none of their private names."""
    seen = set()
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                if name.split(".")[0] == "agentmeter":
                    seen.add(name)
                    assert name in {"agentmeter", "agentmeter.instrumentation"}, (path.name, name)
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("agentmeter"):
                assert all(not a.name.startswith("_") for a in node.names), path.name
    assert "agentmeter" in seen


def test_public_names() -> None:
    for name in amo.__all__:
        obj = getattr(amo, name)
        assert obj.__doc__, name


def test_budget_exceeded_is_both_and_survives_pickling() -> None:
    err = amo.BudgetExceeded("session 's'", "max_tokens", 10, 8, 0, 5)
    assert isinstance(err, agentmeter.BudgetExceeded) and isinstance(err, AgentsException)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is amo.BudgetExceeded
    assert (back.owner, back.limit_name, back.used, back.requested) == (
        "session 's'",
        "max_tokens",
        8,
        5,
    )
    plain = agentmeter.BudgetExceeded("scope 't'", "max_llm_calls", 1, 1, 0, 1)
    assert str(amo.BudgetExceeded.of(plain)) == str(plain)


async def test_the_mock_api_for_users_reports_usage_in_every_shape() -> None:
    """agentmeter_openai_agents.testing.MockOpenAI (demo, notebook, users' own tests)."""
    import asyncio

    from agentmeter_openai_agents.testing import MockOpenAI
    from agents import (
        Agent,
        ModelSettings,
        OpenAIChatCompletionsModel,
        OpenAIResponsesModel,
        Runner,
        function_tool,
    )

    @function_tool
    def lookup(q: str) -> str:
        """Look up."""
        return "ok"

    for cls in (OpenAIChatCompletionsModel, OpenAIResponsesModel):
        for stream in (False, True):
            api = MockOpenAI(tool_args='{"q": "a"}')
            tracker = agentmeter.Tracker()
            model = cls(model="gpt-4o-mini", openai_client=api.client())
            settings = ModelSettings(include_usage=True)
            agent = Agent(name="a", model=model, tools=[lookup], model_settings=settings)
            hooks = amo.AgentMeterRunHooks(tracker)
            if stream:
                result = Runner.run_streamed(agent, "x", hooks=hooks)
                async for _ in result.stream_events():
                    await asyncio.sleep(0)
            else:
                result = await Runner.run(agent, "x", hooks=hooks)
            sdk = result.context_wrapper.usage
            totals = tracker.snapshot().totals
            assert len(api.requests) == 2 and result.final_output == "Done."
            assert (
                (totals.input_tokens, totals.cache_read_tokens, totals.reasoning_tokens)
                == (
                    sdk.input_tokens,
                    sdk.input_tokens_details.cached_tokens,
                    sdk.output_tokens_details.reasoning_tokens,
                )
                == (2400, 2048, 32)
            )
            assert totals.tool_calls == 1
