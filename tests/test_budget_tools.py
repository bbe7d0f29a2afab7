"""Priced tools and per-tool limits: cost reserved and limits checked before the tool runs."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from agentmeter import Budget, BudgetAlert, BudgetExceeded, Tracker, UsageEvent
from agentmeter import instrumentation as ami


def test_a_priced_tool_costs_in_every_aggregate_apart_from_model_cost():
    t = Tracker()
    t.set_price("m", input_per_mtok=1, output_per_mtok=2)  # $0.000001 per input token
    t.set_tool_price("search", Decimal("0.005"))
    events: list[UsageEvent] = []
    t.subscribe(events.append)
    with t.meter("turn", customer_id="acme", session_id="s1", agent_id="bot") as scope:
        t.record_llm("m", 1000, 0)  # $0.001
        t.record_tool_call("search", True, 12.0)  # the set price
        t.record_tool_call("search", True, 9.0, cost_usd=Decimal("0.0125"))  # its own
        t.record_tool_call("lookup", True, 1.0)  # unpriced: costs nothing
    tool_events = [e for e in events if e.kind == "tool"]
    assert [e.cost_usd for e in tool_events] == [Decimal("0.005"), Decimal("0.0125"), None]
    total = Decimal("0.0185")
    snap = t.snapshot()
    assert snap.totals.cost_usd == total and scope.usage.cost_usd == total
    assert t.session("s1").usage.cost_usd == total
    assert t.customer("acme").usage.cost_usd == total
    assert snap.by_agent["bot"].cost_usd == total
    assert snap.by_tool["search"].cost_usd == Decimal("0.0175")
    assert snap.by_tool["search"].calls == 2
    # Model cost stays the model's: the by-model breakdown holds no tool cost.
    assert snap.by_model["m"].cost_usd == Decimal("0.001")
    assert sum((e.cost_usd or 0 for e in events if e.kind != "tool"), Decimal(0)) == Decimal(
        "0.001"
    )
    t.set_tool_price("search", None)
    t.record_tool_call("search", True, 1.0)
    assert t.snapshot().by_tool["search"].cost_usd == Decimal("0.0175")


def test_set_tool_price_and_cost_usd_are_validated():
    t = Tracker()
    with pytest.raises(ValueError, match="cost_usd"):
        t.set_tool_price("search", -1)
    with pytest.raises(TypeError, match="cost_usd"):
        t.set_tool_price("search", "1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="tool"):
        t.set_tool_price(None, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cost_usd"):
        t.record_tool_call("search", True, 1.0, cost_usd=float("nan"))
    with pytest.raises(ValueError, match="cost_usd"):
        t.metered_tool(cost_usd=-0.5)
    with pytest.raises(ValueError, match="cost_usd"):
        ami.start_tool("search", tracker=t, cost_usd=-1)
    assert t.snapshot().totals.tool_calls == 0


def test_metered_tool_reserves_its_price_before_it_runs():
    t = Tracker()
    ran: list[int] = []

    @t.metered_tool(cost_usd=Decimal("0.01"))
    def scrape(url: str) -> str:
        ran.append(1)
        return url

    with t.meter("run", budget=Budget(max_cost_usd=Decimal("0.025"))) as scope:
        scrape("a")
        scrape("b")
        with pytest.raises(BudgetExceeded) as info:
            scrape("c")  # 0.02 spent + 0.01 would pass 0.025: refused before the body
    assert len(ran) == 2 and info.value.limit_name == "max_cost_usd"
    assert info.value.requested == Decimal("0.01")
    assert scope.usage.cost_usd == Decimal("0.02") and scope.usage.tool_calls == 2


def test_a_set_price_is_reserved_too_and_a_customer_budget_stops_the_tool():
    t = Tracker()
    t.set_tool_price("search", Decimal("0.40"))
    t.set_budget(budget=Budget(max_cost_usd=1), customer_id="acme")
    ran: list[int] = []

    @t.metered_tool
    def search() -> None:
        ran.append(1)

    with t.meter("turn", customer_id="acme"):
        search()
        search()
        with pytest.raises(BudgetExceeded) as info:
            search()
    assert len(ran) == 2 and info.value.owner == "customer 'acme'"
    status = t.budget_status(customer_id="acme")
    assert status is not None and status.used["max_cost_usd"] == Decimal("0.8")
    assert status.reserved["max_cost_usd"] == 0


def test_per_tool_limit_in_a_scope_stops_that_tool_only():
    t = Tracker()
    ran: list[str] = []

    @t.metered_tool
    def search() -> None:
        ran.append("search")

    @t.metered_tool
    def fetch() -> None:
        ran.append("fetch")

    with t.meter("run", budget=Budget(tool_limits={"search": 2})) as scope:
        search()
        search()
        with pytest.raises(BudgetExceeded) as info:
            search()
        fetch()
        fetch()
        fetch()
    assert ran.count("search") == 2 and ran.count("fetch") == 3
    assert info.value.owner == "scope 'run', tool 'search'"
    status = scope.budget_status
    assert status is not None and status.limits["tool_limits[search]"] == 2
    assert status.used["tool_limits[search]"] == 2 and status.remaining["tool_limits[search]"] == 0
    assert status.refused is not None and status.refused.limit == "tool_limits[search]"
    # A new scope has its own count.
    with t.meter("run", budget=Budget(tool_limits={"search": 2})):
        search()
    assert ran.count("search") == 3


def test_per_tool_limit_of_a_session_through_start_tool():
    t = Tracker()
    t.set_budget("s1", Budget(tool_limits={"search": 1}))
    call = ami.start_tool("search", tracker=t, session_id="s1")
    call.finish()
    with pytest.raises(BudgetExceeded):
        ami.start_tool("search", tracker=t, session_id="s1")
    assert t.current_scope() is None  # the refused tool's scope was closed again
    ami.start_tool("search", tracker=t, session_id="s2").finish()  # another session
    assert t.snapshot().by_tool["search"].calls == 2


def test_start_tool_cost_is_reserved_then_recorded_or_given_back():
    t = Tracker()
    with t.meter("run", budget=Budget(max_cost_usd=Decimal("0.05"))) as scope:
        a = ami.start_tool("api", tracker=t, cost_usd=Decimal("0.03"))
        status = scope.budget_status
        assert status is not None and status.reserved["max_cost_usd"] == Decimal("0.03")
        with pytest.raises(BudgetExceeded):
            ami.start_tool("api", tracker=t, cost_usd=Decimal("0.03"))
        a.finish()
        b = ami.start_tool("api", tracker=t, cost_usd=Decimal("0.02"))
        b.cancel()  # never ran: nothing recorded, its reservation given back
        status = scope.budget_status
        assert status is not None and status.reserved["max_cost_usd"] == 0
        assert status.used["max_cost_usd"] == Decimal("0.03")
    assert scope.usage.tool_calls == 1 and scope.usage.cost_usd == Decimal("0.03")


def test_budget_on_a_tool_across_sessions_and_its_alert():
    t = Tracker()
    t.set_budget(tool="search", budget=Budget(max_tool_calls=4, alert_at=(0.5, 1.0)))
    alerts: list[BudgetAlert] = []
    t.subscribe_alerts(alerts.append)

    @t.metered_tool
    def search() -> None:
        pass

    for sid in ("a", "b", "c", "d"):
        with t.meter("turn", session_id=sid):
            search()
    with pytest.raises(BudgetExceeded) as info, t.meter("turn", session_id="e"):
        search()
    assert info.value.owner == "tool 'search'"
    assert [(a.limit, a.threshold, a.used) for a in alerts] == [
        ("max_tool_calls", 0.5, 2),
        ("max_tool_calls", 1.0, 4),
    ]
    assert alerts[0].key == {"tool": "search"}


def test_tool_limit_alerts_name_the_tool():
    t = Tracker()
    t.set_budget("s", Budget(tool_limits={"search": 2}, alert_at=(1.0,)))
    alerts: list[BudgetAlert] = []
    t.subscribe_alerts(alerts.append)
    for _ in range(2):
        t.record_tool_call("search", True, 1.0, session_id="s")
    assert [(a.limit, a.used, a.limit_value) for a in alerts] == [("tool_limits[search]", 2, 2)]
    assert alerts[0].key == {"session_id": "s", "tool": "search"}


def test_the_sql_store_sums_tool_cost(tmp_path: Path):
    pytest.importorskip("sqlalchemy")
    from agentmeter.storage import SQLSink, UsageStore

    db = tmp_path / "tools.db"
    t = Tracker()
    t.set_price("m", input_per_mtok=1, output_per_mtok=2)
    t.set_tool_price("search", Decimal("0.005"))
    sink = SQLSink(db)
    t.add_sink(sink)
    with t.meter("turn", customer_id="acme", session_id="s1"):
        t.record_llm("m", 1000, 0)
        for _ in range(3):
            t.record_tool_call("search", True, 5.0)
    t.flush()
    sink.close()
    store = UsageStore(db)
    try:
        assert store.totals().cost_usd == Decimal("0.016") == t.snapshot().totals.cost_usd
        assert store.by("customer")["acme"].cost_usd == Decimal("0.016")
        assert store.by("tool")["search"].cost_usd == Decimal("0.015")
        assert store.by("model")["m"].cost_usd == Decimal("0.001")
    finally:
        store.close()
