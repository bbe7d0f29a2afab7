"""RedisBudgetStore against a real redis-server on a free loopback port."""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("redis", reason="needs the redis extra")

import redis

import agentmeter
from agentmeter import Budget, BudgetExceeded
from agentmeter.budget import InMemoryBudgetStore, Spend
from agentmeter.errors import AgentMeterError
from agentmeter.redis_store import BudgetStoreUnavailable, RedisBudgetStore, mask_url

REDIS_SERVER = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(
    REDIS_SERVER is None,
    reason="redis-server binary not found (apt-get install redis-server); .ci/run installs it",
)
UNLIMITED = Spend(-1, -1, -1, -1, -1, -1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """A throw-away redis-server (no persistence), always stopped by its owner."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert REDIS_SERVER is not None
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.02)
        client.close()

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    server = RedisServer()
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def store(redis_url: str, prefix: str) -> Iterator[RedisBudgetStore]:
    s = RedisBudgetStore(redis_url, prefix=prefix)
    yield s
    s.close()


# --------------------------------------------------------------------- protocol
def test_reserve_settle_release(store: RedisBudgetStore) -> None:
    limits = Spend(100, -1, -1, -1, -1, -1)
    store.reserve("k", "session 'k'", limits, Spend(60, 60, 0, 1, 1, 0), "a")
    assert store.usage("k") == (Spend(), Spend(60, 60, 0, 1, 1, 0))
    with pytest.raises(BudgetExceeded) as ei:
        store.reserve("k", "session 'k'", limits, Spend(60, 60, 0, 1, 1, 0), "b")
    e = ei.value
    assert (e.owner, e.limit_name, e.limit, e.used, e.reserved, e.requested) == (
        "session 'k'", "max_tokens", 100, 0, 60, 60,
    )  # fmt: skip
    store.settle("k", "a", Spend(50, 45, 5, 7, 1, 0))
    assert store.usage("k") == (Spend(50, 45, 5, 7, 1, 0), Spend())
    store.reserve("k", "o", limits, Spend(50, 50, 0, 0, 1, 0), "b")
    store.release("k", "b")
    store.release("k", "never-booked")
    assert store.usage("k") == (Spend(50, 45, 5, 7, 1, 0), Spend())
    store.drop("k")
    assert store.usage("k") == (Spend(), Spend())
    # Only the replay guard is left, and it expires by itself.
    assert store.client.keys(f"{store.prefix}*") == [f"{store.prefix}{{k}}:q".encode()]
    assert 0 < store.client.ttl(f"{store.prefix}{{k}}:q") <= 86400


def test_same_reservation_twice_replaces_its_booking(store: RedisBudgetStore) -> None:
    limits = Spend(100, -1, -1, -1, -1, -1)
    store.reserve("k", "o", limits, Spend(40), "a")
    store.reserve("k", "o", limits, Spend(30), "a")
    assert store.usage("k")[1] == Spend(30)


def test_large_values_stay_exact(store: RedisBudgetStore) -> None:
    big = 10**15 + 1  # beyond what Lua would print without an exponent
    store.settle("k", None, Spend(big, big, 0, big, 1, 0))
    store.reserve("k", "o", Spend(-1, -1, -1, 3 * big, -1, -1), Spend(0, 0, 0, big, 0, 0), "r")
    assert store.usage("k") == (Spend(big, big, 0, big, 1, 0), Spend(0, 0, 0, big, 0, 0))


def test_matches_in_memory_store(store: RedisBudgetStore) -> None:
    """Random operation sequences give the same state and the same refusals."""
    ref = InMemoryBudgetStore()
    rng = random.Random(1234)
    limits = Spend(500, 400, 120, 9000, 12, 5)
    open_ids: list[str] = []
    for n in range(400):
        op = rng.random()
        if op < 0.5 or not open_ids:
            # a new call, or (one time in five) an open call reserving again
            again = open_ids and rng.random() < 0.2
            rid = rng.choice(open_ids) if again else f"r{n}"
            req = Spend(*(rng.randint(0, 60) for _ in range(3)), rng.randint(0, 900),
                        rng.randint(0, 1), rng.randint(0, 1))  # fmt: skip
            outcome = []
            for s in (ref, store):
                try:
                    s.reserve("k", "o", limits, req, rid)
                    outcome.append(None)
                except BudgetExceeded as exc:
                    outcome.append((exc.limit_name, exc.used, exc.reserved, exc.requested))
            assert outcome[0] == outcome[1]
            if outcome[0] is None and rid not in open_ids:
                open_ids.append(rid)
        elif op < 0.8:
            rid = open_ids.pop(rng.randrange(len(open_ids)))
            actual = Spend(*(rng.randint(0, 50) for _ in range(3)), rng.randint(0, 700), 1, 0)
            ref.settle("k", rid, actual)
            store.settle("k", rid, actual)
        else:
            rid = open_ids.pop(rng.randrange(len(open_ids)))
            ref.release("k", rid)
            store.release("k", rid)
        assert store.usage("k") == ref.usage("k")


def test_expired_reservation_stops_counting(redis_url: str, prefix: str) -> None:
    s = RedisBudgetStore(redis_url, prefix=prefix, reservation_ttl_s=0.2)
    limits = Spend(100, -1, -1, -1, -1, -1)
    s.reserve("k", "o", limits, Spend(100), "lost")
    with pytest.raises(BudgetExceeded):
        s.reserve("k", "o", limits, Spend(1), "next")
    deadline = time.monotonic() + 10
    while s.usage("k")[1] != Spend():
        assert time.monotonic() < deadline, "reservation never expired"
        time.sleep(0.05)
    s.reserve("k", "o", limits, Spend(100), "next")
    s.settle("k", "lost", Spend(0))  # a late settlement of an expired booking: no harm
    assert s.usage("k") == (Spend(), Spend(100))
    s.close()


def test_tracker_with_redis_store(store: RedisBudgetStore) -> None:
    tracker = agentmeter.Tracker(budget_store=store)
    tracker.set_price("m", input_per_mtok=1, output_per_mtok=1)
    tracker.set_budget("s1", Budget(max_tokens=1000))
    tracker.check_budget(600, session_id="s1", call_id="c1")
    with pytest.raises(BudgetExceeded):
        tracker.check_budget(600, session_id="s1", call_id="c2")
    tracker.record_llm("m", 500, 20, session_id="s1", call_id="c1")
    status = tracker.budget_status("s1")
    assert status is not None
    assert status.used["max_tokens"] == 520 and status.reserved["max_tokens"] == 0
    # Another process (another tracker, same store) sees the same budget.
    other = agentmeter.Tracker(budget_store=RedisBudgetStore(store.client, prefix=store.prefix))
    other.set_budget("s1", Budget(max_tokens=1000))
    with pytest.raises(BudgetExceeded):
        other.check_budget(500, session_id="s1", call_id="c3")


# ------------------------------------------------------------ many processes
def _spend_worker(
    url: str, prefix: str, limit: int, estimate: int, start: Any, results: Any
) -> None:
    """One process: 8 threads reserving ``estimate`` tokens until refused."""
    threads, per_thread_max = 8, 200
    store = RedisBudgetStore(url, prefix=prefix)
    tracker = agentmeter.Tracker(budget_store=store)
    tracker.set_price("m", input_per_mtok=1, output_per_mtok=1)
    tracker.set_budget("shared", Budget(max_tokens=limit))
    done = [0] * threads
    start.wait(timeout=60)  # every process is ready: they really compete

    def run(i: int) -> None:
        for n in range(per_thread_max):
            call_id = f"{os.getpid()}-{i}-{n}"
            try:
                tracker.check_budget(estimate, call_id=call_id, session_id="shared")
            except BudgetExceeded:
                return
            tracker.record_llm("m", estimate, 0, call_id=call_id, session_id="shared")
            done[i] += 1

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=60)
        assert not t.is_alive(), "worker thread hung"
    store.close()
    results.put(sum(done))


@pytest.mark.timeout(180)
def test_four_processes_share_one_budget(redis_url: str, prefix: str) -> None:
    estimate, limit = 100, 100 * 1000  # up to 4 x 8 x 200 = 6400 attempts for 1000 calls
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(4), ctx.Queue()
    procs = [
        ctx.Process(target=_spend_worker, args=(redis_url, prefix, limit, estimate, start, results))
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    try:
        counts = [results.get(timeout=150) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join(timeout=10)
    assert all(p.exitcode == 0 for p in procs)
    store = RedisBudgetStore(redis_url, prefix=prefix)
    used, reserved = store.usage("session:shared")
    store.close()
    assert reserved == Spend()
    assert used.tokens <= limit  # actual == estimate: no overshoot at all
    assert used.tokens == sum(counts) * estimate  # every successful call counted, once
    # Each refusal saw used + in-flight > limit - estimate, and in-flight calls settled:
    # the budget was used up exactly.
    assert used.tokens == limit
    assert used.llm_calls == sum(counts)
    assert sum(1 for c in counts if c > 0) >= 2, counts  # they did compete


def _reserve_and_hang(url: str, prefix: str, ready: Any) -> None:
    store = RedisBudgetStore(url, prefix=prefix, reservation_ttl_s=3.0)
    limits = Spend(1000, -1, -1, -1, -1, -1)
    store.reserve("session:s", "session 's'", limits, Spend(900, 900, 0, 0, 1, 0), "doomed")
    ready.set()
    time.sleep(120)


@pytest.mark.timeout(60)
def test_killed_process_does_not_hold_budget_forever(redis_url: str, prefix: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=_reserve_and_hang, args=(redis_url, prefix, ready), daemon=True)
    proc.start()
    try:
        assert ready.wait(timeout=30), "child never reserved"
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(timeout=10)
        assert proc.exitcode == -signal.SIGKILL
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=10)
    store = RedisBudgetStore(redis_url, prefix=prefix)
    limits = Spend(1000, -1, -1, -1, -1, -1)
    assert store.usage("session:s")[1].tokens == 900  # the dead call still holds it
    with pytest.raises(BudgetExceeded):
        store.reserve("session:s", "o", limits, Spend(500, 500, 0, 0, 1, 0), "live")
    deadline = time.monotonic() + 15
    while store.usage("session:s")[1].tokens:
        assert time.monotonic() < deadline, "a dead process's reservation never expired"
        time.sleep(0.1)
    store.reserve("session:s", "o", limits, Spend(1000, 1000, 0, 0, 1, 0), "live")
    store.close()


# ------------------------------------------------------------------- outages
@pytest.mark.timeout(60)
def test_redis_going_away(prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    server = RedisServer()
    server.start()
    try:
        store = RedisBudgetStore(server.url, prefix=prefix, socket_timeout_s=0.5)
        tracker = agentmeter.Tracker(budget_store=store)
        tracker.set_price("m", input_per_mtok=1, output_per_mtok=1)
        tracker.set_budget("s", Budget(max_tokens=1000))
        tracker.check_budget(100, session_id="s", call_id="c1")  # in flight when Redis dies
        server.stop()

        # Fail closed: the call that cannot be checked is refused, with a clear error.
        start = time.monotonic()
        with pytest.raises(BudgetStoreUnavailable) as ei:
            tracker.check_budget(100, session_id="s", call_id="c2")
        assert time.monotonic() - start < 5
        assert isinstance(ei.value, AgentMeterError)
        assert server.url in str(ei.value) and ei.value.url == server.url
        with pytest.raises(BudgetStoreUnavailable):
            tracker.budget_status("s")

        # The call already made still gets counted: kept, logged, replayed later.
        with caplog.at_level(logging.WARNING, logger="agentmeter"):
            tracker.record_llm("m", 100, 0, session_id="s", call_id="c1")
            tracker.record_llm("m", 50, 0, session_id="s", call_id="c3")
        assert store.backlog == 3  # and the cancel of c2's reservation attempt
        assert "unreachable" in caplog.text and server.url in caplog.text

        server.start()  # back, empty (no persistence)
        with caplog.at_level(logging.WARNING, logger="agentmeter"):
            status = tracker.budget_status("s")
        assert store.backlog == 0
        assert status is not None and status.used["max_tokens"] == 150
        assert "reachable again" in caplog.text
        tracker.check_budget(100, session_id="s", call_id="c4")
        store.close()
    finally:
        server.stop()


def test_unreachable_from_the_start_is_an_error_not_a_pass(prefix: str) -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"  # nothing listens there
    store = RedisBudgetStore(url, prefix=prefix, socket_timeout_s=0.5)
    with pytest.raises(BudgetStoreUnavailable) as ei:
        store.reserve("k", "o", UNLIMITED, Spend(1), "r")
    assert "hunter2" not in str(ei.value)
    assert ":***@127.0.0.1" in str(ei.value)
    err = pickle.loads(pickle.dumps(ei.value))
    assert isinstance(err, BudgetStoreUnavailable) and str(err) == str(ei.value)
    store.close(timeout=0)


def test_mask_url() -> None:
    assert mask_url("redis://u:secret@h:6379/1") == "redis://u:***@h:6379/1"
    assert mask_url("redis://h:6379/0") == "redis://h:6379/0"


def test_bad_arguments() -> None:
    with pytest.raises(TypeError):
        RedisBudgetStore(42)
    with pytest.raises(ValueError):
        RedisBudgetStore("redis://127.0.0.1:1/0", reservation_ttl_s=0)
