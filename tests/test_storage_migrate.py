"""Schema migration: version-1 databases upgrade in place, newer ones are refused."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import storage_pg
import storage_v1_schema
from storage_util import billing_workload, comparable, priced_tracker, rollup_mismatches, workload

import agentmeter
from agentmeter.storage import DatabaseError, SchemaError, SQLSink, UsageStore
from agentmeter.storage.migrations import HEAD, VERSION_TABLE

db_url = storage_pg.db_url
pg = storage_pg.pg

pytestmark = pytest.mark.filterwarnings("ignore::agentmeter.UnpricedModelWarning")
ROOT = Path(__file__).resolve().parents[1]


class Tap:
    def __init__(self) -> None:
        self.raws: list[tuple[Any, ...]] = []

    def submit(self, raw: tuple[Any, ...]) -> None:
        self.raws.append(raw)


def _v1_database(url: str, n: int = 300, seed: int = 4) -> agentmeter.Tracker:
    """A version-1 database of ``n`` events; the tracker that recorded them."""
    t = priced_tracker()
    tap = Tap()
    t.add_sink(tap)
    workload(t, n=n, seed=seed)
    storage_v1_schema.write_v1(url, tap.raws)
    storage_v1_schema.write_v1(url, tap.raws[: n // 2])  # a replayed batch: no duplicates
    return t


def _state(url: str) -> tuple[int, str | None, set[str]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            version = conn.exec_driver_sql("SELECT version FROM agentmeter_schema").scalar()
            names = set(sa.inspect(conn).get_table_names())
            rev = (
                conn.exec_driver_sql(f"SELECT version_num FROM {VERSION_TABLE}").scalar()
                if VERSION_TABLE in names
                else None
            )
    finally:
        engine.dispose()
    return int(version), rev, names


def test_a_v1_database_is_really_v1(db_url: str) -> None:
    _v1_database(db_url, n=20)
    version, rev, names = _state(db_url)
    assert (version, rev) == (1, None)
    assert "agentmeter_rollup" not in names
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        cols = {c["name"] for c in sa.inspect(conn).get_columns("agentmeter_events")}
    engine.dispose()
    assert "customer_id" not in cols and "tags" not in cols


@pytest.mark.parametrize("opener", ["store", "sink"])
def test_v1_upgrades_without_losing_or_double_counting(db_url: str, opener: str) -> None:
    t = _v1_database(db_url)
    if opener == "sink":
        SQLSink(db_url).close()
    with UsageStore(db_url) as store:
        assert store.count() == 300
        assert comparable(store.snapshot()) == comparable(t.snapshot())
        for sid in t.sessions():
            assert store.session(sid) == t.session(sid)
    assert rollup_mismatches(db_url) == {}
    version, rev, names = _state(db_url)
    assert (version, rev) == (2, HEAD)
    assert {"agentmeter_rollup", "agentmeter_rollup_latency", "agentmeter_rollup_tags"} <= names
    # New events (with customers and tags) go on top of the upgraded ones.
    with SQLSink(db_url) as sink:
        t.add_sink(sink)
        billing_workload(t, 200, seed=9)
        assert sink.flush(10)
    with UsageStore(db_url) as store:
        assert store.count() == 500
        assert comparable(store.snapshot()) == comparable(t.snapshot())
        assert store.by("customer") == t.snapshot().by_customer
    assert rollup_mismatches(db_url) == {}
    UsageStore(db_url).close()  # opening a current database again changes nothing
    assert _state(db_url)[:2] == (2, HEAD)


def test_newer_schema_is_refused(db_url: str) -> None:
    SQLSink(db_url).close()
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE agentmeter_schema SET version = 3")
    with pytest.raises(SchemaError, match="newer than this agentmeter's"):
        SQLSink(db_url)
    with pytest.raises(DatabaseError, match="newer"):
        UsageStore(db_url)
    with engine.begin() as conn:  # same version number, a revision from the future
        conn.exec_driver_sql("UPDATE agentmeter_schema SET version = 2")
        conn.exec_driver_sql(f"UPDATE {VERSION_TABLE} SET version_num = '0099'")
    engine.dispose()
    with pytest.raises(SchemaError, match="revision '0099', unknown"):
        SQLSink(db_url)
    with pytest.raises(DatabaseError, match="unknown to this agentmeter"):
        UsageStore(db_url)


def test_a_reader_without_write_access_says_what_to_do(pg: storage_pg.PgServer) -> None:
    url = pg.new_database()
    _v1_database(url, n=30)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE ROLE am_reader LOGIN") if not conn.exec_driver_sql(
            "SELECT 1 FROM pg_roles WHERE rolname = 'am_reader'"
        ).scalar() else None
        conn.exec_driver_sql("GRANT SELECT ON ALL TABLES IN SCHEMA public TO am_reader")
    engine.dispose()
    reader = url.replace("postgresql+psycopg://postgres@", "postgresql+psycopg://am_reader@")
    with pytest.raises(DatabaseError, match=r"schema version 1 and must be upgraded.*write access"):
        UsageStore(reader)
    assert _state(url)[:2] == (1, None)  # untouched
    with UsageStore(url) as store:  # a writer's open upgrades it
        assert store.count() == 30


OPENER = """
    import sys, time, agentmeter
    from agentmeter.storage import SQLSink, UsageStore
    url, start, role, n = sys.argv[1], float(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    while time.time() < start:
        time.sleep(0.001)
    if role == "store":
        with UsageStore(url) as store:
            print(store.count(), flush=True)
    else:
        t = agentmeter.Tracker()
        with SQLSink(url, sqlite_timeout=5) as sink:
            t.add_sink(sink)
            for i in range(n):
                t.record_llm("m", 10, 1, session_id=f"p{n}", customer_id="c")
            assert sink.flush(60)
            print(sink.stats["written"], flush=True)
"""


@pytest.mark.timeout(400)
def test_many_processes_open_a_v1_database_at_once(db_url: str) -> None:
    t = _v1_database(db_url, n=2000, seed=2)
    start = time.time() + 3.0
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AGENTMETER_STRICT": "1"}
    roles = [("sink", 100 + i) for i in range(6)] + [("store", 0), ("store", 0)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(OPENER), db_url, str(start), role, str(n)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for role, n in roles
    ]
    outs = [p.communicate(timeout=180) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    written = [
        int(o.strip()) for (role, _), (o, _) in zip(roles, outs, strict=True) if role == "sink"
    ]
    assert written == [100 + i for i in range(6)]
    counts = [
        int(o.strip()) for (role, _), (o, _) in zip(roles, outs, strict=True) if role == "store"
    ]
    assert all(c >= 2000 for c in counts)  # each saw the upgraded events (and maybe new ones)
    with UsageStore(db_url) as store:
        assert store.count() == 2000 + sum(written)
        assert store.totals(customer=None).llm_calls == t.snapshot().totals.llm_calls + sum(written)
    assert rollup_mismatches(db_url) == {}
    assert _state(db_url)[:2] == (2, HEAD)


def test_an_incomplete_database_at_head_is_rebuilt(tmp_path: Path) -> None:
    """A development database of the 0.2 cycle (revision 0002 without the daily
    rollups): the revision runs again and rebuilds every rollup from the events."""
    url = f"sqlite:///{tmp_path / 'dev.db'}"
    t = priced_tracker()
    with SQLSink(url) as sink:
        t.add_sink(sink)
        billing_workload(t, 150, seed=3)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for name in ("agentmeter_rollup_daily", "agentmeter_rollup_tags_daily"):
            conn.exec_driver_sql(f"DROP TABLE {name}")
        conn.exec_driver_sql("UPDATE agentmeter_rollup SET events = events + 1")  # stale
    engine.dispose()
    with UsageStore(url) as store:
        assert comparable(store.snapshot()) == comparable(t.snapshot())
    assert rollup_mismatches(url) == {}
    assert _state(url)[:2] == (2, HEAD)
