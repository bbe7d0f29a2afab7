from __future__ import annotations

import os

import pytest

# Internal errors re-raise under pytest; make it explicit for subprocess-based tests too.
os.environ.setdefault("AGENTMETER_STRICT", "1")

pytest_plugins = ["agentmeter.testing"]


@pytest.fixture
def tracker(meter_tracker):  # short alias used across the core tests
    return meter_tracker
