"""DataFrame export (agentmeter.frames): the frames hold exactly the snapshot's numbers."""

from __future__ import annotations

import math
import sys
import warnings

import pytest

from agentmeter import Tracker, UsageEvent, frames
from agentmeter.models import Usage


@pytest.fixture
def tracker() -> Tracker:
    t = Tracker()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for sid, n in (("s1", 3), ("s2", 5)):
            with t.meter("turn", session_id=sid, agent_id="planner"):
                for i in range(n):
                    t.record_llm(
                        model="gpt-4o-mini",
                        input_tokens=1_000 + i,
                        output_tokens=50,
                        cache_read_tokens=512,
                        provider="openai",
                    )
                    t.record_tool_call(
                        tool="search", ok=i % 2 == 0, duration_ms=5.0 + i, category="web"
                    )
                t.record_llm(model="local-llama", input_tokens=70, output_tokens=7)
                t.record_embedding(model="text-embedding-3-small", input_tokens=300)
    return t


def test_usage_views_equal_the_snapshot(tracker: Tracker) -> None:
    snap = tracker.snapshot()
    for by in ("session", "model", "provider", "agent"):
        df = frames.snapshot_frame(snap, by)
        view: dict[str, Usage] = getattr(snap, f"by_{by}")
        assert df.index.name == by and list(df.index) == list(view)
        for key, u in view.items():
            row = df.loc[key]
            for field in Usage.model_fields:
                assert row[field] == getattr(u, field), (by, key, field)
            assert row["total_tokens"] == u.total_tokens
            if u.cost_usd is None:
                assert math.isnan(row["cost_usd"])  # unpriced is NaN, never 0
            else:
                assert row["cost_usd"] == pytest.approx(float(u.cost_usd))
    assert math.isnan(frames.snapshot_frame(snap, "model").loc["local-llama", "cost_usd"])
    assert frames.snapshot_frame(snap, "model")["input_tokens"].dtype.kind == "i"


def test_totals_and_cells_add_up(tracker: Tracker) -> None:
    snap = tracker.snapshot()
    totals = frames.snapshot_frame(snap, "totals")
    assert totals.loc["total", "input_tokens"] == snap.totals.input_tokens
    cells = frames.snapshot_frame(snap)  # by="cells"
    assert len(cells) == len(snap.cells)
    for field in ("input_tokens", "output_tokens", "cost_micros", "tool_calls", "llm_calls"):
        assert cells[field].sum() == getattr(snap.totals, field)
    by_model = cells.groupby("model")["input_tokens"].sum()
    assert by_model.to_dict() == {m: u.input_tokens for m, u in snap.by_model.items()}


def test_tool_views_equal_the_snapshot(tracker: Tracker) -> None:
    snap = tracker.snapshot()
    tools = frames.snapshot_frame(snap, "tool")
    s = snap.by_tool["search"]
    row = tools.loc["search"]
    assert (row["calls"], row["ok"], row["failed"]) == (s.calls, s.ok, s.failed) == (8, 5, 3)
    assert row["p50_ms"] == pytest.approx(s.p50_ms)
    assert row["p95_ms"] == pytest.approx(s.p95_ms)
    assert row["total_tokens"] == s.total_tokens and row["llm_calls"] == s.llm_calls
    assert row["cost_micros"] == s.cost_micros and row["category"] == "web"
    cats = frames.snapshot_frame(snap, "category")
    assert cats.index.name == "category" and cats.loc["web", "calls"] == 8
    per = frames.snapshot_frame(snap, "session_tool")
    assert per.index.names == ["session", "tool"]
    assert per.loc[("s1", "search"), "calls"] == 3 and per.loc[("s2", "search"), "failed"] == 2
    assert per["calls"].sum() == s.calls


def test_session_frames(tracker: Tracker) -> None:
    session = tracker.session("s2")
    views = frames.session_frames(session)
    assert set(views) == set(frames.SESSION_VIEWS)
    assert views["tool"].loc["search", "calls"] == session.tools["search"].calls
    assert views["model"].loc["gpt-4o-mini", "llm_calls"] == 5
    assert views["agent"].loc["planner", "tool_calls"] == 5
    assert views["totals"].loc["s2", "total_tokens"] == session.usage.total_tokens
    assert frames.to_dataframe(session).equals(views["tool"])


def test_every_snapshot_view_and_to_dataframe(tracker: Tracker) -> None:
    snap = tracker.snapshot()
    views = frames.snapshot_frames(snap)
    assert set(views) == set(frames.SNAPSHOT_VIEWS)
    assert frames.to_dataframe(snap, "model").equals(views["model"])
    assert frames.to_dataframe(tracker.tool_stats()).equals(views["tool"])
    assert frames.to_dataframe(snap.by_session, "session").equals(views["session"])
    assert frames.to_dataframe(snap.totals).loc["total", "llm_calls"] == snap.totals.llm_calls
    with pytest.raises(ValueError, match="by must be one of"):
        frames.snapshot_frame(snap, "nope")
    with pytest.raises(ValueError, match="by must be one of"):
        frames.session_frame(tracker.session("s1"), "cells")
    with pytest.raises(TypeError):
        frames.to_dataframe(42)


def test_empty_frames_keep_their_columns() -> None:
    snap = Tracker().snapshot()
    for view, df in frames.snapshot_frames(snap).items():
        if view == "totals":
            assert len(df) == 1
            continue
        assert df.empty and len(df.columns) > 10, view
    assert list(frames.tool_stats_frame({}).columns) == list(frames.TOOL_COLUMNS)


def test_events_frame() -> None:
    t = Tracker()
    events: list[UsageEvent] = []
    t.subscribe(events.append)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t.record_llm(model="gpt-4o-mini", input_tokens=100, output_tokens=10, session_id="a")
        t.record_llm(model="local-llama", input_tokens=100, output_tokens=10, session_id="a")
    df = frames.events_frame(events)
    assert list(df["model"]) == ["gpt-4o-mini", "local-llama"]
    assert df.loc[0, "cost_usd"] == pytest.approx(float(events[0].cost_usd or 0))
    assert math.isnan(df.loc[1, "cost_usd"])
    assert df["total_tokens"].sum() == 220


def test_missing_pandas_names_the_extra(tracker: Tracker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas -> ImportError
    with pytest.raises(ImportError, match=r"pip install 'agentmeter-core\[pandas\]'"):
        frames.snapshot_frame(tracker.snapshot(), "tool")
