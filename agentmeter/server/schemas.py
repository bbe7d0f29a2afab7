"""Response models of the REST API (its OpenAPI schema is the contract).

Usage figures are the core models (:class:`~agentmeter.Usage`,
:class:`~agentmeter.ToolStats`, :class:`~agentmeter.SessionUsage`,
:class:`~agentmeter.CustomerUsage`); these wrap them. Every field of every
response is documented in the OpenAPI schema: the wrappers' here, the core
models' from :data:`CORE_FIELD_DOCS` where the model itself has no description
(the names are those of ``agentmeter report``'s JSON and CSV, see
:mod:`agentmeter.storage.report`). Costs are decimal strings with six places
(``"0.000000"``), ``null`` only when calls were made and none was priced.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..models import ToolStats, Usage
from ..storage.report import COLUMNS

__all__ = [
    "CORE_FIELD_DOCS",
    "AgentList",
    "AgentSummary",
    "AgentUsage",
    "CustomerList",
    "CustomerSummary",
    "ErrorResponse",
    "Filters",
    "Health",
    "ModelList",
    "ModelSummary",
    "ModelUsage",
    "ResetRequest",
    "ResetResponse",
    "SessionList",
    "SessionSummary",
    "TimePoint",
    "Timeseries",
    "ToolsResponse",
    "UsageOverview",
]

_FROZEN = ConfigDict(frozen=True)
Source = Literal["tracker", "database"]
_SOURCE = "Where the figures come from: a live tracker or a stored database"
_SINCE = "Only usage at or after this time (UTC), when a range was asked"
_UNTIL = "Only usage before this time (UTC), when a range was asked"
_TOTAL = "How many keys match (all pages)"
_LIMIT = "Page size asked"
_OFFSET = "Keys skipped before this page"


class Filters(BaseModel):
    """The filters a read applied (``null`` / empty: not filtered)."""

    model_config = _FROZEN

    customer: str | None = Field(None, description="Only this customer's usage")
    session: str | None = Field(None, description="Only this session's usage")
    agent: str | None = Field(None, description="Only this agent's usage")
    model: str | None = Field(None, description="Only this model's usage")
    tags: dict[str, str] = Field(
        default_factory=dict, description="Only usage carrying every one of these tags"
    )


class Health(BaseModel):
    """The server is up (the one endpoint that needs no token)."""

    model_config = _FROZEN

    status: Literal["ok"] = Field("ok", description="Always 'ok' when the server answers")


class UsageOverview(BaseModel):
    """Totals and the per-customer, -agent, -model, -provider and -session breakdowns."""

    model_config = _FROZEN

    source: Source = Field(description=_SOURCE)
    since: datetime | None = Field(None, description=_SINCE)
    until: datetime | None = Field(None, description=_UNTIL)
    filters: Filters = Field(default_factory=Filters, description="The filters applied")
    totals: Usage = Field(description="Everything that matches the filters")
    by_customer: dict[str, Usage] = Field(
        default_factory=dict, description="Per customer (usage without a customer left out)"
    )
    by_agent: dict[str, Usage] = Field(
        default_factory=dict, description="Per agent (usage without an agent left out)"
    )
    by_model: dict[str, Usage] = Field(
        default_factory=dict, description="Per model (tool calls and cache events have none)"
    )
    by_provider: dict[str, Usage] = Field(default_factory=dict, description="Per provider")
    by_session: dict[str, Usage] = Field(
        default_factory=dict,
        description="One page of sessions, largest total tokens first (``limit`` / "
        "``offset``; usage without a session left out); ``/sessions`` pages them too",
    )
    session_count: int = Field(0, description="How many sessions match (on every page)")
    limit: int = Field(100, description="Most sessions in ``by_session``")
    offset: int = Field(0, description="Sessions skipped before ``by_session``")


class SessionSummary(BaseModel):
    """One session in a listing."""

    model_config = _FROZEN

    session_id: str = Field(description="The session's id")
    usage: Usage = Field(description="The session's usage (within the filters)")
    first_seen: datetime | None = Field(None, description="First event (databases only)")
    last_seen: datetime | None = Field(None, description="Last event (databases only)")


class SessionList(BaseModel):
    """A page of sessions, largest total tokens first."""

    model_config = _FROZEN

    total: int = Field(description=_TOTAL)
    limit: int = Field(description=_LIMIT)
    offset: int = Field(description=_OFFSET)
    sessions: list[SessionSummary] = Field(description="This page's sessions")


class CustomerSummary(BaseModel):
    """One customer in a listing."""

    model_config = _FROZEN

    customer_id: str = Field(description="The customer's id")
    usage: Usage = Field(description="The customer's usage (within the filters)")


class CustomerList(BaseModel):
    """A page of customers, largest total tokens first."""

    model_config = _FROZEN

    total: int = Field(description=_TOTAL)
    limit: int = Field(description=_LIMIT)
    offset: int = Field(description=_OFFSET)
    customers: list[CustomerSummary] = Field(description="This page's customers")


class AgentSummary(BaseModel):
    """One agent in a listing."""

    model_config = _FROZEN

    agent_id: str = Field(description="The agent's id")
    usage: Usage = Field(description="The agent's usage (within the filters)")


class AgentList(BaseModel):
    """A page of agents, largest total tokens first."""

    model_config = _FROZEN

    total: int = Field(description=_TOTAL)
    limit: int = Field(description=_LIMIT)
    offset: int = Field(description=_OFFSET)
    agents: list[AgentSummary] = Field(description="This page's agents")


class ModelSummary(BaseModel):
    """One model in a listing."""

    model_config = _FROZEN

    model: str = Field(description="The model's name (may contain '/')")
    usage: Usage = Field(description="The model's usage (within the filters)")


class ModelList(BaseModel):
    """A page of models, largest total tokens first."""

    model_config = _FROZEN

    total: int = Field(description=_TOTAL)
    limit: int = Field(description=_LIMIT)
    offset: int = Field(description=_OFFSET)
    models: list[ModelSummary] = Field(description="This page's models")


class AgentUsage(BaseModel):
    """One agent's usage, per model, per customer and per session."""

    model_config = _FROZEN

    agent_id: str = Field(description="The agent's id")
    usage: Usage = Field(description="The agent's usage (within the filters)")
    by_model: dict[str, Usage] = Field(default_factory=dict, description="Per model")
    by_customer: dict[str, Usage] = Field(default_factory=dict, description="Per customer")
    by_session: dict[str, Usage] = Field(default_factory=dict, description="Per session")


