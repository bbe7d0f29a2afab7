"""``agentmeter merge``: combine snapshot JSON files of several processes, exactly.

Each input is a file written with ``snapshot.model_dump_json()`` (``-`` reads one
from standard input). The output is one snapshot JSON whose totals and breakdowns
(model, provider, session, agent, tool and category, tool call counts and duration
histograms included) equal what a single process doing all the work would report.
A file that cannot be read or is not a snapshot is an error (exit status 2), and
nothing is written then.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import Any

EXIT_USAGE = 2


def _indent(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 16:
        raise argparse.ArgumentTypeError("--indent must be between 0 and 16")
    return value


def register(sub: Any) -> None:
    """Add the ``merge`` sub-command."""
    p: argparse.ArgumentParser = sub.add_parser(
        "merge",
        help="merge snapshot JSON files of several processes into one",
        description="Merge snapshot JSON files (snapshot.model_dump_json()) exactly.",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="snapshot JSON files ('-' = stdin)")
    p.add_argument(
        "-o", "--output", metavar="OUT", help="write the merged snapshot here (default: stdout)"
    )
    p.add_argument("--indent", type=_indent, default=None, help="indent the JSON output")
    p.set_defaults(func=run)


class MergeError(Exception):
    """A user-facing problem with an input or the output (no traceback shown)."""


def _read(path: str) -> str:
    try:
        if path == "-":
            return sys.stdin.read()
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise MergeError(f"cannot read {path}: {reason}") from exc


def merge_files(paths: list[str]) -> Any:
    """Merge the snapshots in ``paths`` and return the merged :class:`~agentmeter.Snapshot`.

    Raises:
        MergeError: naming the file that cannot be read or is not a snapshot.
    """
    from pydantic import ValidationError

    from ..models import Snapshot
    from ..tracker import Tracker

    tracker = Tracker()
    for path in paths:
        text = _read(path)
        try:
            snapshot = Snapshot.model_validate_json(text)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "document"
            raise MergeError(
                f"{path} is not an agentmeter snapshot (written with "
                f"snapshot.model_dump_json()): {where}: {first.get('msg', exc)}"
                + (f" (and {exc.error_count() - 1} more errors)" if exc.error_count() > 1 else "")
            ) from exc
        tracker.merge(snapshot)
    return tracker.snapshot()


def _write(path: str, text: str) -> None:
    """Write atomically: a reader never sees half a file, a failure leaves none."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".agentmeter-merge-", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as exc:
        raise MergeError(f"cannot write {path}: {exc.strerror or exc}") from exc


def run(args: argparse.Namespace) -> int:
    """Merge the files; print errors as one line on stderr (exit status 2)."""
    try:
        merged = merge_files(list(args.files))
        text = merged.model_dump_json(indent=args.indent)
        if args.output:
            _write(args.output, text + "\n")
        else:
            sys.stdout.write(text + "\n")
    except MergeError as exc:
        print(f"agentmeter merge: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return 0
