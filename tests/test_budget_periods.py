"""Budgets on any attribution, periods that renew, alerts before the stop, refusals in the status.

Time is driven by an injected clock (``Tracker(clock=...)``), never by sleeping.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from agentmeter import Budget, BudgetAlert, BudgetExceeded, Tracker


class Clock:
    """A settable clock: Unix seconds."""

    def __init__(self, when: datetime) -> None:
        self.t = when.timestamp()

    def __call__(self) -> float:
        return self.t

    def set(self, when: datetime) -> None:
        self.t = when.timestamp()

    def advance(self, seconds: float) -> None:
        self.t += seconds


def _llm(t: Tracker, n: int = 10, **kw: object) -> None:
    """Reserve then record one call of ``n`` input tokens (what an integration does)."""
    cid = t.new_call_id()
    t.check_budget(n, call_id=cid, model="gpt-4o", **kw)  # type: ignore[arg-type]
    t.record_llm("gpt-4o", n, 0, call_id=cid, **kw)  # type: ignore[arg-type]


NY = ZoneInfo("America/New_York")


def test_monthly_customer_budget_renews_at_the_month_boundary_in_its_timezone():
    # 23:30 on Nov 30 in New York is already December in UTC: still November's budget.
    clock = Clock(datetime(2026, 11, 30, 23, 30, tzinfo=NY))
    t = Tracker(clock=clock)
    t.set_budget(
        budget=Budget(max_llm_calls=3, period="month", timezone="America/New_York"),
        customer_id="acme",
    )
    for _ in range(3):
        _llm(t, customer_id="acme")
    with pytest.raises(BudgetExceeded) as info:
        t.check_budget(10, customer_id="acme")
    assert info.value.owner == "customer 'acme'" and info.value.limit_name == "max_llm_calls"
    st = t.budget_status(customer_id="acme")
    assert st is not None and st.period == "month"
    assert st.period_start == datetime(2026, 11, 1, tzinfo=NY)
    assert st.resets_at == datetime(2026, 12, 1, tzinfo=NY)
    assert st.used["max_llm_calls"] == 3 and st.remaining["max_llm_calls"] == 0
    # Another customer is not limited by acme's budget.
    _llm(t, customer_id="globex")

    clock.set(datetime(2026, 11, 30, 23, 59, 59, tzinfo=NY))
    with pytest.raises(BudgetExceeded):
        t.check_budget(10, customer_id="acme")
    clock.set(datetime(2026, 12, 1, 0, 0, 1, tzinfo=NY))
    st = t.budget_status(customer_id="acme")
    assert st is not None and st.used["max_llm_calls"] == 0 and st.refused is None
    assert st.period_start == datetime(2026, 12, 1, tzinfo=NY)
    assert st.resets_at == datetime(2027, 1, 1, tzinfo=NY)
    _llm(t, customer_id="acme")
    # A customer set by a scope counts too.
    with t.meter("turn", customer_id="acme"):
        _llm(t)
    st = t.budget_status(customer_id="acme")
    assert st is not None and st.used["max_llm_calls"] == 2
    # The customer view carries the budget.
    assert t.customer("acme").budget is not None


def test_store_keys_carry_the_period_start():
    clock = Clock(datetime(2026, 12, 15, 12, tzinfo=UTC))
    t = Tracker(clock=clock)
    t.set_budget(budget=Budget(max_tokens=100, period="month"), customer_id="acme")
    _llm(t, customer_id="acme")
    used, _ = t.ledger.store.usage("customer:acme|2026-12-01T00:00:00+00:00")
    assert used.tokens == 10


def test_day_budget_renews_at_local_midnight():
    clock = Clock(datetime(2026, 3, 7, 22, 0, tzinfo=UTC))
    t = Tracker(clock=clock)
    t.set_budget("u1", Budget(max_tokens=25, period="day"))
    _llm(t, session_id="u1")
    _llm(t, session_id="u1")
    with pytest.raises(BudgetExceeded):
        t.check_budget(10, session_id="u1")
    clock.advance(2 * 3600 + 1)  # 00:00:01 the next day
    _llm(t, session_id="u1")
    st = t.budget_status("u1")
    assert st is not None and st.used["max_tokens"] == 10 and st.period == "day"
    assert st.resets_at == datetime(2026, 3, 9, tzinfo=UTC)


def test_week_starts_on_monday():
    clock = Clock(datetime(2026, 12, 3, 9, tzinfo=UTC))  # a Thursday
    t = Tracker(clock=clock)
    t.set_budget(budget=Budget(max_tokens=100, period="week"), agent="planner")
    st = t.budget_status(agent="planner")
    assert st is not None
    assert st.period_start == datetime(2026, 11, 30, tzinfo=UTC)
    assert st.resets_at == datetime(2026, 12, 7, tzinfo=UTC)


def test_timedelta_window_is_aligned_to_the_epoch():
    clock = Clock(datetime(2026, 12, 1, 10, 59, 30, tzinfo=UTC))
    t = Tracker(clock=clock)
    t.set_budget(budget=Budget(max_llm_calls=1, period=timedelta(hours=1)), model="gpt-4o")
    _llm(t)
    with pytest.raises(BudgetExceeded):
        t.check_budget(10, model="gpt-4o")
    st = t.budget_status(model="gpt-4o")
    assert st is not None and st.period == "3600s"
    assert st.period_start == datetime(2026, 12, 1, 10, tzinfo=UTC)
    clock.advance(31)  # 11:00:01: a new window, whatever time the budget was set
    _llm(t)
    st = t.budget_status(model="gpt-4o")
    assert st is not None and st.resets_at == datetime(2026, 12, 1, 12, tzinfo=UTC)


def test_a_call_reserved_before_the_boundary_settles_into_its_own_period():
    clock = Clock(datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC))
    t = Tracker(clock=clock)
    t.set_budget(budget=Budget(max_tokens=100, period="day"), customer_id="acme")
    t.check_budget(40, call_id="c1", customer_id="acme")
    clock.advance(2)  # the call finishes in the new day
    t.record_llm("gpt-4o", 40, 0, call_id="c1", customer_id="acme")
    st = t.budget_status(customer_id="acme")
    assert st is not None and st.used["max_tokens"] == 0 and st.reserved["max_tokens"] == 0
    old, old_reserved = t.ledger.store.usage("customer:acme|2026-12-31T00:00:00+00:00")
    assert old.tokens == 40 and old_reserved.tokens == 0  # counted once, where it started


def test_several_budgets_apply_and_the_tightest_refuses():
    t = Tracker()
    t.set_budget(budget=Budget(max_tokens=1000), customer_id="acme")
    t.set_budget(budget=Budget(max_tokens=25), customer_id="acme", model="gpt-4o")
    t.set_budget(budget=Budget(max_tokens=500), agent="planner")
    with t.meter("turn", customer_id="acme", agent_id="planner"):
        _llm(t)
        _llm(t)
        with pytest.raises(BudgetExceeded) as info:
            t.check_budget(10, model="gpt-4o")
        assert info.value.owner == "customer 'acme' / model 'gpt-4o'"
        # Another model of the same customer only meets the looser budgets.
        t.check_budget(10, model="gpt-4o-mini", call_id="m1")
        t.record_llm("gpt-4o-mini", 10, 0, call_id="m1")
    acme = t.budget_status(customer_id="acme")
    planner = t.budget_status(agent="planner")
    assert acme is not None and acme.used["max_tokens"] == 30
    assert planner is not None and planner.used["max_tokens"] == 30
    assert len(t.budgets()) == 3
    t.set_budget(budget=None, customer_id="acme", model="gpt-4o")
    assert t.budget_status(customer_id="acme", model="gpt-4o") is None
    with t.meter("turn", customer_id="acme"):
        _llm(t)  # the removed budget no longer refuses


def test_set_budget_needs_a_key_and_a_budget():
    t = Tracker()
    with pytest.raises(TypeError, match="at least one"):
        t.set_budget(budget=Budget(max_tokens=1))
    with pytest.raises(TypeError, match="budget"):
        t.set_budget(customer_id="acme", budget={"max_tokens": 1})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="customer_id"):
        t.set_budget(customer_id=3, budget=Budget(max_tokens=1))  # type: ignore[arg-type]
    assert t.budgets() == []


def test_period_fields_are_validated():
    with pytest.raises(ValueError, match="period"):
        Budget(period="year")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="period"):
        Budget(period=3600)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="period"):
        Budget(period=timedelta(0))
    with pytest.raises(ValueError, match="timezone"):
        Budget(period="day", timezone="Mars/Olympus")
    with pytest.raises(TypeError, match="timezone"):
        Budget(timezone=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="alert_at"):
        Budget(alert_at=(0.5, 1.5))
    with pytest.raises(ValueError, match="alert_at"):
        Budget(alert_at=(0,))
    with pytest.raises(TypeError, match="alert_at"):
        Budget(alert_at="0.8")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tool_limits"):
        Budget(tool_limits={"search": -1})
    with pytest.raises(TypeError, match="tool_limits"):
        Budget(tool_limits={"search": 1.5})  # type: ignore[dict-item]
    b = Budget(alert_at=[1.0, 0.5, 0.8, 0.5], period=timedelta(minutes=5))
    assert b.alert_at == (0.5, 0.8, 1.0) and b.period_label == "300s"


# ------------------------------------------------------------------ alerts
def test_alerts_fire_once_per_threshold_and_rearm_next_period():
    clock = Clock(datetime(2026, 12, 10, 12, tzinfo=UTC))
    t = Tracker(clock=clock)
    t.set_budget(
        budget=Budget(max_tokens=100, period="day", alert_at=(0.5, 0.8, 1.0)),
        customer_id="acme",
    )
    got: list[BudgetAlert] = []
    t.subscribe_alerts(got.append)
    for _ in range(4):
        _llm(t, customer_id="acme")  # 40
    assert got == []
    _llm(t, customer_id="acme")  # 50: crosses 0.5
    assert [a.threshold for a in got] == [0.5]
    a = got[0]
    assert a.owner == "customer 'acme'" and a.key == {"customer_id": "acme"}
    assert a.limit == "max_tokens" and a.used == 50 and a.limit_value == 100
    assert a.period == "day" and a.resets_at == datetime(2026, 12, 11, tzinfo=UTC)
    assert a.at == datetime(2026, 12, 10, 12, tzinfo=UTC)
    t.record_llm("gpt-4o", 35, 0, customer_id="acme")  # 85: crosses 0.8 only
    _llm(t, customer_id="acme")  # 95
    assert [a.threshold for a in got] == [0.5, 0.8]
    _llm(t, 5, customer_id="acme")  # 100: crosses 1.0
    assert [a.threshold for a in got] == [0.5, 0.8, 1.0]
    with pytest.raises(BudgetExceeded):
        t.check_budget(1, customer_id="acme")
    assert len(got) == 3
    # The next day the thresholds are armed again.
    clock.advance(86_400)
    for _ in range(5):
        _llm(t, customer_id="acme")
    assert [a.threshold for a in got] == [0.5, 0.8, 1.0, 0.5]
    assert got[-1].period_start == datetime(2026, 12, 11, tzinfo=UTC)
    t.unsubscribe_alerts(got.append)
    for _ in range(4):
        _llm(t, customer_id="acme")
    assert len(got) == 4


def test_one_call_crossing_several_thresholds_fires_each_once():
    t = Tracker()
    t.set_price("m", input_per_mtok=1_000_000, output_per_mtok=0)  # $1 a token
    got: list[BudgetAlert] = []
    t.subscribe_alerts(got.append)
    with t.meter("run", budget=Budget(max_cost_usd=10, alert_at=(0.5, 0.8))) as scope:
        t.record_llm("m", 9, 0)
    assert [(a.limit, a.threshold, a.used) for a in got] == [
        ("max_cost_usd", 0.5, Decimal(9)),
        ("max_cost_usd", 0.8, Decimal(9)),
    ]
    assert got[0].key == {"scope": "run"} and "run" in got[0].owner
    assert scope.budget_status is not None


def test_alert_subscriber_may_call_back_into_the_tracker():
    """Alerts are delivered outside every lock: a callback that records, checks a
    budget and reads statuses must not deadlock (pytest-timeout would catch it)."""
    t = Tracker()
    t.set_budget("s1", Budget(max_tokens=100, alert_at=(0.5,)))
    seen: list[object] = []

    def callback(alert: BudgetAlert) -> None:
        seen.append(t.budget_status("s1"))
        t.record_llm("gpt-4o", 1, 0, session_id="other")
        t.check_budget(1, session_id="s1", call_id="from-callback")
        t.release("from-callback")
        seen.append(t.snapshot().totals.input_tokens)

    t.subscribe_alerts(callback)
    done = threading.Event()

    def run() -> None:
        for _ in range(6):
            _llm(t, session_id="s1")
        done.set()

    th = threading.Thread(target=run)
    th.start()
    th.join(20)
    assert done.is_set(), "alert delivery deadlocked"
    assert len(seen) == 2 and seen[1] == 51


def test_raising_subscriber_is_logged_and_sinks_with_alert_get_alerts(caplog):
    t = Tracker()

    class AlertSink:
        def __init__(self) -> None:
            self.alerts: list[BudgetAlert] = []
            self.events = 0

        def submit(self, raw: object) -> None:
            self.events += 1

        def alert(self, alert: BudgetAlert) -> None:
            self.alerts.append(alert)

    class PlainSink:
        def submit(self, raw: object) -> None:
            pass

    sink = AlertSink()
    t.add_sink(sink)
    t.add_sink(PlainSink())

    def bad(alert: BudgetAlert) -> None:
        raise RuntimeError("subscriber bug")

    t.subscribe_alerts(bad)
    t.set_budget(budget=Budget(max_llm_calls=2, alert_at=(1.0,)), agent="a")
    with t.meter("x", agent_id="a"):
        _llm(t)
        _llm(t)  # the alert: the raising subscriber must not break the record
    assert [a.threshold for a in sink.alerts] == [1.0] and sink.events == 2
    assert "alert subscriber" in caplog.text
    assert t.snapshot().totals.llm_calls == 2


# --------------------------------------------------------------- refusals
def test_status_after_a_refusal_says_refused_and_why():
    t = Tracker()
    t.set_budget("s1", Budget(max_tokens=100))
    _llm(t, 53, session_id="s1")
    with pytest.raises(BudgetExceeded):
        t.check_budget(60, session_id="s1")
    st = t.budget_status("s1")
    assert st is not None and st.state == "refused" and not st.exhausted
    assert st.refused is not None and st.refused.limit == "max_tokens"
    assert st.refused.requested == 60 and "exceeded" in st.refused.message
    assert "refused" in str(st) and "within limits" not in str(st)
    assert "refused" in st._repr_html_()
    assert "refused" in str(t.session("s1"))
    # The session view carries the same status.
    assert t.session("s1").budget == st


def test_a_refusal_is_forgotten_when_the_period_renews():
    clock = Clock(datetime(2026, 12, 10, 23, tzinfo=UTC))
    t = Tracker(clock=clock)
    t.set_budget(budget=Budget(max_llm_calls=0, period="day"), customer_id="c")
    with pytest.raises(BudgetExceeded):
        t.check_budget(1, customer_id="c")
    st = t.budget_status(customer_id="c")
    assert st is not None and st.refused is not None
    assert st.refused.at == datetime(2026, 12, 10, 23, tzinfo=UTC)
    clock.advance(3600)
    st = t.budget_status(customer_id="c")
    assert st is not None and st.refused is None and st.state == "exhausted"


def test_clock_may_return_aware_datetimes_only():
    when = datetime(2026, 12, 1, 5, tzinfo=UTC)
    t = Tracker(clock=lambda: when)
    t.set_budget(budget=Budget(max_tokens=10, period="day"), customer_id="c")
    st = t.budget_status(customer_id="c")
    assert st is not None and st.period_start == datetime(2026, 12, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="aware"):
        Tracker(clock=lambda: datetime(2026, 12, 1))
    with pytest.raises(TypeError, match="clock"):
        Tracker(clock=lambda: "noon")
    with pytest.raises(TypeError, match="clock"):
        Tracker(clock=5)  # type: ignore[arg-type]


# -------------------------------------------------------------- concurrency
def test_threads_cannot_jointly_overshoot_a_periodic_customer_budget():
    """8 threads race on a monthly customer budget and a per-session day budget at
    once; every call reserves its exact size, so neither may end above its limit,
    and every refusal happened before the call was made."""
    clock = Clock(datetime(2026, 12, 5, tzinfo=UTC))
    t = Tracker(clock=clock)
    t.set_budget(budget=Budget(max_tokens=1_000, period="month"), customer_id="acme")
    for i in range(8):
        t.set_budget(f"s{i}", Budget(max_tokens=160, period="day"))
    made = [0] * 8
    barrier = threading.Barrier(8)

    def worker(i: int) -> None:
        barrier.wait()
        with t.meter("w", customer_id="acme", session_id=f"s{i}"):
            for _ in range(60):
                cid = t.new_call_id()
                try:
                    t.check_budget(7, call_id=cid)
                except BudgetExceeded:
                    continue
                made[i] += 1
                t.record_llm("gpt-4o", 7, 0, call_id=cid)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    st = t.budget_status(customer_id="acme")
    assert st is not None
    assert st.used["max_tokens"] == 7 * sum(made) <= 1_000
    assert st.used["max_tokens"] > 1_000 - 7  # the budget was used up, not starved
    assert st.reserved["max_tokens"] == 0
    for i in range(8):
        s = t.budget_status(f"s{i}")
        assert s is not None and s.used["max_tokens"] == 7 * made[i] <= 160
    assert t.snapshot().totals.input_tokens == 7 * sum(made)


def test_replacing_a_budget_keeps_what_was_spent_under_the_new_limits():
    clock = Clock(datetime(2026, 12, 10, tzinfo=UTC))
    t = Tracker(clock=clock)
    t.set_budget("s", Budget(max_tokens=25))
    t.set_budget(budget=Budget(max_tokens=25, period="month"), customer_id="c")
    t.set_budget(budget=Budget(tool_limits={"search": 1}), agent="a")
    with t.meter("x", session_id="s", customer_id="c", agent_id="a"):
        _llm(t)
        _llm(t)
        t.record_tool_call("search", True, 1.0)
        with pytest.raises(BudgetExceeded):
            t.check_budget(10)
        t.set_budget("s", Budget(max_tokens=35))  # raised: 20 used, 10 more fit
        t.set_budget(budget=Budget(max_tokens=35, period="month"), customer_id="c")
        _llm(t)
        with pytest.raises(BudgetExceeded):
            t.check_budget(10)
        with pytest.raises(BudgetExceeded):
            t.check_budget(kind="tool", tool="search")
        t.set_budget(budget=Budget(tool_limits={"search": 2}), agent="a")
        t.check_budget(kind="tool", tool="search", call_id="t2")
    for st in (t.budget_status("s"), t.budget_status(customer_id="c")):
        assert st is not None and st.used["max_tokens"] == 30 and st.limits["max_tokens"] == 35
    st = t.budget_status(agent="a")
    assert st is not None and st.used["tool_limits[search]"] == 1
    assert st.reserved["tool_limits[search]"] == 1 and st.limits["tool_limits[search]"] == 2


def test_the_instrumentation_api_checks_customer_agent_and_model_budgets():
    from agentmeter import instrumentation as ami

    t = Tracker()
    t.set_budget(budget=Budget(max_llm_calls=1), customer_id="acme")
    t.set_budget(budget=Budget(max_llm_calls=1), agent="bot", model="gpt-4o")
    ami.start_llm("gpt-4o-mini", tracker=t, customer_id="acme", prompt_tokens=5).finish()
    with pytest.raises(BudgetExceeded) as info:
        ami.start_llm("gpt-4o-mini", tracker=t, customer_id="acme", prompt_tokens=5)
    assert info.value.owner == "customer 'acme'"
    ami.start_llm("gpt-4o", tracker=t, agent_id="bot", prompt_tokens=5).finish()
    ami.start_llm("gpt-4o-mini", tracker=t, agent_id="bot", prompt_tokens=5).cancel()
    with pytest.raises(BudgetExceeded) as info:
        ami.start_llm("gpt-4o", tracker=t, agent_id="bot", prompt_tokens=5)
    assert info.value.owner == "agent 'bot' / model 'gpt-4o'"
    st = t.budget_status(agent="bot", model="gpt-4o")
    assert st is not None and st.used["max_llm_calls"] == 1 and st.reserved["max_llm_calls"] == 0


@settings(max_examples=60, deadline=None)
@given(
    steps=hst.lists(
        hst.tuples(hst.integers(0, 40_000), hst.integers(1, 30)), min_size=1, max_size=30
    ),
    limit=hst.integers(1, 120),
    window=hst.sampled_from(["day", timedelta(hours=3)]),
)
def test_each_period_counts_exactly_its_own_calls(
    steps: list[tuple[int, int]], limit: int, window: str | timedelta
) -> None:
    """Random clock advances and call sizes: the status of the current period is the
    sum of the calls made in it, never above the limit; refusals only when needed."""
    clock = Clock(datetime(2026, 12, 1, 7, tzinfo=UTC))
    t = Tracker(clock=clock)
    t.set_budget(budget=Budget(max_tokens=limit, period=window), customer_id="c")  # type: ignore[arg-type]
    spent: dict[object, int] = {}
    for advance, n in steps:
        clock.advance(advance)
        st_ = t.budget_status(customer_id="c")
        assert st_ is not None
        start = st_.period_start
        cid = t.new_call_id()
        try:
            t.check_budget(n, customer_id="c", call_id=cid)
        except BudgetExceeded:
            assert spent.get(start, 0) + n > limit
            continue
        t.record_llm("gpt-4o", n, 0, customer_id="c", call_id=cid)
        spent[start] = spent.get(start, 0) + n
        st_ = t.budget_status(customer_id="c")
        assert st_ is not None and st_.used["max_tokens"] == spent[start] <= limit


def test_budgets_stay_hashable_and_comparable():
    a = Budget(max_tokens=5, tool_limits={"search": 2, "fetch": 1}, period="day")
    b = Budget(max_tokens=5, tool_limits={"fetch": 1, "search": 2}, period="day")
    assert a == b and hash(a) == hash(b) and len({a, b, Budget(max_tokens=5)}) == 2
    with pytest.raises(Exception):  # frozen
        a.max_tokens = 6  # type: ignore[misc]


def test_closing_a_session_drops_its_budgets_on_several_keys_too():
    t = Tracker()
    t.set_budget("s1", Budget(max_tokens=100))
    t.set_budget(session_id="s1", tool="search", budget=Budget(max_tool_calls=1))
    t.set_budget(session_id="s2", tool="search", budget=Budget(max_tool_calls=1))
    t.record_tool_call("search", True, 1.0, session_id="s1")
    with pytest.raises(BudgetExceeded):
        t.check_budget(kind="tool", tool="search", session_id="s1")
    t.close_session("s1")
    assert t.budgets() == [{"session_id": "s2", "tool": "search"}]
    t.check_budget(kind="tool", tool="search", session_id="s1", call_id="again")
