"""``agentmeter report`` and ``agentmeter serve``: output formats, filters, clear errors."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import storage_pg
from storage_pg import free_port
from storage_util import priced_tracker, raw_event, workload

from agentmeter.cli import build_parser, main
from agentmeter.storage import SQLSink, UsageStore, render

db_url = storage_pg.db_url  # the fixtures
pg = storage_pg.pg

pytestmark = pytest.mark.filterwarnings("ignore::agentmeter.UnpricedModelWarning")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "usage.db"
    t = priced_tracker()
    with SQLSink(path) as sink:
        t.add_sink(sink)
        workload(t, n=120, seed=11)
    return path


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentmeter.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        cwd=str(ROOT),
    )


def test_commands_are_registered() -> None:
    from agentmeter.cli import COMMANDS

    assert {"report", "serve"} <= set(COMMANDS)
    help_text = build_parser().format_help()
    assert "report" in help_text and "serve" in help_text


def test_report_table(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    for heading in ("by session:", "by model:", "by agent:", "by tool:", "total:"):
        assert heading in out
    assert "openai/gpt-x" in out and "search" in out and "p95 ms" in out


def test_report_json_equals_the_store(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--db", str(db), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    with UsageStore(db) as store:
        snap = store.snapshot()
    assert data["totals"] == snap.totals.model_dump(mode="json")
    assert data["by_model"] == {k: v.model_dump(mode="json") for k, v in snap.by_model.items()}
    assert set(data["by_tool"]) == set(snap.by_tool)
    assert data["events"] == 120


def test_report_csv(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--db", str(db), "--format", "csv", "--by", "model,tool"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    sections = {r["section"] for r in rows}
    assert sections == {"total", "model", "tool"}
    total = next(r for r in rows if r["section"] == "total")
    with UsageStore(db) as store:
        assert int(total["total_tokens"]) == store.totals().total_tokens


def test_report_since_until_and_env_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ranged.db"
    base = datetime(2025, 1, 1, tzinfo=UTC).timestamp()
    with SQLSink(path) as sink:
        for i in range(5):
            sink.submit(
                raw_event(
                    f"c{i}", base + 86400 * i, model="m1", input_tokens=100, session_id=f"s{i}"
                )
            )
        sink.submit(raw_event("now", time.time(), model="m1", input_tokens=1, session_id="now"))
    monkeypatch.setenv("AGENTMETER_DB", str(path))
    assert (
        main(
            [
                "report",
                "--format",
                "json",
                "--since",
                "2025-01-02",
                "--until",
                "2025-01-04T00:00:00Z",
            ]
        )
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert data["totals"]["input_tokens"] == 200 and set(data["by_session"]) == {"s1", "s2"}
    assert main(["report", "--format", "json", "--since", "1h"]) == 0
    assert set(json.loads(capsys.readouterr().out)["by_session"]) == {"now"}
    assert main(["report", "--since", "2025-01-04", "--until", "2025-01-02"]) == 2
    assert "--since must be before --until" in capsys.readouterr().err


def test_report_over_both_databases(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    t = priced_tracker()
    with SQLSink(db_url) as sink:
        t.add_sink(sink)
        workload(t, n=50, seed=2)
    assert main(["report", "--db", db_url, "--format", "json", "--limit", "2"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["totals"] == t.snapshot().totals.model_dump(mode="json")
    assert len(data["by_session"]) <= 2
    assert "by session" in render(db_url)


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
    "args",
    [
        ["report", "--since", "last tuesday"],
        ["report", "--until", "2025-13-45"],
        ["report", "--format", "xml"],
        ["report", "--by", "colour"],
        ["report", "--limit", "0"],
        ["report", "--since", "1000000000d"],
        ["merge", "x.json", "--indent", "-3"],
        ["report", "--unknown"],
        ["serve", "--port", "99999"],
        ["serve", "--port", "http"],
        ["nope"],
        [],
    ],
)
def test_malformed_arguments_exit_2_without_traceback(args: list[str]) -> None:
    proc = _cli(*args)
    assert proc.returncode == 2
    assert "error:" in proc.stderr and "Traceback" not in proc.stderr


def test_serve_unusable_database(tmp_path: Path) -> None:
    proc = _cli("serve", "--db", str(tmp_path / "missing.db"))
    assert proc.returncode == 2
    assert "agentmeter serve: error: database file not found" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_serve_runs_the_api(db: Path) -> None:
    httpx = pytest.importorskip("httpx")
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agentmeter.cli",
            "serve",
            "--db",
            str(db),
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "AGENTMETER_TOKEN": "tok"},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/api/v1/usage", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.1)
        assert r.status_code == 200 and r.json()["source"] == "database"
        r = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/usage/reset",
            headers={"Authorization": "Bearer tok"},
            timeout=5,
        )
        assert r.status_code == 200 and r.json()["deleted_events"] == 120
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _out, err = proc.communicate(timeout=10)
    assert "127.0.0.1" in err and "reset enabled" in err
