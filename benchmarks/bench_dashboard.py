"""Benchmark of the dashboard: each page's response time over a 10M-event SQLite database.

Run ``python benchmarks/bench_dashboard.py [--quick] [--events N] [--many-sessions]``;
prints a markdown table. ``rows(quick)`` returns the same rows for ``benchmarks/run.py``.

- **The database**: the storage read benchmark's (``bench_store_reads.database``:
  10,000,000 events, ``--quick`` 1,000,000, over 30 days, 10 customers, 300
  sessions, 3 agents, 3 models, 2 tools, built once and cached under
  ``$TMPDIR/agentmeter-bench/``), so the page times sit beside the store's read
  times. ``--many-sessions`` adds a harsher shape built here through
  :class:`~agentmeter.storage.SQLSink`: the same number of events over 90 days
  with one session per 100 events (100,000 sessions at 10M), 50 customers, 6
  agents, 6 models, 12 tools, each session keeping to one or two models and three
  tools -- about 25x the rollup rows, which is what reads cost.
- **A page's time**: one ``GET`` through the ASGI app (``create_app(db_url=...)``,
  FastAPI's TestClient, no network), from the request to the last byte of the
  HTML: the reads, the SVG and the rendering. Each page is loaded once (the
  "first" figure: this process's cold caches) then ``repeat`` times; the verdict
  takes the slowest of those. Target: <= 1 s per page.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from agentmeter.models import EVENT_FIELDS

TARGET_S = 1.0
DAYS = 90
CUSTOMERS = 50
AGENTS = 6
MODELS = ("gpt-4o-mini", "gpt-4o", "claude-sonnet", "claude-haiku", "llama-local", "mistral")
TOOLS = tuple(f"tool-{i:02d}" for i in range(12))
EVENTS_PER_SESSION = 100


def _cache_dir() -> Path:
    d = Path(tempfile.gettempdir()) / "agentmeter-bench"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _events(n: int, seed: int = 10) -> Any:
    """``n`` raw event tuples, oldest first, over the last DAYS days.

    Like production traffic, a session keeps to its customer, its agent, one or two
    models and three tools (so the hourly rollups hold ~15 rows per session).
    """
    rng = random.Random(seed)
    end = time.time()
    start = end - DAYS * 86400
    step = (end - start) / n
    base = dict.fromkeys(EVENT_FIELDS)
    base.update(
        input_tokens=0, output_tokens=0, cache_read_tokens=0, cache_write_tokens=0,
        reasoning_tokens=0, scope_path=(), status="ok", estimated=False, tokens_saved=0,
    )  # fmt: skip
    order = list(EVENT_FIELDS)
    models: tuple[str, ...] = ()
    tools: tuple[str, ...] = ()
    for i in range(n):
        session = i // EVENTS_PER_SESSION
        if i % EVENTS_PER_SESSION == 0:
            models = tuple(rng.sample(MODELS, rng.choice((1, 2))))
            tools = tuple(rng.sample(TOOLS, 3))
        ev = dict(base)
        ev["call_id"] = f"e{i}"
        ev["timestamp"] = start + i * step
        ev["session_id"] = f"sess-{session:06d}"
        ev["customer_id"] = f"customer-{session % CUSTOMERS:02d}"
        ev["agent_id"] = f"agent-{session % AGENTS}"
        r = rng.random()
        if r < 0.6:
            model = models[rng.randrange(len(models))]
            inp, out = rng.randint(50, 4000), rng.randint(10, 800)
            ev.update(
                kind="chat", model=model, provider="p", input_tokens=inp, output_tokens=out,
                cost_micros=None if model == "llama-local" else inp * 2 + out * 8,
                latency_ms=rng.uniform(80, 3000),
                tool=tools[rng.randrange(3)] if rng.random() < 0.3 else None,
                status="error" if rng.random() < 0.01 else "ok",
            )  # fmt: skip
        elif r < 0.9:
            failed = rng.random() < 0.04
            ev.update(
                kind="tool", tool=tools[rng.randrange(3)],
                latency_ms=rng.lognormvariate(3, 1), status="error" if failed else "ok",
                error="ToolError" if failed else None, category="work",
            )  # fmt: skip
        elif r < 0.95:
            ev.update(
                kind="embedding",
                model="embed",
                provider="p",
                input_tokens=rng.randint(10, 2000),
                cost_micros=rng.randint(1, 40),
            )
        else:
            ev.update(kind="cache_hit", tokens_saved=rng.randint(10, 500))
        yield tuple(ev[f] for f in order)


def store_reads_database(n: int) -> Path:
    """The storage read benchmark's database of ``n`` events (built there, cached)."""
    try:
        import bench_store_reads
    except ImportError as exc:  # run.py reports the module as skipped
        raise ImportError(f"bench_dashboard reuses bench_store_reads' database: {exc}") from exc

    return Path(bench_store_reads.database(n))


