"""Many writers, one database: the rollups stay exactly a GROUP BY over the raw events.

8 processes write at once (overlapping rollup keys, shared call ids) to one
PostgreSQL database and to one SQLite file; a hypothesis property drives random
batches with duplicate call ids (and resets) through the writer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import storage_pg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from storage_util import (
    BASE,
    CUSTOMERS,
    TAG_CHOICES,
    expected_usage,
    random_raws,
    raw_event,
    rollup_mismatches,
    run_writer_processes,
)

from agentmeter import UsageEvent
from agentmeter.storage import SQLSink, UsageStore
from agentmeter.storage.schema import EVENTS, ROLLUP_TABLES

db_url = storage_pg.db_url
pg = storage_pg.pg

ROOT = Path(__file__).resolve().parents[1]
WRITERS = 8
PER_WRITER = 1500
SHARED = 400  # call ids every writer writes: stored once

WRITER = """
    import json, sys, time
    sys.path.insert(0, sys.argv[4])
    from storage_util import random_raws
    from agentmeter.storage import SQLSink
    url, k, start = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    mine = random_raws(1500, seed=k, hours=2, prefix="p")
    shared = random_raws(400, seed=999, hours=2, prefix="shared")
    events = [e for pair in zip(mine, shared + [None] * 1100) for e in pair if e is not None]
    sink = SQLSink(url, batch_size=50, flush_interval=0.01, sqlite_timeout=0.2)
    while time.time() < start:
        time.sleep(0.001)
    for e in events:
        sink.submit(e)
    ok = sink.flush(120)
    sink.close()
    print(json.dumps({"ok": ok, **{k: v for k, v in sink.stats.items() if k != "last_error"},
                      "last_error": sink.stats["last_error"]}))
