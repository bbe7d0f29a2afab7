"""Test helpers for code that uses agentmeter (a pytest plugin).

Enable with ``pytest_plugins = ["agentmeter.testing"]`` in your ``conftest.py``:

- ``meter_tracker``: an isolated :class:`~agentmeter.Tracker` per test;
- ``default_tracker``: the process-wide tracker, reset (with its session
  budgets and prices) before and after the test, for code that calls the
  module-level functions (``agentmeter.record_llm`` ...);
- ``agentmeter_strict``: agentmeter's internal errors re-raise during the test
  instead of being logged and swallowed. Without it (or ``AGENTMETER_STRICT=1``)
  your tests see agentmeter exactly as production does.

:func:`record_fake_llm` records a call with deterministic counts, for tests of
dashboards, billing code and budgets without any model.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .tracker import Tracker

__all__ = [
    "agentmeter_strict",
    "default_tracker",
    "meter_tracker",
    "record_fake_llm",
    "reset_default_tracker",
]


def reset_default_tracker() -> Tracker:
    """Clear the default tracker: counters, session budgets, overrides, subscribers."""
    from . import get_tracker

    t = get_tracker()
    t.reset()
    for sid in t.budgeted_sessions():
        t.set_budget(sid, None)
    t.configure(default_session_budget=None)
    t.prices.clear_overrides()
    for cb in t.subscribers:
        t.unsubscribe(cb)
    return t


@pytest.fixture
def agentmeter_strict() -> Iterator[None]:
    """Re-raise agentmeter's internal errors in this test (strict mode), then restore."""
    from ._guard import set_strict

    before = set_strict(True)
    try:
        yield
    finally:
        set_strict(before)


@pytest.fixture
def meter_tracker() -> Iterator[Tracker]:
    """An isolated tracker for one test."""
    yield Tracker()


@pytest.fixture
def default_tracker() -> Iterator[Tracker]:
    """The default tracker, reset before and after the test."""
    t = reset_default_tracker()
    yield t
    reset_default_tracker()


def record_fake_llm(
    tracker: Tracker,
    prompt: str,
    *,
    model: str = "gpt-4o-mini",
    output_tokens: int = 16,
    session_id: str | None = None,
) -> int:
    """Record a deterministic fake LLM call (1 token per 4 prompt characters); returns tokens."""
    input_tokens = max(1, len(prompt) // 4)
    call_id = tracker.new_call_id()
    tracker.check_budget(input_tokens, model=model, call_id=call_id, session_id=session_id)
    tracker.record_llm(
        model=model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        call_id=call_id,
        session_id=session_id,
    )
    return input_tokens + output_tokens
