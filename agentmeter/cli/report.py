"""``agentmeter report``: usage tables of a stored database (table, JSON or CSV)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime
from typing import Any

from .._timeparse import parse_time as _parse_time

__all__ = ["EXAMPLES", "parse_time", "register", "run"]

# Each line runs as written where `agentmeter demo` wrote ./agentmeter.db (tests run them).
EXAMPLES = """\
examples (after `agentmeter demo`, which writes ./agentmeter.db):
  agentmeter report
  agentmeter report --by customer --since 7d
  agentmeter report --by customer,model --since 2025-01-01
  agentmeter report --customer acme --by session --by tool
  agentmeter report --by day --tag env=demo --format csv
  agentmeter report --by hour --since 24h --format json
  agentmeter report --by tag:env --session s1
  agentmeter report --by model --limit 5 --db agentmeter.db
"""


def parse_time(text: str) -> datetime:
    """``--since`` / ``--until``: ISO 8601 (naive = UTC) or a duration ago (``7d``)."""
    try:
        return _parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _Sections(argparse.Action):
    """``--by`` is repeatable and takes comma lists; the order asked is kept."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        from ..storage.report import parse_section

        current = list(getattr(namespace, self.dest, None) or [])
        parts = [p for p in str(values).split(",") if p.strip()]
        if not parts:
            parser.error(f"argument {option_string}: give at least one section")
        for part in parts:
            try:
                section = parse_section(part)
            except ValueError as exc:
                parser.error(f"argument {option_string}: {exc}")
            if section not in current:
                current.append(section)
        setattr(namespace, self.dest, current)


class _Tags(argparse.Action):
    """``--tag KEY=VALUE``, repeatable; every pair must match."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        tags = dict(getattr(namespace, self.dest, None) or {})
        key, sep, value = str(values).partition("=")
        if not sep or not key:
            parser.error(f"argument {option_string}: expected KEY=VALUE, got {values!r}")
        if key in tags and tags[key] != value:
            parser.error(f"argument {option_string}: tag {key!r} given twice")
        tags[key] = value
        setattr(namespace, self.dest, tags)


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return n


def _nonempty(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    return text


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
        help="print usage by customer, session, model, agent, tool, day ... from a database",
        description="Usage tables of a database written by agentmeter's SQL sink.\n"
        "Each breakdown's rows add up to the totals: a '(none)' row holds the usage\n"
        "without that key (e.g. outside any tool). Table, CSV and JSON carry the same\n"
        "figures under the names documented in agentmeter.storage.report.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_db_argument(p)
    p.add_argument(
        "--format", choices=("table", "json", "csv"), default="table", help="output format"
    )
    p.add_argument(
        "--by",
        action=_Sections,
        default=None,
        metavar="SECTION",
        help="breakdown: customer, session, agent, model, tool, day, hour or tag:KEY; "
        "repeat it or give a comma list (default: session,model,agent,tool)",
    )
    p.add_argument("--customer", type=_nonempty, help="only this customer's usage")
    p.add_argument("--session", type=_nonempty, help="only this session's usage")
    p.add_argument(
        "--tag",
        action=_Tags,
        default=None,
        metavar="KEY=VALUE",
        help="only usage carrying this tag (repeatable: all must match)",
    )
    p.add_argument(
        "--since", type=parse_time, help="from this time: ISO 8601 (2025-01-31) or ago (7d, 24h)"
    )
    p.add_argument(
        "--until", type=parse_time, help="before this time: ISO 8601 or ago (1h); exclusive"
    )
    p.add_argument(
        "--limit",
        type=_positive,
        help="at most N rows per breakdown (the rest in one row; default: every key, "
        "but 20 sessions)",
    )
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
        from ..storage.report import DEFAULT_SECTIONS, render
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
            customer=args.customer,
            session=args.session,
            tags=args.tag,
            sections=args.by or DEFAULT_SECTIONS,
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
