"""Fixtures for the OpenAI Agents SDK integration tests: an isolated tracker, the SDK's
real OpenAI models over a faked transport, instrumentation that is always undone, and
the SDK's own trace export switched off (no network: only the mock transport answers)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

pytest.importorskip("agents")
os.environ["OPENAI_AGENTS_DISABLE_TRACING"] = "1"

import agentmeter_openai_agents as amo
from agents import (
    Model,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    set_trace_processors,
    set_tracing_disabled,
)
from agents.run import get_default_agent_runner, set_default_agent_runner
from oa_fakes import FakeOpenAI

import agentmeter

# No span leaves the process: no exporter, and tracing off (the integration does not
# depend on it: it meters through run hooks).
set_trace_processors([])
set_tracing_disabled(True)


@pytest.fixture(autouse=True)
def _oa_clean() -> Iterator[None]:
    """Whatever a test did, the SDK gets its own default runner back."""
    amo.uninstrument()
    runner = get_default_agent_runner()
    yield
    amo.uninstrument()
    set_default_agent_runner(runner)


@pytest.fixture
def oa_tracker() -> agentmeter.Tracker:
    return agentmeter.Tracker()


@pytest.fixture
def fake() -> FakeOpenAI:
    return FakeOpenAI()


def make_model(fake: FakeOpenAI, api: str) -> Model:
    """The SDK's real OpenAI model for ``api`` ("chat" or "responses") over ``fake``."""
    if api == "chat":
        return OpenAIChatCompletionsModel(model="gpt-4o-mini", openai_client=fake.client())
    return OpenAIResponsesModel(model="o1-2024-12-17", openai_client=fake.client())


@pytest.fixture(params=["chat", "responses"])
def api(request: pytest.FixtureRequest) -> str:
    return str(request.param)
