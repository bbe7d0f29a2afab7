"""Helpers shared by the storage, server and CLI tests."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from agentmeter import Snapshot, Tracker
from agentmeter.models import EVENT_FIELDS

MODELS = ("m1", "openai/gpt-x", "m2")
TOOL_CATEGORY = {"search": "web", "calc": "", "fetch": "web"}


def raw_event(call_id: str, ts: float, kind: str = "chat", **fields: Any) -> tuple[Any, ...]:
    """A raw event tuple as the tracker hands it to sinks."""
    values: dict[str, Any] = {
        "call_id": call_id,
        "timestamp": ts,
        "kind": kind,
        "model": None,
        "provider": None,
        "input_tokens": 0,
        "output_tokens": 0,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "reasoning_tokens": 0,
        "cost_micros": None,
        "latency_ms": None,
        "session_id": None,
        "agent_id": None,
        "scope_path": (),
        "tool": None,
        "category": None,
        "status": "ok",
        "error": None,
        "estimated": False,
        "tokens_saved": 0,
        "metadata": None,
        "customer_id": None,
        "tags": None,
    }
    unknown = set(fields) - set(values)
    assert not unknown, unknown
    values.update(fields)
    return tuple(values[f] for f in EVENT_FIELDS)


def priced_tracker() -> Tracker:
    t = Tracker()
    t.set_price("m1", input_per_mtok=1, output_per_mtok=2, cache_read_per_mtok=0.5)
    t.set_price("openai/gpt-x", input_per_mtok=3, output_per_mtok=12)
    t.set_price("emb", input_per_mtok=0.02, output_per_mtok=0)
    return t


def workload(t: Tracker, n: int = 60, seed: int = 0) -> None:
    """A deterministic mixed workload (every kind of call, several keys)."""
    import random

    rng = random.Random(seed)
    for i in range(n):
        session = rng.choice([None, "s1", "s2", "s3"])
        agent = rng.choice([None, "planner", "coder"])
        op = rng.random()
        if op < 0.45:
            inp = rng.randint(0, 2000)
            t.record_llm(
                model=rng.choice(MODELS),
                input_tokens=inp,
                output_tokens=rng.randint(0, 500),
                cache_read_tokens=rng.randint(0, inp // 2),
                latency_ms=rng.randint(0, 4000) / 4,
                session_id=session,
                agent_id=agent,
                tool=rng.choice([None, None, "search"]),
                ok=rng.random() > 0.1,
                kind=rng.choice(["chat", "completion"]),
                estimated=rng.random() < 0.2,
            )
        elif op < 0.55:
            t.record_embedding(
                model="emb", input_tokens=rng.randint(1, 900), session_id=session, agent_id=agent
            )
        elif op < 0.9:
            tool = rng.choice(list(TOOL_CATEGORY))
            t.record_tool_call(
                tool=tool,
                ok=rng.random() > 0.2,
                duration_ms=rng.randint(0, 8000) / 4,
                category=TOOL_CATEGORY[tool],
                session_id=session,
                agent_id=agent,
                call_id=f"tool-{seed}-{i}",
            )
        elif op < 0.95:
            t.record_cache_hit(tokens_saved=rng.randint(0, 300), session_id=session)
        else:
            t.record_cache_miss(session_id=session, agent_id=agent)


def _sorted_cells(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(
        cells,
        key=lambda c: tuple(
            (c[k] is None, c[k] or "")
            for k in ("session_id", "model", "provider", "agent_id", "tool", "customer_id")
        ),
    )


def comparable(snap: Snapshot) -> dict[str, Any]:
    """A snapshot as plain data, independent of row order (and of the merge order of
    recent call ids across sessions, which the tracker does not define)."""
    d = snap.model_dump(exclude={"taken_at"})
    d["cells"] = _sorted_cells(list(d["cells"]))
    for view in ("by_tool", "by_category"):
        for stats in d[view].values():
            stats.pop("recent_call_ids")
    return d


CUSTOMERS = (None, "acme", "beta", "org/with/slash")
TAG_CHOICES = (
    None,
    {"team": "search"},
    {"team": "ads", "env": "prod"},
    {"env": "prod"},
    {"team": "search", "env": "dev", "q": 'a "quoted", value}'},
)


def billing_workload(t: Tracker, n: int = 200, seed: int = 0, ts: float | None = None) -> None:
    """The mixed workload with customers and tags on every kind of call."""
    import random

    rng = random.Random(seed)
    for i in range(n):
        kw: dict[str, Any] = {
            "session_id": rng.choice([None, "s1", "s2", "s3"]),
            "agent_id": rng.choice([None, "planner", "coder"]),
            "customer_id": rng.choice(CUSTOMERS),
            "tags": rng.choice(TAG_CHOICES),
        }
        op = rng.random()
        if op < 0.45:
            inp = rng.randint(0, 2000)
            out = rng.randint(0, 500)
            t.record_llm(
                model=rng.choice(MODELS),
                input_tokens=inp,
                output_tokens=out,
                cache_read_tokens=rng.randint(0, inp // 2),
                cache_write_tokens=rng.randint(0, inp // 4),
                reasoning_tokens=rng.randint(0, out // 3),
                latency_ms=rng.randint(0, 4000) / 4,
                tool=rng.choice([None, None, "search"]),
                ok=rng.random() > 0.1,
                kind=rng.choice(["chat", "completion"]),
                estimated=rng.random() < 0.2,
                **kw,
            )
        elif op < 0.55:
            t.record_embedding(model="emb", input_tokens=rng.randint(1, 900), **kw)
        elif op < 0.9:
            tool = rng.choice(list(TOOL_CATEGORY))
            t.record_tool_call(
                tool=tool,
                ok=rng.random() > 0.2,
                duration_ms=rng.randint(0, 8000) / 4,
                category=TOOL_CATEGORY[tool],
                call_id=f"btool-{seed}-{i}",
                **kw,
            )
        elif op < 0.95:
            t.record_cache_hit(tokens_saved=rng.randint(0, 300), **kw)
        else:
            t.record_cache_miss(**kw)


BASE = 1740787200.0  # 2025-03-01T00:00:00Z


def random_raws(
    n: int, seed: int, base: float = BASE, hours: float = 6, prefix: str = "r"
) -> list[tuple[Any, ...]]:
    """Raw events spread over ``hours``, submitted out of time order, every kind."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ts = base + rng.random() * hours * 3600
        kind = rng.choice(
            ["chat", "completion", "embedding", "tool", "tool", "cache_hit", "cache_miss"]
        )
        f: dict[str, Any] = {
            "session_id": rng.choice([None, "s1", "s2", "s3"]),
            "agent_id": rng.choice([None, "planner"]),
            "customer_id": rng.choice(CUSTOMERS),
            "tags": rng.choice(TAG_CHOICES),
        }
        if kind in ("chat", "completion"):
            inp = rng.randint(0, 3000)
            out_t = rng.randint(0, 400)
            f.update(
                model=rng.choice(["m1", "openai/gpt-x"]),
                provider=rng.choice([None, "openai"]),
                input_tokens=inp,
                output_tokens=out_t,
                cache_read_tokens=rng.randint(0, inp // 2),
                cache_write_tokens=rng.randint(0, inp // 4),
                reasoning_tokens=rng.randint(0, out_t // 2),
                cost_micros=rng.choice([None, rng.randint(0, 5000)]),
                latency_ms=rng.choice([None, rng.randint(0, 4000) / 4]),
                tool=rng.choice([None, None, "search"]),
                status=rng.choice(["ok", "ok", "error"]),
                estimated=rng.random() < 0.2,
            )
        elif kind == "embedding":
            f.update(
                model="emb",
                input_tokens=rng.randint(1, 900),
                cost_micros=rng.choice([None, rng.randint(0, 50)]),
                estimated=rng.random() < 0.2,
            )
        elif kind == "tool":
            tool = rng.choice(sorted(TOOL_CATEGORY))
            f.update(
                tool=tool,
                latency_ms=rng.randint(0, 8000) / 4,
                category=TOOL_CATEGORY[tool] or None,
                status=rng.choice(["ok", "ok", "error"]),
            )
        elif kind == "cache_hit":
            f.update(tokens_saved=rng.randint(0, 300), model=rng.choice([None, "m1"]))
        out.append(raw_event(f"{prefix}{seed}-{i}", ts, kind, **f))
    return out


LLM = {"chat", "completion", "image", "audio", "other"}


def expected_usage(events: list[Any]) -> Any:
    """The Usage of a list of UsageEvents, computed independently of the store."""
    from agentmeter import Usage

    u: dict[str, Any] = dict.fromkeys(Usage.model_fields, 0)
    u["llm_latency_ms"] = u["tool_duration_ms"] = 0.0
    for e in events:
        if e.kind in LLM:
            u["input_tokens"] += e.input_tokens
            u["output_tokens"] += e.output_tokens
            u["cache_read_tokens"] += e.cache_read_tokens
            u["cache_write_tokens"] += e.cache_write_tokens
            u["reasoning_tokens"] += e.reasoning_tokens
            u["llm_calls"] += 1
            u["failed_llm_calls"] += e.status == "error"
            u["llm_latency_ms"] += e.latency_ms or 0.0
        elif e.kind == "embedding":
            u["embedding_tokens"] += e.input_tokens
            u["embedding_calls"] += 1
        elif e.kind == "tool":
            u["tool_calls"] += 1
            u["failed_tool_calls"] += e.status == "error"
            u["tool_duration_ms"] += e.latency_ms or 0.0
        elif e.kind == "cache_hit":
            u["cache_hits"] += 1
        elif e.kind == "cache_miss":
            u["cache_misses"] += 1
        if e.kind in LLM or e.kind == "embedding":
            u["estimated_calls"] += bool(e.estimated)
            u["unpriced_calls"] += e.cost_micros is None
        u["cost_micros"] += e.cost_micros or 0  # any kind's cost (a priced tool call's too)
        u["tokens_saved"] += e.tokens_saved
    return Usage(**u)


def rollup_mismatches(url: str) -> dict[str, Any]:
    """Differences between the rollup tables and a ``GROUP BY`` over the raw events
    (written independently of the writer and of UsageStore): ``{}`` when they agree."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    pg = engine.dialect.name == "postgresql"

    def exprs(e: str) -> tuple[str, str, str]:
        ts = f"{e}ts"
        hour = (
            f"CAST(floor({ts} / 3600) AS BIGINT) * 3600"
            if pg
            else f"(CAST({ts} / 3600 AS INTEGER) "
            f"- ({ts} / 3600 < CAST({ts} / 3600 AS INTEGER))) * 3600"
        )
        dims = ", ".join(
            [
                f"coalesce({e}{c}, '')"
                for c in ("customer_id", "session_id", "agent_id", "model", "provider", "tool")
            ]
            + [f"{e}kind"]
        )
        counters = (
            f"count(*), sum({e}input_tokens), sum({e}output_tokens), sum({e}cache_read_tokens), "
            f"sum({e}cache_write_tokens), sum({e}reasoning_tokens), "
            f"sum(CASE WHEN {e}status = 'error' THEN 1 ELSE 0 END), sum({e}estimated), "
            f"sum(coalesce({e}cost_micros, 0)), "
            f"sum(CASE WHEN {e}cost_micros IS NULL THEN 1 ELSE 0 END), "
            f"sum(coalesce({e}latency_ms, 0)), min({e}latency_ms), max({e}latency_ms), "
            f"sum({e}tokens_saved), max(CASE WHEN {e}category <> '' THEN {e}id END)"
        )
        return hour, dims, counters

    hour, dims, counters = exprs("")
    cat = (
        "SELECT g.*, coalesce((SELECT category FROM agentmeter_events c WHERE c.id = g.seq), '') "
        "FROM ({q}) g"
    )
    raw_main = (
        f"SELECT {hour} AS h, {dims}, {counters} AS seq FROM agentmeter_events "
        "GROUP BY 1, 2, 3, 4, 5, 6, 7, 8"
    )
    tag_fn = "jsonb_each_text(CAST(e.tags AS JSONB))" if pg else "json_each(e.tags)"
    t_hour, t_dims, t_counters = exprs("e.")
    raw_tags = (
        f"SELECT t.key, t.value, {t_hour} AS h, {t_dims}, {t_counters} AS seq "
        f"FROM agentmeter_events e, {tag_fn} AS t GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10"
    )
    raw_lat = (
        f"SELECT {hour}, coalesce(customer_id, ''), coalesce(session_id, ''), "
        "coalesce(agent_id, ''), coalesce(tool, ''), latency_bucket, count(*) "
        "FROM agentmeter_events WHERE kind = 'tool' AND latency_bucket IS NOT NULL "
        "GROUP BY 1, 2, 3, 4, 5, 6"
    )
    counter_cols = (
        "events, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, "
        "reasoning_tokens, failed, estimated, cost_micros, unpriced, latency_ms, latency_min, "
        "latency_max, tokens_saved, category_seq, category"
    )
    key = "customer_id, session_id, agent_id, model, provider, tool, kind"
    queries: dict[str, tuple[str, str]] = {}
    mod = "%%" if pg else "%"  # psycopg reads a lone % as a placeholder
    daily = "({h}) - ({h}) " + mod + " 86400"
    for suffix, period, per in (("", "hour", "{h}"), ("_daily", "day", daily)):
        p_main, p_tags = per.format(h=hour), per.format(h=t_hour)
        queries["rollup" + suffix] = (
            cat.format(q=raw_main.replace(f"SELECT {hour} AS h", f"SELECT {p_main} AS h")),
            f"SELECT {period}, {key}, {counter_cols} FROM agentmeter_rollup{suffix}",
        )
        queries["tags" + suffix] = (
            cat.format(q=raw_tags.replace(f"{t_hour} AS h", f"{p_tags} AS h")),
            f"SELECT tag_key, tag_value, {period}, {key}, {counter_cols} "
            f"FROM agentmeter_rollup_tags{suffix}",
        )
        queries["latency" + suffix] = (
            raw_lat.replace(f"SELECT {hour},", f"SELECT {p_main},"),
            f"SELECT {period}, customer_id, session_id, agent_id, tool, bucket, calls "
            f"FROM agentmeter_rollup_latency{suffix}",
        )

    # The global (session-free) daily tables: the same GROUP BY with the session blanked.
    p_main, p_tags = daily.format(h=hour), daily.format(h=t_hour)
    gkey = key.replace("session_id", "''")
    queries["rollup_global"] = (
        cat.format(
            q=raw_main.replace(f"SELECT {hour} AS h", f"SELECT {p_main} AS h").replace(
                "coalesce(session_id, '')", "''"
            )
        ),
        f"SELECT day, {gkey}, {counter_cols} FROM agentmeter_rollup_global",
    )
    queries["tags_global"] = (
        cat.format(
            q=raw_tags.replace(f"{t_hour} AS h", f"{p_tags} AS h").replace(
                "coalesce(e.session_id, '')", "''"
            )
        ),
        f"SELECT tag_key, tag_value, day, {gkey}, {counter_cols} "
        "FROM agentmeter_rollup_tags_global",
    )
    queries["latency_global"] = (
        raw_lat.replace(f"SELECT {hour},", f"SELECT {p_main},").replace(
            "coalesce(session_id, '')", "''"
        ),
        "SELECT day, customer_id, '', agent_id, tool, bucket, calls "
        "FROM agentmeter_rollup_latency_global",
    )

    # The other derived daily levels: a GROUP BY over the events on their dimensions.
    from agentmeter.storage.schema import DERIVED

    def col(c: str) -> str:
        return c if c == "kind" else f"coalesce({c}, '')"

    for level in DERIVED:
        if level.name == "global":
            continue  # checked above
        dims_l = ", ".join(col(c) for c in level.dims)
        group = ", ".join(str(i) for i in range(1, len(level.dims) + 2))
        queries[f"rollup_{level.name}"] = (
            cat.format(
                q=f"SELECT {p_main} AS h, {dims_l}, {counters} AS seq "
                f"FROM agentmeter_events GROUP BY {group}"
            ),
            f"SELECT day, {', '.join(level.dims)}, {counter_cols} FROM {level.main.name}",
        )
        if level.latency is not None:
            ldims = ", ".join(col(c) for c in level.latency_dims)
            lgroup = ", ".join(str(i) for i in range(1, len(level.latency_dims) + 3))
            queries[f"latency_{level.name}"] = (
                f"SELECT {p_main}, {ldims}, latency_bucket, count(*) FROM agentmeter_events "
                f"WHERE kind = 'tool' AND latency_bucket IS NOT NULL GROUP BY {lgroup}",
                f"SELECT day, {', '.join(level.latency_dims)}, bucket, calls "
                f"FROM {level.latency.name}",
            )

    from decimal import Decimal

    def norm(rows: Any) -> set[tuple[Any, ...]]:
        # PostgreSQL sums integers as NUMERIC: compare them as ints.
        return {tuple(int(v) if isinstance(v, Decimal) else v for v in r) for r in rows}

    diffs: dict[str, Any] = {}
    try:
        with engine.connect() as conn:
            for name, (expected_sql, actual_sql) in queries.items():
                expected = norm(conn.exec_driver_sql(expected_sql))
                actual = norm(conn.exec_driver_sql(actual_sql))
                if expected != actual:
                    diffs[name] = {
                        "missing": sorted(expected - actual, key=repr)[:5],
                        "extra": sorted(actual - expected, key=repr)[:5],
                    }
    finally:
        engine.dispose()
    return diffs


TESTS = Path(__file__).resolve().parent


def run_writer_processes(script: str, db_url: str, n: int) -> list[dict[str, Any]]:
    """Run ``script`` in ``n`` processes at once (argv: the database URL, the writer's
    index, the moment all start writing, the tests folder; strict mode on) and return
    the JSON stats each printed last; a process that failed fails the test."""
    start = time.time() + 4.0
    env = {**os.environ, "PYTHONPATH": str(TESTS.parent), "AGENTMETER_STRICT": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(script), db_url, str(k), str(start), str(TESTS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for k in range(n)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    stats = []
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        stats.append(json.loads(out.strip().splitlines()[-1]))
    return stats
