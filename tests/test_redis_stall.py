"""RedisBudgetStore when Redis hangs (SIGSTOP'd server): the deadline, the settlement
queue, its replay after SIGCONT, and the queue's bounds. A real redis-server each."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("redis", reason="needs the redis extra")

from test_redis_store import REDIS_SERVER, RedisServer, free_port

import agentmeter
from agentmeter import Budget
from agentmeter.budget import Spend
from agentmeter.redis_store import _SHA, BudgetStoreUnavailable, RedisBudgetStore

pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server binary not found")

DEADLINE = 0.25
SLACK = 0.5  # a loaded 2-core machine: scheduling, the first connection attempt


@pytest.fixture
def server() -> Iterator[RedisServer]:
    srv = RedisServer()
    srv.start()
    try:
        yield srv
    finally:
        resume(srv)
        srv.stop()


def stall(srv: RedisServer) -> None:
    assert srv.proc is not None
    os.kill(srv.proc.pid, signal.SIGSTOP)


def resume(srv: RedisServer) -> None:
    if srv.proc is not None:
        os.kill(srv.proc.pid, signal.SIGCONT)


def prefix() -> str:
    return f"stall-{uuid.uuid4().hex[:10]}:"


@pytest.mark.timeout(90)
def test_stalled_redis_never_stalls_the_host(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    store = RedisBudgetStore(server.url, prefix=prefix(), timeout_s=DEADLINE)
    tracker = agentmeter.Tracker(budget_store=store)
    tracker.set_price("m", input_per_mtok=1, output_per_mtok=1)
    tracker.set_budget("s", Budget(max_tokens=10**9))
    expected = 0
    for n in range(20):  # healthy traffic first
        tracker.check_budget(100, session_id="s", call_id=f"warm{n}")
        tracker.record_llm("m", 90 + n, 7, session_id="s", call_id=f"warm{n}")
        expected += 97 + n
    # Calls reserved before the stall and finished during it.
    for n in range(5):
        tracker.check_budget(100, session_id="s", call_id=f"open{n}")

    stall(server)
    try:
        # Fail closed within the deadline, every time (no retry multiplying it).
        for n in range(3):
            start = time.monotonic()
            with caplog.at_level(logging.WARNING, logger="agentmeter"):
                with pytest.raises(BudgetStoreUnavailable):
                    tracker.check_budget(100, session_id="s", call_id=f"refused{n}")
            took = time.monotonic() - start
            assert took < DEADLINE + SLACK, took
        assert "unreachable" in caplog.text
        start = time.monotonic()
        with pytest.raises(BudgetStoreUnavailable):
            tracker.budget_status("s")
        assert time.monotonic() - start < DEADLINE + SLACK

        # Recording never waits for Redis: the recording thread never even takes a
        # connection (every command and pipeline goes through the pool), so its
        # settlements can only have been queued for the background thread.
        pool = store.client.connection_pool
        taken_by: list[int] = []
        real_get = pool.get_connection

        def get_connection(*args: Any, **kwargs: Any) -> Any:
            taken_by.append(threading.get_ident())
            return real_get(*args, **kwargs)

        pool.get_connection = get_connection
        worst = 0.0
        try:
            for n in range(300):
                call_id = f"open{n}" if n < 5 else None
                t0 = time.perf_counter()
                tracker.record_llm("m", 50 + n % 7, 3, session_id="s", call_id=call_id)
                worst = max(worst, time.perf_counter() - t0)
                expected += 53 + n % 7
        finally:
            pool.get_connection = real_get
        assert threading.get_ident() not in taken_by
        # A wait on the stalled server costs at least the socket deadline; anything
        # shorter is the loaded machine's scheduling, not Redis.
        assert worst < DEADLINE, f"record_llm took {worst * 1000:.1f} ms with Redis stalled"
        time.sleep(3 * DEADLINE)  # the background thread keeps trying, and failing
        assert store.backlog == 300 + 3  # and a cancel of each refused reservation
        assert store.stats["outages"] >= 1
    finally:
        resume(server)

    # Back: the queue drains, in order, and every spend counts exactly once (also the
    # pipelines the stopped server buffered and ran on SIGCONT after their replies
    # were lost: those come back as ignored replays).
    assert store.flush(timeout=30)
    used, reserved = store.usage("session:s")
    assert used.tokens == expected
    assert used.llm_calls == 320
    assert reserved == Spend()
    stats = store.stats
    assert stats["backlog"] == 0 and stats["dropped"] == 0 and stats["failed"] == 0
    # 20 warm + 300 queued settlements + 3 cancels: none ran twice (a replay, or the
    # same operation sent by the background thread and a reserve, answers 0).
    assert stats["applied"] <= 323
    tracker.check_budget(100, session_id="s", call_id="after")
    store.close()


def test_a_replayed_settlement_counts_once(server: RedisServer) -> None:
    """A queued operation sent again after its reply was lost is ignored by the script."""
    store = RedisBudgetStore(server.url, prefix=prefix())
    store.reserve("k", "o", Spend(-1, -1, -1, -1, -1, -1), Spend(10), "c1")
    store.settle("k", "c1", Spend(7, 7, 0, 0, 1, 0))
    store.settle("k", None, Spend(5))
    assert store.flush(timeout=10)
    keys = store._keys("k")
    token = store._thread_token()  # this thread's sequence of operations
    rid = f"{store._token}:c1"  # reservation ids are namespaced per store
    again = [  # the reserve took sequence number 1
        ("settle", token, "2", rid, "", "7", "7", "0", "0", "1", "0"),
        ("settle", token, "3", "", "", "5", "0", "0", "0", "0", "0"),
    ]
    for args in again:
        assert store.client.evalsha(_SHA, len(keys), *keys, *args) == [0]
    # A later one still applies.
    reply = store.client.evalsha(
        _SHA, len(keys), *keys, "settle", token, "9", "", "", "1", *"00000"
    )
    assert reply == [1, b"13", b"7", b"0", b"0", b"1", b"0"]  # applied; used after it
    assert store.usage("k") == (Spend(13, 7, 0, 0, 1, 0), Spend())
    store.close()


def test_same_call_id_in_two_processes_books_twice(server: RedisServer) -> None:
    p = prefix()
    a, b = RedisBudgetStore(server.url, prefix=p), RedisBudgetStore(server.url, prefix=p)
    limits = Spend(100, -1, -1, -1, -1, -1)
    a.reserve("k", "o", limits, Spend(40), "c1")
    b.reserve("k", "o", limits, Spend(40), "c1")  # not a re-reservation of a's call
    assert a.usage("k")[1] == Spend(80)
    b.settle("k", "c1", Spend(30))
    assert b.flush(timeout=10)  # another process sees it once sent (b reads it at once)
    assert a.usage("k") == (Spend(30), Spend(40))
    a.close()
    b.close()


@pytest.mark.timeout(60)
def test_queue_overflow_is_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    store = RedisBudgetStore(
        f"redis://127.0.0.1:{port}/0", prefix=prefix(), timeout_s=DEADLINE, max_queue=3
    )
    with caplog.at_level(logging.WARNING, logger="agentmeter"):
        for n in range(5):
            store.settle("k", None, Spend(10**n))
    assert store.stats["dropped"] == 2 and store.backlog == 3
    assert "2 so far" in caplog.text and "max_queue=3" in caplog.text
    srv = RedisServer(port)
    srv.start()
    try:
        assert store.flush(timeout=20)
        # The two oldest were dropped; the three newest counted.
        assert store.usage("k")[0] == Spend(100 + 1000 + 10000)
        store.close()
    finally:
        srv.stop()


@pytest.mark.timeout(60)
def test_close_and_flush_are_bounded_while_stalled(server: RedisServer) -> None:
    store = RedisBudgetStore(server.url, prefix=prefix(), timeout_s=DEADLINE)
    store.settle("k", None, Spend(1))
    assert store.flush(timeout=10)
    stall(server)
    try:
        store.settle("k", None, Spend(2))
        start = time.monotonic()
        assert store.flush(timeout=0.3) is False
        assert time.monotonic() - start < 0.3 + SLACK
        start = time.monotonic()
        store.close(timeout=0.3)
        assert time.monotonic() - start < 0.3 + 2 * DEADLINE + 1.0 + SLACK
    finally:
        resume(server)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        RedisBudgetStore("redis://127.0.0.1:1/0", timeout_s=0)
    with pytest.raises(TypeError, match="timeout_s"):
        RedisBudgetStore("redis://127.0.0.1:1/0", timeout_s="1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_queue"):
        RedisBudgetStore("redis://127.0.0.1:1/0", max_queue=0)
    store = RedisBudgetStore("redis://127.0.0.1:1/0")
    with pytest.raises(TypeError, match="expires_at"):
        store.settle("k", None, Spend(1), expires_at="soon")  # type: ignore[arg-type]
    assert store.backlog == 0
    store.close(timeout=0)


ops_strategy = st.lists(
    st.tuples(
        st.sampled_from(["reserve", "settle", "settle_none", "release"]),
        st.integers(0, 5),  # which call id
        st.integers(0, 300),  # amount
    ),
    min_size=1,
    max_size=40,
)


@pytest.mark.timeout(120)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops_strategy, replay=st.lists(st.integers(0, 10**6), max_size=30))
def test_replays_never_change_the_state(
    ops: list[tuple[str, int, int]], replay: list[int], shared_redis: str
) -> None:
    """Any sequence of operations, then any in-order re-sending of what was already
    sent (lost replies): the state equals the in-memory store's, replays are no-ops."""
    from agentmeter.budget import InMemoryBudgetStore

    store = RedisBudgetStore(shared_redis, prefix=prefix())
    sent: list[tuple[str, ...]] = []
    send = store._send

    def logging_send(batch: list[Any], last: Any) -> Any:
        sent.extend(op.args for op in batch)
        return send(batch, last)

    store._send = logging_send  # type: ignore[method-assign]
    ref = InMemoryBudgetStore()
    limits = Spend(1000, -1, -1, -1, -1, -1)
    for op, n, amount in ops:
        rid = f"c{n}"
        for s in (ref, store):
            if op == "reserve":
                try:
                    s.reserve("k", "o", limits, Spend(amount), rid)
                except agentmeter.BudgetExceeded:
                    pass
            elif op == "settle":
                s.settle("k", rid, Spend(amount, 0, 0, 0, 1, 0))
            elif op == "settle_none":
                s.settle("k", None, Spend(amount))
            else:
                s.release("k", rid)
    assert store.flush(timeout=30)
    assert store.usage("k") == ref.usage("k")
    if sent:
        keys = store._keys("k")
        picks = sorted({i % len(sent) for i in replay})
        for i in picks:
            assert store.client.evalsha(_SHA, len(keys), *keys, *sent[i]) == [0]
    assert store.usage("k") == ref.usage("k")
    store.close()


@pytest.fixture(scope="module")
def shared_redis() -> Iterator[str]:
    srv = RedisServer()
    srv.start()
    try:
        yield srv.url
    finally:
        srv.stop()


@pytest.mark.timeout(60)
def test_a_forked_child_gets_its_own_queue(shared_redis: str) -> None:
    """A child of fork() must not reuse the parent's token and sequence numbers (its
    operations would look like the parent's replays and be dropped)."""
    store = RedisBudgetStore(shared_redis, prefix=prefix())
    store.settle("k", None, Spend(1))
    assert store.flush(timeout=10)
    parent_token = store._thread_token()
    pid = os.fork()
    if pid == 0:  # the child: exit code says whether its spend counted
        code = 1
        try:
            ok = store._thread_token() != parent_token
            store.settle("k", None, Spend(10))
            ok = ok and store.flush(timeout=10)
            code = 0 if ok else 2
        finally:
            os._exit(code)
    store.settle("k", None, Spend(100))  # the parent's next seq is the child's too
    assert store.flush(timeout=10)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.usage("k")[0] == Spend(111)
    store.close()
