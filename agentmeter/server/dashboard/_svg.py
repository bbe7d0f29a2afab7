"""Charts as inline SVG, drawn on the server: stacked bars over time.

Each bar segment carries a ``<title>`` (the browser's own tooltip: bucket, group,
value), so the chart needs no script. Colours come from a fixed colour-blind-safe
palette (Tableau 10); the legend is HTML under the chart with each group's total.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from html import escape

__all__ = ["OTHER", "PALETTE", "Series", "nice_ticks", "stacked_bars"]

PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#e15759",
    "#76b7b2",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
)
OTHER = "#bab0ac"
Series = tuple[str, Sequence[float]]  # (label, one value per bucket)


def nice_ticks(top: float, count: int = 4, *, integer: bool = False) -> list[float]:
    """Round tick values from 0 to at least ``top`` (``count`` steps or so);
    ``integer``: whole steps only (counts of calls)."""
    if top <= 0 or not math.isfinite(top):
        return [0.0, 1.0]
    raw = top / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    if integer:
        step = max(1.0, float(math.ceil(step)))
    n = math.ceil(top / step - 1e-9)
    return [i * step for i in range(n + 1)]


def _label(t: datetime, step: timedelta) -> str:
    if step < timedelta(days=1):
        return t.strftime("%m-%d %H:00")
    return t.strftime("%Y-%m-%d")


def stacked_bars(
    buckets: Sequence[datetime],
    series: Sequence[Series],
    *,
    step: timedelta,
    fmt: Callable[[float], str],
    axis_fmt: Callable[[float], str],
    label: str,
    width: int = 960,
    height: int = 220,
    colours: Sequence[str] | None = None,
    integer: bool = False,
) -> str:
    """An SVG stacked bar chart: one bar per bucket, one segment per series.

    Args:
        buckets: Start of each bucket, in order, gaps already filled.
        series: (label, values) per group, drawn bottom-up in this order; the
            colours follow the order, ``"other"`` is grey.
        step: Bucket width (labels show hours for sub-day buckets).
        fmt: Formats a value for tooltips.
        axis_fmt: Formats a value for the y axis (compact).
        label: Accessible name of the chart.
        colours: One colour per series (default: the palette, grey for ``"other"``).
        integer: The values are counts (whole ticks on the y axis).
    """
    left, right, top_pad, bottom = 64, 8, 10, 28
    plot_w, plot_h = width - left - right, height - top_pad - bottom
    n = max(len(buckets), 1)
    stacks = [sum(values[i] for _, values in series) for i in range(len(buckets))]
    ticks = nice_ticks(max(stacks, default=0.0), integer=integer)
    ymax = ticks[-1] or 1.0
    slot = plot_w / n
    bar_w = max(slot * 0.8, 1.0) if n > 1 else min(plot_w * 0.2, 80.0)
    out = [
        f'<svg class="chart-svg" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" '
        f'aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for t in ticks:
        y = top_pad + plot_h - t / ymax * plot_h
        out.append(
            f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="tick" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(axis_fmt(t))}</text>"
        )
    colours = list(colours or assign_colours([name for name, _ in series], {}))
    for i, start in enumerate(buckets):
        x = left + slot * i + (slot - bar_w) / 2
        base = 0.0
        when = _label(start, step)
        for (name, values), colour in zip(series, colours, strict=True):
            v = values[i]
            if v <= 0:
                continue
            y0 = top_pad + plot_h - (base + v) / ymax * plot_h
            h = v / ymax * plot_h
            base += v
            out.append(
                f'<rect x="{x:.1f}" y="{y0:.1f}" width="{bar_w:.1f}" height="{max(h, 0.5):.1f}" '
                f'fill="{colour}"><title>{escape(when)} · {escape(name)}: {escape(fmt(v))}'
                "</title></rect>"
            )
    # x labels: about eight, evenly spaced
    every = max(1, math.ceil(len(buckets) / 8))
    for i in range(0, len(buckets), every):
        x = left + slot * i + slot / 2
        out.append(
            f'<text class="tick" x="{x:.1f}" y="{height - 8}" text-anchor="middle">'
            f"{escape(_label(buckets[i], step))}</text>"
        )
    out.append(
        f'<line class="axis" x1="{left}" x2="{width - right}" y1="{top_pad + plot_h}" '
        f'y2="{top_pad + plot_h}"/></svg>'
    )
    return "".join(out)


def assign_colours(names: Sequence[str], known: dict[str, str]) -> list[str]:
    """A colour per series name: ``known``'s, else the next free palette colour (added to
    ``known``, so two charts of the same groups colour each group alike); grey for other."""
    out = []
    for name in names:
        if name == "other":
            out.append(OTHER)
            continue
        if name not in known:
            used = set(known.values())
            free = [c for c in PALETTE if c not in used]
            known[name] = free[0] if free else PALETTE[len(known) % len(PALETTE)]
        out.append(known[name])
    return out


def legend(
    series: Sequence[Series], fmt: Callable[[float], str], colours: Sequence[str] | None = None
) -> str:
    """HTML legend: a swatch, the group and its total over the range, per series."""
    items = []
    names = [name for name, _ in series]
    for (name, values), colour in zip(series, colours or assign_colours(names, {}), strict=True):
        items.append(
            f'<li><span class="swatch" style="background:{colour}"></span>'
            f'<span class="legend-key">{escape(name)}</span> '
            f'<span class="legend-value">{escape(fmt(sum(values)))}</span></li>'
        )
    return f'<ul class="legend">{"".join(items)}</ul>'
