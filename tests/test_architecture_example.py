"""ARCHITECTURE.md's "Metering a new framework" example, run as written."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import agentmeter
from agentmeter import Budget, BudgetExceeded, Tracker

DOC = Path(__file__).resolve().parents[1] / "ARCHITECTURE.md"


def _example() -> dict[str, Any]:
    text = DOC.read_text()
    section = text.split("## Metering a new framework", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    assert len(code.group(1).splitlines()) <= 45  # it stays a short example
    namespace: dict[str, Any] = {}
    exec(compile(code.group(1), str(DOC), "exec"), namespace)
    return namespace


class ToyFramework:
    """A framework with hooks, like the ones the example meters."""

    def __init__(self, hooks: Any) -> None:
        self.hooks = hooks
        self.sent = 0

    def chat(self, run_id: str, prompt: str, metadata: dict[str, str], *,
             stream: bool = False, fail: bool = False) -> str:  # fmt: skip
        self.hooks.on_model_start(run_id, "gpt-4o-mini", [{"role": "user", "content": prompt}],
                                  metadata)  # fmt: skip
        self.sent += 1
        if fail:
            self.hooks.on_model_error(run_id, TimeoutError("provider timed out"))
            return ""
        if stream:
            for piece in ("Hel", "lo ", "there"):
                self.hooks.on_model_chunk(run_id, piece)
        usage = {"prompt_tokens": 12, "completion_tokens": 3,
                 "prompt_tokens_details": {"cached_tokens": 4}}  # fmt: skip
        self.hooks.on_model_end(run_id, {"text": "Hello there", "usage": usage})
        return "Hello there"

    def tool(self, run_id: str, name: str, ok: bool) -> None:
        self.hooks.on_tool_start(run_id, name)
        self.hooks.on_tool_end(run_id, ok)


def test_the_example_meters_a_toy_framework() -> None:
    ns = _example()
    tracker = Tracker()
    fw = ToyFramework(ns["MeteringHooks"](tracker))
    md = {"customer_id": "acme", "session_id": "s1"}
    fw.chat("r1", "hi", md)
    fw.chat("r2", "hi", md, stream=True)
    fw.chat("r3", "hi", md, fail=True)
    fw.tool("t1", "search", ok=True)
    fw.tool("t2", "search", ok=False)
    c = tracker.customer("acme")
    assert c.usage.llm_calls == 3 and c.usage.failed_llm_calls == 1
    assert c.usage.input_tokens == 24 and c.usage.cache_read_tokens == 8
    assert c.usage.output_tokens == 6 and c.usage.estimated_calls == 0
    stats = tracker.snapshot().by_tool["search"]
    assert (stats.calls, stats.failed) == (2, 1)


def test_the_example_stops_a_call_before_it_is_sent() -> None:
    ns = _example()
    tracker = Tracker()
    fw = ToyFramework(ns["MeteringHooks"](tracker))
    tracker.set_budget("s1", Budget(max_llm_calls=1))
    fw.chat("r1", "hi", {"session_id": "s1"})
    with pytest.raises(BudgetExceeded):
        fw.chat("r2", "hi", {"session_id": "s1"})
    assert fw.sent == 1
    assert tracker.session("s1").usage.llm_calls == 1


def test_the_example_uses_only_the_public_api() -> None:
    section = DOC.read_text().split("## Metering a new framework", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    imports = [ln for ln in code.group(1).splitlines() if "import" in ln]
    assert imports == ["from agentmeter import instrumentation as ami"]
    assert agentmeter.instrumentation.__name__ == "agentmeter.instrumentation"
