"""``agentmeter report`` and ``serve``: formats, sections, filters, one set of numbers."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import storage_pg
from storage_pg import free_port
from storage_util import priced_tracker
from test_server_api import billing_workload, event

import agentmeter
from agentmeter.cli import build_parser, main
from agentmeter.storage import SQLSink, UsageStore, render
from agentmeter.storage.report import COLUMNS, CSV_COLUMNS, TABLE_COLUMNS

db_url = storage_pg.db_url  # the fixtures
pg = storage_pg.pg

pytestmark = pytest.mark.filterwarnings("ignore::agentmeter.UnpricedModelWarning")
ROOT = Path(__file__).resolve().parents[1]
INT_COLUMNS = [c for c in COLUMNS if c not in ("cost_usd", "tool_duration_ms", "llm_latency_ms")]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "usage.db"
    t = priced_tracker()
    with SQLSink(path) as sink:
        t.add_sink(sink)
        billing_workload(t, n=200, seed=11)
    return path


def _cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentmeter.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        cwd=str(cwd or ROOT),
    )


def _report(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["report", "-q", *args]) == 0
    return capsys.readouterr().out


def _tables(text: str) -> dict[str, dict[str, dict[str, str]]]:
    """The table format parsed back: {section: {row name: {heading: cell}}}."""
    out: dict[str, dict[str, dict[str, str]]] = {}
    blocks = text.split("\n\n")
    for block in blocks:
        lines = block.strip("\n").splitlines()
        if not lines or not lines[0].startswith("by ") or len(lines) < 3:
            continue
        section = lines[0][3:-1]
        heads = re.split(r"\s{2,}", lines[1].strip())
        rows: dict[str, dict[str, str]] = {}
        for line in lines[3:]:
            cells = re.split(r"\s{2,}", line.strip())
            rows[cells[0]] = dict(zip(heads[1:], cells[1:], strict=False))
        out[section] = rows
    return out


def _sum(rows: list[dict[str, Any]], column: str) -> Any:
    return sum(r[column] for r in rows)


# ----------------------------------------------------------- the command
def test_commands_are_registered_and_version() -> None:
    from agentmeter.cli import COMMANDS

    assert {"report", "serve", "merge", "demo"} <= set(COMMANDS)
    help_text = build_parser().format_help()
    assert "report" in help_text and "serve" in help_text and "--version" in help_text
    proc = _cli("--version")
    assert proc.returncode == 0 and proc.stdout == f"agentmeter {agentmeter.__version__}\n"


def test_help_examples_run_as_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every example of `agentmeter report --help`, run in a directory holding the demo's
    database, exits 0 and shows rows in every section it asks for."""
    assert main(["demo", "--plain", "--db", str(tmp_path / "agentmeter.db")]) == 0
    help_text = _cli("report", "--help").stdout
    examples = [
        line.strip() for line in help_text.splitlines() if line.startswith("  agentmeter report")
    ]
    assert len(examples) >= 6
    env = {"AGENTMETER_DB": ""}  # the examples' default database: ./agentmeter.db
    monkeypatch.delenv("AGENTMETER_DB", raising=False)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    running = [  # as written, each in its own process (all at once: they only read)
        subprocess.Popen(
            [sys.executable, "-m", "agentmeter.cli", *shlex.split(example)[1:]],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
            cwd=str(tmp_path),
        )
        for example in examples
    ]
    for example, proc in zip(examples, running, strict=True):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, (example, err)
        assert out.strip() and "error" not in err, example
    for example in examples:
        argv = shlex.split(example)
        assert argv[:2] == ["agentmeter", "report"]
        # The same command as JSON: every section it asks for has rows.
        data = json.loads(_report(capsys, *argv[2:], "--format", "json"))
        assert data["events"] > 0, example
        for section in data["sections"]:
            assert data[f"by_{section}"], (example, section)


