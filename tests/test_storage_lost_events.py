"""No lost events: forked workers, a database that disappears under a running sink,
and honest counters (written never counts what was not stored)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from storage_util import raw_event

import agentmeter
from agentmeter.storage import SQLSink, UsageStore

pytestmark = pytest.mark.filterwarnings("ignore::agentmeter.UnpricedModelWarning")
ROOT = Path(__file__).resolve().parents[1]

WORKERS = """
    import multiprocessing as mp, sys
    import agentmeter
    from agentmeter.storage import SQLSink, UsageStore

    DB, METHOD, MODE = sys.argv[1], sys.argv[2], sys.argv[3]
    # With "fork" the children inherit this tracker and sink; with "forkserver" each
    # child imports this module again and gets its own.
    t = agentmeter.Tracker()
    sink = SQLSink(DB)
    t.add_sink(sink)

    def work(i):
        for _ in range(500):
            t.record_llm("gpt-4o", 10, 1, session_id=f"w{i}")
        # ... and return at once: no flush, no close (the process ends with os._exit).

    if __name__ == "__main__":
        ctx = mp.get_context(METHOD)
        if MODE == "process":
            procs = [ctx.Process(target=work, args=(i,)) for i in range(4)]
            for p in procs:
                p.start()
            for p in procs:
                p.join(60)
            assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
        else:
            pool = ctx.Pool(4)
            pool.map(work, range(4), chunksize=1)
            pool.close()
            pool.join()
        sink.close()
        with UsageStore(DB) as store:
            print(store.count(), sorted(store.by("session")))
