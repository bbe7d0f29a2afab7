"""Plots (agentmeter.plots): what they draw matches the numbers, unpriced is not $0."""

from __future__ import annotations

import os
import sys
import warnings

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from agentmeter import Tracker, plots


@pytest.fixture(autouse=True)
def _close_figures() -> None:
    yield
    plt.close("all")


@pytest.fixture
def tracker() -> Tracker:
    t = Tracker()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")

        @t.metered_tool(category="search")
        def search() -> None:
            t.record_llm(
                model="gpt-4o-mini", input_tokens=2_000, output_tokens=100, cache_read_tokens=1_000
            )

        @t.metered_tool
        def local() -> None:
            t.record_llm(model="local-llama", input_tokens=500, output_tokens=20)

        with t.meter("turn", session_id="s1"):
            search()
            search()
            local()
        with t.meter("turn", session_id="s2"):
            t.record_llm(model="gpt-4o-mini", input_tokens=100, output_tokens=10, estimated=True)
            for i in range(30):
                t.record_tool_call(tool="calc", ok=i % 10 != 0, duration_ms=1.0 + i / 10)
    return t


def bar_widths(ax: Axes) -> dict[str, float]:
    """Total bar length per y label (stacked segments added)."""
    labels = [t.get_text() for t in ax.get_yticklabels()]
    out = dict.fromkeys(labels, 0.0)
    for patch in ax.patches:
        y = round(patch.get_y() + patch.get_height() / 2)
        out[labels[y]] += patch.get_width()
    return out


def texts(ax: Axes) -> list[str]:
    return [t.get_text().strip() for t in ax.texts]


def test_tokens_per_tool(tracker: Tracker) -> None:
    stats = tracker.tool_stats()
    ax = plots.plot_tokens(stats)
    assert isinstance(ax, Axes)
    widths = bar_widths(ax)
    assert widths == {
        "calc": 0.0,
        "local": stats["local"].total_tokens,
        "search": stats["search"].total_tokens,
    }
    # the biggest spender is drawn on top
    assert [t.get_text() for t in ax.get_yticklabels()][-1] == "search"
    assert "4,200" in texts(ax)
    assert {t.get_text() for t in ax.get_legend().get_texts()} == {"input", "cache read", "output"}


def test_cost_marks_unpriced_instead_of_zero(tracker: Tracker) -> None:
    snap = tracker.snapshot()
    ax = plots.plot_cost(snap, by="model")
    widths = bar_widths(ax)
    gpt = snap.by_model["gpt-4o-mini"]
    assert widths["~gpt-4o-mini"] == pytest.approx(float(gpt.cost_usd or 0))  # s2's estimate
    assert widths["local-llama"] == 0
    labels = texts(ax)
    assert "unpriced" in labels
    tools = plots.plot_cost(tracker.tool_stats())
    assert "unpriced" in texts(tools) and "no model calls" in texts(tools)


def test_per_session_and_estimated_marker(tracker: Tracker) -> None:
    snap = tracker.snapshot()
    ax = plots.plot_tokens(snap, by="session")
    widths = bar_widths(ax)
    assert widths["s1"] == snap.by_session["s1"].total_tokens
    assert widths["~s2"] == snap.by_session["s2"].total_tokens  # estimated counts marked
    assert "estimated" in ax.get_xlabel()


def test_usage_figure_and_session_source(tracker: Tracker) -> None:
    fig = plots.plot_usage(tracker.session("s1"), by="tool")
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert fig.axes[0].get_title(loc="left") == "Tokens per tool"
    assert fig.axes[1].get_title(loc="left") == "Cost per tool"
    fig = plots.plot_usage(tracker.snapshot(), by="model", top=1)
    assert len(fig.axes[0].get_yticklabels()) == 1


def test_tool_calls_and_latency(tracker: Tracker) -> None:
    session = tracker.session("s2")
    ax = plots.plot_tool_calls(session)
    assert bar_widths(ax) == {"calc": 30}
    assert "30 (3 failed)" in texts(ax)
    ax = plots.plot_latency(tracker.snapshot())
    assert ax.get_xscale() == "log"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    calc = session.tools["calc"]
    assert any(t.startswith("calc (n=30") and "p95" in t for t in legend)
    # p50 and p95 are drawn where the stats say
    xs = sorted(
        seg[0][0]
        for coll in ax.collections
        if hasattr(coll, "get_segments")
        for seg in coll.get_segments()
    )
    assert any(x == pytest.approx(calc.p50_ms) for x in xs)
    assert any(x == pytest.approx(calc.p95_ms) for x in xs)


def test_empty_inputs_and_bad_arguments(tracker: Tracker) -> None:
    ax = plots.plot_tokens({})
    assert texts(ax) == ["no tokens"]
    assert texts(plots.plot_latency({})) == ["no tool durations"]
    with pytest.raises(ValueError, match="by must be one of"):
        plots.plot_tokens(tracker.snapshot(), by="nope")
    with pytest.raises(TypeError):
        plots.plot_cost(42)
    fig, ax = plt.subplots()
    assert plots.plot_cost(tracker.tool_stats(), ax=ax) is ax


def test_missing_matplotlib_names_the_extra(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"pip install 'agentmeter-core\[plot\]'"):
        plots.plot_usage(tracker.snapshot())
