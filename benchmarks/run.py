"""Run every benchmark module and print one table: ``python benchmarks/run.py [--quick]``.

Each ``bench_*.py`` module exposes ``rows(quick) -> list[dict]``; a module whose
optional dependencies are missing is reported as skipped.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _harness import table

MODULES = [
    "bench_core",
    "bench_langchain",
    "bench_llamaindex",
    "bench_pydantic_ai",
    "bench_openai_agents",
    "bench_storage",
    "bench_store_reads",
    "bench_dashboard",
    "bench_scaleout",
    "bench_budgets",
]


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    only = [a for a in argv if not a.startswith("-")]
    rows: list[dict[str, str]] = []
    for name in MODULES:
        if only and name not in only:
            continue
        if not (Path(__file__).parent / f"{name}.py").exists():
            continue
        try:
            mod = importlib.import_module(name)
            rows += mod.rows(quick=quick)
        except ImportError as exc:
            rows.append(
                {
                    "operation": name,
                    "measured": f"skipped: {exc}",
                    "anchor": "-",
                    "target": "-",
                    "verdict": "skipped",
                }
            )
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
