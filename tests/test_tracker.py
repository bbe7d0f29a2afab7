from __future__ import annotations

import json
from decimal import Decimal

import pytest

import agentmeter
from agentmeter import Snapshot, Tracker


def test_record_llm_counts_every_field(tracker):
    tracker.record_llm(
        model="gpt-4o-mini",
        input_tokens=1000,
        output_tokens=200,
        cache_read_tokens=400,
        cache_write_tokens=100,
        reasoning_tokens=50,
        provider="openai",
        latency_ms=12.5,
        session_id="s1",
        agent_id="a1",
    )
    u = tracker.snapshot().totals
    assert (
        u.input_tokens,
        u.output_tokens,
        u.cache_read_tokens,
        u.cache_write_tokens,
        u.reasoning_tokens,
    ) == (1000, 200, 400, 100, 50)
    assert u.llm_calls == 1 and u.failed_llm_calls == 0 and u.estimated_calls == 0
    assert u.llm_latency_ms == 12.5
    assert u.total_tokens == 1200
    # gpt-4o-mini: 0.15 in / 0.075 cache read / 0.6 out per Mtok; no cache-write price -> input rate
    expected = 500 * 0.15 + 400 * 0.075 + 100 * 0.15 + 200 * 0.6
    assert u.cost_micros == round(expected)
    assert u.cost_usd == Decimal(round(expected)) / 1_000_000


def test_breakdowns_by_model_provider_session_agent(tracker):
    tracker.record_llm(
        model="gpt-4o",
        input_tokens=10,
        output_tokens=1,
        provider="openai",
        session_id="s1",
        agent_id="a",
    )
    tracker.record_llm(
        model="gpt-4o-mini", input_tokens=20, output_tokens=2, session_id="s2", agent_id="a"
    )
    tracker.record_embedding(model="text-embedding-3-small", input_tokens=7, session_id="s1")
    snap = tracker.snapshot()
    assert snap.by_model["gpt-4o"].input_tokens == 10
    assert snap.by_model["text-embedding-3-small"].embedding_tokens == 7
    assert snap.by_provider["openai"].llm_calls == 1
    assert snap.by_session["s1"].total_tokens == 18
    assert snap.by_session["s2"].total_tokens == 22
    assert snap.by_agent["a"].llm_calls == 2
    assert snap.totals.embedding_calls == 1 and snap.totals.total_tokens == 40


def test_failed_and_estimated_calls(tracker):
    tracker.record_llm(model="gpt-4o", input_tokens=10, output_tokens=0, ok=False, error="timeout")
    tracker.record_llm(model="gpt-4o", input_tokens=10, output_tokens=3, estimated=True)
    u = tracker.snapshot().totals
    assert u.llm_calls == 2 and u.failed_llm_calls == 1 and u.estimated_calls == 1


def test_duplicate_call_id_counts_once(tracker):
    for _ in range(3):
        tracker.record_llm(model="gpt-4o", input_tokens=10, output_tokens=1, call_id="run-1")
    tracker.record_tool_call(tool="t", ok=True, duration_ms=1.0, call_id="tool-1")
    tracker.record_tool_call(tool="t", ok=True, duration_ms=1.0, call_id="tool-1")
    snap = tracker.snapshot()
    assert snap.totals.llm_calls == 1 and snap.totals.input_tokens == 10
    assert snap.by_tool["t"].calls == 1


def test_dedup_memory_is_bounded():
    t = Tracker(dedup_window=100)
    for i in range(1000):
        t.record_tool_call(tool="t", ok=True, duration_ms=0.1, call_id=f"c{i}")
    assert len(t.recorder.seen) == 100 and len(t.recorder.seen_order) == 100
    assert t.snapshot().by_tool["t"].calls == 1000
    assert len(t.snapshot().by_tool["t"].recent_call_ids) <= 8


def test_dedup_window_keeps_the_ids_not_the_rows():
    """The window remembers ids only: its memory per record is the id's table slots,
    not the recorded row and its values (measured: ~43 B per record, ~190 B with rows)."""
    import tracemalloc

    t = Tracker(dedup_window=10_000)
    ids = [f"call-{i}" for i in range(5000)]  # allocated before tracing
    t.record_llm("gpt-4o", 10, 1, call_id="warm-up")
    t.snapshot()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for cid in ids:
            t.record_llm("gpt-4o", 1000, 100, call_id=cid, latency_ms=12.5)
        snap = t.snapshot()  # folds the log: only the window still holds anything
        per_record = (tracemalloc.get_traced_memory()[0] - before) / len(ids)
    finally:
        tracemalloc.stop()
    assert snap.totals.llm_calls == 5001
    assert per_record < 100, per_record
    # The claim outlives the row: a late duplicate is still dropped.
    t.record_llm("gpt-4o", 1000, 100, call_id="call-0")
    assert t.snapshot().totals.llm_calls == 5001


def test_uuid_call_ids_are_accepted(tracker):
    import uuid

    rid = uuid.uuid4()
    tracker.record_llm(model="gpt-4o", input_tokens=1, output_tokens=1, call_id=rid)
    tracker.record_llm(model="gpt-4o", input_tokens=1, output_tokens=1, call_id=str(rid))
    assert tracker.snapshot().totals.llm_calls == 1


