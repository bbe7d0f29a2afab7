"""Faults: a locked or stopped database, a full queue, process exit and SIGKILL."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import storage_pg
from storage_pg import PgServer

import agentmeter
from agentmeter.storage import SQLSink, UsageStore

pg = storage_pg.pg  # the fixture

ROOT = Path(__file__).resolve().parents[1]


def _count(url: str | Path) -> int:
    with UsageStore(url) as store:
        return store.count()


def _wait(cond, timeout: float = 15.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return bool(cond())


def _record(t: agentmeter.Tracker, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        t.record_llm(model="m", input_tokens=i, output_tokens=1, session_id=f"s{i % 3}")


def test_sqlite_locked_then_released_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    sink = SQLSink(path, flush_interval=0.05, sqlite_timeout=0.05, max_retry_delay=0.1)
    t = agentmeter.Tracker()
    t.add_sink(sink)
    try:
        locker = sqlite3.connect(path, isolation_level=None, timeout=5)
        locker.execute("BEGIN EXCLUSIVE")  # another process holding the write lock
        try:
            _record(t, 500)
            assert _wait(lambda: sink.stats["retries"] >= 2)
            assert sink.stats["written"] == 0
            assert sink.flush(0.2) is False  # cannot complete while locked
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        assert sink.flush(15) is True
        assert sink.stats["dropped"] == 0
    finally:
        sink.close()
    with UsageStore(path) as store:
        assert store.count() == 500
        assert store.totals().input_tokens == sum(range(500))


def test_full_queue_blocks_bounded_then_spills_and_replays(tmp_path: Path) -> None:
    path = tmp_path / "full.db"
    sink = SQLSink(
        path,
        flush_interval=0.05,
        batch_size=50,
        max_queue=100,
        block_timeout=0.2,
        sqlite_timeout=0.05,
        max_retry_delay=0.1,
    )
    t = agentmeter.Tracker()
    t.add_sink(sink)
    worst = 0.0
    try:
        locker = sqlite3.connect(path, isolation_level=None, timeout=5)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            for i in range(400):
                t0 = time.perf_counter()
                t.record_llm(model="m", input_tokens=i, output_tokens=0)
                worst = max(worst, time.perf_counter() - t0)
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        stats = sink.stats
        assert stats["blocked"] >= 1 and stats["overflowed"] > 0 and stats["dropped"] == 0
        assert worst < 0.2 + 0.5  # the bounded wait, never an indefinite block
        assert sink.flush(15)
        assert _wait(lambda: not sink.spill_path.exists() and _count(path) == 400)
    finally:
        sink.close()
    with UsageStore(path) as store:
        assert store.totals().input_tokens == sum(range(400))


def test_postgres_stopped_then_restarted_loses_nothing(pg: PgServer) -> None:
    url = pg.new_database()
    sink = SQLSink(url, flush_interval=0.05, max_retry_delay=0.2)
    t = agentmeter.Tracker()
    t.add_sink(sink)
    try:
        _record(t, 200)
        assert sink.flush(10)
        pg.stop()
        try:
            _record(t, 300, start=200)
            assert _wait(lambda: sink.stats["retries"] >= 2)
        finally:
            pg.start()
        assert sink.flush(30) is True
        assert sink.stats["dropped"] == 0
    finally:
        sink.close()
    with UsageStore(url) as store:
        assert store.count() == 500
        assert store.totals().input_tokens == sum(range(500))


def test_postgres_down_when_the_sink_starts(pg: PgServer) -> None:
    url = pg.new_database()
    pg.stop()
    try:
        sink = SQLSink(url, flush_interval=0.05, max_retry_delay=0.2)
        sink.submit(
            (
                "early",
                time.time(),
                "chat",
                "m",
                None,
                3,
                0,
                0,
                0,
                0,
                None,
                None,
                None,
                None,
                (),
                None,
                None,
                "ok",
                None,
                False,
                0,
                None,
            )
        )
        assert _wait(lambda: sink.stats["retries"] >= 1)
    finally:
        pg.start()
    try:
        assert sink.flush(30)
    finally:
        sink.close()
    assert _count(url) == 1


def _child(script: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AGENTMETER_STRICT": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_normal_exit_flushes_everything_via_atexit(tmp_path: Path) -> None:
    path = tmp_path / "exit.db"
    script = """
        import sys, agentmeter
        from agentmeter.storage import SQLSink
        t = agentmeter.Tracker()
        t.add_sink(SQLSink(sys.argv[1], flush_interval=60))  # only the exit hook flushes
        for i in range(3000):
            t.record_llm(model="m", input_tokens=1, output_tokens=1)
        if sys.argv[2] == "raise":
            raise SystemExit(3)
    """
    for mode in ("end", "raise"):
        proc = _child(script, str(path), mode)
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == (3 if mode == "raise" else 0), err
    assert _count(path) == 6000


SIGKILL_CHILD = """
    import sys, time, agentmeter
    from agentmeter.storage import SQLSink
    t = agentmeter.Tracker()
    t.add_sink(SQLSink(sys.argv[1], flush_interval=float(sys.argv[2])))
    n = 0
    if sys.argv[3] == "stream":  # ~2000 events/s until killed
        while True:
            for _ in range(20):
                t.record_llm(model="m", input_tokens=1, output_tokens=1)
            n += 20
            print(n, flush=True)
            time.sleep(0.01)
    for _ in range(500):
        t.record_llm(model="m", input_tokens=1, output_tokens=1)
    print("done", flush=True)
    time.sleep(60)