class ModelUsage(BaseModel):
    """One model's usage, per agent, provider, customer and session."""

    model_config = _FROZEN

    model: str = Field(description="The model's name")
    usage: Usage = Field(description="The model's usage (within the filters)")
    by_agent: dict[str, Usage] = Field(default_factory=dict, description="Per agent")
    by_provider: dict[str, Usage] = Field(default_factory=dict, description="Per provider")
    by_customer: dict[str, Usage] = Field(default_factory=dict, description="Per customer")
    by_session: dict[str, Usage] = Field(default_factory=dict, description="Per session")


class ToolsResponse(BaseModel):
    """Tool statistics, over everything that matches the filters."""

    model_config = _FROZEN

    session_id: str | None = Field(None, description="The session asked for, if any")
    customer_id: str | None = Field(None, description="The customer asked for, if any")
    tools: dict[str, ToolStats] = Field(description="Per tool, most called first")
    by_category: dict[str, ToolStats] = Field(
        default_factory=dict,
        description="Per tool category (all sessions; empty when filtered on a live tracker)",
    )


class TimePoint(BaseModel):
    """The usage of one time bucket (and one group key, with ``by``)."""

    model_config = _FROZEN

    start: datetime = Field(description="Start of the bucket (UTC, on the hour or midnight)")
    key: str | None = Field(
        None, description="The group's key with 'by' (null: usage without that key)"
    )
    usage: Usage = Field(description="Usage recorded in the bucket")


class Timeseries(BaseModel):
    """Usage per hour or day, oldest first (buckets without usage are left out)."""

    model_config = _FROZEN

    source: Source = Field(description=_SOURCE)
    bucket: Literal["hour", "day"] = Field(description="Bucket width")
    by: str | None = Field(None, description="The dimension grouping each bucket, if any")
    since: datetime | None = Field(None, description=_SINCE)
    until: datetime | None = Field(None, description=_UNTIL)
    filters: Filters = Field(default_factory=Filters, description="The filters applied")
    points: list[TimePoint] = Field(description="One per (bucket, key), ordered by time then key")