def test_cache_hits_and_misses(tracker):
    tracker.record_cache_hit(tokens_saved=120, session_id="s")
    tracker.record_cache_hit(tokens_saved=30)
    tracker.record_cache_miss()
    u = tracker.snapshot().totals
    assert (u.cache_hits, u.cache_misses, u.tokens_saved) == (2, 1, 150)
    assert tracker.snapshot().by_session["s"].tokens_saved == 120


def test_snapshot_is_frozen_and_json_round_trips(tracker):
    tracker.record_llm(model="gpt-4o", input_tokens=10, output_tokens=2, session_id="s")
    tracker.record_tool_call(
        tool="search", ok=False, duration_ms=3.5, category="web", session_id="s"
    )
    snap = tracker.snapshot()
    with pytest.raises(Exception):
        snap.totals.input_tokens = 5  # type: ignore[misc]
    data = json.loads(snap.model_dump_json())
    assert data["totals"]["input_tokens"] == 10
    assert data["by_tool"]["search"]["failed"] == 1
    again = Snapshot.model_validate_json(snap.model_dump_json())
    assert again.totals == snap.totals
    assert again.by_tool["search"].p50_ms == snap.by_tool["search"].p50_ms


def test_snapshot_and_reset_is_atomic(tracker):
    tracker.record_llm(model="gpt-4o", input_tokens=10, output_tokens=2)
    first = tracker.snapshot_and_reset()
    assert first.totals.llm_calls == 1
    assert tracker.snapshot().totals.llm_calls == 0
    tracker.record_llm(model="gpt-4o", input_tokens=1, output_tokens=1)
    assert tracker.snapshot().totals.llm_calls == 1


def test_reset_keeps_open_scope_totals(tracker):
    with tracker.meter("x") as scope:
        tracker.record_llm(model="gpt-4o", input_tokens=10, output_tokens=2)
        tracker.reset()
        tracker.record_llm(model="gpt-4o", input_tokens=1, output_tokens=1)
    assert scope.usage.llm_calls == 2
    assert tracker.snapshot().totals.llm_calls == 1


def test_merge_equals_doing_all_the_work_in_one_tracker():
    a, b, both = Tracker(), Tracker(), Tracker()
    for t in (a, both):
        t.record_llm(
            model="gpt-4o", input_tokens=10, output_tokens=2, session_id="s1", agent_id="x"
        )
        t.record_tool_call(tool="search", ok=True, duration_ms=5.0, category="web", session_id="s1")
    for t in (b, both):
        t.record_llm(model="claude-3-5-sonnet", input_tokens=7, output_tokens=3, session_id="s2")
        t.record_tool_call(
            tool="search", ok=False, duration_ms=50.0, category="web", session_id="s1"
        )
    merged = Tracker()
    merged.merge(a.snapshot())
    merged.merge(Snapshot.model_validate_json(b.snapshot().model_dump_json()))
    m, e = merged.snapshot(), both.snapshot()
    assert m.totals == e.totals
    assert m.by_model == e.by_model and m.by_session == e.by_session and m.by_agent == e.by_agent
    for name in ("by_tool", "by_category"):
        got = {k: v.model_dump(exclude={"recent_call_ids"}) for k, v in getattr(m, name).items()}
        want = {k: v.model_dump(exclude={"recent_call_ids"}) for k, v in getattr(e, name).items()}
        assert got == want


def test_session_view_and_unknown_session(tracker):
    with tracker.meter("turn", session_id="s1", agent_id="planner"):
        tracker.record_llm(model="gpt-4o", input_tokens=10, output_tokens=2)
        tracker.record_tool_call(tool="search", ok=True, duration_ms=2.0)
    s = tracker.session("s1")
    assert s.usage.llm_calls == 1 and s.usage.tool_calls == 1
    assert s.by_agent["planner"].llm_calls == 1
    assert s.tools["search"].calls == 1
    assert tracker.sessions() == ["s1"]
    with pytest.raises(agentmeter.NotFoundError, match="unknown session"):
        tracker.session("nope")
    assert tracker.tool_stats("nope") == {}


def test_close_session_returns_final_usage_and_frees_it(tracker):
    tracker.record_llm(model="gpt-4o", input_tokens=10, output_tokens=2, session_id="s1")
    tracker.record_tool_call(tool="search", ok=True, duration_ms=2.0, session_id="s1")
    tracker.set_budget("s1", agentmeter.Budget(max_tokens=100))
    final = tracker.close_session("s1")
    assert final.usage.total_tokens == 12 and final.tools["search"].calls == 1
    assert final.budget is not None and final.budget.used["max_tokens"] == 12
    assert "s1" not in tracker.sessions()
    with pytest.raises(LookupError):
        tracker.session("s1")
    snap = tracker.snapshot()  # totals and tool stats survive the close
    assert snap.totals.total_tokens == 12 and snap.by_tool["search"].calls == 1
    assert "s1" not in snap.by_session


