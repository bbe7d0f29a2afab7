"""The FastAPI application: usage of a live tracker or a stored database over HTTP."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..models import SessionUsage
from ..tracker import Tracker
from .backends import Backend, DatabaseBackend, TimeRangeUnsupported, TrackerBackend
from .schemas import (
    AgentUsage,
    ErrorResponse,
    ModelUsage,
    ResetResponse,
    SessionList,
    ToolsResponse,
    UsageOverview,
)

__all__ = ["API_PREFIX", "create_app"]

API_PREFIX = "/api/v1/usage"
logger = logging.getLogger("agentmeter.server")
T = TypeVar("T")

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Time range on a live tracker"},
    404: {"model": ErrorResponse, "description": "Unknown id"},
    503: {"model": ErrorResponse, "description": "Database unavailable"},
}

Since = Annotated[
    datetime | None,
    Query(description="Only usage at or after this time (ISO 8601; naive = UTC)"),
]
Until = Annotated[
    datetime | None, Query(description="Only usage before this time (ISO 8601; naive = UTC)")
]

# Module level: the route annotations are strings (PEP 563) resolved in this namespace.
_BEARER = HTTPBearer(auto_error=False, description="The token given to create_app / --token")


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _range(
    since: datetime | None, until: datetime | None
) -> tuple[datetime | None, datetime | None]:
    since, until = _utc(since), _utc(until)
    if since is not None and until is not None and since >= until:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "since must be before until")
    return since, until


def create_app(
    tracker: Tracker | None = None,
    db_url: str | os.PathLike[str] | None = None,
    token: str | None = None,
) -> FastAPI:
    """The REST API over a live tracker or a stored database.

    Args:
        tracker: Serve this tracker's live counters (budgets included, no time ranges).
        db_url: Serve a database written by :class:`~agentmeter.storage.SQLSink`
            (a path or SQLAlchemy URL); time ranges (``since``/``until``) work there.
            With neither argument, the process-wide default tracker is served.
        token: Enables ``POST /api/v1/usage/reset`` for requests carrying
            ``Authorization: Bearer <token>``; without a token the endpoint answers 403.

    Raises:
        ValueError: both ``tracker`` and ``db_url`` given, or an empty token.
        agentmeter.storage.DatabaseError: ``db_url`` is missing, corrupt or not agentmeter's.
    """
    if tracker is not None and db_url is not None:
        raise ValueError("give either tracker or db_url, not both")
    if token is not None and not token:
        raise ValueError("token must be a non-empty string (or None to disable reset)")
    if tracker is not None and not isinstance(tracker, Tracker):
        raise TypeError(f"tracker must be an agentmeter.Tracker, got {type(tracker).__name__}")
    backend: Backend
    if db_url is not None:
        backend = DatabaseBackend(os.fspath(db_url))
    else:
        if tracker is None:
            from .. import get_tracker

            tracker = get_tracker()
        backend = TrackerBackend(tracker)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        backend.close()

    app = FastAPI(
        title="agentmeter",
        summary="Usage of AI agents: tokens, cost and tool calls",
        version="1",
        lifespan=lifespan,
    )
    app.state.backend = backend

    def call(fn: Callable[..., T], *args: Any) -> T:
        """Run a backend read, mapping its errors to HTTP statuses."""
        try:
            return fn(*args)
        except KeyError as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc.args[0])) from None
        except TimeRangeUnsupported as exc:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        if backend.source == "database" and _is_db_error(exc):
            logger.warning("agentmeter: database error on %s: %r", request.url.path, exc)
            return JSONResponse(
                {"detail": f"database unavailable: {type(exc).__name__}"}, status_code=503
            )
        logger.error("agentmeter: internal error on %s", request.url.path, exc_info=exc)
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)

    @app.get(API_PREFIX, response_model=UsageOverview, responses=_ERRORS, tags=["usage"])
    def overview(since: Since = None, until: Until = None) -> UsageOverview:
        """Totals, and usage per agent, model, provider and session."""
        return call(backend.overview, *_range(since, until))

    @app.get(
        f"{API_PREFIX}/sessions", response_model=SessionList, responses=_ERRORS, tags=["usage"]
    )
    def sessions(
        since: Since = None,
        until: Until = None,
        limit: Annotated[int, Query(ge=1, le=1000, description="Page size")] = 100,
        offset: Annotated[int, Query(ge=0, le=2**31, description="Sessions to skip")] = 0,
    ) -> SessionList:
        """Sessions, largest total tokens first, one page at a time."""
        return call(backend.sessions, *_range(since, until), limit, offset)

    @app.get(
        f"{API_PREFIX}/sessions/{{session_id}}",
        response_model=SessionUsage,
        responses=_ERRORS,
        tags=["usage"],
    )
    def session(session_id: str, since: Since = None, until: Until = None) -> SessionUsage:
        """One session: usage, per-model and per-agent breakdowns, tool stats and budget."""
        return call(backend.session, session_id, *_range(since, until))

    @app.get(
        f"{API_PREFIX}/agents/{{agent_id}}",
        response_model=AgentUsage,
        responses=_ERRORS,
        tags=["usage"],
    )
    def agent(agent_id: str, since: Since = None, until: Until = None) -> AgentUsage:
        """One agent's usage, per model and per session."""
        return call(backend.agent, agent_id, *_range(since, until))

    @app.get(
        f"{API_PREFIX}/models/{{model:path}}",
        response_model=ModelUsage,
        responses=_ERRORS,
        tags=["usage"],
    )
    def model(model: str, since: Since = None, until: Until = None) -> ModelUsage:
        """One model's usage (names may contain ``/``, e.g. ``openai/gpt-4o``)."""
        return call(backend.model, model, *_range(since, until))

    @app.get(f"{API_PREFIX}/tools", response_model=ToolsResponse, responses=_ERRORS, tags=["usage"])
    def tools(
        session_id: Annotated[str | None, Query(min_length=1, description="One session")] = None,
        since: Since = None,
        until: Until = None,
    ) -> ToolsResponse:
        """Tool statistics (calls, failures, p50/p95, tokens and cost inside each tool)."""
        return call(backend.tools, session_id, *_range(since, until))

    @app.post(
        f"{API_PREFIX}/reset",
        response_model=ResetResponse,
        responses={
            401: {"model": ErrorResponse, "description": "Missing or wrong bearer token"},
            403: {"model": ErrorResponse, "description": "Reset disabled (no token configured)"},
        },
        tags=["admin"],
    )
    def reset(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
    ) -> ResetResponse:
        """Clear the tracker's counters, or delete the stored events. Needs the bearer token."""
        if token is None:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, "reset is disabled: start the server with a token"
            )
        given = credentials.credentials if credentials is not None else ""
        if not secrets.compare_digest(given.encode(), token.encode()):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing or wrong bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return backend.reset()

    return app


def _is_db_error(exc: BaseException) -> bool:
    try:
        from sqlalchemy.exc import SQLAlchemyError
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, SQLAlchemyError)
