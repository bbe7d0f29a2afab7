"""The REST API (``pip install 'agentmeter-core[server]'``).

::

    from agentmeter.server import create_app, serve

    app = create_app(db_url="agentmeter.db", token="s3cret")   # or create_app(tracker=t)
    serve(app)                                                  # uvicorn on 127.0.0.1:8000

``GET /api/v1/health`` (open), and under ``/api/v1/usage``: the overview,
``/customers``, ``/sessions``, ``/agents``, ``/models`` (paged listings) and
``/customers/{id}``, ``/sessions/{id}``, ``/agents/{id}``, ``/models/{name}``
(ids may contain ``/``), ``/tools``, ``/timeseries?bucket=hour|day&by=...``;
every read takes ``customer``, ``session``, ``agent``, ``model``,
``tag=KEY=VALUE`` and ``since`` / ``until`` (ISO 8601 or ``7d``). With a token,
every endpoint but health needs ``Authorization: Bearer <token>`` (or the
``agentmeter_token`` cookie), and ``POST /api/v1/usage/reset`` is enabled (over a
database it deletes only what it is told: a time range, a session or a
customer). Errors are ``{"detail": "..."}``. The OpenAPI schema is at
``/openapi.json``, the docs at ``/docs``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

    from ..tracker import Tracker

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "create_app", "log_config", "serve"]

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
        token: Lock every endpoint but ``GET /api/v1/health`` with this token (and
            enable ``POST /api/v1/usage/reset``).
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
    """Run ``app`` with uvicorn until interrupted (binds to 127.0.0.1 by default).

    uvicorn's logs pass through :class:`~agentmeter.server.auth.RedactTokenFilter`,
    so a ``?token=...`` in a request line is logged as ``token=***``.
    """
    uvicorn = _require("uvicorn")
    uvicorn.run(app, host=host, port=port, log_level=log_level, log_config=log_config())


def log_config() -> dict[str, Any]:
    """uvicorn's default logging configuration, with the token redacted from every handler."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["agentmeter_redact_token"] = {
        "()": "agentmeter.server.auth.RedactTokenFilter"
    }
    for handler in config.get("handlers", {}).values():
        handler.setdefault("filters", []).append("agentmeter_redact_token")
    return config