"""


@pytest.mark.parametrize(
    ("method", "mode"), [("fork", "process"), ("forkserver", "process"), ("fork", "pool")]
)
def test_forked_workers_that_return_at_once_store_everything(
    tmp_path: Path, method: str, mode: str
) -> None:
    script = tmp_path / "workers.py"  # a file: forkserver children import it again
    script.write_text(textwrap.dedent(WORKERS))
    db = tmp_path / "fork.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AGENTMETER_STRICT": "1"}
    proc = subprocess.run(
        [sys.executable, str(script), str(db), method, mode],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    count, sessions = proc.stdout.strip().split(" ", 1)
    assert int(count) == 2000, proc.stderr
    assert sessions == "['w0', 'w1', 'w2', 'w3']"


def _tracker_with_tap(sink: SQLSink) -> tuple[agentmeter.Tracker, list[str]]:
    t = agentmeter.Tracker()
    ids: list[str] = []

    class Tap:
        def submit(self, raw: tuple[Any, ...]) -> None:
            ids.append(raw[0])

    t.add_sink(Tap())
    t.add_sink(sink)
    return t, ids


def _spilled_ids(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [json.loads(line)["call_id"] for line in path.read_text().splitlines() if line]


def test_directory_removed_mid_run_spills_every_later_event_and_replays_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "data"
    db = folder / "usage.db"
    sink = SQLSink(db, flush_interval=0.05)
    fallback = sink._fallback_spill
    fallback.unlink(missing_ok=True)
    t, ids = _tracker_with_tap(sink)
    try:
        for i in range(300):
            t.record_llm("m", i, 1, session_id="before")
        assert sink.flush(10)
        assert sink.stats["written"] == 300
        shutil.rmtree(folder)  # the database, its WAL and the spill file's folder: gone
        with caplog.at_level(logging.ERROR, logger="agentmeter.storage"):
            for i in range(400):
                t.record_llm("m", i, 1, session_id="after")
            assert sink.flush(10)
        stats = sink.stats
        assert stats["written"] == 300  # nothing after the removal is reported written
        assert stats["overflowed"] + stats["dropped"] == 400
        assert stats["dropped"] == 0  # the temporary directory could be written
        assert "disappeared" in caplog.text and str(fallback) in caplog.text
    finally:
        sink.close()
    assert not folder.exists()  # the sink never re-creates a removed database
    assert sorted(_spilled_ids(fallback)) == sorted(ids[300:])
    # Replayable: the next sink on the same database takes the spilled events in.
    folder.mkdir()
    with SQLSink(db) as again:
        assert again.flush(10)
        deadline = time.monotonic() + 15
        while fallback.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    assert not fallback.exists()
    with UsageStore(db) as store:
        assert store.count() == 400
        assert set(store.by("session")) == {"after"}


def test_directory_moved_while_recording_accounts_for_every_event(tmp_path: Path) -> None:
    """A racy removal (the folder moved away at a random moment of a busy writer):
    every event is in the moved database or in the spill file, and ``written``
    counts exactly those stored while the file was at its path."""
    folder = tmp_path / "data"
    db = folder / "usage.db"
    sink = SQLSink(db, flush_interval=0.01, batch_size=200)
    fallback = sink._fallback_spill
    fallback.unlink(missing_ok=True)
    t, ids = _tracker_with_tap(sink)
    stop = threading.Event()
    n = 0

    def record() -> None:
        nonlocal n
        while not stop.is_set() and n < 60_000:
            t.record_llm("m", 1, 1, session_id="s")
            n += 1
            if n % 100 == 0:
                time.sleep(0.001)

    rec = threading.Thread(target=record)
    rec.start()
    try:
        deadline = time.monotonic() + 20
        while sink.stats["written"] < 3000 and time.monotonic() < deadline:
            time.sleep(0.005)
        moved = tmp_path / "moved"
        folder.rename(moved)
        time.sleep(0.3)  # keep recording after the move
    finally:
        stop.set()
        rec.join(30)
        sink.close()
    stats = sink.stats
    con = sqlite3.connect(moved / "usage.db")
    try:
        stored = {r[0] for r in con.execute("SELECT call_id FROM agentmeter_events")}
    finally:
        con.close()
    spilled = _spilled_ids(fallback)
    fallback.unlink(missing_ok=True)
    assert len(ids) == n and len(set(ids)) == n
    assert stats["dropped"] == 0
    assert stats["written"] + stats["overflowed"] == n
    assert len(spilled) == stats["overflowed"] > 0
    assert set(ids) == stored | set(spilled)  # nothing lost
    assert stats["written"] == len(stored - set(spilled))  # never more than was stored


def test_a_database_replaced_under_the_sink_is_reopened(tmp_path: Path) -> None:
    db = tmp_path / "usage.db"
    sink = SQLSink(db, flush_interval=0.05)
    t, _ = _tracker_with_tap(sink)
    try:
        for i in range(100):
            t.record_llm("m", i, 1, session_id="old")
        assert sink.flush(10)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        SQLSink(db).close()  # somebody starts a new database at the same path
        for i in range(50):
            t.record_llm("m", i, 1, session_id="new")
        assert sink.flush(10)
    finally:
        sink.close()
    assert sink.stats["written"] == 150 and sink.stats["overflowed"] == 0
    with UsageStore(db) as store:
        assert store.count() == 50  # written into the file now at the path, not the old one
        assert set(store.by("session")) == {"new"}


def test_rejected_rows_are_not_counted_written(tmp_path: Path) -> None:
    db = tmp_path / "bad.db"
    with SQLSink(db) as sink:
        sink.submit(raw_event("ok1", time.time(), model="m", input_tokens=1))
        sink.submit(raw_event("huge", time.time(), model="m", input_tokens=2**70))
        sink.submit(raw_event("ok2", time.time(), model="m", input_tokens=2))
        sink.submit(raw_event("ok1", time.time(), model="m", input_tokens=1))  # a duplicate
        assert sink.flush(10)
        stats = sink.stats
    assert (stats["written"], stats["rejected"], stats["duplicates"]) == (2, 1, 1)
    assert stats["dropped"] == 0


def test_rejected_rows_that_cannot_be_kept_are_counted_dropped(tmp_path: Path) -> None:
    db = tmp_path / "bad.db"
    spill = tmp_path / "no-such-folder" / "spill.jsonl"
    with SQLSink(db, spill_path=spill) as sink:
        sink.submit(raw_event("ok1", time.time(), model="m", input_tokens=1))
        sink.submit(raw_event("huge", time.time(), model="m", input_tokens=2**70))
        assert sink.flush(10)
        stats = sink.stats
    assert (stats["written"], stats["rejected"], stats["dropped"]) == (1, 0, 1)
