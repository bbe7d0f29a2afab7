"""The per-session tables and the whole-history customer / tool rows: exactly a GROUP BY
over the raw events, through duplicates, resets, 8 concurrent writers and the migration
that builds them; the reads that use them (``by("session")``, ``count_keys("session")``,
``session_times``, ``by("customer")``, ``tool_stats()``) give what the rollups and the raw
events give."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import storage_pg
import storage_v1_schema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from storage_util import (
    BASE,
    CUSTOMERS,
    TAG_CHOICES,
    random_raws,
    raw_event,
    rollup_mismatches,
    run_writer_processes,
)

from agentmeter.storage import SQLSink, UsageStore
from agentmeter.storage.migrations import HEAD, VERSION_TABLE
from agentmeter.storage.schema import EVENTS, ROLLUP_TABLES

db_url = storage_pg.db_url
pg = storage_pg.pg

ROOT = Path(__file__).resolve().parents[2]
LLM = "('chat', 'completion', 'image', 'audio', 'other')"
FIELDS = (
    "input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens, "
    "llm_calls, failed_llm_calls, estimated_calls, cost_micros, unpriced_calls, llm_latency_ms, "
    "embedding_tokens, embedding_calls, tool_calls, failed_tool_calls, tool_duration_ms, "
    "cache_hits, cache_misses, tokens_saved"
)


def _raw_sums() -> str:
    """The per-session counters computed from the events alone (not from the rollups,
    not by the writer's code)."""

    def when(cond: str, col: str) -> str:
        return f"sum(CASE WHEN {cond} THEN {col} ELSE 0 END)"

    llm, emb, tool = f"kind IN {LLM}", "kind = 'embedding'", "kind = 'tool'"
    err = "CASE WHEN status = 'error' THEN 1 ELSE 0 END"
    unpriced = "CASE WHEN cost_micros IS NULL THEN 1 ELSE 0 END"
    lat = "coalesce(latency_ms, 0)"
    return ", ".join(
        [
            "count(*)",
            "sum(input_tokens + output_tokens)",
            when(llm, "input_tokens"),
            "sum(output_tokens)",
            "sum(cache_read_tokens)",
            "sum(cache_write_tokens)",
            "sum(reasoning_tokens)",
            when(llm, "1"),
            when(llm, err),
            "sum(estimated)",
            "sum(coalesce(cost_micros, 0))",
            when(f"{llm} OR {emb}", unpriced),
            when(llm, lat),
            when(emb, "input_tokens"),
            when(emb, "1"),
            when(tool, "1"),
            when(tool, err),
            when(tool, lat),
            when("kind = 'cache_hit'", "1"),
            when("kind = 'cache_miss'", "1"),
            "sum(tokens_saved)",
        ]
    )


def _value(v: Any) -> Any:
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, float) or (not isinstance(v, int) and float(v) != int(v)):
        return round(float(v), 6)  # sums in another order
    return int(v)


def _norm(rows: Any) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """Rows keyed by their key columns, values normalised (Decimals, float sums)."""
    return {key: tuple(_value(v) for v in vals) for key, vals in rows}


