"""Hard caps: with the request's output limit known, a budget is never overshot.

``check_budget(estimated_tokens=..., max_output_tokens=..., model=...)`` reserves the
worst case of the call (its input plus its maximum output, priced at the model's
rates). Without an output limit the reservation is the input only and a budget can
be overshot by the output of the calls in flight -- the bound shown here too.
"""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentmeter import Budget, BudgetExceeded, Tracker
from agentmeter import instrumentation as ami

MODEL = "capped-model"


def _tracker() -> Tracker:
    t = Tracker()
    # $2.50 / Mtok input, $10 / Mtok output (gpt-4o's list price), set explicitly so
    # the test does not depend on bundled price data.
    t.set_price(MODEL, input_per_mtok=Decimal("2.5"), output_per_mtok=Decimal("10"))
    return t


def _run(t: Tracker, calls: int, inp: int, out: int, max_out: int | None) -> int:
    """Make calls until one is refused; returns how many were made."""
    made = 0
    for _ in range(calls):
        cid = t.new_call_id()
        try:
            t.check_budget(inp, model=MODEL, max_output_tokens=max_out, call_id=cid)
        except BudgetExceeded:
            break
        t.record_llm(MODEL, inp, out, call_id=cid)
        made += 1
    return made


def test_issue_example_a_two_tenths_of_a_cent_cap_holds_with_the_output_limit():
    # The issue's run: a $0.002 cap ended at $0.002075 because each reservation
    # counted only the input. 100 tokens in ($0.00025) + 150 out ($0.0015) a call.
    soft = _tracker()
    with soft.meter("run", budget=Budget(max_cost_usd=Decimal("0.002"))) as scope:
        _run(soft, 10, 100, 150, None)
    assert scope.usage.cost_usd is not None and scope.usage.cost_usd > Decimal("0.002")
    # ... by at most the one call in flight's output ($0.0015).
    assert scope.usage.cost_usd <= Decimal("0.002") + Decimal("0.0015")

    hard = _tracker()
    with hard.meter("run", budget=Budget(max_cost_usd=Decimal("0.002"))) as scope:
        made = _run(hard, 10, 100, 150, 150)
    assert made == 1 and scope.usage.cost_usd == Decimal("0.00175")
    status = scope.budget_status
    assert status is not None and status.refused is not None
    assert status.refused.limit == "max_cost_usd"
    assert status.refused.requested == Decimal("0.00175")  # the worst case was asked for


def test_output_limit_reserves_output_tokens_and_their_price():
    t = _tracker()
    t.set_budget("s", Budget(max_tokens=10_000, max_output_tokens=500, max_cost_usd=1))
    res = t.check_budget(1000, model=MODEL, max_output_tokens=400, session_id="s")
    assert res is not None
    st_ = t.budget_status("s")
    assert st_ is not None
    assert st_.reserved["max_tokens"] == 1400 and st_.reserved["max_output_tokens"] == 400
    assert st_.reserved["max_cost_usd"] == Decimal("0.0065")  # 1000*2.5e-6 + 400*1e-5
    with pytest.raises(BudgetExceeded) as info:  # 400 + 200 > 500 output tokens
        t.check_budget(10, model=MODEL, max_output_tokens=200, session_id="s")
    assert info.value.limit_name == "max_output_tokens"
    res.release()


def test_start_llm_passes_the_output_limit():
    t = _tracker()
    with t.meter("run", budget=Budget(max_output_tokens=100)) as scope:
        call = ami.start_llm(MODEL, tracker=t, prompt_tokens=10, max_output_tokens=80)
        with pytest.raises(BudgetExceeded):
            ami.start_llm(MODEL, tracker=t, prompt_tokens=10, max_output_tokens=30)
        call.finish(ami.UsageCounts(input_tokens=10, output_tokens=70))
        assert scope.budget_status is not None
        assert scope.budget_status.used["max_output_tokens"] == 70
        assert scope.budget_status.reserved["max_output_tokens"] == 0
    with pytest.raises(ValueError, match="max_output_tokens"):
        ami.start_llm(MODEL, tracker=t, max_output_tokens=-1)
    with pytest.raises(TypeError, match="max_output_tokens"):
        t.check_budget(1, max_output_tokens=1.5)  # type: ignore[arg-type]


_call = st.tuples(st.integers(0, 3000), st.integers(0, 2000), st.integers(0, 100))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    calls=st.lists(_call, min_size=1, max_size=40),
    max_tokens=st.one_of(st.none(), st.integers(0, 40_000)),
    max_output=st.one_of(st.none(), st.integers(0, 20_000)),
    max_cost_micros=st.one_of(st.none(), st.integers(0, 300_000)),
)
def test_with_a_known_output_limit_no_limit_is_ever_exceeded(
    calls: list[tuple[int, int, int]],
    max_tokens: int | None,
    max_output: int | None,
    max_cost_micros: int | None,
) -> None:
    """Any sequence of calls (input as estimated, output up to the request's limit):
    used never exceeds any token or cost limit, and every refusal was needed."""
    t = _tracker()
    cost = None if max_cost_micros is None else Decimal(max_cost_micros) / 1_000_000
    budget = Budget(max_tokens=max_tokens, max_output_tokens=max_output, max_cost_usd=cost)
    with t.meter("run", budget=budget) as scope:
        for inp, limit, pct in calls:
            out = limit * pct // 100  # the call answers with up to its limit
            cid = t.new_call_id()
            try:
                t.check_budget(inp, model=MODEL, max_output_tokens=limit, call_id=cid)
            except BudgetExceeded as exc:
                # Refused only when the worst case would not have fitted.
                assert exc.used + exc.reserved + exc.requested > exc.limit
                continue
            t.record_llm(MODEL, inp, out, call_id=cid)
            u = scope.usage
            assert max_tokens is None or u.input_tokens + u.output_tokens <= max_tokens
            assert max_output is None or u.output_tokens <= max_output
            assert max_cost_micros is None or u.cost_micros <= max_cost_micros
        status = scope.budget_status
        assert status is not None and all(v == 0 for v in status.reserved.values())


def test_threads_with_output_limits_never_overshoot():
    t = _tracker()
    limit = Decimal("0.05")
    t.set_budget(budget=Budget(max_cost_usd=limit, max_tokens=9000), customer_id="acme")
    barrier = threading.Barrier(6)

    def worker(seed: int) -> None:
        barrier.wait()
        with t.meter("w", customer_id="acme"):
            for i in range(80):
                out_limit = 50 + (seed * 37 + i * 11) % 300
                cid = t.new_call_id()
                try:
                    t.check_budget(40, model=MODEL, max_output_tokens=out_limit, call_id=cid)
                except BudgetExceeded:
                    continue
                t.record_llm(MODEL, 40, out_limit - (i % 7), call_id=cid)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    status = t.budget_status(customer_id="acme")
    assert status is not None
    assert status.used["max_cost_usd"] <= limit and status.used["max_tokens"] <= 9000
    assert status.reserved["max_cost_usd"] == 0
    assert t.customer("acme").usage.cost_usd == status.used["max_cost_usd"]
