"""meter(customer_budget= / session_budget= / agent_budget=): set_budget from a scope."""

from __future__ import annotations

import pytest

import agentmeter
from agentmeter import Budget, BudgetExceeded, Tracker

pytestmark = pytest.mark.timeout(60)


def test_customer_budget_on_meter_counts_outside_the_scope_and_outlives_it() -> None:
    t = Tracker()
    with t.meter("turn", customer_id="acme", customer_budget=Budget(max_llm_calls=2)):
        t.record_llm("gpt-4o-mini", 10, 5)
    # Outside any scope, the customer's next call still counts against it.
    t.record_llm("gpt-4o-mini", 10, 5, customer_id="acme")
    status = t.budget_status(customer_id="acme")
    assert status is not None and status.used["max_llm_calls"] == 2
    with t.meter("later", customer_id="acme"), pytest.raises(BudgetExceeded):
        t.check_budget(estimated_tokens=10)
    # Another customer is not limited by it.
    with t.meter("other", customer_id="globex"):
        t.check_budget(estimated_tokens=10)


def test_session_and_agent_budgets_on_meter() -> None:
    t = Tracker()
    with t.meter(session_id="s1", session_budget=Budget(max_tokens=20)):
        t.record_llm("gpt-4o-mini", 10, 5)
        with pytest.raises(BudgetExceeded):
            t.check_budget(estimated_tokens=10)
    with t.meter(agent_id="planner", agent_budget=Budget(max_llm_calls=0)):
        with pytest.raises(BudgetExceeded):
            t.check_budget(estimated_tokens=1)
    assert t.budget_status("s1") is not None
    assert t.budget_status(agent="planner") is not None


def test_a_later_meter_replaces_the_budget_and_keeps_the_spend() -> None:
    t = Tracker()
    with t.meter(customer_id="acme", customer_budget=Budget(max_llm_calls=5)):
        t.record_llm("gpt-4o-mini", 10, 5)
    with t.meter(customer_id="acme", customer_budget=Budget(max_llm_calls=1)):
        with pytest.raises(BudgetExceeded):
            t.check_budget(estimated_tokens=1)


@pytest.mark.parametrize(
    ("kwargs", "exc", "named"),
    [
        ({"customer_budget": Budget(max_tokens=1)}, ValueError, "customer_budget"),
        ({"session_budget": Budget(max_tokens=1)}, ValueError, "session_budget"),
        ({"agent_budget": Budget(max_tokens=1)}, ValueError, "agent_budget"),
        (
            {"customer_id": "acme", "customer_budget": {"max_tokens": 1}},
            TypeError,
            "customer_budget",
        ),
        (
            {"customer_id": "acme", "customer_budget": Budget(max_tokens=1), "session_budget": 3},
            TypeError,
            "session_budget",
        ),
    ],
)
def test_bad_budget_arguments_are_refused_and_change_nothing(
    kwargs: dict[str, object], exc: type[Exception], named: str
) -> None:
    t = Tracker()
    with pytest.raises(exc, match=named):
        t.meter("x", **kwargs)  # type: ignore[arg-type]
    assert t.budget_status(customer_id="acme") is None
    assert t.budgets() == []


def test_module_level_meter_takes_it_too() -> None:
    t = agentmeter.get_tracker()
    with agentmeter.meter(customer_id="budget-meter-test", customer_budget=Budget(max_llm_calls=0)):
        with pytest.raises(BudgetExceeded):
            t.check_budget(estimated_tokens=1)
    t.set_budget(budget=None, customer_id="budget-meter-test")
