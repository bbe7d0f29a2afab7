from __future__ import annotations

import subprocess
import sys

from agentmeter import Tracker
from agentmeter.cli import main
from agentmeter.demo import run_demo
from agentmeter.storage import UsageStore


def test_plain_demo_counts_exactly(capsys):
    t = run_demo(Tracker(), seed=1, frameworks=False)
    out = capsys.readouterr().out
    assert "session s1" in out and "stopped by its budget" in out
    snap = t.snapshot()
    assert snap.by_session["s3"].llm_calls == 4  # s3 is capped by its budget
    assert snap.by_session_tool["s2"]["calculator"].failed == 2
    assert snap.totals.llm_calls == sum(u.llm_calls for u in snap.by_session.values())


def test_full_demo_writes_the_database_and_reports_it(tmp_path, capsys):
    db = tmp_path / "demo.db"
    t = run_demo(Tracker(), seed=2, db=str(db))
    out = capsys.readouterr().out
    snap = t.snapshot()
    # both frameworks ran, through real objects
    assert snap.by_session["lc-thread-1"].tool_calls == 2
    assert snap.by_session_tool["lc-thread-2"]["flaky_database"].failed == 1
    assert snap.by_session["li-session"].embedding_calls >= 1
    assert snap.by_model["MockLLM"].cost_usd is not None  # priced by the demo's override
    # what was stored equals what was counted, and the report shows it
    stored = UsageStore(str(db)).snapshot()
    assert stored.totals.total_tokens == snap.totals.total_tokens
    assert stored.totals.cost_micros == snap.totals.cost_micros
    assert "by tool:" in out and "flaky_database" in out
    # three customers are billed, on every path (plain Python, LangChain, LlamaIndex)
    assert set(stored.by_customer) == {"acme", "globex", "initech"}
    assert stored.by_customer == snap.by_customer
    assert "by customer:" in out and "initech" in out
    # it ends by saying how to open the dashboard
    assert f"agentmeter serve --db {db}" in out and "http://127.0.0.1:8000/" in out


def test_cli_demo_entry_point(tmp_path):
    assert main(["demo", "--seed", "3", "--plain", "--no-db"]) == 0
    proc = subprocess.run(
        [sys.executable, "-m", "agentmeter.cli", "demo", "--db", str(tmp_path / "x.db")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "total:" in proc.stdout and "by session:" in proc.stdout


def test_demo_refuses_an_unusable_database_cleanly(tmp_path, capsys):
    bad = tmp_path / "not-a-db.db"
    bad.write_text("hello, I am a text file" * 100)
    for target in (str(bad), str(tmp_path), str(tmp_path / "missing" / "x.db")):
        assert main(["demo", "--plain", "--db", target]) == 2
        err = capsys.readouterr().err
        assert err.startswith("agentmeter demo: ") and "Traceback" not in err


def test_demo_report_shows_this_run_only(tmp_path, capsys):
    db = str(tmp_path / "twice.db")
    run_demo(Tracker(), seed=4, db=db, frameworks=False)
    first = capsys.readouterr().out.split("== this run")[1]
    run_demo(Tracker(), seed=4, db=db, frameworks=False)
    second = capsys.readouterr().out.split("== this run")[1]
    total = [line for line in first.splitlines() if line.startswith("total:")]
    assert total and total == [line for line in second.splitlines() if line.startswith("total:")]
