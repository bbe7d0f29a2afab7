"""Fixtures for the LlamaIndex integration tests: an isolated tracker, instrumentation
that is always undone, and an OpenAI server faked at the HTTP transport."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("llama_index.core")

import agentmeter_llamaindex as ami
from li_fakes import FakeOpenAI
from llama_index.core import Settings

import agentmeter


@pytest.fixture(autouse=True)
def _li_clean() -> Iterator[None]:
    """Whatever a test did, leave no handler on the root dispatcher behind."""
    ami.uninstrument()
    saved = Settings._callback_manager
    yield
    ami.uninstrument()
    Settings._callback_manager = saved


@pytest.fixture
def li_tracker() -> agentmeter.Tracker:
    return agentmeter.Tracker()


@pytest.fixture
def inst(li_tracker: agentmeter.Tracker) -> Iterator[ami.Instrumentor]:
    """``instrument()`` into the test's tracker; no internal error may have been swallowed."""
    instrumentor = ami.instrument(li_tracker)
    yield instrumentor
    assert instrumentor.errors == []
    ami.uninstrument()


@pytest.fixture
def openai_server() -> FakeOpenAI:
    return FakeOpenAI()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Silence the pydantic deprecation noise of llama-index internals in these tests only."""
    here = str(Path(__file__).parent)
    mark = pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecationWarning")
    for item in items:
        if str(item.path).startswith(here):
            item.add_marker(mark)