"""


def _all_events() -> list[UsageEvent]:
    raws = [r for k in range(WRITERS) for r in random_raws(PER_WRITER, seed=k, hours=2, prefix="p")]
    raws += random_raws(SHARED, seed=999, hours=2, prefix="shared")
    return [UsageEvent.from_raw(r) for r in raws]


@pytest.mark.timeout(400)
def test_eight_processes_writing_at_once(db_url: str) -> None:
    SQLSink(db_url).close()  # the schema exists; the race is over the rows
    stats = run_writer_processes(WRITER, db_url, WRITERS)
    assert all(s["ok"] and s["dropped"] == 0 and s["overflowed"] == 0 for s in stats), stats
    # Each shared call id was stored by exactly one writer, skipped by the others.
    assert sum(s["written"] for s in stats) == WRITERS * PER_WRITER + SHARED
    assert sum(s["duplicates"] for s in stats) == SHARED * (WRITERS - 1)
    if db_url.startswith("postgresql"):
        # A deadlock would have aborted a transaction (and been retried): none happened.
        assert all(s["retries"] == 0 for s in stats), [s["last_error"] for s in stats]
    assert rollup_mismatches(db_url) == {}
    events = _all_events()
    with UsageStore(db_url) as store:
        assert store.count() == len(events)
        assert store.totals() == expected_usage(events)
        for c in CUSTOMERS[1:]:
            assert store.totals(customer=c) == expected_usage(
                [e for e in events if e.customer_id == c]
            )
        mid = BASE + 3600 + 17.5
        assert store.totals(mid) == expected_usage(
            [e for e in events if e.timestamp.timestamp() >= mid]
        )


# ---------------------------------------------------------------- property
_event = st.builds(
    lambda i, kind, sess, cust, tags, tok, lat, hour, err, cost: raw_event(
        f"c{i}",
        BASE + hour * 30_000 + (i % 97) * 0.5,  # 0 to 42 hours: two days
        kind,
        model=None if kind in ("tool", "cache_miss") else "m1",
        tool="search" if kind == "tool" else None,
        input_tokens=tok if kind in ("chat", "embedding") else 0,
        output_tokens=tok // 3 if kind == "chat" else 0,
        cost_micros=cost if kind in ("chat", "embedding") else None,
        latency_ms=lat / 4 if kind in ("tool", "chat") else None,
        category="web" if kind == "tool" and i % 2 else None,
        tokens_saved=tok if kind == "cache_hit" else 0,
        status="error" if err else "ok",
        session_id=sess,
        customer_id=cust,
        tags=tags,
    ),
    st.integers(0, 60),  # call ids from a small pool: duplicates within and across batches
    st.sampled_from(["chat", "embedding", "tool", "cache_hit", "cache_miss"]),
    st.sampled_from([None, "s1", "s2"]),
    st.sampled_from(CUSTOMERS[:3]),
    st.sampled_from(TAG_CHOICES[:4]),
    st.integers(0, 5000),
    st.integers(0, 4000),
    st.integers(0, 5),  # half-hours: several rollup hours
    st.booleans(),
    st.one_of(st.none(), st.integers(0, 900)),
)
_op = st.one_of(
    st.tuples(st.just("write"), st.lists(_event, min_size=1, max_size=25)),
    st.tuples(
        st.just("reset"),
        st.sampled_from([None, 1800.0, 3600.0, 4000.25, 30_000.0, 86_400.0]),
        st.sampled_from([None, 5400.0, 7200.0, 7300.5, 86_400.0, 90_001.5, 140_000.0]),
        st.sampled_from([None, "s1"]),
        st.sampled_from([None, "acme"]),
    ),
)


def _clear(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for t in (EVENTS, *ROLLUP_TABLES):
            conn.execute(t.delete())
    engine.dispose()


@pytest.mark.timeout(400)
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(_op, min_size=1, max_size=6))
def test_rollups_equal_group_by_raw_property(db_url: str, ops: list[tuple[Any, ...]]) -> None:
    sink = SQLSink(db_url, flush_interval=3600)  # batches written synchronously below
    try:
        _clear(db_url)
        stored: dict[str, UsageEvent] = {}
        with UsageStore(db_url) as store:
            for op in ops:
                if op[0] == "write":
                    batch = op[1]
                    new = sink._write(batch)
                    fresh = {}
                    for r in batch:
                        if r[0] not in stored and r[0] not in fresh:
                            fresh[r[0]] = UsageEvent.from_raw(r)
                    assert new == len(fresh)
                    stored.update(fresh)
                else:
                    _, lo, hi, sess, cust = op
                    kw = {
                        "since": None if lo is None else BASE + lo,
                        "until": None if hi is None else BASE + hi,
                        "session": sess,
                        "customer": cust,
                    }
                    if all(v is None for v in kw.values()):
                        continue
                    gone = [
                        cid
                        for cid, e in stored.items()
                        if (kw["since"] is None or e.timestamp.timestamp() >= kw["since"])
                        and (kw["until"] is None or e.timestamp.timestamp() < kw["until"])
                        and (sess is None or e.session_id == sess)
                        and (cust is None or e.customer_id == cust)
                    ]
                    assert store.reset(**kw)["events"] == len(gone)
                    for cid in gone:
                        del stored[cid]
                assert rollup_mismatches(db_url) == {}
            events = list(stored.values())
            assert store.count() == len(events)
            assert store.totals() == expected_usage(events)
            lo = BASE + 30_000.5
            assert store.totals(lo) == expected_usage(
                [e for e in events if e.timestamp.timestamp() >= lo]
            )
            raw = UsageStore(db_url)
            raw._rollups = False  # the same reads from the raw events only
            try:
                for kw2 in ({}, {"since": lo}, {"tags": {"team": "search"}}, {"customer": "acme"}):
                    assert store.by("session", **kw2) == raw.by("session", **kw2)
                    assert store.snapshot(**kw2).by_tool == raw.snapshot(**kw2).by_tool
                assert store.by("tag:env") == raw.by("tag:env")
            finally:
                raw.close()
    finally:
        sink.close()
