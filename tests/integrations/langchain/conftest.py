"""Fixtures for the LangChain integration tests (isolated trackers, no instrumentation leak)."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

import agentmeter

sys.path.insert(0, str(Path(__file__).parent))  # the _lc_fakes helpers


@pytest.fixture
def lc_tracker() -> agentmeter.Tracker:
    """An isolated tracker per test."""
    return agentmeter.Tracker()


@pytest.fixture(autouse=True)
def _no_leftover_instrumentation() -> Iterator[None]:
    from agentmeter_langchain import uninstrument

    uninstrument()
    with warnings.catch_warnings():
        # create_react_agent moved to `langchain.agents` (not installed here); the
        # prebuilt one is what LangGraph 1.x ships.
        warnings.filterwarnings("ignore", message=".*create_react_agent.*")
        warnings.filterwarnings("ignore", category=agentmeter.UnpricedModelWarning)
        yield
    uninstrument()
