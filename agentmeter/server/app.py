"""The FastAPI application: usage of a live tracker or a stored database over HTTP.

Every ``GET`` under ``/api/v1/usage`` takes the same filters -- ``customer``,
``session``, ``agent``, ``model``, ``tag=KEY=VALUE`` (repeatable, all must match),
``since`` / ``until`` (ISO 8601 or a duration ago such as ``7d``: the rule of
``agentmeter report --since``). With a token, every endpoint but
``GET /api/v1/health`` needs it (:mod:`.auth`). Errors are JSON
``{"detail": "<one message>"}``: 400 (a read the backend cannot answer, a reset
that names nothing), 401, 403 (reset without a configured token), 404, 405, 422
(a malformed parameter), 503 (database unavailable).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from fastapi import Body, Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .._timeparse import TIME_FORMATS, parse_time
from ..errors import NotFoundError
from ..models import CustomerUsage, SessionUsage
from ..tracker import Tracker
from .auth import BEARER, COOKIE, require_token
from .backends import Backend, DatabaseBackend, Read, TrackerBackend, Unsupported
from .schemas import (
    CORE_FIELD_DOCS,
    AgentList,
    AgentUsage,
    CustomerList,
    ErrorResponse,
    Health,
    ModelList,
    ModelUsage,
    ResetRequest,
    ResetResponse,
    SessionList,
    Timeseries,
    ToolsResponse,
    UsageOverview,
)

__all__ = ["API_PREFIX", "HEALTH_PATH", "create_app"]

API_PREFIX = "/api/v1/usage"
HEALTH_PATH = "/api/v1/health"
logger = logging.getLogger("agentmeter.server")
T = TypeVar("T")

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Not answerable here (e.g. tags on a tracker)"},
    401: {"model": ErrorResponse, "description": "Missing or wrong token"},
    404: {"model": ErrorResponse, "description": "Nothing recorded for this id"},
    422: {"model": ErrorResponse, "description": "A malformed parameter"},
    503: {"model": ErrorResponse, "description": "Database unavailable"},
}
_TIME_DOC = f"ISO 8601 or a duration ago; {TIME_FORMATS}"
_SINCE_DOC = "Only usage at or after this time: " + _TIME_DOC
_UNTIL_DOC = "Only usage before this time (exclusive): " + _TIME_DOC
_TAG_DOC = "KEY=VALUE; repeatable, every tag must match (databases only)"
Dimension = Literal["model", "customer", "agent", "tool", "session"]


def _time(name: str, text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_time(text)
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"{name}: {exc}") from None


def _range(since: str | None, until: str | None) -> tuple[datetime | None, datetime | None]:
    lo, hi = _time("since", since), _time("until", until)
    if lo is not None and hi is not None and lo >= hi:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "since must be before until")
    return lo, hi


def _tags(values: list[str]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for text in values:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT, f"tag: expected KEY=VALUE, got {text!r}"
            )
        if tags.get(key, value) != value:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"tag: {key!r} given twice")
        tags[key] = value
    return tags


def read_filters(
    since: Annotated[str | None, Query(description=_SINCE_DOC)] = None,
    until: Annotated[str | None, Query(description=_UNTIL_DOC)] = None,
    customer: Annotated[
        str | None, Query(min_length=1, description="Only this customer's usage")
    ] = None,
    session: Annotated[
        str | None, Query(min_length=1, description="Only this session's usage")
    ] = None,
    agent: Annotated[str | None, Query(min_length=1, description="Only this agent's usage")] = None,
    model: Annotated[str | None, Query(min_length=1, description="Only this model's usage")] = None,
    tag: Annotated[list[str] | None, Query(description=_TAG_DOC)] = None,
) -> Read:
    """The filters every read takes (a FastAPI dependency)."""
    lo, hi = _range(since, until)
    return Read(
        since=lo,
        until=hi,
        customer=customer,
        session=session,
        agent=agent,
        model=model,
        tags=_tags(tag or []),
    )


Filtered = Annotated[Read, Depends(read_filters)]
Limit = Annotated[int, Query(ge=1, le=1000, description="Page size")]
Offset = Annotated[int, Query(ge=0, le=2**31, description="Keys to skip")]


def _validation_message(exc: RequestValidationError) -> str:
    errors = list(exc.errors())
    if not errors:
        return "invalid request"
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ())]
    where = {"query": "query parameter", "path": "path parameter", "body": "body"}.get(
        loc[0] if loc else "", "request"
    )
    name = ".".join(loc[1:])
    msg = str(first.get("msg", "invalid"))
    text = f"{where} {name!r}: {msg}" if name else f"{where}: {msg}"
    if len(errors) > 1:
        text += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return text


def _document_core_models(schema: dict[str, Any]) -> None:
    """Fill the description of every core-model field the model leaves undocumented."""
    for name, comp in schema.get("components", {}).get("schemas", {}).items():
        docs = CORE_FIELD_DOCS.get(name.split("-")[0], {})
        for prop, spec in comp.get("properties", {}).items():
            if "description" not in spec and prop in docs:
                spec["description"] = docs[prop]


def create_app(
    tracker: Tracker | None = None,
    db_url: str | os.PathLike[str] | None = None,
    token: str | None = None,
) -> FastAPI:
    """The REST API over a live tracker or a stored database.

    Args:
        tracker: Serve this tracker's live counters (budgets included; no time
            ranges, tags or time series).
        db_url: Serve a database written by :class:`~agentmeter.storage.SQLSink`
            (a path or SQLAlchemy URL). With neither argument, the process-wide
            default tracker is served.
        token: Lock the API: every endpoint but ``GET /api/v1/health`` then needs
            ``Authorization: Bearer <token>`` (or the ``agentmeter_token`` cookie),
            and ``POST /api/v1/usage/reset`` is enabled. Without a token the API is
            open for reading and reset answers 403.

    Raises:
        ValueError: both ``tracker`` and ``db_url`` given, or an empty token.
        agentmeter.storage.DatabaseError: ``db_url`` is missing, corrupt or not agentmeter's.
    """
    if tracker is not None and db_url is not None:
        raise ValueError("give either tracker or db_url, not both")
    if token is not None and (not isinstance(token, str) or not token):
        raise ValueError("token must be a non-empty string (or None for an open, read-only API)")
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

    authorised = require_token(token)
    # The bearer scheme documents the lock in the OpenAPI spec; `authorised` checks it.
    locked = [Depends(authorised), Depends(BEARER), Depends(COOKIE)] if token is not None else []
    app = FastAPI(
        title="agentmeter",
        summary="Usage of AI agents: tokens, cost and tool calls, per customer, session, "
        "agent, model and tool",
        version="1",
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.backend = backend
    app.state.token_required = token is not None

    def call(fn: Callable[..., T], *args: Any) -> T:
        """Run a backend read, mapping its errors to HTTP statuses."""
        try:
            return fn(*args)
        except NotFoundError as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
        except KeyError as exc:  # a reader of an earlier release
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc.args[0])) from None
        except (Unsupported, ValueError) as exc:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_message(exc)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such endpoint: {request.url.path} (see /docs)"
        elif exc.status_code == 405 and detail == "Method Not Allowed":
            detail = f"{request.method} is not allowed on {request.url.path}"
        return JSONResponse(
            {"detail": detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        if backend.source == "database" and _is_db_error(exc):
            logger.warning("agentmeter: database error on %s: %r", request.url.path, exc)
            return JSONResponse(
                {"detail": f"database unavailable: {type(exc).__name__}"}, status_code=503
            )
        logger.error("agentmeter: internal error on %s", request.url.path, exc_info=exc)
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)

    # ---------------------------------------------------------------- open
    @app.get(HEALTH_PATH, response_model=Health, tags=["meta"])
    def health() -> Health:
        """Liveness check; the one endpoint that needs no token."""
        return Health()

    # ---------------------------------------------------- docs (locked too)
    def openapi_schema() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=__doc__,
                routes=app.routes,
            )
            _document_core_models(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi_schema  # type: ignore[method-assign]

    @app.get("/openapi.json", include_in_schema=False, dependencies=locked)
    def openapi_json() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=locked)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="agentmeter API")

    # ---------------------------------------------------------------- reads
    def get(path: str, model: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return app.get(
            f"{API_PREFIX}{path}",
            response_model=model,
            responses=_ERRORS,
            tags=["usage"],
            dependencies=locked,
        )

    @get("", UsageOverview)
    def overview(r: Filtered, limit: Limit = 100, offset: Offset = 0) -> UsageOverview:
        """Totals, and usage per customer, agent, model, provider, and one page of
        sessions (``limit`` / ``offset``: sessions grow with history)."""
        return call(backend.overview, r, limit, offset)

    @get("/sessions", SessionList)
    def sessions(r: Filtered, limit: Limit = 100, offset: Offset = 0) -> SessionList:
        """Sessions, largest total tokens first, one page at a time."""
        return call(backend.sessions, r, limit, offset)

    @get("/sessions/{session_id:path}", SessionUsage)
    def session(session_id: str, r: Filtered) -> SessionUsage:
        """One session: usage, per-model and per-agent breakdowns, tool stats and budget."""
        return call(backend.session, session_id, r)

    @get("/customers", CustomerList)
    def customers(r: Filtered, limit: Limit = 100, offset: Offset = 0) -> CustomerList:
        """Customers, largest total tokens first, one page at a time."""
        return call(backend.customers, r, limit, offset)

    @get("/customers/{customer_id:path}", CustomerUsage)
    def customer(customer_id: str, r: Filtered) -> CustomerUsage:
        """One customer: usage per model, agent and session, and its tool stats."""
        return call(backend.customer, customer_id, r)

    @get("/agents", AgentList)
    def agents(r: Filtered, limit: Limit = 100, offset: Offset = 0) -> AgentList:
        """Agents, largest total tokens first, one page at a time."""
        return call(backend.agents, r, limit, offset)

    @get("/agents/{agent_id:path}", AgentUsage)
    def agent(agent_id: str, r: Filtered) -> AgentUsage:
        """One agent's usage, per model, customer and session."""
        return call(backend.agent, agent_id, r)

    @get("/models", ModelList)
    def models(r: Filtered, limit: Limit = 100, offset: Offset = 0) -> ModelList:
        """Models, largest total tokens first, one page at a time."""
        return call(backend.models, r, limit, offset)

    @get("/models/{model_name:path}", ModelUsage)
    def model(model_name: str, r: Filtered) -> ModelUsage:
        """One model's usage (names may contain ``/``, e.g. ``openai/gpt-4o``)."""
        return call(backend.model, model_name, r)

    @get("/tools", ToolsResponse)
    def tools(
        r: Filtered,
        session_id: Annotated[
            str | None, Query(min_length=1, description="Same as 'session' (earlier name)")
        ] = None,
    ) -> ToolsResponse:
        """Tool statistics (calls, failures, p50/p95, tokens and cost inside each tool)."""
        if session_id is not None:
            if r.session not in (None, session_id):
                raise HTTPException(
                    status.HTTP_422_UNPROCESSABLE_CONTENT, "session and session_id differ"
                )
            r = replace(r, session=session_id)
        return call(backend.tools, r)

    @get("/timeseries", Timeseries)
    def timeseries(
        r: Filtered,
        bucket: Annotated[
            Literal["hour", "day"], Query(description="Bucket width (UTC hours or days)")
        ] = "day",
        by: Annotated[
            Dimension | None, Query(description="Split each bucket by this dimension")
        ] = None,
    ) -> Timeseries:
        """Usage per hour or day, oldest first, optionally split by a dimension."""
        return call(backend.timeseries, bucket, by, r)

    # ---------------------------------------------------------------- reset
    @app.post(
        f"{API_PREFIX}/reset",
        response_model=ResetResponse,
        responses={
            400: {"model": ErrorResponse, "description": "Nothing named to delete"},
            401: {"model": ErrorResponse, "description": "Missing or wrong token"},
            403: {"model": ErrorResponse, "description": "Reset disabled (no token configured)"},
            422: {"model": ErrorResponse, "description": "A malformed bound"},
        },
        tags=["admin"],
        dependencies=locked,
    )
    def reset(
        body: Annotated[ResetRequest | None, Body()] = None,
        since: Annotated[
            str | None, Query(description="Delete from this time: " + _TIME_DOC)
        ] = None,
        until: Annotated[
            str | None, Query(description="Delete before this time: " + _TIME_DOC)
        ] = None,
        session: Annotated[
            str | None, Query(min_length=1, description="Delete this session's usage")
        ] = None,
        customer: Annotated[
            str | None, Query(min_length=1, description="Delete this customer's usage")
        ] = None,
    ) -> ResetResponse:
        """Clear a live tracker's counters, or delete what the request names from a database.

        Over a database, name what to delete -- ``since`` / ``until``, ``session``
        or ``customer`` (JSON body or query parameters; all given must match); the
        answer says how many rows went. Needs the token.
        """
        if token is None:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, "reset is disabled: start the server with a token"
            )
        named: dict[str, str | None] = {
            "since": since,
            "until": until,
            "session": session,
            "customer": customer,
        }
        if body is not None:
            for key, value in body.model_dump().items():
                if value is None:
                    continue
                if named[key] is not None and named[key] != value:
                    raise HTTPException(
                        status.HTTP_422_UNPROCESSABLE_CONTENT,
                        f"{key} given in the body and the query, differently",
                    )
                named[key] = value
        lo, hi = _range(named["since"], named["until"])
        return call(
            lambda: backend.reset(
                since=lo, until=hi, session=named["session"], customer=named["customer"]
            )
        )

    try:
        from .dashboard import mount_dashboard
    except ImportError:
        pass
    else:
        mount_dashboard(app, backend=backend, token=token)
    return app


def _is_db_error(exc: BaseException) -> bool:
    try:
        from sqlalchemy.exc import SQLAlchemyError
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, SQLAlchemyError)
