"""Sessions and customers from the run, concurrency, instrument() itself, and the host.

- 8 runs at once (``asyncio.gather``), one session each: every session exactly what
  the transport billed for it, and equal to that run's own SDK counters;
- where ``session_id`` / ``customer_id`` come from: the hooks, the run's context, the
  run config (``trace_metadata``, ``group_id``), the SDK session, the caller's scope;
- ``instrument()`` is idempotent, composes with the run's own hooks, and undoes;
- agentmeter failing inside never breaks the run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

import agentmeter_openai_agents as amo
import pytest
from agents import Agent, ModelSettings, RunConfig, RunHooks, Runner, SQLiteSession, function_tool
from agents.run import get_default_agent_runner
from conftest import make_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oa_fakes import FakeOpenAI
from test_oa_usage import meter_usage, run_agent, sdk_usage

import agentmeter

pytestmark = [
    pytest.mark.filterwarnings("ignore::agentmeter.UnpricedModelWarning"),
    pytest.mark.timeout(120),
]

USAGE = ModelSettings(include_usage=True)


@function_tool
async def search(city: str) -> str:
    """Search."""
    await asyncio.sleep(0.001)  # let the concurrent runs interleave
    return f"found {city}"


def agent_over(fake: FakeOpenAI, api: str, name: str = "searcher") -> Agent[Any]:
    return Agent(name=name, model=make_model(fake, api), tools=[search], model_settings=USAGE)


@pytest.mark.parametrize("form", ["hooks", "instrument"])
async def test_eight_concurrent_runs_exact_per_session(
    fake: FakeOpenAI, api: str, form: str, oa_tracker: agentmeter.Tracker
) -> None:
    agent = agent_over(fake, api)
    shared = amo.AgentMeterRunHooks(oa_tracker)  # one hooks object for all the runs
    if form == "instrument":
        amo.instrument(oa_tracker)

    async def one(k: int) -> Any:
        ctx = {"session_id": f"s{k}", "customer_id": f"c{k % 2}"}
        kw: dict[str, Any] = {"hooks": shared} if form == "hooks" else {}
        mode = "streamed" if k % 2 else "run"
        return await run_agent(agent, mode, f"go n={k + 1}", context=ctx, **kw)

    results = await asyncio.gather(*(one(k) for k in range(8)))
    snap = oa_tracker.snapshot()
    assert snap.totals.llm_calls == 16 == len(fake.served)
    for k, result in enumerate(results):
        session = oa_tracker.session(f"s{k}").usage
        assert meter_usage(session) == sdk_usage(result)
        assert session.input_tokens == 2 * fake.prompt * (k + 1)
        assert session.output_tokens == 2 * fake.completion * (k + 1)
        assert oa_tracker.session(f"s{k}").tools["search"].calls == 1
    for c in (0, 1):
        ks = [k for k in range(8) if k % 2 == c]
        assert snap.by_customer[f"c{c}"].input_tokens == sum(2 * fake.prompt * (k + 1) for k in ks)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    counts=st.lists(
        st.tuples(st.integers(1, 50_000), st.integers(0, 5_000), st.integers(0, 100)),
        min_size=1,
        max_size=4,
    ),
    api=st.sampled_from(["chat", "responses"]),
    stream=st.booleans(),
)
def test_property_exact_for_any_reported_usage(
    counts: list[tuple[int, int, int]], api: str, stream: bool
) -> None:
    """Any usage the provider reports (cache and reasoning as parts of their wholes):
    agentmeter's totals are the SDK's, over runs of one request each."""
    tracker = agentmeter.Tracker()

    async def go() -> list[Any]:
        out = []
        for prompt, completion, pct in counts:
            fake = FakeOpenAI(
                prompt=prompt,
                cached=prompt * pct // 100,
                completion=completion,
                reasoning=completion * pct // 100,
                tool_first=False,
            )
            agent = Agent(name="p", model=make_model(fake, api), model_settings=USAGE)
            hooks = amo.AgentMeterRunHooks(tracker, session_id="prop")
            out.append(await run_agent(agent, "streamed" if stream else "run", "x", hooks=hooks))
        return out

    results = asyncio.run(go())
    sdk = [sdk_usage(r) for r in results]
    want = tuple(sum(x[i] for x in sdk) for i in range(5))
    assert meter_usage(tracker.session("prop").usage) == want
    assert want[1] == sum(p for p, _, _ in counts)


@dataclasses.dataclass
class AppContext:
    user: str
    session_id: str | None = None
    customer_id: str | None = None


async def test_where_the_session_and_customer_come_from(
    fake: FakeOpenAI, oa_tracker: agentmeter.Tracker
) -> None:
    agent = Agent(name="a", model=make_model(fake, "responses"))
    amo.instrument(oa_tracker)
    # an object context with attributes
    await Runner.run(agent, "x", context=AppContext("u", session_id="ctx-s", customer_id="ctx-c"))
    # trace_metadata, then group_id
    cfg = RunConfig(group_id="thread-7", trace_metadata={"customer_id": "meta-c"})
    await Runner.run(agent, "x", run_config=cfg)
    # the SDK session's id
    await Runner.run(agent, "x", session=SQLiteSession("conv-42"))
    # the caller's agentmeter scope
    with oa_tracker.meter("turn", session_id="scope-s", customer_id="scope-c"):
        await Runner.run(agent, "x")
    # explicit hooks win over everything the run says
    hooks = amo.AgentMeterRunHooks(oa_tracker, session_id="explicit")
    await Runner.run(agent, "x", context={"session_id": "ignored"}, hooks=hooks)

    snap = oa_tracker.snapshot()
    assert {k: v.llm_calls for k, v in snap.by_session.items()} == {
        "ctx-s": 1,
        "thread-7": 1,
        "conv-42": 1,
        "scope-s": 1,
        "explicit": 1,
    }
    assert {k: v.llm_calls for k, v in snap.by_customer.items()} == {
        "ctx-c": 1,
        "meta-c": 1,
        "scope-c": 1,
    }


class Recording(RunHooks[Any]):
    def __init__(self) -> None:
        self.seen: list[str] = []

    async def on_agent_start(self, context: Any, agent: Any) -> None:
        self.seen.append("agent_start")

    async def on_llm_start(self, *args: Any) -> None:
        self.seen.append("llm_start")

    async def on_llm_end(self, *args: Any) -> None:
        self.seen.append("llm_end")

    async def on_tool_end(self, *args: Any) -> None:
        self.seen.append("tool_end")

    async def on_agent_end(self, *args: Any) -> None:
        self.seen.append("agent_end")


async def test_instrument_is_idempotent_composes_and_undoes(
    fake: FakeOpenAI, oa_tracker: agentmeter.Tracker
) -> None:
    before = get_default_agent_runner()
    amo.instrument(oa_tracker)
    hooks = amo.instrument(oa_tracker, customer_id="acme")  # replaces, never stacks
    assert amo.instrumented_hooks() is hooks
    runner = get_default_agent_runner()
    assert runner is not before and runner.inner is before  # type: ignore[attr-defined]

    mine = Recording()
    agent = agent_over(fake, "chat")
    result = await Runner.run(agent, "n=1", hooks=mine)
    assert mine.seen == [
        "agent_start",
        "llm_start",
        "llm_end",
        "tool_end",
        "llm_start",
        "llm_end",
        "agent_end",
    ]
    snap = oa_tracker.snapshot()
    assert meter_usage(snap.totals) == sdk_usage(result)  # once, not twice
    assert snap.by_customer["acme"].llm_calls == 2

    # a run with agentmeter's own hooks under instrument(): counted once, by those
    other = agentmeter.Tracker()
    await Runner.run(agent, "n=1", hooks=amo.AgentMeterRunHooks(other))
    assert other.snapshot().totals.llm_calls == 2
    assert oa_tracker.snapshot().totals.llm_calls == 2

    amo.uninstrument()
    amo.uninstrument()
    assert get_default_agent_runner() is before
    assert amo.instrumented_hooks() is None
    await Runner.run(agent, "n=1")
    assert oa_tracker.snapshot().totals.llm_calls == 2  # no longer metered


class Broken(agentmeter.Tracker):
    def record_llm(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("agentmeter is broken")

    def record_tool_call(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("agentmeter is broken")


@pytest.mark.parametrize("mode", ["run", "streamed"])
async def test_agentmeter_failing_inside_never_breaks_the_run(
    fake: FakeOpenAI,
    api: str,
    mode: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("AGENTMETER_STRICT", "0")  # production behaviour: log and go on
    amo.instrument(Broken())
    agent = agent_over(fake, api)
    with caplog.at_level(logging.ERROR, logger="agentmeter"):
        result = await run_agent(agent, mode, "n=1", hooks=amo.AgentMeterRunHooks(Broken()))
    assert result.final_output == fake.reply
    assert len(fake.served) == 2
    assert "agentmeter is broken" in caplog.text


def test_bad_arguments_are_refused_naming_them() -> None:
    with pytest.raises(TypeError, match="enforce_budgets"):
        amo.AgentMeterRunHooks(enforce_budgets="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="session_id"):
        amo.AgentMeterRunHooks(session_id=42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="forward"):
        amo.AgentMeterRunHooks(forward=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="tracker"):
        amo.instrument(tracker="default")  # type: ignore[arg-type]
    assert amo.instrumented_hooks() is None  # a refused instrument() changed nothing
