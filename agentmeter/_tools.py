"""Per-(session, tool) call statistics: the mutable accumulator behind ToolStats."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from . import _latency
from .models import ToolStats

RECENT_IDS = 8  # call ids kept per tool: enough to find a call, bounded for 1M calls


class ToolAcc:
    """Counters of one tool within one session (or with no session)."""

    __slots__ = ("calls", "category", "failed", "hist", "max", "min", "ok", "recent", "total")

    def __init__(self, category: str = "") -> None:
        self.category = category
        self.calls = 0
        self.ok = 0
        self.failed = 0
        self.total = 0.0
        self.min: float | None = None
        self.max: float | None = None
        self.hist: dict[int, int] = {}
        self.recent: deque[str] = deque(maxlen=RECENT_IDS)

    def add(self, ok: bool, duration_ms: float, call_id: str) -> None:
        self.calls += 1
        if ok:
            self.ok += 1
        else:
            self.failed += 1
        self.total += duration_ms
        if self.min is None or duration_ms < self.min:
            self.min = duration_ms
        if self.max is None or duration_ms > self.max:
            self.max = duration_ms
        b = _latency.bucket(duration_ms)
        self.hist[b] = self.hist.get(b, 0) + 1
        self.recent.append(call_id)

    def absorb(self, other: ToolAcc | ToolStats) -> None:
        """Add another accumulator's (or a snapshot's) call statistics to this one."""
        if isinstance(other, ToolStats):
            calls, ok, failed, total = other.calls, other.ok, other.failed, other.total_duration_ms
            mn, mx, hist, recent = (
                other.min_duration_ms,
                other.max_duration_ms,
                other.duration_histogram,
                other.recent_call_ids,
            )
            category = other.category
        else:
            calls, ok, failed, total = other.calls, other.ok, other.failed, other.total
            mn, mx, hist, recent = other.min, other.max, other.hist, tuple(other.recent)
            category = other.category
        if category and not self.category:
            self.category = category
        self.calls += calls
        self.ok += ok
        self.failed += failed
        self.total += total
        if mn is not None and (self.min is None or mn < self.min):
            self.min = mn
        if mx is not None and (self.max is None or mx > self.max):
            self.max = mx
        for k, v in hist.items():
            self.hist[k] = self.hist.get(k, 0) + v
        self.recent.extend(recent)

    def copy(self) -> ToolAcc:
        c = ToolAcc(self.category)
        c.absorb(self)
        return c


def build(
    tool: str, acc: ToolAcc | None, llm: Iterable[int | float] | None, category: str = ""
) -> ToolStats:
    """A ToolStats from call statistics and the usage row of LLM calls made inside."""
    from . import _fields

    row = list(llm) if llm is not None else _fields.zeros()
    i = _fields.INDEX
    acc = acc or ToolAcc(category)
    return ToolStats.model_construct(
        tool=tool,
        category=acc.category or category,
        calls=acc.calls,
        ok=acc.ok,
        failed=acc.failed,
        total_duration_ms=acc.total,
        min_duration_ms=acc.min,
        max_duration_ms=acc.max,
        llm_calls=int(row[i["llm_calls"]]),
        input_tokens=int(row[i["input_tokens"]]),
        output_tokens=int(row[i["output_tokens"]]),
        cache_read_tokens=int(row[i["cache_read_tokens"]]),
        embedding_tokens=int(row[i["embedding_tokens"]]),
        cost_micros=int(row[i["cost_micros"]]),
        unpriced_calls=int(row[i["unpriced_calls"]]),
        recent_call_ids=tuple(acc.recent),
        duration_histogram=dict(acc.hist),
    )