@pytest.mark.parametrize(
    ("args", "sections"),
    [
        ([], ["session", "model", "agent", "tool"]),
        (["--by", "customer"], ["customer"]),
        (["--by", "customer,model", "--by", "tag:team"], ["customer", "model", "tag:team"]),
        (["--by", "day", "--by", "hour,day"], ["day", "hour"]),
    ],
)
def test_by_is_repeatable_and_takes_lists(
    db: Path, capsys: pytest.CaptureFixture[str], args: list[str], sections: list[str]
) -> None:
    data = json.loads(_report(capsys, "--db", str(db), "--format", "json", *args))
    assert data["sections"] == sections
    for s in sections:
        assert data[f"by_{s}"], s


def test_report_table(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = _report(capsys, "--db", str(db))
    for heading in ("by session:", "by model:", "by agent:", "by tool:", "total:"):
        assert heading in out
    assert "openai/gpt-x" in out and "search" in out and "p95 ms" in out
    for _, heading in TABLE_COLUMNS:
        assert heading in out


# ------------------------------------------------------ one set of numbers
def _all_formats(
    capsys: pytest.CaptureFixture[str], db: Path, *args: str
) -> tuple[dict[str, Any], list[dict[str, str]], str]:
    base = ["--db", str(db), *args]
    data = json.loads(_report(capsys, *base, "--format", "json"))
    rows = list(csv.DictReader(io.StringIO(_report(capsys, *base, "--format", "csv"))))
    table = _report(capsys, *base)
    return data, rows, table


@pytest.mark.parametrize(
    "filters",
    [[], ["--customer", "globex/eu"], ["--tag", "team=billing", "--tag", "env=prod"]],
)
def test_table_csv_json_and_rest_give_the_same_numbers(
    db: Path, capsys: pytest.CaptureFixture[str], filters: list[str]
) -> None:
    from fastapi.testclient import TestClient

    from agentmeter.server import create_app

    by = ["--by", "customer,session,agent,model,tool,day,hour,tag:team"]
    data, rows, table = _all_formats(capsys, db, *by, *filters)
    tables = _tables(table)
    assert list(CSV_COLUMNS[3 : 3 + len(COLUMNS)]) == list(COLUMNS)

    def check_table(row: dict[str, str], usage: dict[str, Any]) -> None:
        for name, heading in TABLE_COLUMNS:
            value = usage[name]
            if name == "cost_usd":
                assert row[heading] == (value if value is not None else "-")
            else:
                assert row[heading] == f"{value:,}", (name, row, usage)

    def check_csv(row: dict[str, str], usage: dict[str, Any]) -> None:
        for name in COLUMNS:
            value = usage[name]
            if name == "cost_usd":
                assert row[name] == (value if value is not None else "")
            elif isinstance(value, float):
                assert float(row[name]) == pytest.approx(value)
            else:
                assert row[name] == str(value), (name, row)

    total_csv = next(r for r in rows if r["section"] == "total")
    check_csv(total_csv, data["totals"])
    for section in data["sections"]:
        label = section.replace("tag:", "tag ")
        keys = data[f"by_{section}"]
        assert keys, section
        csv_rows = {r["name"]: r for r in rows if r["section"] == section and r["row"] == "key"}
        assert set(csv_rows) == set(keys)
        for key, usage in keys.items():
            check_csv(csv_rows[key], usage)
            check_table(tables[label][key], usage)
        none = data["unattributed"][section]
        if any(none[c] for c in INT_COLUMNS):
            check_table(tables[label]["(none)"], none)
            check_csv(next(r for r in rows if r["section"] == section and r["row"] == "none"), none)

    # ... and the REST API over the same database, with the same filters.
    params: dict[str, Any] = {}
    if "--customer" in filters:
        params["customer"] = filters[filters.index("--customer") + 1]
    params["tag"] = [filters[i + 1] for i, a in enumerate(filters) if a == "--tag"]
    with TestClient(create_app(db_url=db)) as c:
        rest = c.get("/api/v1/usage", params=params).json()
        assert rest["totals"] == data["totals"]
        for section in ("customer", "session", "agent", "model"):
            assert rest[f"by_{section}"] == data[f"by_{section}"], section
        tools = c.get("/api/v1/usage/tools", params=params).json()["tools"]
        for name, usage in data["by_tool"].items():
            stats = tools[name]
            assert (
                stats["calls"] == usage["tool_calls"]
                and stats["failed"] == usage["failed_tool_calls"]
            )
            for col in ("llm_calls", "input_tokens", "output_tokens", "embedding_tokens"):
                assert stats[col] == usage[col], (name, col)
            assert stats["cost_usd"] == data["tool_stats"][name]["cost_usd"]
            assert {k: v for k, v in stats.items() if k not in ("duration_histogram",)} == data[
                "tool_stats"
            ][name]
        for bucket in ("day", "hour"):
            series = c.get("/api/v1/usage/timeseries", params={**params, "bucket": bucket}).json()
            fmt = "%Y-%m-%d" if bucket == "day" else "%Y-%m-%dT%H:%MZ"
            assert {
                datetime.fromisoformat(p["start"]).strftime(fmt): p["usage"]
                for p in series["points"]
            } == data[f"by_{bucket}"]
    if not filters:  # the live tracker that wrote the database agrees too
        t = priced_tracker()
        billing_workload(t, n=200, seed=11)
        snap = t.snapshot()
        assert data["totals"] == snap.totals.model_dump(mode="json")
        for section in ("customer", "session", "agent", "model"):
            assert data[f"by_{section}"] == {
                k: v.model_dump(mode="json") for k, v in getattr(snap, f"by_{section}").items()
            }


@pytest.mark.parametrize("limit", [None, 1, 2])
def test_rows_add_up_to_the_totals(
    db: Path, capsys: pytest.CaptureFixture[str], limit: int | None
) -> None:
    by = ["--by", "customer,session,agent,model,tool,day,hour,tag:team,tag:env"]
    extra = ["--limit", str(limit)] if limit else []
    data, rows, _table = _all_formats(capsys, db, *by, *extra)
    totals = data["totals"]
    for section in data["sections"]:
        parts = [
            *data[f"by_{section}"].values(),
            data["unattributed"][section],
            data["others"][section],
        ]
        if limit:
            assert len(data[f"by_{section}"]) <= limit
        for col in INT_COLUMNS:
            assert _sum(parts, col) == totals[col], (section, col)
        csv_rows = [r for r in rows if r["section"] == section]
        for col in INT_COLUMNS:
            assert sum(int(r[col]) for r in csv_rows) == totals[col], (section, col)
        assert sum(int(r["cost_micros"]) for r in csv_rows) == totals["cost_micros"]
        if (
            limit
            and len(data[f"by_{section}"]) == limit
            and any(data["others"][section][c] for c in INT_COLUMNS)
        ):
            assert any(r["row"] == "other" for r in csv_rows)


def test_embeddings_never_in_llm_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A LlamaIndex-like session: 3 LLM calls (77 input tokens) and 2 embeddings (50 tokens)."""
    path = tmp_path / "li.db"
    t = priced_tracker()
    with SQLSink(path) as sink:
        t.add_sink(sink)
        for inp in (20, 27, 30):
            t.record_llm("m1", inp, 5, session_id="li-session", customer_id="acme")
        for inp in (20, 30):
            t.record_embedding("emb", inp, session_id="li-session", customer_id="acme")
    data, rows, table = _all_formats(capsys, path, "--by", "session,customer")
    for section in ("session", "customer"):
        u = data[f"by_{section}"]["li-session" if section == "session" else "acme"]
        assert (u["llm_calls"], u["input_tokens"]) == (3, 77)
        assert (u["embedding_calls"], u["embedding_tokens"]) == (2, 50)
        assert u["total_tokens"] == 77 + 15 + 50
    row = _tables(table)["session"]["li-session"]
    assert (row["llm calls"], row["input"], row["emb calls"], row["emb tokens"]) == (
        "3",
        "77",
        "2",
        "50",
    )
    csv_row = next(r for r in rows if r["name"] == "li-session")
    assert (csv_row["llm_calls"], csv_row["input_tokens"], csv_row["embedding_tokens"]) == (
        "3",
        "77",
        "50",
    )
    assert int(csv_row["input_tokens"]) == data["totals"]["input_tokens"]  # not more
    assert "3 calls" in table and "77 input" in table and "2 calls, 50 tokens" in table


def test_cost_is_written_one_way(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fastapi.testclient import TestClient

    from agentmeter.server import create_app

    path = tmp_path / "cost.db"
    t = priced_tracker()
    with SQLSink(path) as sink:
        t.add_sink(sink)
        t.record_tool_call("calc", True, duration_ms=2.0, customer_id="tools-only")
        t.record_llm("mystery-model", 10, 1, customer_id="unpriced")
        t.record_llm("m1", 1000, 0, customer_id="priced")  # 1000 x $1/Mtok = $0.001
    data, rows, table = _all_formats(capsys, path, "--by", "customer")
    by = data["by_customer"]
    assert by["tools-only"]["cost_usd"] == "0.000000"
    assert by["unpriced"]["cost_usd"] is None and by["unpriced"]["unpriced_calls"] == 1
    assert by["priced"]["cost_usd"] == "0.001000"
    csv_by = {r["name"]: r for r in rows if r["section"] == "customer"}
    assert csv_by["tools-only"]["cost_usd"] == "0.000000"
    assert csv_by["unpriced"]["cost_usd"] == "" and csv_by["unpriced"]["unpriced_calls"] == "1"
    assert csv_by["priced"]["cost_usd"] == "0.001000"
    tab = _tables(table)["customer"]
    assert tab["tools-only"]["cost usd"] == "0.000000"
    assert tab["unpriced"]["cost usd"] == "-" and tab["unpriced"]["unpriced"] == "1"
    assert tab["priced"]["cost usd"] == "0.001000"
    with TestClient(create_app(db_url=path)) as c:
        rest = c.get("/api/v1/usage").json()["by_customer"]
    assert {k: v["cost_usd"] for k, v in rest.items()} == {k: v["cost_usd"] for k, v in by.items()}
    assert data["totals"]["cost_usd"] == "0.001000"


def test_filters_customer_session_tag(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with UsageStore(db) as store:
        want = store.totals(customer="acme", tags={"team": "search"})
        want_s = store.totals(session="s1", customer="acme")
    data = json.loads(
        _report(
            capsys,
            "--db",
            str(db),
            "--format",
            "json",
            "--customer",
            "acme",
            "--tag",
            "team=search",
            "--by",
            "customer",
        )
    )
    assert data["filters"] == {"customer": "acme", "session": None, "tags": {"team": "search"}}
    assert data["totals"] == want.model_dump(mode="json")
    assert set(data["by_customer"]) == {"acme"}
    data = json.loads(
        _report(
            capsys, "--db", str(db), "--format", "json", "--session", "s1", "--customer", "acme"
        )
    )
    assert data["totals"] == want_s.model_dump(mode="json")
    out = _report(capsys, "--db", str(db), "--customer", "nobody")
    assert "0 events" in out and "customer 'nobody'" in out


def test_report_since_until_and_env_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ranged.db"
    base = datetime(2025, 1, 1, tzinfo=UTC).timestamp()
    with SQLSink(path) as sink:
        for i in range(5):
            sink.submit(
                event(f"c{i}", base + 86400 * i, model="m1", input_tokens=100, session_id=f"s{i}")
            )
        sink.submit(event("now", time.time(), model="m1", input_tokens=1, session_id="now"))
        sink.submit(event("old", time.time() - 8 * 86400, model="m1", input_tokens=2))
    monkeypatch.setenv("AGENTMETER_DB", str(path))
    out = _report(
        capsys, "--format", "json", "--since", "2025-01-02", "--until", "2025-01-04T00:00:00Z"
    )
    data = json.loads(out)
    assert data["totals"]["input_tokens"] == 200 and set(data["by_session"]) == {"s1", "s2"}
    data = json.loads(_report(capsys, "--format", "json", "--since", "1h"))
    assert set(data["by_session"]) == {"now"}
    assert (
        json.loads(_report(capsys, "--format", "json", "--since", "7d"))["totals"]["input_tokens"]
        == 1
    )
    assert (
        json.loads(_report(capsys, "--format", "json", "--since", "9d"))["totals"]["input_tokens"]
        == 3
    )
    day = json.loads(_report(capsys, "--format", "json", "--by", "day", "--until", "2025-01-03"))
    assert day["by_day"] == {
        "2025-01-01": day["by_day"]["2025-01-01"],
        "2025-01-02": day["by_day"]["2025-01-02"],
    }
    assert main(["report", "--since", "2025-01-04", "--until", "2025-01-02"]) == 2
    assert "--since must be before --until" in capsys.readouterr().err


def test_report_over_both_databases(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    t = priced_tracker()
    with SQLSink(db_url) as sink:
        t.add_sink(sink)
        billing_workload(t, n=80, seed=2)
    data = json.loads(
        _report(capsys, "--db", db_url, "--format", "json", "--limit", "2", "--by", "customer")
    )
    assert data["totals"] == t.snapshot().totals.model_dump(mode="json")
    assert len(data["by_customer"]) <= 2
    assert "by session" in render(db_url)
    assert "password" not in data["database"] or "***" in data["database"]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "database file not found"),
        ("garbage", "cannot be read as a database"),
        ("empty-sqlite", "not an agentmeter database"),
        ("directory", "is a directory"),
        ("unreachable", "cannot read postgresql"),
    ],
)
def test_report_unusable_database_is_one_clear_line(
    tmp_path: Path, setup: str, message: str
) -> None:
    target = str(tmp_path / "x.db")
    if setup == "garbage":
        Path(target).write_bytes(b"this is not sqlite at all" * 100)
    elif setup == "empty-sqlite":
        import sqlite3

        sqlite3.connect(target).execute("create table other (x)").connection.close()
    elif setup == "directory":
        os.mkdir(target)
    elif setup == "unreachable":
        target = f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/nothing"
    proc = _cli("report", "--db", target)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stdout == ""
    if setup == "missing":
        assert not Path(target).exists()  # reading never creates a database


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["report", "--since", "last tuesday"], "ISO 8601"),
        (["report", "--until", "2025-13-45"], "ISO 8601"),
        (["report", "--format", "xml"], "invalid choice"),
        (["report", "--by", "colour"], "tag:KEY"),
        (["report", "--by", "tag:"], "tag:KEY"),
        (["report", "--by", ","], "at least one section"),
        (["report", "--tag", "novalue"], "KEY=VALUE"),
        (["report", "--tag", "=x"], "KEY=VALUE"),
        (["report", "--tag", "a=1", "--tag", "a=2"], "given twice"),
        (["report", "--customer", ""], "must not be empty"),
        (["report", "--limit", "0"], "positive integer"),
        (["report", "--since", "1000000000d"], "too far back"),
        (["merge", "x.json", "--indent", "-3"], "between 0 and 16"),
        (["report", "--unknown"], "unrecognized"),
        (["serve", "--port", "99999"], "port number"),
        (["serve", "--port", "http"], "port number"),
        (["nope"], "invalid choice"),
        ([], "required"),
    ],
)
def test_malformed_arguments_exit_2_without_traceback(args: list[str], says: str) -> None:
    proc = _cli(*args)
    assert proc.returncode == 2
    assert "error:" in proc.stderr and says in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_cli_and_the_api_share_one_time_rule() -> None:
    from agentmeter import _timeparse as _time
    from agentmeter.cli.report import parse_time

    proc = _cli("report", "--since", "someday")
    with pytest.raises(ValueError) as api_error:
        _time.parse_time("someday")
    assert str(api_error.value) in proc.stderr
    assert parse_time("2025-01-31") == datetime(2025, 1, 31, tzinfo=UTC)
    assert parse_time("2025-01-31T12:00:00Z") == datetime(2025, 1, 31, 12, tzinfo=UTC)
    now = datetime(2025, 3, 1, tzinfo=UTC)
    assert _time.parse_time("2w", now=now) == datetime(2025, 2, 15, tzinfo=UTC)
    assert _time.parse_time("36h", now=now) == datetime(2025, 2, 27, 12, tzinfo=UTC)


# ------------------------------------------------------------------ serve
def test_serve_unusable_database(tmp_path: Path) -> None:
    proc = _cli("serve", "--db", str(tmp_path / "missing.db"))
    assert proc.returncode == 2
    assert "agentmeter serve: error: database file not found" in proc.stderr
    assert "Traceback" not in proc.stderr


def _serve(db: Path, port: int, *extra: str, token: str | None = "tok") -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("AGENTMETER_TOKEN", None)
    if token is not None:
        env["AGENTMETER_TOKEN"] = token
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agentmeter.cli",
            "serve",
            "--db",
            str(db),
            "--port",
            str(port),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _wait_up(proc: subprocess.Popen[str], port: int) -> None:
    import httpx

    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=2)
            return
        except httpx.TransportError:
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)


def _stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate(timeout=10)


def test_serve_runs_the_locked_api(db: Path) -> None:
    httpx = pytest.importorskip("httpx")
    port = free_port()
    proc = _serve(db, port, "--log-level", "warning")
    try:
        _wait_up(proc, port)
        base = f"http://127.0.0.1:{port}/api/v1"
        assert httpx.get(f"{base}/health", timeout=5).json() == {"status": "ok"}
        assert httpx.get(f"{base}/usage", timeout=5).status_code == 401
        r = httpx.get(f"{base}/usage", headers={"Authorization": "Bearer tok"}, timeout=5)
        assert r.status_code == 200 and r.json()["source"] == "database"
        r = httpx.post(f"{base}/usage/reset", headers={"Authorization": "Bearer tok"}, timeout=5)
        assert r.status_code == 400  # names nothing: deletes nothing
        r = httpx.post(
            f"{base}/usage/reset",
            headers={"Authorization": "Bearer tok"},
            json={"since": "2000-01-01"},
            timeout=5,
        )
        assert r.status_code == 200 and r.json()["deleted_events"] == 201
    finally:
        _out, err = _stop(proc)
    assert "127.0.0.1" in err and "locked by token, reset enabled" in err


def test_serve_never_logs_the_token(db: Path) -> None:
    httpx = pytest.importorskip("httpx")
    secret = "tok-" + "x" * 20
    port = free_port()
    proc = _serve(db, port, "--log-level", "info", token=secret)
    try:
        _wait_up(proc, port)
        base = f"http://127.0.0.1:{port}"
        for path in (
            f"/api/v1/health?token={secret}",
            f"/api/v1/usage?customer=acme&token={secret}",
            f"/?token={secret}",  # the dashboard's login link
            f"/api/v1/usage/sessions?access_token={secret}&limit=1",
        ):
            httpx.get(base + path, timeout=5, follow_redirects=False)
        httpx.get(f"{base}/api/v1/usage", headers={"Authorization": f"Bearer {secret}"}, timeout=5)
    finally:
        out, err = _stop(proc)
    logs = out + err
    assert secret not in logs
    assert "token=***" in logs and "access_token=***" in logs  # the access log was written
    assert re.search(r'"GET /api/v1/usage\?customer=acme&token=\*\*\* HTTP/1.1" 401', logs)


def test_redact_query() -> None:
    from agentmeter.server.auth import redact_query

    assert redact_query("/?token=abc") == "/?token=***"
    assert redact_query("/x?a=1&token=abc&b=2") == "/x?a=1&token=***&b=2"
    assert redact_query("/x?Token=abc#frag") == "/x?Token=***#frag"
    assert redact_query("/x?tokens=1") == "/x?tokens=1"
    assert redact_query("/x/token=abc") == "/x/token=abc"  # a path, not a query parameter


def test_the_names_are_documented() -> None:
    """Each column name is defined in the report module's docstring, the README names the
    endpoints and report options."""
    from agentmeter.storage import report

    doc = report.__doc__ or ""
    for name in COLUMNS:
        assert f"``{name}``" in doc, name
    readme = (ROOT / "README.md").read_text()
    for needle in (
        "/api/v1/health",
        "/customers/{id}",
        "/timeseries?bucket=hour|day",
        "--by customer|session|agent|model|tool|day|hour|tag:KEY",
        "--tag KEY=VALUE",
        '"0.000000"',
        "embedding_tokens",
    ):
        assert needle in readme, needle


def _many_sessions(path: Path, n: int) -> agentmeter.Tracker:
    """``n`` sessions of distinct sizes (session ``s00`` the largest), and usage
    without a session."""
    t = priced_tracker()
    with SQLSink(path) as sink:
        t.add_sink(sink)
        for i in range(n):
            t.record_llm("gpt-4o-mini", 1000 - i, 10, session_id=f"s{i:02d}", customer_id="acme")
        t.record_llm("gpt-4o-mini", 7, 3)
        t.record_tool_call("search", True, 5.0, session_id="s03")
        assert sink.flush(30)
    return t


def test_the_default_report_lists_a_page_of_sessions(tmp_path: Path) -> None:
    """Without --limit, the session section shows SESSION_ROWS sessions, the rest in one
    row with a line saying how to see them; every format's rows still add up."""
    from agentmeter.storage.report import SESSION_ROWS

    path = tmp_path / "many.db"
    t = _many_sessions(path, SESSION_ROWS + 5)
    live = t.snapshot()
    table = render(path)
    assert "(5 more)" in table
    assert "5 more sessions in the (5 more) row: --session ID shows one, --limit N lists more" in (
        table
    )
    assert "s19" in table and "s20" not in table
    report = json.loads(render(path, "json"))
    assert list(report["by_session"]) == [f"s{i:02d}" for i in range(SESSION_ROWS)]
    assert report["other_keys"] == {"session": 5, "model": 0, "agent": 0, "tool": 0}
    rest = [live.by_session[f"s{i:02d}"] for i in range(SESSION_ROWS, SESSION_ROWS + 5)]
    assert report["others"]["session"]["input_tokens"] == sum(u.input_tokens for u in rest)
    assert report["unattributed"]["session"]["input_tokens"] == 7
    for name in ("input_tokens", "llm_calls", "tool_calls", "cost_micros"):
        parts = [u[name] for u in report["by_session"].values()]
        parts += [report["others"]["session"][name], report["unattributed"]["session"][name]]
        assert sum(parts) == getattr(live.totals, name), name
    rows = list(csv.DictReader(io.StringIO(render(path, "csv"))))
    other = [r for r in rows if r["section"] == "session" and r["row"] == "other"]
    assert [int(r["input_tokens"]) for r in other] == [sum(u.input_tokens for u in rest)]
    # --limit lists them all (and a smaller limit caps every section alike)
    full = json.loads(render(path, "json", limit=100))
    assert set(full["by_session"]) == set(live.by_session)
    assert full["other_keys"]["session"] == 0
    one = json.loads(render(path, "json", sections=["session", "customer"], limit=1))
    assert list(one["by_session"]) == ["s00"] and one["other_keys"]["session"] == SESSION_ROWS + 4
    assert one["by_customer"]["acme"]["llm_calls"] == SESSION_ROWS + 5
    assert one["unattributed"]["customer"]["llm_calls"] == 1
