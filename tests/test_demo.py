from __future__ import annotations

import subprocess
import sys

from agentmeter import Tracker
from agentmeter.cli import main
from agentmeter.demo import run_demo


def test_demo_counts_exactly(capsys):
    t = run_demo(Tracker(), seed=1)
    out = capsys.readouterr().out
    assert "session s1" in out and "stopped by its budget" in out
    snap = t.snapshot()
    # s3 is capped at 4 LLM calls by its budget
    assert snap.by_session["s3"].llm_calls == 4
    assert snap.by_session_tool["s2"]["calculator"].failed == 2
    assert snap.totals.llm_calls == sum(u.llm_calls for u in snap.by_session.values())


def test_cli_demo_entry_point():
    assert main(["demo", "--seed", "3"]) == 0
    proc = subprocess.run([sys.executable, "-m", "agentmeter.cli", "demo"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0 and "total:" in proc.stdout
