"""Shared timing helpers: best-of-N loops and the locked-counter floor."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Awaitable, Callable

# The clock of best_per_op: wall-clock time by default; process CPU time with
# use_cpu_clock() (``--cpu``), which does not count the time this process waited
# for a CPU that other processes held -- on a shared, loaded machine that wait
# swamps microsecond rows, and the floor (timed with the same clock) moves with it.
CLOCK: Callable[[], float] = time.perf_counter
CLOCK_NAME = "wall-clock"


def use_cpu_clock() -> None:
    """Time ``best_per_op`` (and the floor) in process CPU time from now on."""
    global CLOCK, CLOCK_NAME
    CLOCK, CLOCK_NAME = time.process_time, "process CPU time"


def best_per_op(fn: Callable[[int], object], n: int, repeats: int = 7) -> float:
    """Seconds per operation: the best of ``repeats`` runs of ``fn(n)`` (n operations each)."""
    best = float("inf")
    gc_was = gc.isenabled()
    gc.disable()
    clock = CLOCK
    try:
        for _ in range(repeats):
            t0 = clock()
            fn(n)
            best = min(best, clock() - t0)
    finally:
        if gc_was:
            gc.enable()
    return best / n


def floor_loop(n: int) -> None:
    """The floor: a bare ``with lock: a += x; b += y; c += 1``."""
    lock = threading.Lock()
    a = b = c = 0
    x, y = 3, 5
    for _ in range(n):
        with lock:
            a += x
            b += y
            c += 1


def floor_per_op(n: int = 200_000) -> float:
    """Seconds per floor operation, measured now."""
    return best_per_op(floor_loop, n)


def best_interleaved(
    fns: dict[str, Callable[[int], object]], n: int, rounds: int = 7, repeats: int = 3
) -> dict[str, float]:
    """Seconds per operation of each of ``fns`` and of the floor (key ``"floor"``),
    each the best over ``rounds`` rounds that run them all in turn.

    On a VM whose speed drifts from one second to the next (the floor alone moved
    0.17-0.35 us within minutes on this one), a floor measured once at the start
    and an operation measured a minute later see different machines; run in turn,
    the best of each comes from the same quiet moments.
    """
    best = {name: float("inf") for name in ("floor", *fns)}
    for _ in range(rounds):
        best["floor"] = min(best["floor"], best_per_op(floor_loop, 2 * n, repeats))
        for name, fn in fns.items():
            best[name] = min(best[name], best_per_op(fn, n, repeats))
    return best


def us(seconds: float) -> str:
    """Format seconds as microseconds."""
    return f"{seconds * 1e6:.2f} us"


def row(operation: str, measured: str, anchor: str, target: str, ok: bool) -> dict[str, str]:
    """One table row in the common format of every benchmark module."""
    return {
        "operation": operation,
        "measured": measured,
        "anchor": anchor,
        "target": target,
        "verdict": "meets target" if ok else "MISSES target",
    }


def table(rows: list[dict[str, str]]) -> str:
    """Render rows as a markdown table."""
    keys = ["operation", "measured", "anchor", "target", "verdict"]
    out = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    out += ["| " + " | ".join(r[k] for k in keys) + " |" for r in rows]
    return "\n".join(out)


async def time_awaited(fn: Callable[[], Awaitable[object]], calls: int) -> list[float]:
    """Duration of each of ``calls`` awaited calls (seconds)."""
    clock = time.perf_counter
    times = []
    gc.collect()
    gc.disable()
    try:
        for _ in range(calls):
            t0 = clock()
            await fn()
            times.append(clock() - t0)
    finally:
        gc.enable()
    return times


def time_sync(fn: Callable[[], object], calls: int) -> list[float]:
    """Duration of each of ``calls`` calls (seconds)."""
    clock = time.perf_counter
    times = []
    for _ in range(calls):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return times


def low_quantile(times: list[float]) -> float:
    """A low quantile of per-call times: what a call costs when nothing preempts it."""
    ordered = sorted(times)
    return ordered[len(ordered) // 10]
