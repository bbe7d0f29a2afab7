"""Benchmark of the SQL sink: throughput into SQLite and the cost added to each record.

Run ``python benchmarks/bench_storage.py [--quick]``; prints a markdown table.
``rows(quick)`` returns the same rows for other tools (keys: operation, measured,
anchor, target, verdict). Best-of-N timings, all measured here in the same run.

- **events/s into SQLite, end to end**: ``record_llm`` on a tracker with a
  ``SQLSink`` attached, from the first record until ``flush()`` returned (every
  row and its hourly and daily rollup rows committed); once with one key, once
  with billing-shaped traffic (customers, tags, sessions, tools: many rollup keys
  per batch). The anchor is what seed 001 did -- one ``INSERT`` + commit per
  usage row, on the recording thread -- timed here on the same disk.
- **added cost per record**: ``record_llm`` with the sink attached minus without,
  on the recording thread. The writer is kept idle during the timed loop
  (``batch_size`` larger than the loop, long ``flush_interval``) so that this is
  the enqueue cost alone; the writer's own work is in the events/s row.
"""

from __future__ import annotations

import argparse
import gc
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import agentmeter
from agentmeter.storage import SQLSink


def _best(fn: Callable[[], float], repeat: int) -> float:
    """The best (smallest) of ``repeat`` timings returned by ``fn``."""
    return min(fn() for _ in range(repeat))


def _tracker() -> agentmeter.Tracker:
    t = agentmeter.Tracker()
    t.set_price("bench-model", input_per_mtok=1, output_per_mtok=2)
    t.set_price("bench-model-2", input_per_mtok=3, output_per_mtok=12)
    t.set_price("bench-embed", input_per_mtok=0.02, output_per_mtok=0)
    return t


def _record_loop(t: agentmeter.Tracker, n: int) -> float:
    rec = t.record_llm
    gc.collect()
    start = time.perf_counter()
    for i in range(n):
        rec("bench-model", 100 + (i & 7), 20, session_id="s1", agent_id="a1")
    return time.perf_counter() - start


def _mixed_loop(t: agentmeter.Tracker, n: int) -> float:
    """Billing-shaped traffic: 10 customers with two tags each, 40 sessions, 3 agents,
    two models, tool calls inside and outside tools, embeddings -- many rollup keys."""
    rec, tool, emb = t.record_llm, t.record_tool_call, t.record_embedding
    tags = [{"team": f"t{c % 3}", "plan": "pro" if c % 2 else "free"} for c in range(10)]
    gc.collect()
    start = time.perf_counter()
    for i in range(n):
        c = i % 10
        kw = {"customer_id": f"c{c}", "session_id": f"s{i % 40}", "agent_id": f"a{i % 3}",
              "tags": tags[c]}  # fmt: skip
        r = i % 10
        if r < 6:
            rec("bench-model" if r % 2 else "bench-model-2", 100 + (i & 7), 20,
                tool="search" if r == 5 else None, **kw)  # fmt: skip
        elif r < 9:
            tool("search" if r == 6 else "fetch", ok=True, duration_ms=float(i % 97), **kw)
        else:
            emb("bench-embed", 50, **kw)
    return time.perf_counter() - start


def end_to_end_rate(n: int, workdir: Path, mixed: bool = False) -> float:
    """Events per second from the first record until flush() returned."""

    def once() -> float:
        path = workdir / f"e2e-{time.monotonic_ns()}.db"
        t = _tracker()
        # A full queue blocks the recording loop (up to a minute) instead of spilling
        # after 1 s: the loop records faster than any writer, and on a loaded machine
        # a spill would leave events outside the timed flush. The rate is the writer's.
        sink = SQLSink(path, flush_interval=0.05, block_timeout=60.0)
        t.add_sink(sink)
        try:
            start = time.perf_counter()
            (_mixed_loop if mixed else _record_loop)(t, n)
            assert sink.flush(120), "flush timed out"
            elapsed = time.perf_counter() - start
            assert sink.stats["written"] == n
        finally:
            sink.close()
        return elapsed

    return n / _best(once, 3)


class _NoopSink:
    """Receives events and does nothing: isolates the tracker's own event-building cost."""

    def submit(self, raw: tuple[object, ...]) -> None:
        pass


