"""The display, DataFrame and text hooks on the core models and on Scope.

These go through the public objects (``snapshot._repr_html_()``,
``session.to_dataframe()``, ``str(scope)``, ``tracker.tool_stats()`` returning a
``ToolTable``): they need the thin delegating methods in ``agentmeter/models.py``,
``agentmeter/scope.py`` and ``tracker.tool_stats`` (see notebooks/README.md).
"""

from __future__ import annotations

import warnings

import html5lib
import pytest

from agentmeter import Budget, Tracker, frames
from agentmeter._display import (
    ToolTable,
    budget_html,
    scope_html,
    session_html,
    session_repr,
    snapshot_html,
    snapshot_repr,
    snapshot_text,
    tool_stats_html,
    usage_html,
    usage_repr,
)


@pytest.fixture
def tracker() -> Tracker:
    t = Tracker()
    t.set_budget("s1", Budget(max_tokens=10_000))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with t.meter("turn", session_id="s1", agent_id="a") as scope:
            t.record_llm(model="gpt-4o-mini", input_tokens=1_200, output_tokens=80)
            t.record_llm(model="local-llama", input_tokens=10, output_tokens=1)
            t.record_tool_call(tool="search", ok=False, duration_ms=12.0)
    t.test_scope = scope  # type: ignore[attr-defined]
    return t


def valid(html: str) -> str:
    html5lib.HTMLParser(strict=True).parseFragment(html)
    return html


def test_snapshot_hooks(tracker: Tracker) -> None:
    snap = tracker.snapshot()
    assert valid(snap._repr_html_()) == snapshot_html(snap)
    assert str(snap) == snapshot_text(snap)
    assert repr(snap) == snapshot_repr(snap)
    assert snap.to_dataframe().equals(frames.snapshot_frame(snap))
    assert snap.to_dataframe(by="tool").loc["search", "failed"] == 1


def test_session_hooks(tracker: Tracker) -> None:
    s = tracker.session("s1")
    assert valid(s._repr_html_()) == session_html(s)
    assert repr(s) == session_repr(s)
    assert "budget of session 's1'" in str(s)
    assert s.to_dataframe().loc["search", "calls"] == 1
    assert s.to_dataframe(by="model").loc["gpt-4o-mini", "input_tokens"] == 1_200
    assert s.budget is not None
    assert valid(s.budget._repr_html_()) == budget_html(s.budget)
    assert "tokens" in str(s.budget)


def test_usage_and_tool_stats_hooks(tracker: Tracker) -> None:
    u = tracker.snapshot().totals
    assert valid(u._repr_html_()) == usage_html(u)
    assert repr(u) == usage_repr(u)
    assert "1,291" in str(u)
    stats = tracker.tool_stats()
    assert isinstance(stats, ToolTable)
    assert valid(stats._repr_html_()) == tool_stats_html(stats)
    assert stats.to_dataframe().loc["search", "failed"] == 1
    assert isinstance(tracker.tool_stats(session_id="s1"), ToolTable)
    assert tracker.tool_stats(session_id="unknown") == {}
    one = stats["search"]
    assert "search" in valid(one._repr_html_()) and "search" in str(one)


def test_scope_hooks(tracker: Tracker) -> None:
    scope = tracker.test_scope  # type: ignore[attr-defined]
    assert valid(scope._repr_html_()) == scope_html(scope)
    assert str(scope).startswith("scope turn (session s1, agent a, closed after")
    assert repr(scope).startswith("<Scope ")  # the debugging repr is kept
