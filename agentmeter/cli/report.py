"""``agentmeter report``: usage tables of a stored database (table, JSON or CSV)."""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["parse_time", "register", "run"]

_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(text: str) -> datetime:
    """An ISO-8601 date/time (naive = UTC), or a duration ago such as ``90m``, ``24h``, ``7d``."""
    value = text.strip()
    m = _RELATIVE.match(value)
    if m:
        try:
            return datetime.now(UTC) - timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
        except OverflowError:
            raise argparse.ArgumentTypeError(f"{text!r} is too far back") from None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time: use ISO 8601 (2025-01-31 or 2025-01-31T12:00:00Z) "
            "or a duration ago (30m, 24h, 7d)"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _sections(text: str) -> list[str]:
    from ..storage.report import SECTIONS

    parts = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in parts if p not in SECTIONS]
    if bad or not parts:
        raise argparse.ArgumentTypeError(
            f"choose sections from {','.join(SECTIONS)} (comma-separated), got {text!r}"
        )
    return parts


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return n


def add_db_argument(p: argparse.ArgumentParser) -> None:
    """``--db PATH_OR_URL`` (default ``$AGENTMETER_DB`` or ``./agentmeter.db``)."""
    p.add_argument(
        "--db",
        metavar="PATH_OR_URL",
        default=None,
        help="SQLite file or SQLAlchemy URL (default: $AGENTMETER_DB or ./agentmeter.db)",
    )


def register(sub: Any) -> None:
    """Add the ``report`` sub-command."""
    p: argparse.ArgumentParser = sub.add_parser(
        "report",
        help="print usage by session, model, agent and tool from a stored database",
        description="Usage tables of a database written by agentmeter's SQL sink.",
    )
    add_db_argument(p)
    p.add_argument(
        "--format", choices=("table", "json", "csv"), default="table", help="output format"
    )
    p.add_argument("--since", type=parse_time, help="from this time (ISO 8601, or 24h / 7d ago)")
    p.add_argument("--until", type=parse_time, help="before this time (ISO 8601, or 1h ago)")
    p.add_argument(
        "--by",
        type=_sections,
        default=None,
        metavar="SECTIONS",
        help="breakdowns to show, comma-separated (default: session,model,agent,tool)",
    )
    p.add_argument("--limit", type=_positive, help="at most N rows per breakdown")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress messages on stderr")
    p.set_defaults(func=run)


class _Progress:
    """Step messages on stderr, shown only once the work takes a noticeable time."""

    def __init__(self, quiet: bool, after: float = 0.5) -> None:
        self.quiet = quiet
        self.after = after
        self.start = time.monotonic()

    def __call__(self, message: str) -> None:
        if not self.quiet and time.monotonic() - self.start >= self.after:
            print(f"agentmeter report: {message}...", file=sys.stderr, flush=True)


def fail(command: str, message: str) -> int:
    """One clear line on stderr, exit status 2."""
    print(f"agentmeter {command}: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """Print the report; exit status 2 with one line on stderr when the database is unusable."""
    try:
        from ..storage.engine import DatabaseError
        from ..storage.report import SECTIONS, render
    except ImportError as exc:
        return fail("report", str(exc))
    if args.since and args.until and args.since >= args.until:
        return fail("report", "--since must be before --until")
    db = args.db if args.db is not None else os.environ.get("AGENTMETER_DB") or None
    try:
        text = render(
            db,
            args.format,
            since=args.since,
            until=args.until,
            sections=args.by or SECTIONS,
            limit=args.limit,
            progress=_Progress(args.quiet),
        )
    except DatabaseError as exc:
        return fail("report", str(exc))
    except ValueError as exc:
        return fail("report", str(exc))
    except Exception as exc:  # e.g. a database server that is down: one line, no traceback
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        return fail("report", f"cannot read the database: {detail[0] if detail else exc!r}")
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:  # `agentmeter report | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 0
