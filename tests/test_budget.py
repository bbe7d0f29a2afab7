from __future__ import annotations

import threading
import time
from decimal import Decimal

import pytest

from agentmeter import Budget, BudgetExceeded, InMemoryBudgetStore, Tracker
from agentmeter.budget import Spend


def _call(t: Tracker, est: int, actual_in: int, out: int = 0, **kw) -> None:
    """What an integration does: reserve, make the call, record it."""
    cid = t.new_call_id()
    t.check_budget(est, call_id=cid, **kw)
    t.record_llm(model="gpt-4o", input_tokens=actual_in, output_tokens=out, call_id=cid, **kw)


def test_scope_budget_refuses_before_the_call(tracker):
    made = []
    with tracker.meter("turn", budget=Budget(max_tokens=100)) as scope:
        for _ in range(10):
            try:
                tracker.check_budget(30)
            except BudgetExceeded as exc:
                err = exc
                break
            made.append(1)
            tracker.record_llm(model="gpt-4o", input_tokens=30, output_tokens=0)
    assert len(made) == 3 and scope.usage.input_tokens == 90
    assert err.limit_name == "max_tokens" and err.limit == 100
    assert err.used == 90 and err.requested == 30 and err.reserved == 0
    assert "scope 'turn'" in err.owner and "max_tokens=100" in str(err)


def test_no_budget_no_reservation(tracker):
    assert tracker.check_budget(10_000) is None


def test_session_budget_and_default_budget(tracker):
    tracker.set_budget("s1", Budget(max_llm_calls=2))
    _call(tracker, 1, 1, session_id="s1")
    _call(tracker, 1, 1, session_id="s1")
    with pytest.raises(BudgetExceeded) as info:
        tracker.check_budget(1, session_id="s1")
    assert info.value.limit_name == "max_llm_calls" and info.value.owner == "session 's1'"
    _call(tracker, 1, 1, session_id="s2")  # no budget there

    tracker.configure(default_session_budget=Budget(max_tokens=10))
    with tracker.meter("turn", session_id="new"):
        _call(tracker, 5, 5)
        _call(tracker, 5, 5)
        with pytest.raises(BudgetExceeded):
            tracker.check_budget(1)
    status = tracker.session("new").budget
    assert status is not None and status.used["max_tokens"] == 10 and status.exhausted


def test_set_budget_counts_what_was_already_spent(tracker):
    tracker.record_llm(model="gpt-4o", input_tokens=80, output_tokens=0, session_id="s")
    tracker.set_budget("s", Budget(max_tokens=100))
    with pytest.raises(BudgetExceeded):
        tracker.check_budget(30, session_id="s")
    tracker.check_budget(20, session_id="s")
    tracker.set_budget("s", None)
    assert tracker.budget_status("s") is None


def test_cost_budget_uses_prices(tracker):
    # gpt-4o: $2.50 / Mtok input -> 100k tokens = $0.25
    with tracker.meter("x", budget=Budget(max_cost_usd=Decimal("0.5"))):
        _call(tracker, 100_000, 100_000)
        _call(tracker, 100_000, 100_000)
        with pytest.raises(BudgetExceeded) as info:
            tracker.check_budget(1, model="gpt-4o")
    assert info.value.limit_name == "max_cost_usd" and info.value.used == Decimal("0.5")


def test_nested_scope_budgets_all_apply(tracker):
    with tracker.meter("outer", budget=Budget(max_tokens=50)):
        with tracker.meter("inner", budget=Budget(max_tokens=1000)) as inner:
            _call(tracker, 40, 40)
            with pytest.raises(BudgetExceeded) as info:
                tracker.check_budget(20)
    assert "outer" in info.value.owner
    assert inner.budget_status is not None and inner.budget_status.used["max_tokens"] == 40
    # the refused call left no reservation behind on the inner budget
    assert inner.budget_status.reserved["max_tokens"] == 0