def added_cost_us(n: int, workdir: Path, repeat: int) -> tuple[float, float, float]:
    """µs per record_llm: (with SQLSink - without, with a no-op sink - without, without).

    The three loops alternate (load changes on the machine hit them alike); the
    sink's queue is flushed between loops, outside the timing.
    """
    bare, noop, with_sink = _tracker(), _tracker(), _tracker()
    noop.add_sink(_NoopSink())
    sink = SQLSink(workdir / "cost.db", batch_size=n + 1, max_queue=n + 1, flush_interval=3600)
    with_sink.add_sink(sink)
    best = {"bare": float("inf"), "noop": float("inf"), "sql": float("inf")}
    try:
        for _ in range(repeat):
            best["bare"] = min(best["bare"], _record_loop(bare, n) / n)
            best["noop"] = min(best["noop"], _record_loop(noop, n) / n)
            best["sql"] = min(best["sql"], _record_loop(with_sink, n) / n)
            assert sink.flush(120)
    finally:
        sink.close()
    us = {k: v * 1e6 for k, v in best.items()}
    return us["sql"] - us["bare"], us["noop"] - us["bare"], us["bare"]


def floor_us(repeat: int) -> float:
    """The "floor": ``with lock: a += x; b += y; c += 1`` (~0.45 us on an idle machine)."""
    import threading

    lock = threading.Lock()
    n = 200_000

    def once() -> float:
        a = b = c = 0
        start = time.perf_counter()
        for i in range(n):
            with lock:
                a += i
                b += 2
                c += 1
        return (time.perf_counter() - start) / n

    return _best(once, repeat) * 1e6


def naive_rows_per_second(n: int, workdir: Path) -> float:
    """The anchor: one INSERT and one commit per usage row, on the calling thread."""
    path = workdir / "naive.db"
    con = sqlite3.connect(path)
    con.execute(
        "create table usage (ts real, model text, session text, agent text, "
        "input_tokens int, output_tokens int, cost_micros int)"
    )
    con.commit()

    def once() -> float:
        start = time.perf_counter()
        for i in range(n):
            con.execute(
                "insert into usage values (?, ?, ?, ?, ?, ?, ?)",
                (time.time(), "bench-model", "s1", "a1", 100 + i, 20, 140),
            )
            con.commit()
        return time.perf_counter() - start

    try:
        return n / _best(once, 2)
    finally:
        con.close()


def rows(quick: bool = False) -> list[dict[str, str]]:
    """The benchmark rows: operation, measured, anchor, target, verdict."""
    n_e2e = 20_000 if quick else 200_000
    n_cost = 20_000
    repeat = 5 if quick else 15
    with tempfile.TemporaryDirectory(prefix="agentmeter-bench-") as tmp:
        work = Path(tmp)
        floor = floor_us(repeat)
        naive = naive_rows_per_second(200 if quick else 1000, work)
        rate = end_to_end_rate(n_e2e, work)
        mixed = end_to_end_rate(n_e2e, work, mixed=True)
        added, tracker_part, base_us = added_cost_us(n_cost, work, repeat)
    naive_us = 1e6 / naive
    return [
        {
            "operation": "floor (context): `with lock: a += x; b += y; c += 1`",
            "measured": f"{floor:.2f} us",
            "anchor": "0.45 us on the reference machine the targets were set on",
            "target": "-",
            "verdict": f"machine runs {floor / 0.45:.1f}x slower than the reference",
        },
        {
            "operation": f"SQL sink: record_llm -> SQLite incl. flush ({n_e2e:,} events)",
            "measured": f"{rate:,.0f} events/s",
            "anchor": f"seed_001 style, INSERT+commit per row: {naive:,.0f} rows/s",
            "target": ">= 20,000 events/s",
            "verdict": "PASS" if rate >= 20_000 else "FAIL",
        },
        {
            "operation": f"SQL sink: billing-shaped traffic -> SQLite incl. flush ({n_e2e:,} "
            "events: 10 customers x 2 tags, 40 sessions, 3 agents, tools, embeddings)",
            "measured": f"{mixed:,.0f} events/s",
            "anchor": f"one key (row above): {rate:,.0f} events/s",
            "target": ">= 20,000 events/s",
            "verdict": "PASS" if mixed >= 20_000 else "FAIL",
        },
        {
            "operation": "SQL sink: added cost per record_llm on the recording thread",
            "measured": f"{added:.2f} us (record_llm alone: {base_us:.2f} us)",
            "anchor": f"synchronous INSERT+commit per row: {naive_us:,.0f} us",
            "target": "<= 2 us",
            "verdict": "PASS" if added <= 2.0 else "FAIL",
        },
        {
            "operation": "... of which SQLSink.submit (SQLSink minus a no-op sink)",
            "measured": f"{added - tracker_part:.2f} us (tracker event building: "
            f"{tracker_part:.2f} us)",
            "anchor": "a deque append of the raw tuple",
            "target": "<= 2 us",
            "verdict": "PASS" if added - tracker_part <= 2.0 else "FAIL",
        },
    ]


def markdown(table: list[dict[str, str]]) -> str:
    keys = ["operation", "measured", "anchor", "target", "verdict"]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(r[k] for k in keys) + " |" for r in table]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer events, fewer repeats")
    args = parser.parse_args(argv)
    print(markdown(rows(quick=args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
