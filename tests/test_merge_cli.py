"""``agentmeter merge``: snapshots of 4 processes merged equal one process doing it all."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import agentmeter
from agentmeter.cli import main

# Durations and latencies are multiples of 1/4 ms so float sums are exact in any order.
MODELS = (("gpt-4o-mini", "openai"), ("claude-3-5-haiku", "anthropic"), ("local-llm", None))


def workload(tracker: agentmeter.Tracker, part: int) -> None:
    """Deterministic work of one process (``part`` in 0..3)."""
    tracker.set_price("local-llm", input_per_mtok=0.5, output_per_mtok=1.5)

    def search(i: int) -> None:  # a tool with an LLM call inside (fixed, not timed, duration)
        tracker.record_llm(
            "gpt-4o-mini", 50 + i, 5, provider="openai", latency_ms=10.25, tool="search"
        )
        tracker.record_tool_call("search", ok=True, duration_ms=3.75 + i, category="search")

    for i in range(40):
        model, provider = MODELS[(i + part) % 3]
        with tracker.meter("turn", session_id=f"s{(i + part) % 5}",
                           agent_id=("planner", "coder", "critic")[i % 3],
                           customer_id=("acme", "globex/eu", None)[(i + part) % 3],
                           tags={"team": "search"} if i % 2 else None):  # fmt: skip
            tracker.record_llm(
                model, 100 * (part + 1) + i, 10 + i, cache_read_tokens=i % 7,
                cache_write_tokens=i % 3, reasoning_tokens=i % 5, provider=provider,
                latency_ms=50.0 + 0.25 * i,
            )  # fmt: skip
            if i % 4 == part:
                search(i)
            tracker.record_tool_call(
                ("db", "web", "calc")[i % 3], ok=i % 6 != 0, duration_ms=1.5 + 0.25 * i + part,
                category="io" if i % 3 < 2 else "",
            )  # fmt: skip
            if i % 10 == 0:
                tracker.record_embedding("text-embedding-3-small", 300 + i, provider="openai")
                tracker.record_cache_hit(tokens_saved=40 + part)
                tracker.record_cache_miss()


def _process(args: tuple[int, str]) -> str:
    part, path = args
    tracker = agentmeter.Tracker()
    workload(tracker, part)
    Path(path).write_text(tracker.snapshot().model_dump_json())
    return path


def comparable(snapshot: Any) -> dict[str, Any]:
    """The snapshot without what legitimately differs (time, the last few call ids)."""
    data = snapshot.model_dump(mode="json", exclude={"taken_at", "cells", "session_tool_stats"})
    for group in ("by_tool", "by_category"):
        for stats in data[group].values():
            stats.pop("recent_call_ids")
    for group in ("by_session_tool", "by_customer_tool"):
        for tools in data[group].values():
            for stats in tools.values():
                stats.pop("recent_call_ids")
    return data


@pytest.fixture(scope="module")
def process_snapshots(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    out = tmp_path_factory.mktemp("snapshots")
    ctx = multiprocessing.get_context("spawn")
    jobs = [(part, str(out / f"p{part}.json")) for part in range(4)]
    with ctx.Pool(4) as pool:
        return list(pool.map_async(_process, jobs).get(timeout=120))


@pytest.fixture(scope="module")
def single() -> Any:
    tracker = agentmeter.Tracker()
    for part in range(4):
        workload(tracker, part)
    return tracker.snapshot()


@pytest.mark.timeout(180)
def test_merge_of_four_processes_equals_one_process(
    process_snapshots: list[str], single: Any, tmp_path: Path
) -> None:
    out = tmp_path / "merged.json"
    assert main(["merge", *process_snapshots, "-o", str(out)]) == 0
    merged = agentmeter.Snapshot.model_validate_json(out.read_text())
    assert merged.totals == single.totals
    for view in ("by_model", "by_provider", "by_session", "by_agent", "by_customer"):
        assert getattr(merged, view) == getattr(single, view), view
    assert set(merged.by_customer) == {"acme", "globex/eu"}
    for customer, tools in single.by_customer_tool.items():
        assert set(merged.by_customer_tool[customer]) == set(tools)
        for name, stats in tools.items():
            got = merged.by_customer_tool[customer][name]
            assert (got.calls, got.failed, got.duration_histogram) == (
                stats.calls, stats.failed, stats.duration_histogram,
            )  # fmt: skip
    assert comparable(merged) == comparable(single)
    # Tool stats in full: counts, ok/failed, durations, histograms, tokens inside tools.
    for name, stats in single.by_tool.items():
        got = merged.by_tool[name]
        assert got.duration_histogram == stats.duration_histogram
        assert (got.calls, got.ok, got.failed, got.min_duration_ms, got.max_duration_ms) == (
            stats.calls, stats.ok, stats.failed, stats.min_duration_ms, stats.max_duration_ms,
        )  # fmt: skip
        assert got.p95_ms == stats.p95_ms
    assert merged.totals.llm_calls == 4 * 40 + 40  # sanity: work really happened
    assert merged.by_tool["search"].llm_calls == 40


def test_merge_to_stdout_and_via_module(process_snapshots: list[str], single: Any) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agentmeter.cli", "merge", *process_snapshots],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    merged = agentmeter.Snapshot.model_validate_json(proc.stdout)
    assert comparable(merged) == comparable(single)


def test_merge_one_file_roundtrips(process_snapshots: list[str], tmp_path: Path) -> None:
    out = tmp_path / "one.json"
    assert main(["merge", process_snapshots[0], "-o", str(out), "--indent", "2"]) == 0
    original = agentmeter.Snapshot.model_validate_json(Path(process_snapshots[0]).read_text())
    again = agentmeter.Snapshot.model_validate_json(out.read_text())
    assert again.cells and comparable(again) == comparable(original)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "is not an agentmeter snapshot"),
        ("[]", "is not an agentmeter snapshot"),
        ('{"totals": {}}', "taken_at"),
        ("", "is not an agentmeter snapshot"),
    ],
)
def test_invalid_file_is_exit_2_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, expected: str,
    process_snapshots: list[str],
) -> None:  # fmt: skip
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    out = tmp_path / "out.json"
    assert main(["merge", process_snapshots[0], str(bad), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "agentmeter merge: error:" in err and str(bad) in err and expected in err
    assert "Traceback" not in err
    assert not out.exists()  # nothing written on error


def test_unreadable_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.json"
    assert main(["merge", str(missing)]) == 2
    assert f"cannot read {missing}" in capsys.readouterr().err
    assert main(["merge", str(tmp_path)]) == 2  # a directory
    assert "cannot read" in capsys.readouterr().err
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    assert main(["merge", str(binary)]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_unwritable_output(process_snapshots: list[str], tmp_path: Path, capsys: Any) -> None:
    target = tmp_path / "no-such-dir" / "out.json"
    assert main(["merge", process_snapshots[0], "-o", str(target)]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_cli_exit_status_in_a_subprocess(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agentmeter.cli", "merge", str(tmp_path / "nope.json")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "cannot read" in proc.stderr


def test_merge_is_listed_in_help() -> None:
    from agentmeter.cli import COMMANDS, build_parser

    assert "merge" in COMMANDS
    assert "merge" in build_parser().format_help()
    assert json.loads(agentmeter.Tracker().snapshot().model_dump_json())["totals"] is not None