def test_release_gives_the_reservation_back(tracker):
    with tracker.meter("x", budget=Budget(max_tokens=100)) as scope:
        res = tracker.check_budget(80, call_id="c1")
        assert res is not None and scope.budget_status.reserved["max_tokens"] == 80
        with pytest.raises(BudgetExceeded):
            tracker.check_budget(30)
        res.release()
        tracker.check_budget(30, call_id="c2")
        tracker.release("c2")
        assert scope.budget_status.reserved["max_tokens"] == 0


def test_tool_budget_stops_tool_before_its_body(tracker):
    ran = []

    @tracker.metered_tool
    def search() -> None:
        ran.append(1)

    with tracker.meter("turn", budget=Budget(max_tool_calls=2)):
        search()
        search()
        with pytest.raises(BudgetExceeded) as info:
            search()
    assert len(ran) == 2 and info.value.limit_name == "max_tool_calls"
    assert tracker.tool_stats()["search"].calls == 2


def test_budget_validation():
    with pytest.raises(ValueError):
        Budget(max_tokens=-1)
    with pytest.raises((TypeError, ValueError)):
        Budget(max_tokens=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Budget(max_cost_usd=float("nan"))
    with pytest.raises(ValueError):
        Budget(unknown=3)  # type: ignore[call-arg]
    assert Budget(max_cost_usd=0.1).max_cost_usd == Decimal("0.1")


def test_budget_exceeded_pickles():
    import pickle

    exc = BudgetExceeded("session 's'", "max_tokens", 10, 9, 0, 5)
    again = pickle.loads(pickle.dumps(exc))
    assert (again.limit, again.used, again.requested) == (10, 9, 5)


def test_reservations_expire():
    store = InMemoryBudgetStore(reservation_ttl_s=0.05)
    limits = Budget(max_tokens=10).limits()
    store.reserve("k", "o", limits, Spend(tokens=10), "r1")
    with pytest.raises(BudgetExceeded):
        store.reserve("k", "o", limits, Spend(tokens=1), "r2")
    time.sleep(0.1)
    store.reserve("k", "o", limits, Spend(tokens=1), "r3")  # r1 has expired


@pytest.mark.parametrize("est_over", [0, 5])
def test_budget_race_16_threads_never_overshoot_beyond_in_flight(tracker, est_over):
    """16 threads race for one budget: the overshoot is bounded by what was in flight.

    With estimates equal to actual spend the limit is never crossed; with actual
    spend ``est_over`` tokens above each estimate, the overshoot is at most
    ``est_over`` per call that was in flight when the budget ran out (<= 16).
    """
    limit = 10_000
    tracker.set_budget("shared", Budget(max_tokens=limit))
    barrier = threading.Barrier(16)
    refused = []
    made = []

    def worker() -> None:
        barrier.wait(timeout=10)
        for _ in range(limit):  # bounded; every thread ends on a refusal long before
            try:
                _call(tracker, 37, 37 + est_over, session_id="shared")
            except BudgetExceeded as exc:
                refused.append(exc)
                return
            made.append(1)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    used = tracker.session("shared").usage.input_tokens
    assert used == len(made) * (37 + est_over)
    assert used <= limit + 16 * est_over
    assert len(refused) == 16
    assert all(e.limit == limit and e.requested == 37 for e in refused)
    assert all(e.used + e.reserved + e.requested > limit for e in refused)
    status = tracker.budget_status("shared")
    assert status is not None and status.reserved["max_tokens"] == 0


def test_same_call_reserving_twice_replaces_its_booking(tracker):
    """Two handlers seeing one run reserve under the same call id: booked once."""
    with tracker.meter("x", budget=Budget(max_llm_calls=1)) as scope:
        tracker.check_budget(10, call_id="run-1")
        tracker.check_budget(10, call_id="run-1")  # not refused by its own booking
        assert scope.budget_status.reserved["max_llm_calls"] == 1
        with pytest.raises(BudgetExceeded) as info:
            tracker.check_budget(10, call_id="run-2")
        assert info.value.reserved == 1
        tracker.record_llm(model="gpt-4o", input_tokens=10, output_tokens=1, call_id="run-1")
        assert scope.budget_status.reserved["max_llm_calls"] == 0
        assert scope.budget_status.used["max_llm_calls"] == 1