def session_mismatches(url: str) -> dict[str, Any]:
    """Differences between the per-session tables and the raw events: ``{}`` if none."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:

            def fetch(sql: str, width: int) -> dict[tuple[Any, ...], tuple[Any, ...]]:
                rows = conn.exec_driver_sql(sql).fetchall()
                return _norm((tuple(r[:width]), tuple(r[width:])) for r in rows)

            sums = _raw_sums()
            cols = f"events, tokens, {FIELDS}"
            want = {
                "sessions": fetch(
                    f"SELECT session_id, {sums}, min(ts), max(ts) FROM agentmeter_events "
                    "WHERE session_id IS NOT NULL GROUP BY session_id",
                    1,
                ),
                "customer_sessions": fetch(
                    f"SELECT customer_id, session_id, {sums} FROM agentmeter_events "
                    "WHERE session_id IS NOT NULL AND customer_id IS NOT NULL "
                    "GROUP BY customer_id, session_id",
                    2,
                ),
                "counts": fetch(
                    "SELECT '', count(DISTINCT session_id) FROM agentmeter_events "
                    "WHERE session_id IS NOT NULL HAVING count(DISTINCT session_id) > 0 "
                    "UNION ALL SELECT customer_id, count(DISTINCT session_id) "
                    "FROM agentmeter_events WHERE session_id IS NOT NULL "
                    "AND customer_id IS NOT NULL GROUP BY customer_id",
                    1,
                ),
            }
            got = {
                "sessions": fetch(
                    f"SELECT session_id, {cols}, first_seen, last_seen FROM agentmeter_sessions",
                    1,
                ),
                "customer_sessions": fetch(
                    f"SELECT customer_id, session_id, {cols} FROM agentmeter_customer_sessions",
                    2,
                ),
                # A customer whose sessions all went (a reset) may keep a row of 0.
                "counts": {
                    k: v
                    for k, v in fetch(
                        "SELECT customer_id, sessions FROM agentmeter_session_counts", 1
                    ).items()
                    if v != (0,)
                },
            }
            # The whole-history customer and tool tables: a GROUP BY over every event.
            counters = (
                "count(*), sum(input_tokens), sum(output_tokens), sum(cache_read_tokens), "
                "sum(cache_write_tokens), sum(reasoning_tokens), "
                "sum(CASE WHEN status = 'error' THEN 1 ELSE 0 END), sum(estimated), "
                "sum(coalesce(cost_micros, 0)), sum(CASE WHEN cost_micros IS NULL THEN 1 "
                "ELSE 0 END), sum(coalesce(latency_ms, 0)), min(latency_ms), max(latency_ms), "
                "sum(tokens_saved), max(CASE WHEN category <> '' THEN id END) AS seq"
            )
            stored = (
                "events, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, "
                "reasoning_tokens, failed, estimated, cost_micros, unpriced, latency_ms, "
                "latency_min, latency_max, tokens_saved, category_seq, category"
            )
            for dim in ("customer_id", "tool"):
                name = f"all_by_{dim.removesuffix('_id')}"
                want[name] = fetch(
                    "SELECT g.*, coalesce((SELECT category FROM agentmeter_events c "
                    "WHERE c.id = g.seq), '') FROM (SELECT coalesce("
                    f"{dim}, '') AS k, kind, {counters} FROM agentmeter_events "
                    "GROUP BY 1, 2) g",
                    2,
                )
                got[name] = fetch(
                    f"SELECT {dim}, kind, {stored} FROM agentmeter_rollup_{name} WHERE day = 0",
                    2,
                )
            want["latency_all_by_tool"] = fetch(
                "SELECT coalesce(tool, ''), latency_bucket, count(*) FROM agentmeter_events "
                "WHERE kind = 'tool' AND latency_bucket IS NOT NULL GROUP BY 1, 2",
                2,
            )
            got["latency_all_by_tool"] = fetch(
                "SELECT tool, bucket, calls FROM agentmeter_rollup_latency_all_by_tool "
                "WHERE day = 0",
                2,
            )
    finally:
        engine.dispose()
    out: dict[str, Any] = {}
    for name, expected in want.items():
        actual = got[name]
        diff = {
            k: (expected.get(k), actual.get(k))
            for k in set(expected) | set(actual)
            if expected.get(k) != actual.get(k)
        }
        if diff:
            out[name] = dict(list(diff.items())[:5])
    return out


def _check_reads(url: str) -> None:
    """The session reads from the per-session tables equal those of the rollups and of
    the raw events."""
    with UsageStore(url) as store, UsageStore(url) as raw:
        raw._rollups = False
        for kw in ({}, *({"customer": c} for c in CUSTOMERS[1:3]), {"session": "s1"}):
            assert store._session_table(_f(kw)) is not None  # the path under test
            expected = raw.by("session", **kw)
            assert store.by("session", **kw) == expected
            assert store.by("session", **kw, limit=2, offset=1) == dict(list(expected.items())[1:3])
            assert store.count_keys("session", **kw) == len(expected)
            assert store.keys("session", **kw) == list(expected)
        ids = [*list(raw.by("session")), "no-such-session"]
        assert store.session_times(ids) == raw.session_times(ids)
        # The whole-history customer and tool rows answer these.
        assert store.by("customer") == raw.by("customer")
        assert store.count_keys("customer") == raw.count_keys("customer")
        assert store.by("tool") == raw.by("tool")
        assert store.tool_stats() == raw.tool_stats()
        # The dashboard's session search: the ids, then one page of usage.
        from agentmeter.server.dashboard._source import Range, StoreSource, _matching

        src, every = StoreSource(store), raw.by("session")
        for q in ("S", "1", "w1-", "no-such"):
            found = _matching(every, q)
            for offset in (0, 1):
                assert src.listing("session", Range(), q, 2, offset) == (
                    len(found),
                    dict(found[offset : offset + 2]),
                )


def _f(kw: dict[str, Any]) -> Any:
    from agentmeter.storage.query import _filter

    return _filter(None, None, **kw)


# ---------------------------------------------------------------- property
_event = st.builds(
    lambda i, kind, sess, cust, tags, tok, lat, hour, err, cost: raw_event(
        f"c{i}",
        BASE + hour * 30_000 + (i % 97) * 0.5,
        kind,
        model=None if kind in ("tool", "cache_miss") else "m1",
        tool="search" if kind == "tool" else None,
        input_tokens=tok if kind in ("chat", "embedding") else 0,
        output_tokens=tok // 3 if kind == "chat" else 0,
        cost_micros=cost if kind in ("chat", "embedding") else None,
        latency_ms=lat / 4 if kind in ("tool", "chat") else None,
        tokens_saved=tok if kind == "cache_hit" else 0,
        status="error" if err else "ok",
        session_id=sess,
        customer_id=cust,
        tags=tags,
    ),
    st.integers(0, 60),  # call ids from a small pool: duplicates within and across batches
    st.sampled_from(["chat", "embedding", "tool", "cache_hit", "cache_miss"]),
    st.sampled_from([None, "s1", "s2", "s3"]),
    st.sampled_from(CUSTOMERS[:3]),  # None and two customers: sessions shared by both
    st.sampled_from(TAG_CHOICES[:3]),
    st.integers(0, 5000),
    st.integers(0, 4000),
    st.integers(0, 5),
    st.booleans(),
    st.one_of(st.none(), st.integers(0, 900)),
)
_op = st.one_of(
    st.tuples(st.just("write"), st.lists(_event, min_size=1, max_size=25)),
    st.tuples(
        st.just("reset"),
        st.sampled_from([None, 1800.0, 4000.25, 30_000.0, 86_400.0]),
        st.sampled_from([None, 7300.5, 86_400.0, 90_001.5, 140_000.0]),
        st.sampled_from([None, "s1", "s2"]),
        st.sampled_from([None, CUSTOMERS[1]]),
    ),
)


def _clear(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for t in (EVENTS, *ROLLUP_TABLES):
            conn.execute(t.delete())
    engine.dispose()


@pytest.mark.timeout(600)
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(_op, min_size=1, max_size=6))
def test_session_tables_equal_group_by_raw_property(
    db_url: str, ops: list[tuple[Any, ...]]
) -> None:
    sink = SQLSink(db_url, flush_interval=3600)  # batches written synchronously below
    try:
        _clear(db_url)
        with UsageStore(db_url) as store:
            for op in ops:
                if op[0] == "write":
                    sink._write(op[1])
                    sink._write(op[1][: len(op[1]) // 2])  # a retried batch adds nothing
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
                    store.reset(**kw)
                assert session_mismatches(db_url) == {}
        _check_reads(db_url)
    finally:
        sink.close()


def test_a_reset_of_every_kind_keeps_the_sessions_exact(db_url: str) -> None:
    raws = random_raws(600, seed=3, hours=60)
    with SQLSink(db_url) as sink:
        sink._write(raws)
    assert session_mismatches(db_url) == {}
    with UsageStore(db_url) as store:
        before = store.count_keys("session")
        assert before == 3
        for kw in (
            {"since": BASE + 7200.5, "until": BASE + 30 * 3600},  # partial hours and days
            {"customer": CUSTOMERS[1]},
            {"session": "s2"},
            {"until": BASE + 40 * 3600 + 17.25},
        ):
            store.reset(**kw)  # type: ignore[arg-type]
            assert session_mismatches(db_url) == {}
        assert "s2" not in store.by("session")
        assert store.count_keys("session") == len(store.by("session")) == 2
        assert store.count_keys("session", customer=CUSTOMERS[1]) == 0
    _check_reads(db_url)


# ------------------------------------------------------------ many writers
WRITER = """
    import json, sys, time
    sys.path.insert(0, sys.argv[4])
    from storage_util import random_raws
    from agentmeter.models import EVENT_FIELDS
    from agentmeter.storage import SQLSink
    url, k, start = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    mine = random_raws(800, seed=k, hours=2, prefix="p")
    # New sessions in every writer: the session counts race too.
    s = EVENT_FIELDS.index("session_id")
    mine = [(*e[:s], f"w{k}-{i % 7}" if i % 3 == 0 else e[s], *e[s + 1:])
            for i, e in enumerate(mine)]
    shared = random_raws(300, seed=999, hours=2, prefix="shared")
    events = [e for pair in zip(mine, shared + [None] * 500) for e in pair if e is not None]
    sink = SQLSink(url, batch_size=50, flush_interval=0.01, sqlite_timeout=0.2)
    while time.time() < start:
        time.sleep(0.001)
    for e in events:
        sink.submit(e)
    ok = sink.flush(120)
    sink.close()
    print(json.dumps({"ok": ok, **sink.stats}))
