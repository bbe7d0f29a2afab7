"""matplotlib charts of where the tokens, the money and the time went.

Needs matplotlib (``pip install 'agentmeter-core[plot]'``); ``import agentmeter``
never imports it. Each function takes what the tracker returns: a
:class:`~agentmeter.Snapshot` (with ``by="tool"``, ``"session"``, ``"model"``,
``"agent"``, ``"provider"`` or ``"category"``), a :class:`~agentmeter.SessionUsage`
(``by="tool"``, ``"model"`` or ``"agent"``), or a mapping ``{name: ToolStats}`` /
``{name: Usage}``; and it draws on ``ax`` when given one, else on a new figure.

- :func:`plot_tokens`: stacked input (uncached) / cache read / output / embedding tokens;
- :func:`plot_cost`: dollars, with unpriced rows marked "unpriced" (not drawn as $0);
- :func:`plot_usage`: both side by side (a Figure);
- :func:`plot_tool_calls`: ok / failed calls per tool;
- :func:`plot_latency`: each tool's latency distribution (from its duration
  histogram) with p50 and p95 marked.

Names whose counts include estimated calls are labelled ``~``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from . import _latency
from ._display import _usd_digits, fmt_count, fmt_ms
from .models import SessionUsage, Snapshot, ToolStats, Usage

if TYPE_CHECKING:
    from matplotlib.axes import Axes  # type: ignore[import-not-found, unused-ignore]
    from matplotlib.figure import Figure  # type: ignore[import-not-found, unused-ignore]

__all__ = [
    "INSTALL_HINT",
    "plot_cost",
    "plot_latency",
    "plot_tokens",
    "plot_tool_calls",
    "plot_usage",
]

INSTALL_HINT = "pip install 'agentmeter-core[plot]'"

COLORS = {
    "input": "#4C72B0",
    "cache read": "#A6BDDB",
    "output": "#DD8452",
    "embedding": "#55A868",
    "cost": "#8172B3",
    "ok": "#55A868",
    "failed": "#C44E52",
    "unpriced": "#A15C00",
}
_STEPS = 16  # histogram buckets per doubling, as in agentmeter._latency


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(f"agentmeter's plots need matplotlib: {INSTALL_HINT}") from exc
    return plt


@dataclass
class _Row:
    name: str
    uncached: int
    cache_read: int
    output: int
    embedding: int
    cost: Decimal | None
    unpriced: int
    estimated: bool
    llm_calls: int

    @property
    def tokens(self) -> int:
        return self.uncached + self.cache_read + self.output + self.embedding

    @property
    def label(self) -> str:
        return f"~{self.name}" if self.estimated else self.name


def _row(name: str, v: Usage | ToolStats) -> _Row:
    cache = v.cache_read_tokens
    if isinstance(v, Usage):
        cost, estimated, calls = v.cost_usd, v.estimated_calls > 0, v.llm_calls + v.embedding_calls
    else:
        cost, estimated, calls = v.cost_usd, False, v.llm_calls
        if not v.llm_calls and not v.embedding_tokens and not v.cost_micros:
            cost = Decimal(0)  # a tool that called no model spent nothing (not "unpriced")
    return _Row(
        name=name,
        uncached=max(v.input_tokens - cache, 0),
        cache_read=cache,
        output=v.output_tokens,
        embedding=v.embedding_tokens,
        cost=cost,
        unpriced=v.unpriced_calls,
        estimated=estimated,
        llm_calls=calls,
    )


_SNAPSHOT_BY = ("tool", "session", "model", "agent", "provider", "category")
_SESSION_BY = ("tool", "model", "agent")


def _source(data: Any, by: str) -> Mapping[str, Usage | ToolStats]:
    if isinstance(data, Snapshot):
        if by not in _SNAPSHOT_BY:
            raise ValueError(f"by must be one of {list(_SNAPSHOT_BY)} for a snapshot, got {by!r}")
        view: Mapping[str, Usage | ToolStats] = getattr(data, f"by_{by}")
        return view
    if isinstance(data, SessionUsage):
        if by not in _SESSION_BY:
            raise ValueError(f"by must be one of {list(_SESSION_BY)} for a session, got {by!r}")
        return data.tools if by == "tool" else getattr(data, f"by_{by}")
    if isinstance(data, Mapping):
        if not all(isinstance(v, Usage | ToolStats) for v in data.values()):
            raise TypeError("expected a mapping of ToolStats or of Usage")
        return data
    raise TypeError(
        "expected a Snapshot, a SessionUsage or a mapping of ToolStats / Usage, "
        f"got {type(data).__name__}"
    )


def _rows(data: Any, by: str, top: int | None, key: str) -> list[_Row]:
    rows = [_row(name, v) for name, v in _source(data, by).items()]

    def weight(r: _Row) -> tuple[float, int]:
        return (float(r.cost or 0), r.tokens) if key == "cost" else (r.tokens, r.llm_calls)

    rows.sort(key=weight, reverse=True)
    if top is not None:
        rows = rows[:top]
    rows.reverse()  # barh draws bottom-up: the largest ends on top
    return rows


def _axes(ax: Axes | None, n_rows: int) -> Axes:
    if ax is not None:
        return ax
    plt = _pyplot()
    _fig, new_ax = plt.subplots(figsize=(7, max(2.2, 0.45 * n_rows + 1.2)), layout="constrained")
    result: Axes = new_ax
    return result


def _thousands(x: float, _pos: int) -> str:
    return fmt_count(int(x)) if x == int(x) else f"{x:,.1f}"


def _dollars(x: float, _pos: int) -> str:
    return _usd_digits(Decimal(str(float(x))).quantize(Decimal("0.000001")))


def _room(ax: Axes, largest: float, factor: float) -> None:
    """Leave room right of the longest bar for its label (stacked bars defeat margins)."""
    if largest > 0:
        ax.set_xlim(0, largest * factor)


def _legend_top(ax: Axes) -> None:
    """Legend on the title's line, right-aligned (the title is left-aligned): never over bars."""
    handles, _labels = ax.get_legend_handles_labels()
    ax.legend(
        loc="lower right",
        bbox_to_anchor=(1.0, 1.0),
        ncols=min(max(1, len(handles)), 2),
        fontsize=8,
        frameon=False,
        handlelength=1.2,
        columnspacing=1.0,
        borderaxespad=0.2,
    )


