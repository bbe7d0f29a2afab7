"""Value objects at agentmeter's boundaries: frozen pydantic models.

They are built when someone reads (snapshots, sessions, scopes, events), never
on the recording hot path, and they serialise to JSON
(``snapshot.model_dump_json()``) so a snapshot can travel to another process
and be merged there (:meth:`~agentmeter.Tracker.merge`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, computed_field

from . import _fields, _latency, _render

if TYPE_CHECKING:
    import pandas as pd  # type: ignore[import-untyped, import-not-found, unused-ignore]

__all__ = [
    "BudgetAlert",
    "BudgetRefusal",
    "BudgetStatus",
    "CustomerUsage",
    "SessionUsage",
    "Snapshot",
    "ToolStats",
    "ToolTable",
    "Usage",
    "UsageCell",
    "UsageEvent",
]

# "ignore": the JSON of a model includes its computed fields; reading it back drops them.
_FROZEN = ConfigDict(frozen=True, extra="ignore")


def micros_to_usd(micros: int) -> Decimal:
    """Integer micro-USD to exact ``Decimal`` dollars."""
    return Decimal(micros).scaleb(-6)


class Usage(BaseModel):
    """Totals of everything recorded into one aggregate (tracker, scope, session, model ...).

    Token conventions: ``input_tokens`` counts every prompt token with the cached
    ones included (``cache_read_tokens`` / ``cache_write_tokens`` are parts of it);
    ``reasoning_tokens`` is part of ``output_tokens``. Embedding tokens are kept
    apart in ``embedding_tokens``.
    """

    model_config = _FROZEN

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    llm_calls: int = 0
    failed_llm_calls: int = 0
    estimated_calls: int = Field(
        0, description="LLM and embedding calls whose counts were estimated"
    )
    cost_micros: int = Field(0, description="Cost of the priced calls, integer micro-USD")
    unpriced_calls: int = Field(0, description="Calls whose model had no known price")
    llm_latency_ms: float = 0.0
    embedding_tokens: int = 0
    embedding_calls: int = 0
    tool_calls: int = 0
    failed_tool_calls: int = 0
    tool_duration_ms: float = 0.0
    cache_hits: int = 0
    cache_misses: int = 0
    tokens_saved: int = 0

    @classmethod
    def from_row(cls, row: Sequence[int | float]) -> Usage:
        """Build from an internal counter row (see ``_fields.FIELDS``)."""
        values: dict[str, Any] = dict(zip(_fields.FIELDS, row, strict=True))
        return cls.model_construct(**values)

    def to_row(self) -> list[int | float]:
        """The internal counter row of this usage."""
        return [getattr(self, f) for f in _fields.FIELDS]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_tokens(self) -> int:
        """LLM input + output tokens plus embedding tokens."""
        return self.input_tokens + self.output_tokens + self.embedding_tokens

    @computed_field  # type: ignore[prop-decorator]
    @property
    def cost_usd(self) -> Decimal | None:
        """Cost in dollars; ``None`` when calls were made and none of them was priced.

        When only some calls were priced this is their sum, and ``unpriced_calls`` says
        how many are missing from it.
        """
        priced_calls = self.llm_calls + self.embedding_calls - self.unpriced_calls
        if self.unpriced_calls and priced_calls <= 0 and not self.cost_micros:
            return None
        return micros_to_usd(self.cost_micros)

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage.from_row([a + b for a, b in zip(self.to_row(), other.to_row(), strict=True)])

    def __repr__(self) -> str:
        return _render.text("usage_repr", self)

    def __str__(self) -> str:
        return _render.text("usage_text", self)

    def _repr_html_(self) -> str:
        return _render.text("usage_html", self)


class ToolStats(BaseModel):
    """Statistics of one tool (or one category, or one tool within one session).

    ``p50_ms`` / ``p95_ms`` come from a bounded log-scale histogram (within ~2.2%,
    clamped to the exact min and max); ``recent_call_ids`` keeps only the last few.
    """

    model_config = _FROZEN

    tool: str
    category: str = ""
    calls: int = 0
    ok: int = 0
    failed: int = 0
    total_duration_ms: float = 0.0
    min_duration_ms: float | None = None
    max_duration_ms: float | None = None
    llm_calls: int = Field(0, description="LLM calls made inside the tool")
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    embedding_tokens: int = 0
    cost_micros: int = 0
    unpriced_calls: int = 0
    recent_call_ids: tuple[str, ...] = ()
    duration_histogram: dict[int, int] = Field(default_factory=dict, repr=False)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_tokens(self) -> int:
        """Tokens spent by LLM and embedding calls inside the tool."""
        return self.input_tokens + self.output_tokens + self.embedding_tokens

    @computed_field  # type: ignore[prop-decorator]
    @property
    def cost_usd(self) -> Decimal | None:
        """Cost of the tool: its own price per call (``set_tool_price``) plus the LLM
        calls made inside it (``None`` if there was nothing but unpriced calls)."""
        if self.unpriced_calls and self.unpriced_calls >= self.llm_calls and not self.cost_micros:
            return None
        return micros_to_usd(self.cost_micros)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def mean_duration_ms(self) -> float | None:
        """Mean duration of a call, ``None`` before the first call."""
        return self.total_duration_ms / self.calls if self.calls else None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def p50_ms(self) -> float | None:
        """Median call duration."""
        return self._quantile(0.5)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def p95_ms(self) -> float | None:
        """95th percentile call duration."""
        return self._quantile(0.95)

    def _quantile(self, q: float) -> float | None:
        if self.min_duration_ms is None or self.max_duration_ms is None:
            return None
        return _latency.quantile(
            self.duration_histogram, q, self.min_duration_ms, self.max_duration_ms
        )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def success_rate(self) -> float | None:
        """Share of calls that succeeded."""
        return self.ok / self.calls if self.calls else None

    def __str__(self) -> str:
        return _render.text("tool_stats_text", {self.tool: self})

    def _repr_html_(self) -> str:
        return _render.text("tool_stats_html", {self.tool: self})


class ToolTable(dict[str, ToolStats]):
    """``{tool: ToolStats}`` that renders as a table in Jupyter and in ``print``.

    A plain ``dict`` in every other respect (``tracker.tool_stats()`` results
    compare equal to dicts). Wrap any mapping of tool stats with ``ToolTable(stats)``.
    """

    __slots__ = ()

    def _repr_html_(self) -> str:
        return _render.text("tool_stats_html", self)

    def __str__(self) -> str:
        return _render.text("tool_stats_text", self)

    def to_dataframe(self) -> pd.DataFrame:
        """One row per tool (needs pandas: ``pip install 'agentmeter-core[pandas]'``)."""
        return cast("pd.DataFrame", _render.render("tool_stats_frame", self))


class UsageCell(BaseModel):
    """Usage of one (model, provider, session, agent, tool, customer) combination.

    A snapshot carries these so that every breakdown can be rebuilt after merging
    snapshots of several processes.
    """

    model_config = _FROZEN

    model: str | None = None
    provider: str | None = None
    session_id: str | None = None
    agent_id: str | None = None
    tool: str | None = None
    customer_id: str | None = None
    usage: Usage


class BudgetRefusal(BaseModel):
    """The last call a budget refused in its current period, and why."""

    model_config = _FROZEN

    limit: str = Field(description="The limit that refused, e.g. 'max_cost_usd'")
    requested: int | Decimal = Field(description="What the refused call asked for")
    at: datetime = Field(description="When it was refused")
    message: str = Field(description="The BudgetExceeded message")


class BudgetStatus(BaseModel):
    """A budget's limits against what was spent and what calls in flight reserved.

    For a budget with a period, ``used`` / ``reserved`` / ``remaining`` are those
    of the current period, which started at ``period_start`` and renews at
    ``resets_at``. ``refused`` is the last call the budget refused in the period.
    """

    model_config = _FROZEN

    owner: str
    limits: dict[str, int | Decimal]
    used: dict[str, int | Decimal]
    reserved: dict[str, int | Decimal]
    period: str | None = Field(
        default=None, description="'day', 'week', 'month', '<n>s' (a window); null: none"
    )
    period_start: datetime | None = Field(
        default=None, description="When the current period started (null without a period)"
    )
    resets_at: datetime | None = Field(
        default=None, description="When the budget renews (null without a period)"
    )
    refused: BudgetRefusal | None = Field(
        default=None, description="The last call refused in this period, and why (null: none)"
    )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def remaining(self) -> dict[str, int | Decimal]:
        """What is left of each limit (never negative)."""
        out: dict[str, int | Decimal] = {}
        for name, limit in self.limits.items():
            left = limit - self.used.get(name, 0) - self.reserved.get(name, 0)
            out[name] = left if left > 0 else type(limit)(0)
        return out

    @computed_field  # type: ignore[prop-decorator]
    @property
    def exhausted(self) -> bool:
        """True when some limit has nothing left."""
        return any(v <= 0 for v in self.remaining.values())

    @computed_field(  # type: ignore[prop-decorator]
        description="'refused' after a refusal this period, else 'exhausted' or 'within limits'"
    )
    @property
    def state(self) -> str:
        """``"refused"`` after a refusal this period, else ``"exhausted"`` / ``"within limits"``."""
        if self.refused is not None:
            return "refused"
        return "exhausted" if self.exhausted else "within limits"

    def __str__(self) -> str:
        return _render.text("budget_text", self)

    def _repr_html_(self) -> str:
        return _render.text("budget_html", self)


class BudgetAlert(BaseModel):
    """A budget crossed one of its ``alert_at`` thresholds (fired once per period).

    Delivered to the tracker's :meth:`~agentmeter.Tracker.subscribe_alerts`
    callbacks and to every sink with an ``alert(alert)`` method, outside every
    lock, after the spend that crossed the threshold was settled.
    """

    model_config = _FROZEN

    owner: str = Field(description="What the budget belongs to, e.g. \"customer 'acme'\"")
    key: dict[str, str] = Field(
        description="The budget's attribution: session_id / customer_id / agent / model / "
        "tool / scope"
    )
    limit: str = Field(description="The limit crossed, e.g. 'max_cost_usd'")
    threshold: float = Field(description="The fraction of the limit crossed")
    used: int | Decimal = Field(description="Spent so far in the period (dollars for cost)")
    limit_value: int | Decimal = Field(description="The limit (dollars for cost)")
    period: str | None = Field(default=None, description="'day', 'week', 'month', '<n>s'")
    period_start: datetime | None = Field(default=None, description="The period's start")
    resets_at: datetime | None = Field(default=None, description="When the budget renews")
    at: datetime = Field(description="When the threshold was crossed")

    def __str__(self) -> str:
        when = f" ({self.period}, resets {self.resets_at.isoformat()})" if self.resets_at else ""
        return (
            f"budget of {self.owner}: {self.limit} at {self.threshold:.0%} "
            f"(used {self.used} of {self.limit_value}){when}"
        )


class SessionUsage(BaseModel):
    """One session: its usage, its breakdowns, its tools and its budget."""

    model_config = _FROZEN

    session_id: str
    usage: Usage
    by_model: dict[str, Usage] = Field(default_factory=dict)
    by_agent: dict[str, Usage] = Field(default_factory=dict)
    tools: dict[str, ToolStats] = Field(default_factory=dict)
    budget: BudgetStatus | None = None

    def __repr__(self) -> str:
        return _render.text("session_repr", self)

    def __str__(self) -> str:
        return _render.text("session_text", self)

    def _repr_html_(self) -> str:
        return _render.text("session_html", self)

    def to_dataframe(self, by: str = "tool") -> pd.DataFrame:
        """One view as a DataFrame: ``"tool"`` (default), ``"model"``, ``"agent"``, ``"totals"``.

        Needs pandas: ``pip install 'agentmeter-core[pandas]'``.
        """
        return cast("pd.DataFrame", _render.render("session_frame", self, by))


class CustomerUsage(BaseModel):
    """One customer (the party you bill): its usage, breakdowns, sessions and tools.

    Built by :meth:`agentmeter.Tracker.customer` and
    :meth:`agentmeter.storage.UsageStore.customer`; both raise
    :class:`~agentmeter.NotFoundError` for a customer with nothing recorded.
    """

    model_config = _FROZEN

    customer_id: str
    usage: Usage
    by_model: dict[str, Usage] = Field(default_factory=dict)
    by_agent: dict[str, Usage] = Field(default_factory=dict)
    by_session: dict[str, Usage] = Field(
        default_factory=dict, description="The customer's usage per session"
    )
    tools: dict[str, ToolStats] = Field(
        default_factory=dict, description="Per-tool stats of the customer's tool calls"
    )
    budget: BudgetStatus | None = None

    def __str__(self) -> str:
        return _render.text("customer_text", self)

    def _repr_html_(self) -> str:
        return _render.text("customer_html", self)


class Snapshot(BaseModel):
    """A frozen, JSON-serialisable picture of a tracker.

    ``cells`` hold the joint breakdown; the ``by_*`` views are derived from it.
    """

    model_config = _FROZEN

    taken_at: datetime
    totals: Usage
    by_model: dict[str, Usage] = Field(default_factory=dict)
    by_provider: dict[str, Usage] = Field(default_factory=dict)
    by_session: dict[str, Usage] = Field(default_factory=dict)
    by_agent: dict[str, Usage] = Field(default_factory=dict)
    by_customer: dict[str, Usage] = Field(default_factory=dict)
    by_tool: dict[str, ToolStats] = Field(default_factory=dict)
    by_category: dict[str, ToolStats] = Field(default_factory=dict)
    by_session_tool: dict[str, dict[str, ToolStats]] = Field(default_factory=dict)
    cells: tuple[UsageCell, ...] = ()
    session_tool_stats: tuple[tuple[str | None, ToolStats], ...] = Field(
        (), description="Tool stats per (session or None, tool), the source of the tool views"
    )
    by_customer_tool: dict[str, dict[str, ToolStats]] = Field(
        default_factory=dict, description="Tool stats per customer, then per tool"
    )

    def __repr__(self) -> str:
        return _render.text("snapshot_repr", self)

    def __str__(self) -> str:
        return _render.text("snapshot_text", self)

    def _repr_html_(self) -> str:
        return _render.text("snapshot_html", self)

    def to_dataframe(self, by: str = "cells") -> pd.DataFrame:
        """One view as a pandas DataFrame (see :func:`agentmeter.frames.snapshot_frame`).

        ``by``: ``"cells"`` (default), ``"totals"``, ``"session"``, ``"model"``,
        ``"provider"``, ``"agent"``, ``"tool"``, ``"category"`` or ``"session_tool"``.
        Needs pandas: ``pip install 'agentmeter-core[pandas]'``.
        """
        return cast("pd.DataFrame", _render.render("snapshot_frame", self, by))


EventKind = Literal["chat", "completion", "embedding", "tool", "cache_hit", "cache_miss"]


class UsageEvent(BaseModel):
    """One metered call, delivered to subscribers (and sinks) after it was counted."""

    model_config = _FROZEN

    call_id: str
    timestamp: datetime
    kind: str
    model: str | None = None
    provider: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cost_micros: int | None = None
    latency_ms: float | None = None
    session_id: str | None = None
    agent_id: str | None = None
    scope_path: tuple[str, ...] = ()
    tool: str | None = None
    category: str | None = None
    status: Literal["ok", "error"] = "ok"
    error: str | None = None
    estimated: bool = False
    tokens_saved: int = 0
    metadata: dict[str, Any] | None = None
    customer_id: str | None = None
    tags: dict[str, str] | None = None

    @classmethod
    def from_raw(cls, raw: RawEvent) -> UsageEvent:
        """Build from the raw tuple the tracker hands to sinks (timestamp in epoch seconds)."""
        values = dict(zip(EVENT_FIELDS, raw, strict=True))
        values["timestamp"] = datetime.fromtimestamp(raw[1], UTC)
        return cls.model_construct(**values)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def cost_usd(self) -> Decimal | None:
        """Cost in dollars, ``None`` when unpriced (or not a priced kind of event)."""
        return None if self.cost_micros is None else micros_to_usd(self.cost_micros)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens


# The raw event tuple: UsageEvent's fields in this order, timestamp as epoch seconds.
EVENT_FIELDS: tuple[str, ...] = (
    "call_id",
    "timestamp",
    "kind",
    "model",
    "provider",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost_micros",
    "latency_ms",
    "session_id",
    "agent_id",
    "scope_path",
    "tool",
    "category",
    "status",
    "error",
    "estimated",
    "tokens_saved",
    "metadata",
    "customer_id",
    "tags",
)
RawEvent = tuple[Any, ...]
