from __future__ import annotations

import asyncio

import pytest

import agentmeter
from agentmeter import Tracker
from agentmeter.instrumentation import unregister_call_id_provider


def _llm(t: Tracker, n: int = 10) -> None:
    t.record_llm(model="gpt-4o", input_tokens=n, output_tokens=1)


def test_metered_bare_and_with_arguments(tracker):
    seen = []

    @tracker.metered
    def plain(x: int) -> int:
        seen.append(tracker.current_scope())
        _llm(tracker, x)
        return x * 2

    @tracker.metered("plan", agent_id="planner", session_id="s1")
    def plan() -> None:
        seen.append(tracker.current_scope())
        _llm(tracker, 5)

    assert plain(3) == 6
    plan()
    assert plain.__name__ == "plain" and plain.__wrapped__ is not None  # type: ignore[attr-defined]
    assert seen[0].name.endswith("plain") and seen[1].name == "plan"
    assert seen[1].agent_id == "planner" and seen[1].session_id == "s1"
    assert seen[0].usage.input_tokens == 3 and seen[1].usage.input_tokens == 5
    assert tracker.snapshot().by_agent["planner"].input_tokens == 5


def test_metered_exception_recorded_and_reraised_unchanged(tracker):
    err = ValueError("boom")
    scopes = []

    @tracker.metered
    def fails() -> None:
        scopes.append(tracker.current_scope())
        raise err

    with pytest.raises(ValueError) as info:
        fails()
    assert info.value is err and scopes[0].error == "ValueError"


async def test_metered_async(tracker):
    @tracker.metered("a")
    async def work(n: int) -> int:
        await asyncio.sleep(0)
        _llm(tracker, n)
        return n

    with tracker.meter("outer") as outer:
        assert await asyncio.gather(work(1), work(2)) == [1, 2]
    assert outer.usage.input_tokens == 3


def test_metered_generator_scope_is_active_only_inside_the_generator(tracker):
    inner_scopes = []

    @tracker.metered("gen")
    def gen(n: int):
        for i in range(n):
            inner_scopes.append(tracker.current_scope())
            _llm(tracker, 1)
            received = yield i
            assert received is None or received == "hi"
        return "done"

    with tracker.meter("consumer") as consumer:
        g = gen(3)
        assert next(g) == 0
        _llm(tracker, 100)  # the consumer's own call, between two yields
        assert tracker.current_scope() is consumer
        assert g.send("hi") == 1
        assert list(g) == [2]
    gen_scope = inner_scopes[0]
    assert all(s is gen_scope for s in inner_scopes)
    assert gen_scope.usage.input_tokens == 3
    assert consumer.usage.input_tokens == 103
    assert gen_scope.path == ("consumer", "gen")


async def test_metered_async_generator(tracker):
    inner = []

    @tracker.metered("agen")
    async def agen(n: int):
        for i in range(n):
            inner.append(tracker.current_scope())
            _llm(tracker, 1)
            yield i

    async with tracker.meter("c") as c:
        got = []
        async for x in agen(4):
            _llm(tracker, 10)
            got.append(x)
    assert got == [0, 1, 2, 3]
    assert inner[0].usage.input_tokens == 4 and c.usage.input_tokens == 44


def test_metered_tool_counts_calls_failures_and_tokens_inside(tracker):
    @tracker.metered_tool(category="search")
    def search(q: str) -> str:
        _llm(tracker, 7)
        if q == "bad":
            raise RuntimeError("no results")
        return q

    with tracker.meter("turn", session_id="s1"):
        search("a")
        search("b")
        with pytest.raises(RuntimeError):
            search("bad")
    st = tracker.tool_stats()["search"]
    assert (st.calls, st.ok, st.failed, st.category) == (3, 2, 1, "search")
    assert st.llm_calls == 3 and st.input_tokens == 21 and st.cost_micros > 0
    assert st.min_duration_ms is not None and st.p95_ms is not None
    assert tracker.tool_stats("s1")["search"].calls == 3
    assert tracker.snapshot().by_category["search"].input_tokens == 21


def test_metered_tool_name_forms(tracker):
    @tracker.metered_tool
    def a() -> None: ...

    @tracker.metered_tool("custom_name")
    def b() -> None: ...

    a()
    b()
    assert set(tracker.tool_stats()) == {"a", "custom_name"}


async def test_metered_tool_async_generator_and_cancel(tracker):
    @tracker.metered_tool
    async def slow() -> None:
        await asyncio.sleep(10)

    @tracker.metered_tool
    def numbers(n: int):
        yield from range(n)

    @tracker.metered_tool
    async def anumbers(n: int):
        for i in range(n):
            _llm(tracker, 1)
            yield i

    task = asyncio.create_task(slow())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert list(numbers(3)) == [0, 1, 2]
    assert [x async for x in anumbers(2)] == [0, 1]
    stats = tracker.tool_stats()
    assert stats["slow"].failed == 1
    assert stats["numbers"].ok == 1
    assert stats["anumbers"].ok == 1 and stats["anumbers"].input_tokens == 2


def test_abandoned_generator_tool_is_not_a_failure(tracker):
    @tracker.metered_tool
    def numbers():
        yield from range(100)

    g = numbers()
    next(g)
    g.close()
    assert tracker.tool_stats()["numbers"].calls == 1
    assert tracker.tool_stats()["numbers"].failed == 0


def test_tool_seen_by_decorator_and_framework_counts_once(tracker):
    current: dict[str, str | None] = {"id": None}

    def provider() -> str | None:
        return current["id"]

    agentmeter.register_call_id_provider(provider)
    try:

        @tracker.metered_tool
        def search() -> None:
            _llm(tracker, 3)

        current["id"] = "run-42"
        search()  # the decorator records call id run-42 ...
        # ... and the framework's own callback reports the same run
        tracker.record_tool_call(tool="search", ok=True, duration_ms=1.0, call_id="run-42")
        current["id"] = None
        search()
    finally:
        # Only this test's provider: the integrations' (registered on import) stay.
        unregister_call_id_provider(provider)
    st = tracker.tool_stats()["search"]
    assert st.calls == 2 and "run-42" in st.recent_call_ids


def test_decorator_argument_errors(tracker):
    with pytest.raises(TypeError):
        tracker.metered(42)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="category"):
        tracker.metered_tool(category=3)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="agent_id"):
        tracker.metered(agent_id=5)  # type: ignore[call-overload]


def test_module_level_decorators(default_tracker):
    @agentmeter.metered_tool(category="x")
    def t() -> None:
        agentmeter.record_llm(model="gpt-4o", input_tokens=2, output_tokens=1)

    @agentmeter.metered
    def outer() -> None:
        t()

    outer()
    assert default_tracker.tool_stats()["t"].input_tokens == 2