def _empty(ax: Axes, what: str) -> Axes:
    ax.text(0.5, 0.5, f"no {what}", ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])
    return ax


def plot_tokens(
    data: Any, by: str = "tool", *, ax: Axes | None = None, top: int | None = 15
) -> Axes:
    """Tokens per tool (or session, model, agent ...): stacked horizontal bars.

    Segments: uncached input, cache read, output and embedding tokens (a segment
    that is zero everywhere is left out of the legend).

    Args:
        data: A Snapshot, a SessionUsage or ``{name: ToolStats | Usage}``.
        by: Which breakdown of a snapshot or session.
        ax: Axes to draw on (default: a new figure).
        top: Show only the largest ``top`` rows (``None``: all).

    Returns:
        The Axes.
    """
    from matplotlib.ticker import FuncFormatter

    rows = _rows(data, by, top, "tokens")
    ax = _axes(ax, len(rows))
    if not rows:
        return _empty(ax, "tokens")
    labels = [r.label for r in rows]
    left = [0] * len(rows)
    parts = (
        ("input", [r.uncached for r in rows]),
        ("cache read", [r.cache_read for r in rows]),
        ("output", [r.output for r in rows]),
        ("embedding", [r.embedding for r in rows]),
    )
    for name, values in parts:
        if not any(values):
            continue
        ax.barh(labels, values, left=left, color=COLORS[name], label=name, height=0.6)
        left = [a + b for a, b in zip(left, values, strict=True)]
    for y, total in enumerate(left):
        ax.annotate(f" {fmt_count(total)}", (total, y), va="center", fontsize=8, color="#333")
    ax.xaxis.set_major_formatter(FuncFormatter(_thousands))
    estimated = any(r.estimated for r in rows)
    ax.set_xlabel("tokens   (~ includes estimated counts)" if estimated else "tokens")
    ax.set_title(f"Tokens per {by}", loc="left")
    _room(ax, max(left), 1.18)
    if any(left):
        _legend_top(ax)
    return ax