class ResetRequest(BaseModel):
    """What a reset over a database deletes (at least one field; all given must match)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    since: str | None = Field(
        None, description="Delete usage at or after this time (ISO 8601 or e.g. '30d')"
    )
    until: str | None = Field(
        None, description="Delete usage before this time (ISO 8601 or e.g. '30d')"
    )
    session: str | None = Field(None, min_length=1, description="Delete this session's usage")
    customer: str | None = Field(None, min_length=1, description="Delete this customer's usage")


class ResetResponse(BaseModel):
    """What a reset did."""

    model_config = _FROZEN

    reset: bool = Field(True, description="Always true: the reset happened")
    source: Source = Field(description=_SOURCE)
    deleted_events: int | None = Field(
        None, description="Raw events deleted (databases only; null for a live tracker)"
    )
    deleted: dict[str, int] = Field(
        default_factory=dict,
        description="What went (databases only): events (raw events), llm_calls, "
        "embedding_calls, tool_calls, total_tokens, cost_micros",
    )
    since: datetime | None = Field(None, description="The lower time bound deleted, if any")
    until: datetime | None = Field(None, description="The upper time bound deleted, if any")
    session: str | None = Field(None, description="The session deleted, if any")
    customer: str | None = Field(None, description="The customer deleted, if any")


class ErrorResponse(BaseModel):
    """Every error: one readable message."""

    detail: str = Field(description="What went wrong, and what to do about it when known")


# Descriptions of the core models' fields, for the OpenAPI schema (a field's own
# description, when the core model has one, wins).
_USAGE_DOCS = COLUMNS  # the one documentation of the usage names
_TOOL_DOCS = {
    "tool": "The tool's name (or the category's, in by_category)",
    "category": "The tool's category ('' when none was given)",
    "calls": "Calls of the tool",
    "ok": "Calls that succeeded",
    "failed": "Calls that failed",
    "total_duration_ms": "Summed call duration, milliseconds",
    "min_duration_ms": "Shortest call, milliseconds (null before the first call)",
    "max_duration_ms": "Longest call, milliseconds (null before the first call)",
    "mean_duration_ms": "Mean call duration, milliseconds",
    "p50_ms": "Median call duration, milliseconds (log-scale histogram, within ~2.2%)",
    "p95_ms": "95th percentile call duration, milliseconds (within ~2.2%)",
    "success_rate": "ok / calls (null before the first call)",
    "llm_calls": "LLM calls made inside the tool",
    "input_tokens": "LLM prompt tokens spent inside the tool",
    "output_tokens": "LLM completion tokens spent inside the tool",
    "cache_read_tokens": "Cached prompt tokens read inside the tool",
    "embedding_tokens": "Embedding tokens spent inside the tool",
    "total_tokens": "input_tokens + output_tokens + embedding_tokens inside the tool",
    "cost_micros": "Cost of the calls inside the tool, integer micro-USD",
    "cost_usd": "Cost of the calls inside the tool, decimal string with six places",
    "unpriced_calls": "Calls inside the tool whose model had no known price",
    "recent_call_ids": "Call ids of the last few calls, oldest first",
    "duration_histogram": "Log-scale duration histogram: bucket index -> calls",
}
_BREAKDOWN = {
    "usage": "Usage (within the filters)",
    "by_model": "Per model",
    "by_agent": "Per agent",
    "by_session": "Per session",
    "tools": "Per-tool statistics",
    "budget": "The budget's limits and what is used (live tracker only; null otherwise)",
}
CORE_FIELD_DOCS: dict[str, dict[str, str]] = {
    "Usage": _USAGE_DOCS,
    "ToolStats": _TOOL_DOCS,
    "SessionUsage": {"session_id": "The session's id", **_BREAKDOWN},
    "CustomerUsage": {"customer_id": "The customer's id", **_BREAKDOWN},
    "BudgetStatus": {
        "owner": "What the budget belongs to, e.g. \"session 's1'\"",
        "limits": "The budget's limits by name (max_tokens, max_cost_usd, ...)",
        "used": "What was spent against each limit",
        "reserved": "What calls in flight reserved against each limit",
        "remaining": "What is left of each limit (never negative)",
        "exhausted": "True when some limit has nothing left",
    },
}
