"""Bad input anywhere: a TypeError / ValueError naming the argument, and nothing counted."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

import agentmeter
from agentmeter import Budget, Tracker
from agentmeter import instrumentation as ami

SURROGATE = "bad\ud800id"  # what a lossy decode (errors="surrogateescape") leaves behind

RECORDS: dict[str, Callable[..., None]] = {
    "llm": lambda t, **kw: t.record_llm(**{"model": "m", "input_tokens": 1, "output_tokens": 1,
                                           **kw}),
    "embedding": lambda t, **kw: t.record_embedding(**{"model": "m", "input_tokens": 1, **kw}),
    "tool": lambda t, **kw: t.record_tool_call(**{"tool": "t", "ok": True, "duration_ms": 1.0,
                                                  **kw}),
}  # fmt: skip


def _unchanged(t: Tracker) -> None:
    snap = t.snapshot()
    assert snap.totals == agentmeter.Usage() and not snap.cells
    snap.model_dump_json()  # the whole tracker still exports


@pytest.mark.parametrize("kind", sorted(RECORDS))
@pytest.mark.parametrize("arg", ["session_id", "agent_id", "customer_id", "call_id"])
def test_lone_surrogates_in_ids_are_refused(tracker: Tracker, kind: str, arg: str) -> None:
    with pytest.raises(ValueError, match=f"{arg} must be valid text"):
        RECORDS[kind](tracker, **{arg: SURROGATE})
    _unchanged(tracker)


@pytest.mark.parametrize(
    ("call", "arg"),
    [
        (lambda t: t.record_llm(SURROGATE, 1, 1), "model"),
        (lambda t: t.record_llm("m", 1, 1, provider=SURROGATE), "provider"),
        (lambda t: t.record_llm("m", 1, 1, tool=SURROGATE), "tool"),
        (lambda t: t.record_llm("m", 1, 1, error=SURROGATE, ok=False), "error"),
        (lambda t: t.record_tool_call(SURROGATE, True, 1.0), "tool"),
        (lambda t: t.record_llm("m", 1, 1, tags={"k": SURROGATE}), "tags"),
        (lambda t: t.record_llm("m", 1, 1, tags={SURROGATE: "v"}), "tags key"),
        (lambda t: t.meter("x", session_id=SURROGATE), "session_id"),
        (lambda t: t.meter(SURROGATE), "name"),
        (lambda t: t.check_budget(1, session_id=SURROGATE), "session_id"),
        (lambda t: t.set_budget(SURROGATE, Budget(max_tokens=1)), "session_id"),
        (lambda t: t.customer(SURROGATE), "customer_id"),
        (lambda t: ami.start_llm("m", tracker=t, customer_id=SURROGATE), "customer_id"),
        (lambda t: ami.start_tool(SURROGATE, tracker=t), "tool"),
    ],
)
def test_lone_surrogates_everywhere(tracker: Tracker, call: Callable[[Tracker], Any],
                                    arg: str) -> None:  # fmt: skip
    with pytest.raises(ValueError, match=f"{arg}.*valid text"):
        call(tracker)
    _unchanged(tracker)


def test_non_ascii_ids_that_are_valid_text_are_fine(tracker: Tracker) -> None:
    tracker.record_llm("modèle", 1, 1, session_id="séance-é", customer_id="客户", tags={"ü": "ß"})
    snap = tracker.snapshot()
    assert snap.by_customer["客户"].llm_calls == 1
    assert '"séance-é"' in snap.model_dump_json()


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"cost_usd": Decimal("sNaN")}, ValueError, "cost_usd must be finite"),
        ({"cost_usd": Decimal("NaN")}, ValueError, "cost_usd must be finite"),
        ({"cost_usd": float("inf")}, ValueError, "cost_usd must be finite"),
        ({"cost_usd": "0.1"}, TypeError, "cost_usd"),
        ({"cost_usd": -1}, ValueError, "cost_usd must be >= 0"),
        ({"kind": ["chat"]}, TypeError, "kind must be a str"),
        ({"kind": {"chat": 1}}, TypeError, "kind must be a str"),
        ({"kind": "embedding"}, ValueError, "use record_embedding"),
        ({"kind": "chatt"}, ValueError, "kind must be one of"),
        ({"provider": ""}, ValueError, "provider must not be empty"),
        ({"provider": 3}, TypeError, "provider must be a str"),
        ({"error": ValueError("x"), "ok": False}, TypeError, "error must be a str"),
        ({"error": 5}, TypeError, "error must be a str"),
        ({"input_tokens": True}, TypeError, "input_tokens must be an int"),
        ({"input_tokens": 1.0}, TypeError, "input_tokens must be an int"),
        ({"latency_ms": float("nan")}, ValueError, "latency_ms must be finite"),
        ({"call_id": ""}, ValueError, "call_id must not be empty"),
        ({"call_id": 1.5}, TypeError, "call_id must be a str"),
        ({"estimated": 1}, TypeError, "estimated must be a bool"),
        ({"metadata": []}, TypeError, "metadata must be a dict"),
    ],
)
def test_record_llm_refuses_bad_values(
    tracker: Tracker, kwargs: dict[str, Any], exc: type[Exception], match: str
) -> None:
    with pytest.raises(exc, match=match):
        RECORDS["llm"](tracker, **kwargs)
    _unchanged(tracker)


@pytest.mark.parametrize("kind", ["embedding", "tool"])
def test_other_records_refuse_a_non_string_error(tracker: Tracker, kind: str) -> None:
    with pytest.raises(TypeError, match="error must be a str"):
        RECORDS[kind](tracker, error=RuntimeError("x"))
    _unchanged(tracker)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"max_cost_usd": "abc"}, ValueError, "max_cost_usd must be a number of dollars"),
        ({"max_cost_usd": Decimal("sNaN")}, ValueError, "max_cost_usd must be a finite"),
        ({"max_cost_usd": float("nan")}, ValueError, "max_cost_usd must be a finite"),
        ({"max_cost_usd": -0.5}, ValueError, "max_cost_usd must be a finite number >= 0"),
        ({"max_cost_usd": True}, TypeError, "max_cost_usd must be a number"),
        ({"max_cost_usd": [1]}, TypeError, "max_cost_usd must be a number"),
        ({"max_tokens": "5"}, TypeError, "max_tokens must be an int"),
        ({"max_llm_calls": -1}, ValueError, "max_llm_calls must be >= 0"),
        ({"max_tool_calls": 2.0}, TypeError, "max_tool_calls must be an int"),
        ({"max_input_tokens": True}, TypeError, "max_input_tokens must be an int"),
        ({"max_output_tokens": -3}, ValueError, "max_output_tokens must be >= 0"),
        ({"max_token": 5}, ValueError, "max_token"),  # a typo is refused, not ignored
    ],
)
def test_budget_fields_name_themselves(kwargs: dict[str, Any], exc: type[Exception],
                                       match: str) -> None:  # fmt: skip
    with pytest.raises(exc, match=match):
        Budget(**kwargs)


def test_budget_accepts_the_usual_forms() -> None:
    assert Budget(max_cost_usd="0.25").max_cost_usd == Decimal("0.25")
    assert Budget(max_cost_usd=0.1).max_cost_usd == Decimal("0.1")
    assert Budget(max_cost_usd=2).max_cost_usd == Decimal(2)


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda t: t.check_budget(-1), ValueError, "estimated_tokens"),
        (lambda t: t.check_budget(1, kind=["llm"]), TypeError, "kind"),
        (lambda t: t.check_budget(1, kind="chat"), ValueError, "kind"),
        (lambda t: t.check_budget(1, provider=""), ValueError, "provider"),
        (lambda t: t.check_budget(1, estimated_cost_usd=Decimal("sNaN")), ValueError,
         "estimated_cost_usd"),
        (lambda t: t.set_price("m", input_per_mtok="x", output_per_mtok=1), TypeError,
         "input_per_mtok"),
        (lambda t: t.set_price("m", input_per_mtok=-1, output_per_mtok=1), ValueError,
         "input_per_mtok"),
        (lambda t: t.configure(dedup_window=-1), ValueError, "dedup_window"),
        (lambda t: t.configure(default_session_budget=5), TypeError, "default_session_budget"),
        (lambda t: t.record_cache_hit(tokens_saved=-1), ValueError, "tokens_saved"),
        (lambda t: t.record_tool_call("t", True, -1.0), ValueError, "duration_ms"),
        (lambda t: t.record_tool_call("t", "yes", 1.0), TypeError, "ok"),
        (lambda t: t.meter("x", budget={"max_tokens": 1}), TypeError, "budget"),
    ],
)  # fmt: skip
def test_other_public_functions_refuse_bad_values(
    tracker: Tracker, call: Callable[[Tracker], Any], exc: type[Exception], match: str
) -> None:
    tracker.set_budget("s", Budget(max_tokens=100))
    with pytest.raises(exc, match=match):
        call(tracker)
    assert tracker.snapshot().totals == agentmeter.Usage()


def test_record_methods_take_their_options_by_keyword_only() -> None:
    """The hot record methods declare their options after a marker (for speed) but
    behave as keyword-only: a positional option is refused, nothing is counted, and
    the published signature is the keyword-only one."""
    import inspect

    t = agentmeter.Tracker()
    with pytest.raises(TypeError, match=r"record_llm\(\) takes 3 positional arguments"):
        t.record_llm("gpt-4o-mini", 10, 5, 3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"record_embedding\(\) takes 2 positional"):
        t.record_embedding("text-embedding-3-small", 10, "openai")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"record_tool_call\(\) takes 3 positional"):
        t.record_tool_call("search", True, 1.0, "web")  # type: ignore[arg-type]
    assert t.snapshot().totals.llm_calls == 0
    assert t.snapshot().totals.tool_calls == 0
    for method, positional in (
        (t.record_llm, ["model", "input_tokens", "output_tokens"]),
        (t.record_embedding, ["model", "input_tokens"]),
        (t.record_tool_call, ["tool", "ok", "duration_ms"]),
        (agentmeter.record_llm, ["model", "input_tokens", "output_tokens"]),
    ):
        params = inspect.signature(method).parameters.values()
        assert [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD] == positional
        assert "_kw" not in inspect.signature(method).parameters
        assert all(p.kind is p.KEYWORD_ONLY for p in params if p.name not in positional)
    t.record_llm("gpt-4o-mini", 10, 5, cache_read_tokens=3)
    assert t.snapshot().totals.cache_read_tokens == 3
