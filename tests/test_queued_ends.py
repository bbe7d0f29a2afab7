"""Ends of calls in flight that nothing waits for are queued and recorded at the next
fold (``Tracker._queue_llm_end``): every surface must count them exactly as if they
had been recorded at once -- prices, duplicates, budgets, subscribers, reads."""

from __future__ import annotations

import threading
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import agentmeter
from agentmeter import Budget, Tracker, UnpricedModelWarning
from agentmeter import instrumentation as ami
from agentmeter._recorder import FOLD_AT
from agentmeter.instrumentation import UsageCounts


def counts(inp: int, out: int, **kw: int) -> UsageCounts:
    return UsageCounts(input_tokens=inp, output_tokens=out, reported_input=True,
                       reported_output=True, **kw)  # fmt: skip


@pytest.fixture
def t() -> Tracker:
    t = Tracker()
    t.set_price("m", input_per_mtok=1, output_per_mtok=2)
    t.prices.rates("m")  # resolved: a model's first call is recorded at once (its lookup)
    return t


def end(t: Tracker, inp: int, out: int, call_id: str | None = None, **start: object) -> None:
    assert ami.start_llm("m", tracker=t, call_id=call_id, **start).finish(counts(inp, out))  # type: ignore[arg-type]


def test_a_usual_end_is_queued_and_every_read_sees_it(t: Tracker) -> None:
    with t.meter("turn", session_id="s", customer_id="acme") as scope:
        end(t, 100, 10)
        assert len(t.recorder.ends) == 1  # queued, not recorded yet
    assert scope.usage.llm_calls == 1 and scope.usage.cost_micros == 120
    assert not t.recorder.ends
    end(t, 5, 5, session_id="s")
    assert t.session("s").usage.input_tokens == 105
    end(t, 1, 1, customer_id="acme")
    assert t.customer("acme").usage.llm_calls == 2  # the scoped call and this one
    end(t, 1, 1)
    snap = t.snapshot_and_reset()
    assert snap.totals.llm_calls == 4 and snap.totals.output_tokens == 17
    assert t.snapshot().totals.llm_calls == 0 and not t.recorder.ends


def test_the_queue_is_turned_into_rows_every_fold_at_ends(t: Tracker) -> None:
    for _ in range(FOLD_AT + 3):
        end(t, 1, 1)
    assert len(t.recorder.ends) < FOLD_AT  # the recording thread folded a batch
    assert t.snapshot().totals.llm_calls == FOLD_AT + 3


def test_queued_ends_keep_their_latency(t: Tracker) -> None:
    call = ami.start_llm("m", tracker=t)
    call.t0 -= 0.25  # started 250 ms ago
    assert call.finish(counts(1, 1))
    latency = t.snapshot().totals.llm_latency_ms
    assert 250 <= latency < 250 + 5_000


def test_the_first_of_two_duplicates_wins_queued_or_not(t: Tracker) -> None:
    end(t, 100, 10, call_id="run-1")  # queued
    t.record_llm("m", 999, 999, call_id="run-1", cost_usd=1)  # recorded at once: a duplicate
    ami.start_llm("m", tracker=t, call_id="run-1").finish(counts(7, 7))  # queued again: dropped
    totals = t.snapshot().totals
    assert (totals.llm_calls, totals.input_tokens, totals.cost_micros) == (1, 100, 120)


def test_queued_ends_are_priced_as_when_they_ended(t: Tracker) -> None:
    end(t, 1_000_000, 0)  # $1, queued
    t.set_price("m", input_per_mtok=10, output_per_mtok=10)
    end(t, 1_000_000, 0)  # $10, at once (the new price's first lookup)
    end(t, 1_000_000, 0)  # $10, queued
    t.prices.clear_overrides()  # straight on the price book: the same
    assert t.snapshot().totals.cost_micros == 21_000_000


def test_an_unpriced_models_first_call_warns_in_the_callers_context() -> None:
    t = Tracker()
    with pytest.warns(UnpricedModelWarning):
        ami.start_llm("no-such-model-x", tracker=t).finish(counts(1, 1))
    assert not t.recorder.ends  # recorded at once: its price had to be looked up
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ami.start_llm("no-such-model-x", tracker=t).finish(counts(1, 1))  # queued, silent
    assert len(t.recorder.ends) == 1
    assert t.snapshot().totals.unpriced_calls == 2


def test_a_subscriber_or_sink_sees_only_the_calls_that_end_after_it(t: Tracker) -> None:
    end(t, 1, 1, call_id="before")
    events: list[agentmeter.UsageEvent] = []
    t.subscribe(events.append)
    assert not t.recorder.ends  # the queued end was recorded first
    end(t, 2, 2, call_id="after")
    assert [e.call_id for e in events] == ["after"]
    assert not t.recorder.ends  # with a subscriber nothing is queued
    t.unsubscribe(events.append)
    end(t, 3, 3)
    assert len(t.recorder.ends) == 1
    assert t.snapshot().totals.llm_calls == 3