def many_sessions_database(n: int) -> Path:
    """``n`` events with one session per 100 (built once through the SQL sink, cached)."""
    from agentmeter.storage import SQLSink, UsageStore
    from agentmeter.storage.schema import SCHEMA_VERSION

    path = _cache_dir() / f"dashboard-{n}-v{SCHEMA_VERSION}.db"
    if path.exists():
        with UsageStore(path) as st:
            if st.count() == n:
                return path
        path.unlink()
    tmp = path.with_suffix(".building.db")
    for p in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        p.unlink(missing_ok=True)
    t0 = time.perf_counter()
    sink = SQLSink(
        tmp, batch_size=20_000, max_queue=400_000, block_timeout=600.0, exit_timeout=3600.0
    )
    for i, raw in enumerate(_events(n)):
        sink.submit(raw)
        if i % 100_000 == 99_999:
            sink.flush()  # keep the queue short: no backpressure spill while building
        if i and i % 1_000_000 == 0:
            print(f"  built {i:,} events ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    sink.close()
    stats = sink.stats
    if stats["written"] != n:
        raise RuntimeError(f"building the benchmark database: {stats}")
    print(f"  built {n:,} events in {time.perf_counter() - t0:.0f} s: {path}", file=sys.stderr)
    os.replace(tmp, path)
    for suffix in ("-wal", "-shm"):
        Path(f"{tmp}{suffix}").unlink(missing_ok=True)
    return path


def _pages(client: Any) -> dict[str, str]:
    """The pages to time: every page, with the ids of the largest session and customer."""
    sessions = client.get("/api/v1/usage/sessions", params={"limit": 1}).json()["sessions"]
    customers = client.get("/api/v1/usage/customers", params={"limit": 1}).json()["customers"]
    sid = sessions[0]["session_id"]
    cid = customers[0]["customer_id"]
    last = max(s["last_seen"] for s in sessions)[:10]  # the data's last day
    week = (datetime.fromisoformat(last) - timedelta(days=6)).date()
    return {
        "overview, all time (day buckets, by model)": "/",
        "overview, by customer": "/?by=customer",
        "overview, the last 7 days of data (hour buckets)": (
            f"/?since={week}&until={datetime.fromisoformat(last).date() + timedelta(days=1)}"
            "&bucket=hour"
        ),
        "sessions table (page 1)": "/sessions",
        f"sessions table, search q={sid[-3:]}": f"/sessions?q={sid[-3:]}",
        "one session": f"/session?id={sid}",
        "customers table": "/customers",
        "one customer": f"/customer?id={cid}",
        "tools": "/tools",
        "budgets": "/budgets",
    }


def measure(db: Path, repeat: int = 3) -> list[tuple[str, float, list[float], int]]:
    """(page, first load s, later loads s, bytes) per page."""
    from fastapi.testclient import TestClient

    from agentmeter.server import create_app

    out = []
    with TestClient(create_app(db_url=str(db))) as client:
        for name, path in _pages(client).items():
            t0 = time.perf_counter()
            r = client.get(path)
            first = time.perf_counter() - t0
            assert r.status_code == 200, (path, r.status_code, r.text[-500:])
            later = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                r = client.get(path)
                later.append(time.perf_counter() - t0)
                assert r.status_code == 200
            out.append((name, first, later, len(r.content)))
    return out


def rows(
    quick: bool = False, events: int | None = None, many_sessions: bool = False
) -> list[dict[str, str]]:
    n = events or (1_000_000 if quick else 10_000_000)
    shapes = [("300 sessions", store_reads_database(n))]
    if many_sessions:
        shapes.append((f"{n // EVENTS_PER_SESSION:,} sessions", many_sessions_database(n)))
    table = []
    for shape, db in shapes:
        for name, first, later, size in measure(db, repeat=2 if quick else 3):
            worst = max(later)
            table.append(
                {
                    "operation": f"dashboard {name}: {n:,} events, {shape} (SQLite)",
                    "measured": (
                        f"{statistics.median(later) * 1000:,.0f} ms (slowest "
                        f"{worst * 1000:,.0f} ms, first {first * 1000:,.0f} ms; "
                        f"{size / 1024:,.0f} KiB)"
                    ),
                    "anchor": "-",
                    "target": f"<= {TARGET_S:g} s",
                    "verdict": "meets target" if worst <= TARGET_S else "MISSES target",
                }
            )
    return table


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1M events instead of 10M")
    ap.add_argument("--events", type=int, default=None, help="number of events")
    ap.add_argument("--many-sessions", action="store_true", help="also one session per 100 events")
    args = ap.parse_args(argv)
    from _harness import table

    print(table(rows(quick=args.quick, events=args.events, many_sessions=args.many_sessions)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