def test_tool_stats_per_session_and_overall(tracker):
    for sid, ok in (("a", True), ("a", False), ("b", True)):
        tracker.record_tool_call(
            tool="search", ok=ok, duration_ms=10.0, session_id=sid, category="web"
        )
    assert tracker.tool_stats()["search"].calls == 3
    assert tracker.tool_stats("a")["search"].failed == 1
    assert tracker.snapshot().by_category["web"].calls == 3
    assert tracker.snapshot().by_session_tool["b"]["search"].ok == 1


def test_latency_percentiles(tracker):
    for ms in range(1, 101):
        tracker.record_tool_call(tool="t", ok=True, duration_ms=float(ms))
    st = tracker.tool_stats()["t"]
    assert st.min_duration_ms == 1.0 and st.max_duration_ms == 100.0
    assert st.mean_duration_ms == pytest.approx(50.5)
    assert st.p50_ms == pytest.approx(50, rel=0.05)
    assert st.p95_ms == pytest.approx(95, rel=0.05)


def test_module_level_functions_use_the_default_tracker(default_tracker):
    agentmeter.record_llm(model="gpt-4o", input_tokens=3, output_tokens=1)
    assert agentmeter.get_tracker() is default_tracker
    assert agentmeter.snapshot().totals.llm_calls == 1
    assert agentmeter.record_llm.__self__ is default_tracker  # type: ignore[attr-defined]


def test_internal_errors_are_swallowed_outside_strict_mode(tracker, monkeypatch, caplog):
    monkeypatch.setenv("AGENTMETER_STRICT", "0")

    def boom(*a, **k):
        raise RuntimeError("internal bug")

    monkeypatch.setattr(tracker.recorder, "fold", boom)
    for _ in range(600):  # crosses the fold threshold
        tracker.record_llm(model="gpt-4o", input_tokens=1, output_tokens=1)
    assert "internal bug" in caplog.text
    monkeypatch.setenv("AGENTMETER_STRICT", "1")
    with pytest.raises(RuntimeError):
        for _ in range(600):
            tracker.record_llm(model="gpt-4o", input_tokens=1, output_tokens=1)


def test_strict_mode_is_chosen_not_inferred_from_pytest(tracker, monkeypatch, caplog):
    """A user's test suite sees agentmeter as production does: errors logged, not raised."""
    monkeypatch.delenv("AGENTMETER_STRICT", raising=False)
    from agentmeter import _guard

    assert "pytest" in __import__("sys").modules and not _guard.strict_mode()

    def boom(*a, **k):
        raise RuntimeError("internal bug")

    monkeypatch.setattr(tracker.recorder, "fold", boom)
    for _ in range(600):
        tracker.record_llm(model="gpt-4o", input_tokens=1, output_tokens=1)
    assert "internal bug" in caplog.text


def test_strict_fixture_turns_strict_mode_on(agentmeter_strict, monkeypatch):
    monkeypatch.delenv("AGENTMETER_STRICT", raising=False)
    from agentmeter import _guard

    assert _guard.strict_mode()
    with pytest.raises(TypeError, match="enabled must be a bool"):
        _guard.set_strict("yes")  # type: ignore[arg-type]


def test_call_ids_are_unique_across_trackers_and_forks():
    import os

    a, b = Tracker(), Tracker()
    assert a.new_call_id() != b.new_call_id()
    assert a.new_call_id().startswith("am-")
    if not hasattr(os, "fork"):
        return
    parent_next = a.new_call_id()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a new prefix, whatever the inherited counter says
        os.write(w, a.new_call_id().encode())
        os._exit(0)
    os.close(w)
    child_id = os.read(r, 100).decode()
    os.waitpid(pid, 0)
    assert child_id.rsplit("-", 1)[0] != parent_next.rsplit("-", 1)[0]


def test_row_keys_of_named_sessions_are_cached_per_session_and_freed() -> None:
    """A record naming its session (what integrations do) reuses a cached row key per
    (model, session); each session keeps its own numbers, a scope's session is not
    confused with a named one, and closing a session lets its keys go."""
    t = Tracker()
    t.set_price("m", input_per_mtok=1, output_per_mtok=1)
    for s in ("s1", "s2", "s1"):
        t.record_llm("m", 10, 1, session_id=s)
    t.record_llm("m", 10, 1, session_id="s1", provider="openai")
    t.record_llm("m", 10, 1, provider="openai")
    snap = t.snapshot()
    assert snap.by_session["s1"].llm_calls == 3
    assert snap.by_session["s2"].llm_calls == 1
    assert snap.by_provider["openai"].llm_calls == 2
    assert len(t.recorder.row_keys) == 4
    t.close_session("s1")
    assert t.recorder.row_keys == {}
    with t.meter("x", session_id="a") as scope:
        t.record_llm("m", 1, 1, session_id="b")
        t.record_llm("m", 2, 1)
        t.record_llm("m", 4, 1, session_id="b")
    snap = t.snapshot()
    assert snap.by_session["b"].input_tokens == 5
    assert snap.by_session["a"].input_tokens == 2
    assert scope.usage.input_tokens == 7
