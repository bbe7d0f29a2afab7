"""Response models of the REST API (its OpenAPI schema is the contract).

Usage figures are the core models (:class:`~agentmeter.Usage`,
:class:`~agentmeter.ToolStats`, :class:`~agentmeter.SessionUsage`); these wrap them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..models import ToolStats, Usage

__all__ = [
    "AgentUsage",
    "ErrorResponse",
    "ModelUsage",
    "ResetResponse",
    "SessionList",
    "SessionSummary",
    "ToolsResponse",
    "UsageOverview",
]

_FROZEN = ConfigDict(frozen=True)
Source = Literal["tracker", "database"]


class UsageOverview(BaseModel):
    """Totals and the per-agent, per-model, per-provider and per-session breakdowns."""

    model_config = _FROZEN

    source: Source = Field(description="A live tracker or a stored database")
    since: datetime | None = None
    until: datetime | None = None
    totals: Usage
    by_agent: dict[str, Usage] = Field(default_factory=dict)
    by_model: dict[str, Usage] = Field(default_factory=dict)
    by_provider: dict[str, Usage] = Field(default_factory=dict)
    by_session: dict[str, Usage] = Field(default_factory=dict)


class SessionSummary(BaseModel):
    """One session in a listing."""

    model_config = _FROZEN

    session_id: str
    usage: Usage
    first_seen: datetime | None = Field(None, description="First event (databases only)")
    last_seen: datetime | None = Field(None, description="Last event (databases only)")


class SessionList(BaseModel):
    """A page of sessions, largest total tokens first."""

    model_config = _FROZEN

    total: int = Field(description="Number of sessions in the range")
    limit: int
    offset: int
    sessions: list[SessionSummary]


class AgentUsage(BaseModel):
    """One agent's usage, per model and per session."""

    model_config = _FROZEN

    agent_id: str
    usage: Usage
    by_model: dict[str, Usage] = Field(default_factory=dict)
    by_session: dict[str, Usage] = Field(default_factory=dict)


class ModelUsage(BaseModel):
    """One model's usage, per agent, per provider and per session."""

    model_config = _FROZEN

    model: str
    usage: Usage
    by_agent: dict[str, Usage] = Field(default_factory=dict)
    by_provider: dict[str, Usage] = Field(default_factory=dict)
    by_session: dict[str, Usage] = Field(default_factory=dict)


class ToolsResponse(BaseModel):
    """Tool statistics, over all sessions or for one."""

    model_config = _FROZEN

    session_id: str | None = None
    tools: dict[str, ToolStats]
    by_category: dict[str, ToolStats] = Field(default_factory=dict)


class ResetResponse(BaseModel):
    """What a reset did."""

    model_config = _FROZEN

    reset: bool = True
    source: Source
    deleted_events: int | None = Field(None, description="Rows deleted (databases only)")


class ErrorResponse(BaseModel):
    """Every error: a one-line explanation."""

    detail: str
