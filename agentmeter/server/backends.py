"""Where the API reads from: a live tracker or a stored database, behind one interface.

Both raise :class:`~agentmeter.NotFoundError` for one id's view with nothing recorded
(the app answers 404) and :class:`Unsupported` for what a live tracker cannot
answer -- time ranges, tags, time series (the app answers 400).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from operator import add
from typing import Any, Protocol

from .. import _fields, _views
from ..errors import NotFoundError
from ..models import CustomerUsage, SessionUsage, ToolStats, Usage, UsageCell
from ..tracker import Tracker
from .schemas import (
    AgentList,
    AgentSummary,
    AgentUsage,
    CustomerList,
    CustomerSummary,
    Filters,
    ModelList,
    ModelSummary,
    ModelUsage,
    ResetResponse,
    SessionList,
    SessionSummary,
    TimePoint,
    Timeseries,
    ToolsResponse,
    UsageOverview,
)

__all__ = [
    "Backend",
    "DatabaseBackend",
    "Read",
    "TimeRangeUnsupported",
    "TrackerBackend",
    "Unsupported",
]


class Unsupported(ValueError):
    """A read the backend cannot answer (a live tracker keeps totals, not timestamps or tags)."""


TimeRangeUnsupported = Unsupported  # the name of earlier releases


@dataclass(frozen=True)
class Read:
    """The filters of one read: a time range and attribution keys (all optional)."""

    since: datetime | None = None
    until: datetime | None = None
    customer: str | None = None
    session: str | None = None
    agent: str | None = None
    model: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    def store_kwargs(self, **override: Any) -> dict[str, Any]:
        """The keyword filters of :class:`~agentmeter.storage.UsageStore` reads."""
        kw: dict[str, Any] = {
            "since": self.since,
            "until": self.until,
            "customer": self.customer,
            "session": self.session,
            "agent": self.agent,
            "model": self.model,
        }
        kw.update(override)
        kw = {k: v for k, v in kw.items() if v is not None}
        if self.tags:
            kw["tags"] = dict(self.tags)
        return kw

    def filters(self) -> Filters:
        return Filters(
            customer=self.customer,
            session=self.session,
            agent=self.agent,
            model=self.model,
            tags=dict(self.tags),
        )

    def pin(self, dim: str, key: str) -> Read:
        """This read restricted to one ``dim`` key; a different filter on it matches nothing."""
        current = getattr(self, dim)
        if current is not None and current != key:
            raise NotFoundError(dim, key)
        values: dict[str, Any] = {dim: key}
        return replace(self, **values)


class Backend(Protocol):
    source: Any

    def overview(self, r: Read, limit: int = 100, offset: int = 0) -> UsageOverview: ...
    def sessions(self, r: Read, limit: int, offset: int) -> SessionList: ...
    def session(self, session_id: str, r: Read) -> SessionUsage: ...
    def customers(self, r: Read, limit: int, offset: int) -> CustomerList: ...
    def customer(self, customer_id: str, r: Read) -> CustomerUsage: ...
    def agents(self, r: Read, limit: int, offset: int) -> AgentList: ...
    def agent(self, agent_id: str, r: Read) -> AgentUsage: ...
    def models(self, r: Read, limit: int, offset: int) -> ModelList: ...
    def model(self, model: str, r: Read) -> ModelUsage: ...
    def tools(self, r: Read) -> ToolsResponse: ...
    def timeseries(self, bucket: str, by: str | None, r: Read) -> Timeseries: ...
    def reset(
        self,
        *,
        since: datetime | None,
        until: datetime | None,
        session: str | None,
        customer: str | None,
    ) -> ResetResponse: ...
    def close(self) -> None: ...


def _ordered_usage(usages: Mapping[str, Usage]) -> dict[str, Usage]:
    """Largest total tokens first, then by key (the database's order)."""
    return dict(sorted(usages.items(), key=lambda kv: (-kv[1].total_tokens, kv[0])))


def _ordered(rows: dict[str, list[Any]]) -> dict[str, Usage]:
    usages = {k: Usage.from_row(v) for k, v in rows.items()}
    return dict(sorted(usages.items(), key=lambda kv: (-kv[1].total_tokens, kv[0])))


def _group(cells: Iterable[UsageCell], attr: str) -> dict[str, Usage]:
    rows: dict[str, list[Any]] = {}
    for c in cells:
        key = getattr(c, attr)
        if key is not None:
            _views.acc_row(rows, key, c.usage.to_row())
    return _ordered(rows)


def _total(cells: Iterable[UsageCell]) -> Usage:
    row = _fields.zeros()
    for c in cells:
        row[:] = map(add, row, c.usage.to_row())
    return Usage.from_row(row)


def by_category(tools: dict[str, ToolStats]) -> dict[str, ToolStats]:
    """Tool stats merged per category, as a snapshot's ``by_category`` is built."""
    grouped: dict[str, list[ToolStats]] = {}
    for st in tools.values():
        if st.category:
            grouped.setdefault(st.category, []).append(st)
    return {c: _views.merge_stats(c, lst, c) for c, lst in grouped.items()}


def _most_called(tools: dict[str, ToolStats]) -> dict[str, ToolStats]:
    return dict(sorted(tools.items(), key=lambda kv: (-kv[1].calls, kv[0])))


_NO_DB = "serve a database (agentmeter serve --db ..., create_app(db_url=...)) for that"


class TrackerBackend:
    """Reads a live :class:`~agentmeter.Tracker` (budgets included; no time ranges or tags)."""

    source = "tracker"

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker

    @staticmethod
    def _check(r: Read) -> None:
        if r.since is not None or r.until is not None:
            raise Unsupported(
                "since/until need a database: a live tracker keeps totals, not timestamps; "
                + _NO_DB
            )
        if r.tags:
            raise Unsupported(
                "tag filters need a database: a live tracker keeps no totals per tag; " + _NO_DB
            )

    @staticmethod
    def _only(r: Read, allowed: str, what: str) -> None:
        extra = [
            d for d in ("customer", "session", "agent", "model") if d != allowed and getattr(r, d)
        ]
        if extra:
            raise Unsupported(
                f"on a live tracker, {what} takes no {'/'.join(extra)} filter; " + _NO_DB
            )

    def _cells(self, r: Read) -> list[UsageCell]:
        self._check(r)
        out = []
        for c in self.tracker.snapshot().cells:
            if (
                (r.customer is None or c.customer_id == r.customer)
                and (r.session is None or c.session_id == r.session)
                and (r.agent is None or c.agent_id == r.agent)
                and (r.model is None or c.model == r.model)
            ):
                out.append(c)
        return out

    def overview(self, r: Read, limit: int = 100, offset: int = 0) -> UsageOverview:
        self._check(r)
        if r.filters() == Filters():
            s = self.tracker.snapshot()
            totals, views = (
                s.totals,
                {
                    "by_customer": s.by_customer,
                    "by_agent": s.by_agent,
                    "by_model": s.by_model,
                    "by_provider": s.by_provider,
                    "by_session": s.by_session,
                },
            )
        else:
            cells = self._cells(r)
            totals = _total(cells)
            views = {
                "by_customer": _group(cells, "customer_id"),
                "by_agent": _group(cells, "agent_id"),
                "by_model": _group(cells, "model"),
                "by_provider": _group(cells, "provider"),
                "by_session": _group(cells, "session_id"),
            }
        sessions = _ordered_usage(views.pop("by_session"))
        page = dict(list(sessions.items())[offset : offset + limit])
        return UsageOverview(
            source="tracker",
            filters=r.filters(),
            totals=totals,
            **views,
            by_session=page,
            session_count=len(sessions),
            limit=limit,
            offset=offset,
        )

    def _page(self, r: Read, attr: str, limit: int, offset: int) -> tuple[int, dict[str, Usage]]:
        rows = _group(self._cells(r), attr)
        keys = list(rows)[offset : offset + limit]
        return len(rows), {k: rows[k] for k in keys}

    def sessions(self, r: Read, limit: int, offset: int) -> SessionList:
        total, page = self._page(r, "session_id", limit, offset)
        return SessionList(
            total=total,
            limit=limit,
            offset=offset,
            sessions=[SessionSummary(session_id=k, usage=u) for k, u in page.items()],
        )

    def customers(self, r: Read, limit: int, offset: int) -> CustomerList:
        total, page = self._page(r, "customer_id", limit, offset)
        return CustomerList(
            total=total,
            limit=limit,
            offset=offset,
            customers=[CustomerSummary(customer_id=k, usage=u) for k, u in page.items()],
        )

    def agents(self, r: Read, limit: int, offset: int) -> AgentList:
        total, page = self._page(r, "agent_id", limit, offset)
        return AgentList(
            total=total,
            limit=limit,
            offset=offset,
            agents=[AgentSummary(agent_id=k, usage=u) for k, u in page.items()],
        )

    def models(self, r: Read, limit: int, offset: int) -> ModelList:
        total, page = self._page(r, "model", limit, offset)
        return ModelList(
            total=total,
            limit=limit,
            offset=offset,
            models=[ModelSummary(model=k, usage=u) for k, u in page.items()],
        )

    def session(self, session_id: str, r: Read) -> SessionUsage:
        r = r.pin("session", session_id)
        self._check(r)
        self._only(r, "session", "a session's view")
        return self.tracker.session(session_id)

    def customer(self, customer_id: str, r: Read) -> CustomerUsage:
        r = r.pin("customer", customer_id)
        self._check(r)
        self._only(r, "customer", "a customer's view")
        return self.tracker.customer(customer_id)

    def agent(self, agent_id: str, r: Read) -> AgentUsage:
        cells = self._cells(r.pin("agent", agent_id))
        if not cells:
            raise NotFoundError("agent", agent_id)
        return AgentUsage(
            agent_id=agent_id,
            usage=_total(cells),
            by_model=_group(cells, "model"),
            by_customer=_group(cells, "customer_id"),
            by_session=_group(cells, "session_id"),
        )

    def model(self, model: str, r: Read) -> ModelUsage:
        cells = self._cells(r.pin("model", model))
        if not cells:
            raise NotFoundError("model", model)
        return ModelUsage(
            model=model,
            usage=_total(cells),
            by_agent=_group(cells, "agent_id"),
            by_provider=_group(cells, "provider"),
            by_customer=_group(cells, "customer_id"),
            by_session=_group(cells, "session_id"),
        )

    def tools(self, r: Read) -> ToolsResponse:
        self._check(r)
        if r.agent is not None or r.model is not None or (r.session and r.customer):
            raise Unsupported(
                "on a live tracker, tool stats filter by one session or one customer only; "
                + _NO_DB
            )
        s = self.tracker.snapshot()
        if r.session is not None:
            tools = s.by_session_tool.get(r.session)
            if tools is None:
                if r.session not in s.by_session:
                    raise NotFoundError("session", r.session)
                tools = {}  # a known session that called no tool
            return ToolsResponse(session_id=r.session, tools=_most_called(tools))
        if r.customer is not None:
            tools = s.by_customer_tool.get(r.customer)
            if tools is None:
                if r.customer not in s.by_customer:
                    raise NotFoundError("customer", r.customer)
                tools = {}
            return ToolsResponse(customer_id=r.customer, tools=_most_called(tools))
        return ToolsResponse(tools=_most_called(dict(s.by_tool)), by_category=s.by_category)

    def timeseries(self, bucket: str, by: str | None, r: Read) -> Timeseries:
        raise Unsupported(
            "time series need a database: a live tracker keeps totals, not timestamps; " + _NO_DB
        )

    def reset(
        self,
        *,
        since: datetime | None,
        until: datetime | None,
        session: str | None,
        customer: str | None,
    ) -> ResetResponse:
        if any(v is not None for v in (since, until, session, customer)):
            raise Unsupported(
                "a live tracker resets all of its counters: send no since/until/session/customer"
            )
        self.tracker.reset()
        return ResetResponse(source="tracker")

    def close(self) -> None:
        """Nothing to release: the tracker belongs to the caller."""


class DatabaseBackend:
    """Reads a stored database through :class:`~agentmeter.storage.UsageStore` (rollups)."""

    source = "database"

    def __init__(self, db_url: str) -> None:
        from ..storage.query import UsageStore

        self.store = UsageStore(db_url)

    def overview(self, r: Read, limit: int = 100, offset: int = 0) -> UsageOverview:
        st, kw = self.store, r.store_kwargs()
        page = st.by("session", **kw, limit=limit, offset=offset)
        count = (
            offset + len(page)
            if len(page) < limit and (page or offset == 0)
            else st.count_keys("session", **kw)
        )
        return UsageOverview(
            source="database",
            since=r.since,
            until=r.until,
            filters=r.filters(),
            totals=st.totals(**kw),
            by_customer=st.by("customer", **kw),
            by_agent=st.by("agent", **kw),
            by_model=st.by("model", **kw),
            by_provider=st.by("provider", **kw),
            by_session=page,
            session_count=count,
            limit=limit,
            offset=offset,
        )

    def _page(self, dim: str, r: Read, limit: int, offset: int) -> tuple[int, dict[str, Usage]]:
        kw = r.store_kwargs()
        page = self.store.by(dim, **kw, limit=limit, offset=offset)
        return self.store.count_keys(dim, **kw), page

    def sessions(self, r: Read, limit: int, offset: int) -> SessionList:
        total, page = self._page("session", r, limit, offset)
        times = self.store.session_times(page)
        return SessionList(
            total=total,
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

    def customers(self, r: Read, limit: int, offset: int) -> CustomerList:
        total, page = self._page("customer", r, limit, offset)
        return CustomerList(
            total=total,
            limit=limit,
            offset=offset,
            customers=[CustomerSummary(customer_id=k, usage=u) for k, u in page.items()],
        )

    def agents(self, r: Read, limit: int, offset: int) -> AgentList:
        total, page = self._page("agent", r, limit, offset)
        return AgentList(
            total=total,
            limit=limit,
            offset=offset,
            agents=[AgentSummary(agent_id=k, usage=u) for k, u in page.items()],
        )

    def models(self, r: Read, limit: int, offset: int) -> ModelList:
        total, page = self._page("model", r, limit, offset)
        return ModelList(
            total=total,
            limit=limit,
            offset=offset,
            models=[ModelSummary(model=k, usage=u) for k, u in page.items()],
        )

    def session(self, session_id: str, r: Read) -> SessionUsage:
        kw = r.pin("session", session_id).store_kwargs()
        kw.pop("session")
        return self.store.session(session_id, **kw)

    def customer(self, customer_id: str, r: Read) -> CustomerUsage:
        kw = r.pin("customer", customer_id).store_kwargs()
        kw.pop("customer")
        return self.store.customer(customer_id, **kw)

    def _one(self, dim: str, key: str, r: Read) -> tuple[Usage, dict[str, Any]]:
        kw = r.pin(dim, key).store_kwargs()
        found = self.store.by(dim, **kw, limit=1)
        if key not in found:
            raise NotFoundError(dim, key)
        return found[key], kw

    def agent(self, agent_id: str, r: Read) -> AgentUsage:
        usage, kw = self._one("agent", agent_id, r)
        st = self.store
        return AgentUsage(
            agent_id=agent_id,
            usage=usage,
            by_model=st.by("model", **kw),
            by_customer=st.by("customer", **kw),
            by_session=st.by("session", **kw),
        )

    def model(self, model: str, r: Read) -> ModelUsage:
        usage, kw = self._one("model", model, r)
        st = self.store
        return ModelUsage(
            model=model,
            usage=usage,
            by_agent=st.by("agent", **kw),
            by_provider=st.by("provider", **kw),
            by_customer=st.by("customer", **kw),
            by_session=st.by("session", **kw),
        )

    def tools(self, r: Read) -> ToolsResponse:
        kw = r.store_kwargs()
        session = kw.pop("session", None)
        customer = kw.pop("customer", None)
        if session is not None and not self.store.by("session", **r.store_kwargs(), limit=1):
            raise NotFoundError("session", session)
        if customer is not None and not self.store.by("customer", **r.store_kwargs(), limit=1):
            raise NotFoundError("customer", customer)
        tools = _most_called(self.store.tool_stats(session, customer=customer, **kw))
        return ToolsResponse(
            session_id=session, customer_id=customer, tools=tools, by_category=by_category(tools)
        )

    def timeseries(self, bucket: str, by: str | None, r: Read) -> Timeseries:
        points = self.store.timeseries(bucket=bucket, by=by, **r.store_kwargs())
        return Timeseries(
            source="database",
            bucket="hour" if bucket == "hour" else "day",
            by=by,
            since=r.since,
            until=r.until,
            filters=r.filters(),
            points=[TimePoint(start=t, key=k, usage=u) for t, k, u in points],
        )

    def reset(
        self,
        *,
        since: datetime | None,
        until: datetime | None,
        session: str | None,
        customer: str | None,
    ) -> ResetResponse:
        if all(v is None for v in (since, until, session, customer)):
            raise Unsupported(
                "name what to delete: since/until, session or customer "
                "(JSON body or query parameters); a database reset never deletes everything"
            )
        deleted = self.store.reset(since=since, until=until, session=session, customer=customer)
        return ResetResponse(
            source="database",
            deleted_events=int(deleted.get("events", 0)),
            deleted={k: int(v) for k, v in deleted.items()},
            since=since,
            until=until,
            session=session,
            customer=customer,
        )

    def close(self) -> None:
        self.store.close()