def plot_cost(data: Any, by: str = "tool", *, ax: Axes | None = None, top: int | None = 15) -> Axes:
    """Cost in dollars per tool (or session, model, agent ...): horizontal bars.

    A row whose calls were all unpriced gets no bar and the label "unpriced"
    (its cost is unknown, not $0); a partly priced row says how many calls its bar
    leaves out ("+2 unpriced").

    Args:
        data: A Snapshot, a SessionUsage or ``{name: ToolStats | Usage}``.
        by: Which breakdown of a snapshot or session.
        ax: Axes to draw on (default: a new figure).
        top: Show only the ``top`` most expensive rows (``None``: all).

    Returns:
        The Axes.
    """
    from matplotlib.ticker import FuncFormatter

    rows = _rows(data, by, top, "cost")
    ax = _axes(ax, len(rows))
    if not rows:
        return _empty(ax, "cost")
    labels = [r.label for r in rows]
    values = [float(r.cost) if r.cost is not None else 0.0 for r in rows]
    ax.barh(labels, values, color=COLORS["cost"], height=0.6)
    for y, r in enumerate(rows):
        if r.cost is None:
            text, color, style = " unpriced", COLORS["unpriced"], "italic"
        elif not r.llm_calls and not r.tokens and not r.cost:
            text, color, style = " no model calls", "#888", "italic"
        else:
            text, color, style = f" {_usd_digits(r.cost)}", "#333", "normal"
            if r.unpriced:
                text += f"  +{r.unpriced:,} unpriced"
        ax.annotate(text, (values[y], y), va="center", fontsize=8, color=color, fontstyle=style)
    ax.xaxis.set_major_formatter(FuncFormatter(_dollars))
    ax.set_xlabel("cost (USD)")
    ax.set_title(f"Cost per {by}", loc="left")
    _room(ax, max(values), 1.35)
    return ax


def plot_usage(data: Any, by: str = "tool", *, top: int | None = 15) -> Figure:
    """Tokens and cost per tool (or session, model ...) side by side.

    Returns:
        The Figure (two Axes: tokens, cost).
    """
    plt = _pyplot()
    n = len(_source(data, by))
    rows = min(n, top) if top is not None else n
    fig, (ax_tokens, ax_cost) = plt.subplots(
        1, 2, figsize=(11, max(2.4, 0.45 * rows + 1.4)), layout="constrained"
    )
    plot_tokens(data, by, ax=ax_tokens, top=top)
    plot_cost(data, by, ax=ax_cost, top=top)
    figure: Figure = fig
    return figure


def _tool_stats(data: Any) -> Mapping[str, ToolStats]:
    if isinstance(data, Snapshot):
        return data.by_tool
    if isinstance(data, SessionUsage):
        return data.tools
    if isinstance(data, Mapping) and all(isinstance(v, ToolStats) for v in data.values()):
        return data
    raise TypeError(
        f"expected a Snapshot, a SessionUsage or a mapping of ToolStats, got {type(data).__name__}"
    )