def test_budgets_see_every_call_as_if_it_was_recorded_at_once(t: Tracker) -> None:
    end(t, 100, 0, session_id="s")  # queued
    t.set_budget("s", Budget(max_tokens=150))  # the session's spend so far counts
    status = t.budget_status("s")
    assert status is not None and status.used["max_tokens"] == 100
    with pytest.raises(agentmeter.BudgetExceeded):
        ami.start_llm("m", tracker=t, session_id="s", prompt_tokens=60)
    # A customer budget counts from when it is set: the queued end before it is not in it.
    end(t, 40, 0, customer_id="acme")
    t.set_budget(budget=Budget(max_tokens=50), customer_id="acme")
    end(t, 30, 0, customer_id="acme")  # a budget applies: recorded and settled at once
    assert not t.recorder.ends
    status = t.budget_status(customer_id="acme")
    assert status is not None and status.used["max_tokens"] == 30
    assert t.customer("acme").usage.input_tokens == 70


def test_a_call_in_a_budgeted_scope_is_settled_at_once(t: Tracker) -> None:
    with t.meter("capped", budget=Budget(max_tokens=1_000)) as scope:
        end(t, 100, 0)
        assert not t.recorder.ends
        status = scope.budget_status
        assert status is not None and status.used["max_tokens"] == 100


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 10_000),
            st.integers(0, 10_000),
            st.sampled_from([None, "s1", "s2"]),
            st.sampled_from([None, "acme", "globex"]),
            st.booleans(),  # in a scope
            st.booleans(),  # read the totals after this call
        ),
        max_size=40,
    )
)
def test_queued_and_immediate_records_add_up_exactly(
    calls: list[tuple[int, int, str | None, str | None, bool, bool]],
) -> None:
    t = Tracker()
    t.set_price("m", input_per_mtok=1, output_per_mtok=2)
    t.prices.rates("m")
    expect_in = expect_out = 0
    by_session: dict[str | None, int] = {}
    by_customer: dict[str, int] = {}
    with t.meter("outer", session_id="scoped") as outer:
        in_scope = 0
        for i, (inp, out, session, customer, scoped, read) in enumerate(calls):
            if scoped:
                end(t, inp, out, session_id=session, customer_id=customer)
                in_scope += 1
                sess = session or "scoped"
            else:
                # The same call through the tracker directly (no queue), outside the scope.
                tok = agentmeter.scope.STACK.set(())
                try:
                    t.record_llm("m", inp, out, session_id=session, customer_id=customer,
                                 call_id=f"direct-{i}")  # fmt: skip
                finally:
                    agentmeter.scope.STACK.reset(tok)
                sess = session
            expect_in += inp
            expect_out += out
            by_session[sess] = by_session.get(sess, 0) + inp
            if customer is not None:
                by_customer[customer] = by_customer.get(customer, 0) + inp
            if read:
                assert t.snapshot().totals.input_tokens == expect_in
        assert outer.usage.llm_calls == in_scope
    snap = t.snapshot()
    assert (snap.totals.input_tokens, snap.totals.output_tokens) == (expect_in, expect_out)
    assert snap.totals.cost_micros == expect_in + 2 * expect_out
    for sess, inp in by_session.items():
        if sess is not None:
            assert snap.by_session[sess].input_tokens == inp
    for customer, inp in by_customer.items():
        assert snap.by_customer[customer].input_tokens == inp


@pytest.mark.timeout(60)
def test_threads_queue_and_read_at_once_and_nothing_is_lost_or_doubled(t: Tracker) -> None:
    n_threads, per_thread = 8, 3 * FOLD_AT
    start = threading.Barrier(n_threads + 1)
    stop = threading.Event()

    def work(k: int) -> None:
        start.wait(timeout=10)
        for i in range(per_thread):
            end(t, 1, 2, call_id=f"t{k}-{i}", session_id=f"s{k % 2}")
            if i % 97 == 0:  # a duplicate of an earlier call: dropped
                end(t, 1000, 1000, call_id=f"t{k}-{i}")

    def read() -> None:
        start.wait(timeout=10)
        while not stop.is_set():
            t.snapshot()

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
    reader = threading.Thread(target=read)
    for th in [*threads, reader]:
        th.start()
    for th in threads:
        th.join(timeout=50)
    stop.set()
    reader.join(timeout=10)
    totals = t.snapshot().totals
    n = n_threads * per_thread
    assert (totals.llm_calls, totals.input_tokens, totals.output_tokens) == (n, n, 2 * n)
    snap = t.snapshot()
    assert snap.by_session["s0"].llm_calls + snap.by_session["s1"].llm_calls == n
