"""``agentmeter demo``: an offline agent run that writes the embedded database and reports."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def register(sub: Any) -> None:
    """Add the ``demo`` sub-command."""
    p: argparse.ArgumentParser = sub.add_parser(
        "demo",
        help="run an offline agent demo (plain Python, LangChain, LlamaIndex) and report it",
    )
    p.add_argument("--seed", type=int, default=7, help="random seed of the fake models")
    p.add_argument(
        "--db",
        default=os.environ.get("AGENTMETER_DB", "agentmeter.db"),
        help="database to write (path or SQLAlchemy URL; default ./agentmeter.db)",
    )
    p.add_argument("--no-db", action="store_true", help="keep everything in memory")
    p.add_argument(
        "--plain", action="store_true", help="only the plain-Python part (no frameworks)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo."""
    from ..demo import run_demo

    db = None if args.no_db else args.db
    if db is not None:
        from ..storage.engine import DatabaseError, check_writable

        try:
            check_writable(db)
        except (DatabaseError, ValueError) as exc:
            print(f"agentmeter demo: {exc} (choose another --db, or --no-db)", file=sys.stderr)
            return 2
    run_demo(seed=args.seed, db=db, frameworks=not args.plain)
    return 0
