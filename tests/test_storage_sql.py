"""SQLSink + UsageStore: what is stored reads back as the tracker's own aggregates."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import storage_pg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from storage_util import TOOL_CATEGORY, comparable, priced_tracker, raw_event, workload

import agentmeter
from agentmeter.storage import SQLSink, UsageStore
from agentmeter.storage.schema import SCHEMA_VERSION, SchemaError

db_url = storage_pg.db_url  # the fixtures, shared with the server and CLI tests
pg = storage_pg.pg

pytestmark = pytest.mark.filterwarnings("ignore::agentmeter.UnpricedModelWarning")


def _store(url: str) -> UsageStore:
    return UsageStore(url)


def test_sql_snapshot_equals_tracker(db_url: str) -> None:
    t = priced_tracker()
    with SQLSink(db_url) as sink:
        t.add_sink(sink)
        workload(t, n=400, seed=3)
        assert sink.flush(10)
        assert sink.stats["written"] == 400
    with _store(db_url) as store:
        assert comparable(store.snapshot()) == comparable(t.snapshot())
        for sid in ("s1", "s2", "s3"):
            live = t.session(sid).model_dump()
            stored = store.session(sid).model_dump()
            assert stored == live
        assert comparable_tools(store, t)  # recent ids across sessions: merge order differs
        assert store.tool_stats("s1") == t.tool_stats("s1")
        assert store.count() == 400


def comparable_tools(store: UsageStore, t: agentmeter.Tracker) -> bool:
    a = {k: v.model_dump(exclude={"recent_call_ids"}) for k, v in store.tool_stats().items()}
    b = {k: v.model_dump(exclude={"recent_call_ids"}) for k, v in t.tool_stats().items()}
    return a == b


_op = st.one_of(
    st.tuples(
        st.just("llm"),
        st.sampled_from(["m1", "openai/gpt-x", "m2"]),
        st.integers(0, 10_000),
        st.integers(0, 5_000),
        st.sampled_from([None, "s1", "s2"]),
        st.sampled_from([None, "a1", "a2"]),
        st.sampled_from([None, "search"]),
        st.booleans(),
        st.integers(0, 8000),
    ),
    st.tuples(
        st.just("tool"),
        st.sampled_from(sorted(TOOL_CATEGORY)),
        st.booleans(),
        st.integers(0, 20_000),
        st.sampled_from([None, "s1", "s2"]),
        st.sampled_from([None, "a1"]),
    ),
    st.tuples(st.just("emb"), st.integers(0, 3000), st.sampled_from([None, "s1"])),
    st.tuples(st.just("cache"), st.booleans(), st.integers(0, 500), st.sampled_from([None, "s2"])),
)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(_op, max_size=40))
def test_sql_aggregates_equal_snapshot_property(db_url: str, ops: list[tuple]) -> None:  # type: ignore[type-arg]
    t = priced_tracker()
    sink = SQLSink(db_url, flush_interval=0.05)
    try:
        with _store(db_url) as store:
            store.reset(since=0)
        t.add_sink(sink)
        for op in ops:
            if op[0] == "llm":
                _, model, inp, out, sid, agent, tool, ok, lat = op
                t.record_llm(
                    model=model,
                    input_tokens=inp,
                    output_tokens=out,
                    cache_read_tokens=inp // 3,
                    reasoning_tokens=out // 4,
                    session_id=sid,
                    agent_id=agent,
                    tool=tool,
                    ok=ok,
                    latency_ms=lat / 4,
                )
            elif op[0] == "tool":
                _, tool, ok, dur, sid, agent = op
                t.record_tool_call(
                    tool=tool,
                    ok=ok,
                    duration_ms=dur / 4,
                    category=TOOL_CATEGORY[tool],
                    session_id=sid,
                    agent_id=agent,
                )
            elif op[0] == "emb":
                t.record_embedding(model="emb", input_tokens=op[1], session_id=op[2])
            elif op[1]:
                t.record_cache_hit(tokens_saved=op[2], session_id=op[3])
            else:
                t.record_cache_miss(session_id=op[3])
        assert sink.flush(10)
    finally:
        sink.close()
    with _store(db_url) as store:
        assert comparable(store.snapshot()) == comparable(t.snapshot())
        for sid in t.sessions():
            assert store.session(sid) == t.session(sid)


def test_time_ranges(db_url: str) -> None:
    base = datetime(2025, 3, 1, tzinfo=UTC).timestamp()
    with SQLSink(db_url) as sink:
        for i in range(10):  # one call per hour, 100 tokens each
            sink.submit(
                raw_event(
                    f"c{i}",
                    base + 3600 * i,
                    model="m1",
                    input_tokens=100,
                    cost_micros=10,
                    session_id=f"s{i % 2}",
                )
            )
        sink.submit(raw_event("t0", base + 3600 * 3, kind="tool", tool="search", latency_ms=8.0))
    with _store(db_url) as store:
        assert store.totals().input_tokens == 1000
        since = datetime(2025, 3, 1, 3, tzinfo=UTC)
        until = datetime(2025, 3, 1, 6, tzinfo=UTC)
        u = store.totals(since, until)  # hours 3, 4, 5: since inclusive, until exclusive
        assert (u.input_tokens, u.llm_calls, u.cost_micros, u.tool_calls) == (300, 3, 30, 1)
        assert store.count(since, until) == 4
        assert store.snapshot(since, until).totals == u
        naive = datetime(2025, 3, 1, 3)  # naive means UTC
        assert store.totals(naive).input_tokens == 700
        assert store.by("session", since, until) == {
            "s1": store.totals(since, until, session="s1"),
            "s0": store.totals(since, until, session="s0"),
        }
        assert set(store.by("session", until=since)) == {"s0", "s1"}
        assert store.totals(datetime(2030, 1, 1)) == agentmeter.Usage()
        with pytest.raises(agentmeter.NotFoundError, match="unknown session 's0'"):
            store.session("s0", since=datetime(2030, 1, 1))
        lo, hi = store.time_range()
        assert lo is not None and hi is not None and lo.timestamp() == base
        with pytest.raises(ValueError, match="dimension"):
            store.by("colour")


def test_tool_percentiles_match_live_histogram(db_url: str) -> None:
    t = agentmeter.Tracker()
    with SQLSink(db_url) as sink:
        t.add_sink(sink)
        for i in range(1, 201):
            t.record_tool_call(tool="search", ok=i % 10 != 0, duration_ms=float(i), session_id="s")
    live = t.tool_stats()["search"]
    with _store(db_url) as store:
        stored = store.tool_stats()["search"]
    assert (stored.p50_ms, stored.p95_ms) == (live.p50_ms, live.p95_ms)
    assert stored.p50_ms == pytest.approx(100, rel=0.03)
    assert stored.p95_ms == pytest.approx(190, rel=0.03)
    assert (stored.min_duration_ms, stored.max_duration_ms) == (1.0, 200.0)
    assert (stored.calls, stored.ok, stored.failed) == (200, 180, 20)
    assert stored.recent_call_ids == live.recent_call_ids


def test_schema_version_and_indexes(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    with SQLSink(path):
        pass
    con = sqlite3.connect(path)
    try:
        assert con.execute("select version from agentmeter_schema").fetchall() == [
            (SCHEMA_VERSION,)
        ]
        idx = {r[0] for r in con.execute("select name from sqlite_master where type='index'")}
        assert {
            "ix_agentmeter_events_ts",
            "ix_agentmeter_events_session",
            "ix_agentmeter_events_tool_session",
            "ix_agentmeter_events_customer",
            "ux_agentmeter_events_call_id",
        } <= idx
        assert con.execute("pragma journal_mode").fetchone()[0] == "wal"
        con.execute("update agentmeter_schema set version = ?", (SCHEMA_VERSION + 1,))
        con.commit()
    finally:
        con.close()
    with pytest.raises(SchemaError, match="newer"):
        SQLSink(path)
    from agentmeter.storage import DatabaseError

    with pytest.raises(DatabaseError, match="newer"):
        UsageStore(path)


def test_metadata_scope_path_and_errors_are_stored(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    t = agentmeter.Tracker()
    with SQLSink(path) as sink:
        t.add_sink(sink)
        with t.meter("outer", session_id="s"), t.meter("inner"):
            t.record_llm(
                model="m1",
                input_tokens=1,
                output_tokens=1,
                metadata={"user": "u1", "n": 2},
                ok=False,
                error="timeout",
                call_id="the-call",
            )
    con = sqlite3.connect(path)
    try:
        row = con.execute(
            "select call_id, scope_path, metadata, status, error, session_id from agentmeter_events"
        ).fetchone()
    finally:
        con.close()
    assert row[0] == "the-call"
    assert json.loads(row[1]) == ["outer", "inner"]
    assert json.loads(row[2]) == {"user": "u1", "n": 2}
    assert row[3:] == ("error", "timeout", "s")


def test_flush_close_idempotent_and_late_events_spill_then_replay(tmp_path: Path) -> None:
    path = tmp_path / "late.db"
    sink = SQLSink(path)
    sink.submit(raw_event("a", time.time(), model="m", input_tokens=5))
    assert sink.flush(5) is True
    assert sink.close() is True
    assert sink.close() is True  # idempotent
    sink.submit(raw_event("b", time.time(), model="m", input_tokens=7))  # after close
    assert sink.stats["overflowed"] == 1 and sink.stats["dropped"] == 0
    assert sink.spill_path.exists()
    with SQLSink(path) as again:  # the next sink on the database replays the spill file
        assert again.flush(5)
        deadline = time.monotonic() + 10
        while again.spill_path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    with _store(f"sqlite:///{path}") as store:
        assert store.totals().input_tokens == 12
    assert not sink.spill_path.exists()


def test_bad_row_is_isolated_not_blocking(tmp_path: Path) -> None:
    path = tmp_path / "bad.db"
    with SQLSink(path) as sink:
        sink.submit(raw_event("ok1", time.time(), model="m", input_tokens=1))
        sink.submit(raw_event("huge", time.time(), model="m", input_tokens=2**70))
        sink.submit(raw_event("ok2", time.time(), model="m", input_tokens=2))
        assert sink.flush(10)
    rejected = Path(str(sink.spill_path) + ".rejected.jsonl")
    assert rejected.exists() and '"huge"' in rejected.read_text()
    with _store(path) as store:
        assert store.totals().input_tokens == 3


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        SQLSink("sqlite://", batch_size=0)
    with pytest.raises(ValueError):
        SQLSink("sqlite://", flush_interval=0)
    with pytest.raises(Exception, match="nosuchdialect"):
        SQLSink("nosuchdialect://x/y")


def test_import_agentmeter_does_not_import_sqlalchemy() -> None:
    import subprocess
    import sys

    code = (
        "import sys, agentmeter, agentmeter.cli; "
        "from agentmeter.storage import JSONLSink; "
        "bad = [m for m in ('sqlalchemy', 'fastapi', 'uvicorn') if m in sys.modules]; "
        "print(bad)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"
