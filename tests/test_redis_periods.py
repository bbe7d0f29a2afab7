"""Periodic budgets in Redis: many processes, one monthly customer budget, a period
boundary crossed mid-run (an injected clock shared by the processes), and the
expiry the scripts set atomically with their writes."""

from __future__ import annotations

import multiprocessing
import os
import random
import threading
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import pytest

pytest.importorskip("redis", reason="needs the redis extra")

from test_redis_store import REDIS_SERVER, RedisServer

import agentmeter
from agentmeter import Budget, BudgetExceeded
from agentmeter.budget import Spend
from agentmeter.redis_store import _SHA, RedisBudgetStore

pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server binary not found")

LIMIT = 60_000  # tokens per customer per month
EST, MAX_OUT = 400, 200  # each call reserves 400 input + 200 output tokens
BEFORE = datetime(2026, 12, 31, 23, 59, 58, tzinfo=UTC).timestamp()
AFTER = datetime(2027, 1, 1, 0, 0, 2, tzinfo=UTC).timestamp()
DEC = "customer:acme|2026-12-01T00:00:00+00:00"
JAN = "customer:acme|2027-01-01T00:00:00+00:00"


def _worker(url: str, prefix: str, now: Any, flip: Any, start: Any, results: Any) -> None:
    """One process: 4 threads spending against customer acme's monthly budget."""
    threads, calls = 4, 120
    store = RedisBudgetStore(url, prefix=prefix, timeout_s=5.0)  # a loaded CI machine
    tracker = agentmeter.Tracker(budget_store=store, clock=lambda: now.value)
    tracker.set_price("m", input_per_mtok=1, output_per_mtok=1)
    tracker.set_budget(budget=Budget(max_tokens=LIMIT, period="month"), customer_id="acme")
    spent: dict[str, int] = defaultdict(int)  # period key -> tokens settled into it
    refused: dict[str, int] = defaultdict(int)
    lock = threading.Lock()
    start.wait(timeout=60)

    def run(i: int) -> None:
        rng = random.Random(f"{os.getpid()}-{i}")
        for n in range(calls):
            if n == calls // 2:
                flip.wait(timeout=60)  # half the calls in December, half in January
            call_id = f"{os.getpid()}-{i}-{n}"
            try:
                res = tracker.check_budget(
                    EST, max_output_tokens=MAX_OUT, customer_id="acme", call_id=call_id
                )
            except BudgetExceeded as exc:
                with lock:
                    refused[exc.owner] += 1
                continue
            assert res is not None
            (key,) = {r.key for r in res.refs}
            out = rng.randint(0, MAX_OUT)
            tracker.record_llm("m", EST, out, customer_id="acme", call_id=call_id)
            with lock:
                spent[key] += EST + out

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=120)
        assert not t.is_alive(), "worker thread hung"
    assert store.flush(timeout=60)
    store.close()
    results.put((dict(spent), sum(refused.values())))


@pytest.mark.timeout(240)
def test_four_processes_one_monthly_budget_across_the_boundary() -> None:
    server = RedisServer()
    server.start()
    prefix = f"period-{uuid.uuid4().hex[:10]}:"
    ctx = multiprocessing.get_context("spawn")
    now = ctx.Value("d", BEFORE)
    flip, start, results = ctx.Event(), ctx.Barrier(5), ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(server.url, prefix, now, flip, start, results))
        for _ in range(4)
    ]
    try:
        for p in procs:
            p.start()
        start.wait(timeout=120)
        # Flip the shared clock into January once December is spent, while the
        # workers are still spending (refused, or in flight): calls reserved in
        # December settle into December, new ones count in January.
        watcher = RedisBudgetStore(server.url, prefix=prefix)
        deadline = time.monotonic() + 120
        while watcher.usage(DEC)[0].tokens <= LIMIT - EST - MAX_OUT:
            assert time.monotonic() < deadline, "December was never spent"
            time.sleep(0.01)
        watcher.close()
        now.value = AFTER
        flip.set()
        got = [results.get(timeout=200) for _ in procs]
        for p in procs:
            p.join(timeout=30)
        assert all(p.exitcode == 0 for p in procs)

        expected: dict[str, int] = defaultdict(int)
        for spent, _ in got:
            for key, tokens in spent.items():
                expected[key] += tokens
        assert set(expected) == {DEC, JAN}
        store = RedisBudgetStore(server.url, prefix=prefix)
        for key in (DEC, JAN):
            used, reserved = store.usage(key)
            # Exactly what was settled in the period, never above its limit.
            assert used.tokens == expected[key], key
            assert used.tokens <= LIMIT
            assert reserved == Spend()
        # Each month ran out (4 x 4 x 60 calls of <= 600 tokens > 60k) and renewed.
        assert sum(refused for _, refused in got) > 0
        assert store.usage(DEC)[0].tokens > LIMIT - EST - MAX_OUT
        assert store.usage(JAN)[0].tokens > LIMIT - EST - MAX_OUT

        # The state of both periods expires: EXPIREAT set on every Redis key of the
        # budget key, with the writes (period end + the ledger's margin).
        client = store.client
        for key, end in ((DEC, AFTER - 2), (JAN, datetime(2027, 2, 1, tzinfo=UTC).timestamp())):
            for name in store._keys(key):
                if client.exists(name):
                    expire_at = client.expiretime(name)
                    assert end < expire_at <= end + 3600 + 1, (name, expire_at)
        store.close()
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(timeout=10)
        server.stop()


