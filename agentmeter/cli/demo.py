"""``agentmeter demo``: an offline agent run that ends with a report."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    """Add the ``demo`` sub-command."""
    p: argparse.ArgumentParser = sub.add_parser(
        "demo", help="run an offline agent demo and print its report"
    )
    p.add_argument("--seed", type=int, default=7, help="random seed of the fake models")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo."""
    from ..demo import run_demo

    run_demo(seed=args.seed)
    return 0
