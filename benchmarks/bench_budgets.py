"""Budget benchmarks: reserve latency with many reservations outstanding, and their memory.

Run: ``python benchmarks/bench_budgets.py [--quick]``.

Reservations that are never settled (a call that raised, a dropped stream) used to
make every reserve scan all of them (71 us with 1k outstanding, 3.9 ms at 80k, the
issue's numbers). The in-memory store keeps them oldest first and expires from that
end, so a reserve costs the same with 100,000 outstanding as with 10: both are
measured in the same run and compared.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _harness import floor_per_op, row, table, us

from agentmeter import Budget, InMemoryBudgetStore, Tracker
from agentmeter.budget import Spend

_LIMITS = Spend(-1, -1, -1, -1, -1, -1)
_REQ = Spend(100, 100, 1, 250, 1, 0)


def _store_reserve_per_op(outstanding: int, n: int, repeats: int) -> float:
    """Seconds per ``InMemoryBudgetStore.reserve`` with ``outstanding`` never settled."""
    store = InMemoryBudgetStore()
    for i in range(outstanding):
        store.reserve("k", "owner", _LIMITS, _REQ, f"stale-{i}")
    best = float("inf")
    gc.disable()
    try:
        for r in range(repeats):
            ids = [f"r{r}-{i}" for i in range(n)]
            t0 = time.perf_counter()
            for rid in ids:
                store.reserve("k", "owner", _LIMITS, _REQ, rid)
            best = min(best, time.perf_counter() - t0)
            for rid in ids:
                store.release("k", rid)
    finally:
        gc.enable()
    assert store.outstanding("k") == outstanding
    return best / n


def _tracker_check_per_op(outstanding: int, n: int, repeats: int) -> float:
    """Seconds per ``check_budget`` (session budget) with ``outstanding`` never settled."""
    t = Tracker()
    t.set_budget("s1", Budget(max_tokens=10**15, max_cost_usd=10**6))
    for i in range(outstanding):
        t.check_budget(100, model="gpt-4o", session_id="s1", call_id=f"stale-{i}")
    best = float("inf")
    gc.disable()
    try:
        for r in range(repeats):
            ids = [f"r{r}-{i}" for i in range(n)]
            t0 = time.perf_counter()
            for cid in ids:
                t.check_budget(100, model="gpt-4o", session_id="s1", call_id=cid)
            best = min(best, time.perf_counter() - t0)
            for cid in ids:
                t.release(cid)
    finally:
        gc.enable()
    return best / n


def _memory_per_100k(count: int) -> tuple[float, float]:
    """MiB per 100k outstanding reservations: (store alone, tracker incl. its ledger)."""
    gc.collect()
    tracemalloc.start()
    store = InMemoryBudgetStore()
    base = tracemalloc.get_traced_memory()[0]
    for i in range(count):
        store.reserve("k", "owner", _LIMITS, Spend(100 + i % 7, 100, 1, 250, 1, 0), f"id-{i}")
    store_bytes = tracemalloc.get_traced_memory()[0] - base
    del store
    gc.collect()
    t = Tracker()
    t.set_budget("s1", Budget(max_tokens=10**15))
    base = tracemalloc.get_traced_memory()[0]
    for i in range(count):
        t.check_budget(100 + i % 7, session_id="s1", call_id=f"id-{i}")
    tracker_bytes = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    scale = 100_000 / count / 2**20
    return store_bytes * scale, tracker_bytes * scale


def rows(quick: bool = False) -> list[dict[str, str]]:
    """Run the benchmarks; one dict per table row."""
    n, repeats = (2_000, 3) if quick else (20_000, 7)
    big = 100_000
    floor = floor_per_op(20_000 if quick else 200_000)
    few = _store_reserve_per_op(10, n, repeats)
    many = _store_reserve_per_op(big, n, repeats)
    out = [
        row(
            f"InMemoryBudgetStore.reserve, {big:,} reservations outstanding",
            f"{us(many)} = {many / few:.2f}x",
            f"10 outstanding: {us(few)} (floor of this run: {us(floor)})",
            "<= 2x the latency with 10",
            many <= 2 * few,
        )
    ]
    few_t = _tracker_check_per_op(10, n, repeats)
    many_t = _tracker_check_per_op(big, n, repeats)
    out.append(
        row(
            f"check_budget (session budget, priced), {big:,} reserved and never settled"
            " (the ledger keeps the newest 65,536 and releases the rest in the store)",
            f"{us(many_t)} = {many_t / few_t:.2f}x",
            f"10 outstanding: {us(few_t)}",
            "<= 2x the latency with 10",
            many_t <= 2 * few_t,
        )
    )
    # Below the ledger's cap of 65,536 pending, so every one is held by both.
    store_mib, tracker_mib = _memory_per_100k(20_000 if quick else 60_000)
    out.append(
        row(
            "memory per 100k outstanding reservations (tracemalloc)",
            f"store {store_mib:.1f} MiB; tracker incl. ledger {tracker_mib:.1f} MiB",
            "before: 47 MiB per 100k (the issue)",
            "< 47 MiB",
            tracker_mib < 47,
        )
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer iterations (smoke run)")
    args = parser.parse_args(argv)
    print(table(rows(quick=args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
