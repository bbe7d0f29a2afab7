"""One set of numbers: every surface shows what the live tracker counted.

Random programs (hypothesis) are recorded into a tracker with a SQL sink; then the
live snapshot, ``UsageStore``, ``agentmeter report`` (JSON, CSV and table), the REST API
over the database and the REST API over the live tracker must give the same figures
per customer, session, agent, model and tool.
"""

from __future__ import annotations

import csv
import io
import json
import warnings
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentmeter import Tracker, Usage
from agentmeter.server import create_app
from agentmeter.storage import SQLSink, UsageStore, render

pytestmark = pytest.mark.timeout(300)

INT_FIELDS = [
    name for name, f in Usage.model_fields.items() if f.annotation in (int, "int")
]  # every counter but the two float durations
DIMENSIONS = ("customer", "session", "agent", "model")

ids = st.sampled_from([None, "acme", "globex", "org/with/slash", "ünïcode"])
op = st.tuples(
    st.sampled_from(["llm", "llm", "embedding", "tool", "tool_fail", "cache_hit"]),
    ids,  # customer
    st.sampled_from([None, "s1", "s2", "s/3"]),
    st.sampled_from([None, "planner", "writer"]),
    st.sampled_from(["gpt-4o-mini", "openai/gpt-4o", "claude-3-5-haiku-latest", "no-price-x"]),
    st.sampled_from([None, "search", "db/query"]),
    st.integers(0, 5000),  # input tokens
    st.integers(0, 800),  # output tokens
    st.integers(0, 3),  # a fraction selector for cache / reasoning parts
)


def _run(tracker: Tracker, program: list[tuple[Any, ...]]) -> None:
    for i, (kind, customer, session, agent, model, tool, inp, out, part) in enumerate(program):
        attribution = {"customer_id": customer, "session_id": session, "agent_id": agent}
        with tracker.meter("op", **attribution):
            if kind == "llm":
                tracker.record_llm(
                    model, inp, out,
                    cache_read_tokens=inp * part // 8, cache_write_tokens=inp // 16 if part else 0,
                    reasoning_tokens=out * part // 6, tool=tool, estimated=part == 3,
                    ok=part != 2, call_id=f"c{i}", latency_ms=float(part),
                )  # fmt: skip
            elif kind == "embedding":
                tracker.record_embedding("text-embedding-3-small", inp, tool=tool,
                                         call_id=f"c{i}")  # fmt: skip
            elif kind in ("tool", "tool_fail"):
                tracker.record_tool_call(tool or "search", kind == "tool", float(part + 1),
                                         call_id=f"c{i}", category="web")  # fmt: skip
            else:
                tracker.record_cache_hit(tokens_saved=inp, model=model)
        if i % 7 == 0:  # duplicates (retries) count once everywhere
            tracker.record_llm(model, 1, 1, call_id=f"c{i}")


def _ints(u: Usage | dict[str, Any]) -> dict[str, int]:
    d = u.model_dump(mode="json") if isinstance(u, Usage) else u
    return {k: int(d[k]) for k in INT_FIELDS}


def _cost(u: Usage | dict[str, Any]) -> str | None:
    d = u.model_dump(mode="json") if isinstance(u, Usage) else u
    v = d["cost_usd"]
    return None if v is None else f"{Decimal(str(v)):.6f}"


def _same(label: str, expected: dict[str, Usage], got: dict[str, Any]) -> None:
    assert set(got) == set(expected), label
    for key, u in expected.items():
        assert _ints(got[key]) == _ints(u), (label, key)
        assert _cost(got[key]) == _cost(u), (label, key)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(program=st.lists(op, min_size=1, max_size=30))
def test_every_surface_shows_the_live_numbers(tmp_path: Path, program: list[Any]) -> None:
    db = tmp_path / f"surfaces-{abs(hash(tuple(program)))}.db"
    tracker = Tracker()
    sink = SQLSink(str(db))
    tracker.add_sink(sink)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _run(tracker, program)
    sink.close()
    live = tracker.snapshot()
    views = {
        "customer": live.by_customer,
        "session": live.by_session,
        "agent": live.by_agent,
        "model": live.by_model,
    }

    # UsageStore: the same models, from the rollups
    with UsageStore(str(db)) as store:
        stored = store.snapshot()
        assert _ints(stored.totals) == _ints(live.totals)
        for dim, expected in views.items():
            _same(f"store by_{dim}", expected, getattr(stored, f"by_{dim}"))
        for customer in live.by_customer:
            c_live, c_store = tracker.customer(customer), store.customer(customer)
            _same(f"store customer {customer} sessions", c_live.by_session, c_store.by_session)
            assert {t: s.calls for t, s in c_store.tools.items()} == {
                t: s.calls for t, s in c_live.tools.items()
            }
        assert {t: (s.calls, s.failed, s.llm_calls, s.input_tokens) for t, s in
                stored.by_tool.items()} == {t: (s.calls, s.failed, s.llm_calls, s.input_tokens)
                                            for t, s in live.by_tool.items()}  # fmt: skip

    # agentmeter report: JSON
    sections = [*DIMENSIONS, "tool"]
    report = json.loads(render(str(db), "json", sections=sections))
    assert _ints(report["totals"]) == _ints(live.totals)
    assert _cost(report["totals"]) == _cost(live.totals)
    for dim, expected in views.items():
        _same(f"report json by_{dim}", expected, report[f"by_{dim}"])
        rows = [_ints(u) for u in report[f"by_{dim}"].values()]
        rows.append(_ints(report["unattributed"][dim]))
        assert {k: sum(r[k] for r in rows) for k in INT_FIELDS} == _ints(live.totals), dim
    for name, stats in live.by_tool.items():
        tool_row = report["by_tool"][name]
        assert (tool_row["tool_calls"], tool_row["failed_tool_calls"]) == (
            stats.calls,
            stats.failed,
        )
        assert tool_row["llm_calls"] == stats.llm_calls
        assert tool_row["input_tokens"] == stats.input_tokens

    # agentmeter report: CSV (same names, same numbers)
    text = render(str(db), "csv", sections=sections)
    table_rows = list(csv.DictReader(io.StringIO(text)))
    total_row = next(r for r in table_rows if r["row"] == "total")
    assert {k: int(total_row[k]) for k in INT_FIELDS} == _ints(live.totals)
    for dim, expected in views.items():
        got = {r["name"]: r for r in table_rows if r["section"] == dim and r["row"] == "key"}
        assert set(got) == set(expected), dim
        for key, u in expected.items():
            assert {k: int(got[key][k]) for k in INT_FIELDS} == _ints(u), (dim, key)
            assert (got[key]["cost_usd"] or None) == _cost(u), (dim, key)

    # agentmeter report: the table prints the same total
    table = render(str(db), "table", sections=sections)
    assert f"{live.totals.total_tokens:,}" in table or str(live.totals.total_tokens) in table

    # REST over the database, and over the live tracker
    for app in (create_app(db_url=str(db)), create_app(tracker=tracker)):
        with TestClient(app) as client:
            body = client.get("/api/v1/usage").json()
            assert _ints(body["totals"]) == _ints(live.totals)
            for dim in ("customer", "session", "agent", "model"):
                _same(f"REST by_{dim}", views[dim], body[f"by_{dim}"])
            for customer in live.by_customer:
                r = client.get(f"/api/v1/usage/customers/{customer}")
                assert r.status_code == 200, (customer, r.text)
                assert _ints(r.json()["usage"]) == _ints(live.by_customer[customer])
            tools = client.get("/api/v1/usage/tools").json()
            assert tools is not None
