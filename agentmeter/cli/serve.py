"""``agentmeter serve``: the REST API over a stored database."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from .report import add_db_argument, fail

__all__ = ["register", "run"]


def _port(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 0-65535, got {text!r}")
    return n


def register(sub: Any) -> None:
    """Add the ``serve`` sub-command."""
    p: argparse.ArgumentParser = sub.add_parser(
        "serve",
        help="serve the REST API (/api/v1/usage) and the dashboard over a stored database",
        description="Serve usage from a database written by agentmeter's SQL sink: the REST "
        "API under /api/v1/usage, the dashboard at /, the API docs at /docs.",
    )
    add_db_argument(p)
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8000, help="port (default: 8000)")
    p.add_argument(
        "--token",
        default=None,
        help="lock every endpoint but /api/v1/health with this bearer token and enable "
        "POST /api/v1/usage/reset (default: $AGENTMETER_TOKEN; without one the API is "
        "open for reading and reset is disabled)",
    )
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Start uvicorn; exit status 2 with one line on stderr for an unusable database."""
    try:
        from ..server import create_app, serve
        from ..storage.engine import DatabaseError, redact, resolve_url
    except ImportError as exc:
        return fail("serve", str(exc))
    token = args.token if args.token is not None else os.environ.get("AGENTMETER_TOKEN") or None
    db = args.db if args.db is not None else os.environ.get("AGENTMETER_DB") or None
    try:
        url = resolve_url(db)
        app = create_app(db_url=url, token=token)
    except ImportError as exc:
        return fail("serve", str(exc))
    except (DatabaseError, ValueError) as exc:
        return fail("serve", str(exc))
    except Exception as exc:
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        return fail("serve", f"cannot open the database: {detail[0] if detail else exc!r}")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"agentmeter serve: warning: listening on {args.host}, not only on this machine"
            + ("" if token else "; without --token anyone who reaches it reads all usage"),
            file=sys.stderr,
        )
    dashboard = any(getattr(r, "path", None) == "/" for r in app.routes)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(
        f"agentmeter serve: {redact(url)} on http://{shown}:{args.port}/api/v1/usage "
        + (f"(dashboard at http://{shown}:{args.port}/; " if dashboard else "(")
        + "docs at /docs; "
        + ("locked by token, reset enabled)" if token else "open, reset disabled)"),
        file=sys.stderr,
        flush=True,
    )
    serve(app, args.host, args.port, log_level=args.log_level)
    return 0