"""


@pytest.mark.timeout(400)
def test_eight_processes_keep_the_session_tables_exact(db_url: str) -> None:
    SQLSink(db_url).close()
    for stats in run_writer_processes(WRITER, db_url, 8):
        assert stats["ok"] and stats["dropped"] == 0 and stats["overflowed"] == 0, stats
        if db_url.startswith("postgresql"):
            assert stats["retries"] == 0, stats["last_error"]  # no deadlock
    assert rollup_mismatches(db_url) == {}
    assert session_mismatches(db_url) == {}
    with UsageStore(db_url) as store:
        assert store.count_keys("session") == 3 + 8 * 7
    _check_reads(db_url)


# -------------------------------------------------------------- migration
def test_a_v1_file_upgrades_straight_to_the_head_with_sessions(db_url: str) -> None:
    raws = random_raws(400, seed=5, hours=50)
    v1 = [(*r[:22],) for r in raws]  # version 1 had neither customers nor tags
    storage_v1_schema.write_v1(db_url, v1)
    UsageStore(db_url).close()
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        rev = conn.exec_driver_sql(f"SELECT version_num FROM {VERSION_TABLE}").scalar()
    engine.dispose()
    assert rev == HEAD == "0004"
    assert session_mismatches(db_url) == {}
    _check_reads(db_url)
    with SQLSink(db_url) as sink:  # new events on top of the migrated sessions
        sink._write(random_raws(200, seed=6, hours=50, prefix="n"))
    assert session_mismatches(db_url) == {}


def test_a_0003_database_gets_its_sessions_from_the_rollups(db_url: str) -> None:
    """A database written before this revision (at 0003: rollups, no session tables)."""
    with SQLSink(db_url) as sink:
        sink._write(random_raws(500, seed=8, hours=30))
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        for name in (
            "agentmeter_sessions",
            "agentmeter_customer_sessions",
            "agentmeter_session_counts",
        ):
            conn.exec_driver_sql(f"DROP TABLE {name}")
        conn.exec_driver_sql(f"UPDATE {VERSION_TABLE} SET version_num = '0003'")
    engine.dispose()
    UsageStore(db_url).close()
    assert session_mismatches(db_url) == {}
    _check_reads(db_url)
