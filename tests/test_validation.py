"""Bad input raises ValueError/TypeError naming the argument, and counts nothing."""

from __future__ import annotations

import pytest

from agentmeter import Budget, Tracker

OK_LLM = {"model": "gpt-4o", "input_tokens": 10, "output_tokens": 2}

BAD_LLM = [
    ({"model": None}, TypeError, "model"),
    ({"model": 42}, TypeError, "model"),
    ({"model": ""}, ValueError, "model"),
    ({"input_tokens": -1}, ValueError, "input_tokens"),
    ({"input_tokens": 1.5}, TypeError, "input_tokens"),
    ({"input_tokens": True}, TypeError, "input_tokens"),
    ({"input_tokens": "10"}, TypeError, "input_tokens"),
    ({"output_tokens": float("nan")}, TypeError, "output_tokens"),
    ({"output_tokens": -5}, ValueError, "output_tokens"),
    ({"cache_read_tokens": -1}, ValueError, "cache_read_tokens"),
    ({"cache_read_tokens": 11}, ValueError, "cache_read_tokens"),
    ({"cache_write_tokens": None}, TypeError, "cache_write_tokens"),
    ({"reasoning_tokens": 3}, ValueError, "reasoning_tokens"),
    ({"latency_ms": float("nan")}, ValueError, "latency_ms"),
    ({"latency_ms": -1.0}, ValueError, "latency_ms"),
    ({"latency_ms": "fast"}, TypeError, "latency_ms"),
    ({"cost_usd": float("inf")}, ValueError, "cost_usd"),
    ({"cost_usd": -0.01}, ValueError, "cost_usd"),
    ({"cost_usd": "1"}, TypeError, "cost_usd"),
    ({"kind": "embedding"}, ValueError, "kind"),
    ({"kind": "banana"}, ValueError, "kind"),
    ({"session_id": 7}, TypeError, "session_id"),
    ({"session_id": ""}, ValueError, "session_id"),
    ({"agent_id": ["a"]}, TypeError, "agent_id"),
    ({"provider": 1}, TypeError, "provider"),
    ({"call_id": ["x"]}, TypeError, "call_id"),
    ({"estimated": "yes"}, TypeError, "estimated"),
    ({"ok": 1}, TypeError, "ok"),
    ({"metadata": "x"}, TypeError, "metadata"),
    ({"tool": 3}, TypeError, "tool"),
]


def _unchanged(t: Tracker, before) -> None:
    after = t.snapshot()
    assert after.totals == before.totals and after.cells == before.cells
    assert after.by_tool == before.by_tool


@pytest.mark.parametrize("bad,exc,arg", BAD_LLM)
def test_record_llm_rejects(tracker, bad, exc, arg):
    tracker.record_llm(**OK_LLM, session_id="s")
    before = tracker.snapshot()
    events = []
    tracker.subscribe(events.append)
    with tracker.meter("x") as scope, pytest.raises(exc, match=arg):
        tracker.record_llm(**{**OK_LLM, **bad})
    _unchanged(tracker, before)
    assert scope.usage.llm_calls == 0 and events == []


@pytest.mark.parametrize(
    "bad,exc,arg",
    [
        ({"model": 3}, TypeError, "model"),
        ({"input_tokens": -3}, ValueError, "input_tokens"),
        ({"latency_ms": float("nan")}, ValueError, "latency_ms"),
        ({"estimated": None}, TypeError, "estimated"),
    ],
)
def test_record_embedding_rejects(tracker, bad, exc, arg):
    before = tracker.snapshot()
    with pytest.raises(exc, match=arg):
        tracker.record_embedding(**{"model": "m", "input_tokens": 3, **bad})
    _unchanged(tracker, before)


@pytest.mark.parametrize(
    "bad,exc,arg",
    [
        ({"tool": None}, TypeError, "tool"),
        ({"tool": ""}, ValueError, "tool"),
        ({"ok": "true"}, TypeError, "ok"),
        ({"duration_ms": -1}, ValueError, "duration_ms"),
        ({"duration_ms": float("nan")}, ValueError, "duration_ms"),
        ({"duration_ms": None}, TypeError, "duration_ms"),
        ({"category": 5}, TypeError, "category"),
        ({"session_id": 5}, TypeError, "session_id"),
        ({"error": 5}, TypeError, "error"),
    ],
)
def test_record_tool_call_rejects(tracker, bad, exc, arg):
    before = tracker.snapshot()
    with pytest.raises(exc, match=arg):
        tracker.record_tool_call(**{"tool": "t", "ok": True, "duration_ms": 1.0, **bad})
    _unchanged(tracker, before)


def test_other_functions_reject(tracker):
    before = tracker.snapshot()
    with pytest.raises(ValueError, match="tokens_saved"):
        tracker.record_cache_hit(tokens_saved=-1)
    with pytest.raises(TypeError, match="session_id"):
        tracker.record_cache_miss(session_id=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="estimated_tokens"):
        tracker.check_budget(-1)
    with pytest.raises(ValueError, match="kind"):
        tracker.check_budget(1, kind="chat")
    with pytest.raises(TypeError, match="budget"):
        tracker.set_budget("s", 100)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="session_id"):
        tracker.set_budget(None, Budget(max_tokens=1))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="merge"):
        tracker.merge("not a snapshot")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="callable"):
        tracker.subscribe("nope")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="submit"):
        tracker.add_sink(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="default_session_budget"):
        tracker.configure(default_session_budget=5)
    _unchanged(tracker, before)