def plot_tool_calls(data: Any, *, ax: Axes | None = None, top: int | None = 15) -> Axes:
    """Calls per tool, split into ok and failed (horizontal stacked bars).

    Args:
        data: A Snapshot, a SessionUsage or ``{tool: ToolStats}``.
        ax: Axes to draw on (default: a new figure).
        top: Show only the ``top`` most called tools.

    Returns:
        The Axes.
    """
    from matplotlib.ticker import MaxNLocator

    stats = sorted(_tool_stats(data).items(), key=lambda kv: kv[1].calls, reverse=True)
    if top is not None:
        stats = stats[:top]
    stats.reverse()
    ax = _axes(ax, len(stats))
    if not stats:
        return _empty(ax, "tool calls")
    names = [n for n, _ in stats]
    ok = [s.ok for _, s in stats]
    failed = [s.failed for _, s in stats]
    ax.barh(names, ok, color=COLORS["ok"], label="ok", height=0.6)
    ax.barh(names, failed, left=ok, color=COLORS["failed"], label="failed", height=0.6)
    for y, (_, s) in enumerate(stats):
        rate = f" {s.calls:,} ({s.failed:,} failed)" if s.failed else f" {s.calls:,}"
        ax.annotate(rate, (s.calls, y), va="center", fontsize=8, color="#333")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("calls")
    ax.set_title("Tool calls", loc="left")
    _room(ax, max(s.calls for _, s in stats), 1.3)
    _legend_top(ax)
    return ax


def _binned(hist: Mapping[int, int], per_doubling: int) -> tuple[list[float], list[float], int]:
    """Edges (ms) and shares of a duration histogram re-binned to ``per_doubling`` bins."""
    group = max(1, _STEPS // per_doubling)
    zero = hist.get(_latency.ZERO_BUCKET, 0)
    counts: dict[int, int] = {}
    for index, n in hist.items():
        if index != _latency.ZERO_BUCKET:
            counts[index // group] = counts.get(index // group, 0) + n
    if not counts:
        return [], [], zero
    lo, hi = min(counts), max(counts)
    total = sum(counts.values()) + zero
    edges = [2.0 ** (g * group / _STEPS) for g in range(lo, hi + 2)]
    shares = [counts.get(g, 0) / total for g in range(lo, hi + 1)]
    return edges, shares, zero


def plot_latency(
    data: Any,
    *,
    ax: Axes | None = None,
    tools: Sequence[str] | None = None,
    bins_per_doubling: int = 4,
) -> Axes:
    """The latency distribution of each tool, with its p50 and p95.

    Drawn from ``ToolStats.duration_histogram`` (log-scale buckets), as the share
    of the tool's calls per duration bin on a log time axis; a solid tick marks the
    p50 and a dashed one the p95. Calls that took 0 ms are counted in the legend.

    Args:
        data: A Snapshot, a SessionUsage or ``{tool: ToolStats}``.
        ax: Axes to draw on (default: a new figure).
        tools: Only these tools (default: every tool that was called).
        bins_per_doubling: Histogram resolution (1, 2, 4, 8 or 16 bins per doubling).

    Returns:
        The Axes.
    """
    plt = _pyplot()
    from matplotlib.ticker import FuncFormatter

    stats = _tool_stats(data)
    names = list(tools) if tools is not None else [n for n, s in stats.items() if s.calls]
    if ax is None:
        _fig, ax = plt.subplots(figsize=(8, 4), layout="constrained")
    assert ax is not None
    drawn = 0
    colors = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    for i, name in enumerate(names):
        s = stats[name]
        edges, shares, zero = _binned(s.duration_histogram, bins_per_doubling)
        if not edges:
            continue
        color = colors[i % len(colors)]
        label = f"{name} (n={s.calls:,}, p50 {fmt_ms(s.p50_ms)}, p95 {fmt_ms(s.p95_ms)})"
        if zero:
            label += f", {zero:,} at 0 ms"
        ax.stairs(shares, edges, color=color, linewidth=1.6, label=label, fill=False)
        ax.stairs(shares, edges, color=color, alpha=0.12, fill=True)
        top = max(shares)
        if s.p50_ms:
            ax.vlines(s.p50_ms, 0, top * 1.08, colors=color, linestyles="-", linewidth=1.2)
        if s.p95_ms:
            ax.vlines(s.p95_ms, 0, top * 1.08, colors=color, linestyles="--", linewidth=1.2)
        drawn += 1
    if not drawn:
        return _empty(ax, "tool durations")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:g}"))
    ax.set_xlabel("duration (ms, log scale)   — p50   - - p95")
    ax.set_ylabel("share of calls")
    ax.set_title("Tool latency")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, frameon=False)
    result: Axes = ax
    return result
