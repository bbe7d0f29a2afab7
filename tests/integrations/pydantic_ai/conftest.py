"""Fixtures for the pydantic-ai integration tests: an isolated tracker, a faked OpenAI."""

from __future__ import annotations

import pytest

pytest.importorskip("pydantic_ai")

from pa_fakes import FakeOpenAI

import agentmeter


@pytest.fixture
def pa_tracker() -> agentmeter.Tracker:
    return agentmeter.Tracker()


@pytest.fixture
def fake_openai() -> FakeOpenAI:
    return FakeOpenAI()