def test_expires_at_is_set_atomically_and_never_in_the_past(redis_url: str) -> None:
    store = RedisBudgetStore(redis_url, prefix=f"exp-{uuid.uuid4().hex[:8]}:")
    client = store.client
    future = datetime(2030, 1, 1, tzinfo=UTC).timestamp()
    limits = Spend(1000, -1, -1, -1, -1, -1)
    store.reserve("k", "o", limits, Spend(10), "r1", expires_at=future)
    s, r, e, q, a = store._keys("k")
    assert client.expiretime(s) == client.expiretime(r) == client.expiretime(e) == int(future)
    store.settle("k", "r1", Spend(7), expires_at=future)
    store.settle("k", None, Spend(1), expires_at=future)
    assert store.usage("k") == (Spend(8), Spend())
    assert client.expiretime(s) == client.expiretime(q) == int(future)
    # The alert claims of a period expire with it.
    store.settle_claiming_alerts(
        "k", None, Spend(1), [("0:0.5", 5)], lambda won, used: None, expires_at=future
    )
    store.flush(timeout=10)
    assert client.hkeys(a) == [b"0:0.5"]
    assert client.expiretime(a) == int(future)
    # A skewed (or injected) clock whose period is long over: the key is kept at
    # least an hour after the write, not deleted on the spot.
    store.settle("old", None, Spend(5), expires_at=1_000_000_000.0)
    assert store.usage("old") == (Spend(5), Spend())
    ttl = client.ttl(store._keys("old")[0])
    assert 3500 < ttl <= 3600
    # Without expires_at nothing expires.
    store.settle("forever", None, Spend(1))
    store.flush(timeout=10)
    assert client.ttl(store._keys("forever")[0]) == -1
    store.close()


def test_ledger_drop_releases_in_redis(redis_url: str) -> None:
    """Past the ledger's cap of pending reservations the oldest is dropped from the
    ledger -- and released in the store, not left booked until it expires."""
    from agentmeter import _ledger

    store = RedisBudgetStore(redis_url, prefix=f"drop-{uuid.uuid4().hex[:8]}:")
    tracker = agentmeter.Tracker(budget_store=store)
    tracker.set_budget("s", Budget(max_tokens=10**9))
    cap = _ledger._PENDING_MAX
    old = _ledger._PENDING_MAX
    _ledger._PENDING_MAX = 50
    try:
        for n in range(80):
            tracker.check_budget(10, session_id="s", call_id=f"c{n}")
    finally:
        _ledger._PENDING_MAX = old
    assert cap == old
    used, reserved = store.usage("session:s")
    assert reserved.tokens == 50 * 10  # the 30 dropped from the ledger were released
    store.close()


@pytest.fixture(scope="module")
def redis_url() -> Any:
    server = RedisServer()
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def _alert_worker(url: str, prefix: str, start: Any, results: Any) -> None:
    """One process: 3 threads spending 40 x 10 tokens each against acme's monthly
    budget of 4,000 tokens (4 processes spend 4,800: the budget refuses the rest)."""
    store = RedisBudgetStore(url, prefix=prefix, timeout_s=5.0)
    tracker = agentmeter.Tracker(budget_store=store)
    tracker.set_price("m", input_per_mtok=1, output_per_mtok=1)
    budget = Budget(max_tokens=4000, alert_at=(0.25, 0.5, 0.8, 1.0), period="month")
    tracker.set_budget(budget=budget, customer_id="acme")
    fired: list[tuple[float, int]] = []
    tracker.subscribe_alerts(lambda a: fired.append((a.threshold, int(a.used))))
    start.wait(timeout=60)

    def run(i: int) -> None:
        for n in range(40):
            call_id = f"{os.getpid()}-{i}-{n}"
            try:
                tracker.check_budget(10, customer_id="acme", call_id=call_id)
            except BudgetExceeded:
                continue
            tracker.record_llm("m", 10, 0, customer_id="acme", call_id=call_id)

    pool = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=120)
    assert store.flush(timeout=60)
    store.close()
    results.put(fired)


