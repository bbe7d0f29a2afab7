from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

import agentmeter
from agentmeter import Tracker


def _llm(t: Tracker, n: int = 10) -> None:
    t.record_llm(model="gpt-4o", input_tokens=n, output_tokens=1)


def test_nested_scopes_are_inclusive(tracker):
    with tracker.meter("outer") as outer:
        _llm(tracker, 1)
        with tracker.meter("mid") as mid:
            _llm(tracker, 10)
            with tracker.meter("inner") as inner:
                _llm(tracker, 100)
    assert inner.usage.input_tokens == 100
    assert mid.usage.input_tokens == 110
    assert outer.usage.input_tokens == 111
    assert inner.path == ("outer", "mid", "inner")
    assert tracker.snapshot().totals.input_tokens == 111


def test_children_inherit_session_and_agent_unless_set(tracker):
    with tracker.meter("turn", session_id="s1", agent_id="planner"):
        with tracker.meter("step") as step:
            assert (step.session_id, step.agent_id) == ("s1", "planner")
            _llm(tracker)
        with tracker.meter("write", agent_id="writer") as w:
            assert (w.session_id, w.agent_id) == ("s1", "writer")
            _llm(tracker)
    snap = tracker.snapshot()
    assert snap.by_session["s1"].llm_calls == 2
    assert snap.by_agent["planner"].llm_calls == 1 and snap.by_agent["writer"].llm_calls == 1


def test_explicit_session_overrides_scope(tracker):
    with tracker.meter("turn", session_id="s1") as scope:
        tracker.record_llm(model="gpt-4o", input_tokens=5, output_tokens=0, session_id="other")
    assert tracker.snapshot().by_session == {"other": tracker.snapshot().by_session["other"]}
    assert scope.usage.input_tokens == 5  # it still happened inside the scope


def test_current_scope_and_exit(tracker):
    assert tracker.current_scope() is None
    with tracker.meter("a") as a:
        assert tracker.current_scope() is a
        with tracker.meter("b") as b:
            assert tracker.current_scope() is b
        assert tracker.current_scope() is a
    assert tracker.current_scope() is None
    assert not a.active and a.duration_ms is not None


def test_scope_cannot_be_entered_twice(tracker):
    scope = tracker.meter("x")
    with scope:
        pass
    with pytest.raises(RuntimeError, match="already entered"), scope:
        pass


def test_exception_is_noted_and_propagates(tracker):
    with pytest.raises(ZeroDivisionError), tracker.meter("x") as scope:
        _llm(tracker)
        1 / 0
    assert scope.error == "ZeroDivisionError" and scope.usage.llm_calls == 1


def test_scopes_of_other_trackers_are_skipped():
    t1, t2 = Tracker(), Tracker()
    with t1.meter("one", session_id="s1") as one, t2.meter("two", session_id="s2") as two:
        _llm(t1, 3)
        _llm(t2, 4)
    assert one.usage.input_tokens == 3 and two.usage.input_tokens == 4
    assert list(t1.snapshot().by_session) == ["s1"]


async def test_async_with_and_tasks_record_into_creator_scope(tracker):
    async def work(n: int) -> None:
        await asyncio.sleep(0)
        _llm(tracker, n)

    async with tracker.meter("outer", session_id="s") as outer:
        await asyncio.gather(*(asyncio.create_task(work(i)) for i in range(1, 11)))
    assert outer.usage.input_tokens == 55 and outer.usage.llm_calls == 10


async def test_each_task_has_its_own_stack(tracker):
    scopes = {}

    async def worker(name: str) -> None:
        async with tracker.meter(name, session_id=name) as s:
            scopes[name] = s
            for _ in range(5):
                await asyncio.sleep(0)
                assert tracker.current_scope() is s
                _llm(tracker, 2)

    await asyncio.gather(*(worker(f"w{i}") for i in range(20)))
    for s in scopes.values():
        assert s.usage.input_tokens == 10
    assert tracker.current_scope() is None


def test_threads_do_not_inherit_without_run_in_context(tracker):
    with tracker.meter("outer") as outer:
        t = threading.Thread(target=_llm, args=(tracker, 5))
        t.start()
        t.join()
        t = threading.Thread(target=agentmeter.run_in_context(_llm), args=(tracker, 7))
        t.start()
        t.join()
        with ThreadPoolExecutor(4) as pool:
            bound = agentmeter.run_in_context(_llm)
            list(pool.map(lambda n: bound(tracker, n), [1, 1, 1, 1]))
    assert outer.usage.input_tokens == 11
    assert tracker.snapshot().totals.input_tokens == 16


def test_scope_usage_sees_records_before_fold(tracker):
    with tracker.meter("x") as scope:
        for _ in range(3):
            _llm(tracker)
        assert scope.usage.llm_calls == 3  # read folds the pending log


def test_bad_scope_arguments(tracker):
    with pytest.raises(TypeError, match="session_id"):
        tracker.meter("x", session_id=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name"):
        tracker.meter("")
    with pytest.raises(TypeError, match="budget"):
        tracker.meter("x", budget={"max_tokens": 3})  # type: ignore[arg-type]


def test_changing_a_scopes_agent_redirects_later_records(tracker):
    """A hand-off (the scope's agent changes) bills later calls to the new agent."""
    with tracker.meter("run", session_id="s", agent_id="researcher") as scope:
        _llm(tracker, 1)
        scope.agent_id = "writer"
        _llm(tracker, 2)
        scope.session_id = "s2"
        _llm(tracker, 4)
    snap = tracker.snapshot()
    assert snap.by_agent["researcher"].input_tokens == 1
    assert snap.by_agent["writer"].input_tokens == 6
    assert snap.by_session["s"].input_tokens == 3 and snap.by_session["s2"].input_tokens == 4
    assert scope.usage.input_tokens == 7
