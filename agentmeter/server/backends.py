"""Where the API reads from: a live tracker or a stored database, behind one interface."""

from __future__ import annotations

from datetime import datetime
from operator import add
from typing import Any, Protocol

from .. import _fields, _views
from ..models import SessionUsage, Snapshot, Usage, UsageCell
from ..tracker import Tracker
from .schemas import (
    AgentUsage,
    ModelUsage,
    ResetResponse,
    SessionList,
    SessionSummary,
    ToolsResponse,
    UsageOverview,
)

__all__ = ["Backend", "DatabaseBackend", "TimeRangeUnsupported", "TrackerBackend"]


class TimeRangeUnsupported(ValueError):
    """A live tracker keeps totals, not timestamps: ``since``/``until`` need a database."""


class Backend(Protocol):
    source: Any

    def overview(self, since: datetime | None, until: datetime | None) -> UsageOverview: ...
    def sessions(
        self, since: datetime | None, until: datetime | None, limit: int, offset: int
    ) -> SessionList: ...
    def session(
        self, session_id: str, since: datetime | None, until: datetime | None
    ) -> SessionUsage: ...
    def agent(
        self, agent_id: str, since: datetime | None, until: datetime | None
    ) -> AgentUsage: ...
    def model(self, model: str, since: datetime | None, until: datetime | None) -> ModelUsage: ...
    def tools(
        self, session_id: str | None, since: datetime | None, until: datetime | None
    ) -> ToolsResponse: ...
    def reset(self) -> ResetResponse: ...
    def close(self) -> None: ...


def _group(cells: list[UsageCell], attr: str) -> dict[str, Usage]:
    rows: dict[str, list[Any]] = {}
    for c in cells:
        key = getattr(c, attr)
        if key is not None:
            _views.acc_row(rows, key, c.usage.to_row())
    ordered = sorted(rows.items(), key=lambda kv: (-Usage.from_row(kv[1]).total_tokens, kv[0]))
    return {k: Usage.from_row(v) for k, v in ordered}


def _total(cells: list[UsageCell]) -> Usage:
    row = _fields.zeros()
    for c in cells:
        row[:] = map(add, row, c.usage.to_row())
    return Usage.from_row(row)


class TrackerBackend:
    """Reads a live :class:`~agentmeter.Tracker` (budgets included; no time ranges)."""

    source = "tracker"

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker

    @staticmethod
    def _no_range(since: datetime | None, until: datetime | None) -> None:
        if since is not None or until is not None:
            raise TimeRangeUnsupported(
                "since/until need a database: a live tracker keeps totals, not timestamps "
                "(serve a database with create_app(db_url=...))"
            )

    def _snap(self, since: datetime | None, until: datetime | None) -> Snapshot:
        self._no_range(since, until)
        return self.tracker.snapshot()

    def overview(self, since: datetime | None, until: datetime | None) -> UsageOverview:
        s = self._snap(since, until)
        return UsageOverview(
            source="tracker",
            totals=s.totals,
            by_agent=s.by_agent,
            by_model=s.by_model,
            by_provider=s.by_provider,
            by_session=s.by_session,
        )

    def sessions(
        self, since: datetime | None, until: datetime | None, limit: int, offset: int
    ) -> SessionList:
        s = self._snap(since, until)
        ordered = sorted(s.by_session.items(), key=lambda kv: (-kv[1].total_tokens, kv[0]))
        page = ordered[offset : offset + limit]
        return SessionList(
            total=len(ordered),
            limit=limit,
            offset=offset,
            sessions=[SessionSummary(session_id=k, usage=u) for k, u in page],
        )

    def session(
        self, session_id: str, since: datetime | None, until: datetime | None
    ) -> SessionUsage:
        self._no_range(since, until)
        return self.tracker.session(session_id)

    def agent(self, agent_id: str, since: datetime | None, until: datetime | None) -> AgentUsage:
        cells = [c for c in self._snap(since, until).cells if c.agent_id == agent_id]
        if not cells:
            raise KeyError(f"unknown agent {agent_id!r}")
        return AgentUsage(
            agent_id=agent_id,
            usage=_total(cells),
            by_model=_group(cells, "model"),
            by_session=_group(cells, "session_id"),
        )

    def model(self, model: str, since: datetime | None, until: datetime | None) -> ModelUsage:
        cells = [c for c in self._snap(since, until).cells if c.model == model]
        if not cells:
            raise KeyError(f"unknown model {model!r}")
        return ModelUsage(
            model=model,
            usage=_total(cells),
            by_agent=_group(cells, "agent_id"),
            by_provider=_group(cells, "provider"),
            by_session=_group(cells, "session_id"),
        )

    def tools(
        self, session_id: str | None, since: datetime | None, until: datetime | None
    ) -> ToolsResponse:
        s = self._snap(since, until)
        if session_id is None:
            return ToolsResponse(tools=s.by_tool, by_category=s.by_category)
        tools = s.by_session_tool.get(session_id)
        if tools is None:
            if session_id not in s.by_session:
                raise KeyError(f"unknown session {session_id!r}")
            tools = {}  # a known session that called no tool
        return ToolsResponse(session_id=session_id, tools=tools)

    def reset(self) -> ResetResponse:
        self.tracker.reset()
        return ResetResponse(source="tracker")

    def close(self) -> None:
        """Nothing to release: the tracker belongs to the caller."""


