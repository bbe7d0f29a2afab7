"""The REST API (``pip install 'agentmeter-core[server]'``).

::

    from agentmeter.server import create_app, serve

    app = create_app(db_url="agentmeter.db", token="s3cret")   # or create_app(tracker=t)
    serve(app)                                                  # uvicorn on 127.0.0.1:8000

Endpoints (all ``GET`` take ``since`` / ``until`` ISO-8601 times when serving a
database): ``/api/v1/usage``, ``/api/v1/usage/sessions``,
``/api/v1/usage/sessions/{id}``, ``/api/v1/usage/agents/{id}``,
``/api/v1/usage/models/{model}`` (``/`` allowed in the name),
``/api/v1/usage/tools``; ``POST /api/v1/usage/reset`` with
``Authorization: Bearer <token>`` (403 when no token is configured, 401 for a
wrong one). The OpenAPI schema is at ``/openapi.json``, the docs at ``/docs``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

    from ..tracker import Tracker

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "create_app", "serve"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
_INSTALL = "pip install 'agentmeter-core[server]'"


def _require(module: str) -> Any:
    from importlib import import_module

    try:
        return import_module(module)
    except ImportError as exc:
        raise ImportError(f"agentmeter's REST API needs {module}: {_INSTALL}") from exc


def create_app(
    tracker: Tracker | None = None,
    db_url: str | os.PathLike[str] | None = None,
    token: str | None = None,
) -> FastAPI:
    """The FastAPI app over a live tracker or a stored database (see :mod:`.app`).

    Args:
        tracker: Serve this tracker's live counters (default: the process-wide tracker).
        db_url: Serve a stored database instead (path or SQLAlchemy URL).
        token: Bearer token that enables ``POST /api/v1/usage/reset``.
    """
    _require("fastapi")
    from .app import create_app as _create

    return _create(tracker=tracker, db_url=db_url, token=token)


def serve(
    app: FastAPI,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    log_level: str = "info",
) -> None:
    """Run ``app`` with uvicorn until interrupted (binds to 127.0.0.1 by default)."""
    uvicorn = _require("uvicorn")
    uvicorn.run(app, host=host, port=port, log_level=log_level)