@pytest.mark.timeout(180)
def test_alerts_fire_once_across_processes(redis_url: str) -> None:
    """4 processes on one Redis-backed monthly budget: each threshold fires exactly once
    in all of them together (not once per process), at a used amount that reached it."""
    prefix = f"alerts-{uuid.uuid4().hex[:8]}:"
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(4), ctx.Queue()
    procs = [
        ctx.Process(target=_alert_worker, args=(redis_url, prefix, start, results))
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    fired = [results.get(timeout=150) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    every = sorted(a for f in fired for a in f)
    assert [t for t, _ in every] == [0.25, 0.5, 0.8, 1.0]
    for threshold, used in every:
        assert used >= threshold * 4000
    assert sum(1 for f in fired if f) >= 1


def test_alerts_with_redis_fire_once_for_every_process(redis_url: str) -> None:
    """Two trackers on two stores sharing a Redis budget (two processes, as far as
    Redis can tell): the settle that takes the *shared* used amount over a threshold
    fires it, once, in whichever tracker sent it; the recording thread never waits."""
    prefix = f"alert-{uuid.uuid4().hex[:8]}:"
    fired: dict[str, list[tuple[float, int | object]]] = {"a": [], "b": []}
    trackers = {}
    for name in fired:
        store = RedisBudgetStore(redis_url, prefix=prefix)
        t = agentmeter.Tracker(budget_store=store)
        t.set_price("m", input_per_mtok=1, output_per_mtok=1)
        t.set_budget(budget=Budget(max_tokens=1000, alert_at=(0.5, 0.9)), customer_id="acme")
        t.subscribe_alerts(
            lambda alert, name=name: fired[name].append((alert.threshold, alert.used))
        )
        trackers[name] = (t, store)
    ta, sa = trackers["a"]
    tb, sb = trackers["b"]
    ta.record_llm("m", 300, 0, customer_id="acme")
    ta.record_llm("m", 300, 0, customer_id="acme")  # 600 in Redis -> 0.5, fired by a
    assert sa.flush(timeout=10)
    assert fired["a"] == [(0.5, 600)]
    tb.record_llm("m", 10, 0, customer_id="acme")  # b's settle: 610, 0.5 already fired
    assert sb.flush(timeout=10)
    assert fired["b"] == []
    tb.record_llm("m", 300, 0, customer_id="acme")  # 910 -> 0.9, fired by b
    assert sb.flush(timeout=10)
    assert fired == {"a": [(0.5, 600)], "b": [(0.9, 910)]}
    ta.record_llm("m", 50, 0, customer_id="acme")
    assert sa.flush(timeout=10)
    assert fired == {"a": [(0.5, 600)], "b": [(0.9, 910)]}  # nothing fires twice
    assert sb.usage("customer:acme")[0].tokens == 960
    for _, store in trackers.values():
        store.close()


def test_a_replayed_settle_delivers_the_thresholds_it_won(redis_url: str) -> None:
    """A settle whose reply was lost (Redis ran it, the client timed out) is sent again:
    the replay is not counted twice, and it still delivers the threshold it had won."""
    store = RedisBudgetStore(redis_url, prefix=f"replay-{uuid.uuid4().hex[:8]}:")
    got: list[tuple[list[str], Spend]] = []
    store.settle_claiming_alerts(
        "k", None, Spend(60), [("0:0.5", 50)], lambda won, used: got.append((won, used))
    )
    assert store.flush(timeout=10)
    assert got == [(["0:0.5"], Spend(60))]
    keys = store._keys("k")
    token = store._thread_token()
    argv = ("settle", token, "1", "", "", "60", "0", "0", "0", "0", "0", "0:0.5", "50")
    client = store.client
    assert client.evalsha(_SHA, len(keys), *keys, *argv) == [0, b"60", *[b"0"] * 5, b"0:0.5"]
    # Another process's settle reaching the threshold later does not win it again.
    other = ("settle", "other", "1", "", "", "5", "0", "0", "0", "0", "0", "0:0.5", "50")
    assert client.evalsha(_SHA, len(keys), *keys, *other) == [1, b"65", *[b"0"] * 5]
    assert store.usage("k")[0] == Spend(65)
    store.close()