class DatabaseBackend:
    """Reads a stored database with SQL aggregation (time ranges supported)."""

    source = "database"

    def __init__(self, db_url: str) -> None:
        from ..storage.query import UsageStore

        self.store = UsageStore(db_url)

    def overview(self, since: datetime | None, until: datetime | None) -> UsageOverview:
        st = self.store
        return UsageOverview(
            source="database",
            since=since,
            until=until,
            totals=st.totals(since, until),
            by_agent=st.by("agent", since, until),
            by_model=st.by("model", since, until),
            by_provider=st.by("provider", since, until),
            by_session=st.by("session", since, until),
        )

    def sessions(
        self, since: datetime | None, until: datetime | None, limit: int, offset: int
    ) -> SessionList:
        st = self.store
        page = st.by("session", since, until, limit=limit, offset=offset)
        times = st.session_times(page)
        return SessionList(
            total=st.count_keys("session", since, until),
            limit=limit,
            offset=offset,
            sessions=[
                SessionSummary(
                    session_id=k,
                    usage=u,
                    first_seen=times.get(k, (None, None))[0],
                    last_seen=times.get(k, (None, None))[1],
                )
                for k, u in page.items()
            ],
        )

    def session(
        self, session_id: str, since: datetime | None, until: datetime | None
    ) -> SessionUsage:
        return self.store.session(session_id, since, until)

    def agent(self, agent_id: str, since: datetime | None, until: datetime | None) -> AgentUsage:
        st = self.store
        if not st.count(since, until, agent=agent_id):
            raise KeyError(f"unknown agent {agent_id!r}")
        return AgentUsage(
            agent_id=agent_id,
            usage=st.totals(since, until, agent=agent_id),
            by_model=st.by("model", since, until, agent=agent_id),
            by_session=st.by("session", since, until, agent=agent_id),
        )

    def model(self, model: str, since: datetime | None, until: datetime | None) -> ModelUsage:
        st = self.store
        if not st.count(since, until, model=model):
            raise KeyError(f"unknown model {model!r}")
        return ModelUsage(
            model=model,
            usage=st.totals(since, until, model=model),
            by_agent=st.by("agent", since, until, model=model),
            by_provider=st.by("provider", since, until, model=model),
            by_session=st.by("session", since, until, model=model),
        )

    def tools(
        self, session_id: str | None, since: datetime | None, until: datetime | None
    ) -> ToolsResponse:
        st = self.store
        if session_id is None:
            snap = st.tools_snapshot(since, until)
            return ToolsResponse(tools=snap.by_tool, by_category=snap.by_category)
        return ToolsResponse(
            session_id=session_id, tools=st.session(session_id, since, until).tools
        )

    def reset(self) -> ResetResponse:
        return ResetResponse(source="database", deleted_events=self.store.reset())

    def close(self) -> None:
        self.store.close()