"""


def test_sigkill_loses_at_most_one_flush_interval(tmp_path: Path) -> None:
    interval = 0.2
    path = tmp_path / "kill.db"
    proc = _child(SIGKILL_CHILD, str(path), str(interval), "stream")
    assert proc.stdout is not None
    first_line = proc.stdout.readline()  # the child is up and recording
    first, started = int(first_line), time.monotonic()
    last = first
    for line in proc.stdout:
        last = int(line)
        if last >= 4000 or time.monotonic() - started > 20:
            break
    elapsed = time.monotonic() - started
    os.kill(proc.pid, signal.SIGKILL)
    rest, _ = proc.communicate(timeout=30)
    printed = [int(x) for x in rest.split()]
    recorded = max([last, *printed])  # a lower bound of what was recorded (<20 short)
    stored = _count(path)
    lost = recorded - stored
    rate = (last - first) / elapsed
    print(
        f"\nSIGKILL: recorded>={recorded} stored={stored} lost~{lost} at {rate:.0f} ev/s, "
        f"flush_interval={interval}s -> {lost / rate:.3f}s of recording lost"
    )
    assert stored <= recorded + 20
    # Bound: what was recorded during one flush interval plus the batch being written.
    assert lost <= rate * (interval + 0.3) + 20


def test_sigkill_after_an_idle_flush_interval_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "idle.db"
    proc = _child(SIGKILL_CHILD, str(path), "0.2", "idle")
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "done"
    time.sleep(0.2 * 4)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert _count(path) == 500


def test_jsonl_sink_round_trip(tmp_path: Path) -> None:
    from agentmeter.storage import JSONLSink, read_jsonl

    path = tmp_path / "events.jsonl"
    t = agentmeter.Tracker()
    events: list[agentmeter.UsageEvent] = []
    t.subscribe(events.append)
    with JSONLSink(path) as sink:
        t.add_sink(sink)
        _record(t, 50)
        t.record_tool_call(tool="search", ok=False, duration_ms=3.5, error="boom")
        t.record_cache_hit(tokens_saved=9)
    back = list(read_jsonl(path))
    assert [e.model_dump() for e in back] == [e.model_dump() for e in events]
    path.write_text(path.read_text() + "{not json\n")
    with pytest.raises(ValueError, match=r"events.jsonl:53"):
        list(read_jsonl(path))


def test_forked_children_store_their_events(tmp_path):
    """A sink inherited by fork()ed workers gets a writer thread in each child."""
    import subprocess
    import sys
    import textwrap

    db = tmp_path / "fork.db"
    script = textwrap.dedent(
        """
        import multiprocessing as mp, sys
        import agentmeter
        from agentmeter.storage import SQLSink, UsageStore
        t = agentmeter.Tracker()
        sink = SQLSink(sys.argv[1])
        t.add_sink(sink)
        def work(i):
            for _ in range(50):
                t.record_llm("gpt-4o", 10, 1, session_id=f"w{i}")
            t.flush()  # pool workers leave with os._exit: no atexit flush there
        if __name__ == "__main__":
            t.record_llm("gpt-4o", 10, 1, session_id="parent")
            with mp.get_context("fork").Pool(2) as pool:
                pool.map(work, range(4))
            sink.close()
            print(UsageStore(sys.argv[1]).snapshot().totals.llm_calls)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(db)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "201"


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_batch_written_twice_is_stored_once(tmp_path, backend, request):
    """A retry after a commit whose reply was lost must not duplicate events."""
    if backend == "sqlite":
        url = str(tmp_path / "once.db")
    else:
        url = request.getfixturevalue("pg").new_database()
    t = agentmeter.Tracker()
    seen: list[tuple] = []

    class Tap:
        def submit(self, raw: tuple) -> None:
            seen.append(raw)

    t.add_sink(Tap())
    sink = SQLSink(url)
    t.add_sink(sink)
    for i in range(100):
        t.record_llm("gpt-4o", 10, 1, session_id=f"once-{backend}-{i % 3}")
    assert sink.flush(timeout=30)
    sink._write(list(seen))  # the same batch again, as a retry would
    sink.close()
    stored = UsageStore(url).snapshot()
    mine = {k: v for k, v in stored.by_session.items() if k.startswith(f"once-{backend}")}
    assert sum(u.llm_calls for u in mine.values()) == 100
