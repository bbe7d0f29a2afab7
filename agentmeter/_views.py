"""Read-side views: snapshots and session usage built from copied tracker state.

Everything here runs outside the tracker's lock, on copies, and builds the
pydantic value objects. Every breakdown is a group-by over the cells.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from operator import add
from typing import Any

from . import _fields, _tools
from .models import (
    BudgetStatus,
    CustomerUsage,
    SessionUsage,
    Snapshot,
    ToolStats,
    Usage,
    UsageCell,
)

# model, provider, agent, tool, customer
CellKey = tuple[str | None, str | None, str | None, str | None, str | None]
CellRows = list[tuple[str | None, CellKey, list[Any]]]  # (session, key, row)
ToolRows = list[tuple[str | None, str, _tools.ToolAcc]]  # (session or customer, tool, acc)
_IDX = _fields.INDEX


def acc_row(target: dict[Any, list[Any]], key: Any, row: Iterable[Any]) -> None:
    """Add ``row`` into ``target[key]``."""
    cur = target.get(key)
    if cur is None:
        target[key] = list(row)
    else:
        cur[:] = map(add, cur, row)


def merge_stats(name: str, stats: Iterable[ToolStats], category: str = "") -> ToolStats:
    """Combine several ToolStats (e.g. one tool across sessions) into one."""
    acc = _tools.ToolAcc(category)
    llm = _fields.zeros()
    i = _IDX
    for s in stats:
        acc.absorb(s)
        llm[i["llm_calls"]] += s.llm_calls
        llm[i["input_tokens"]] += s.input_tokens
        llm[i["output_tokens"]] += s.output_tokens
        llm[i["cache_read_tokens"]] += s.cache_read_tokens
        llm[i["embedding_tokens"]] += s.embedding_tokens
        llm[i["cost_micros"]] += s.cost_micros
        llm[i["unpriced_calls"]] += s.unpriced_calls
    return _tools.build(name, acc, llm, category)


def session_usage(
    session_id: str,
    cell_rows: list[tuple[CellKey, list[Any]]],
    tool_accs: list[tuple[str, _tools.ToolAcc]],
    budget: BudgetStatus | None,
) -> SessionUsage:
    """One session's view from its cells and tool accumulators."""
    total = _fields.zeros()
    by_model: dict[str, list[Any]] = {}
    by_agent: dict[str, list[Any]] = {}
    tool_llm: dict[str, list[Any]] = {}
    for (model, _provider, agent, tool, _customer), row in cell_rows:
        total[:] = map(add, total, row)
        if model is not None:
            acc_row(by_model, model, row)
        if agent is not None:
            acc_row(by_agent, agent, row)
        if tool is not None:
            acc_row(tool_llm, tool, row)
    accs = dict(tool_accs)
    names = sorted(set(accs) | set(tool_llm))
    return SessionUsage(
        session_id=session_id,
        usage=Usage.from_row(total),
        by_model={k: Usage.from_row(v) for k, v in by_model.items()},
        by_agent={k: Usage.from_row(v) for k, v in by_agent.items()},
        tools={t: _tools.build(t, accs.get(t), tool_llm.get(t)) for t in names},
        budget=budget,
    )


def customer_usage(
    customer_id: str,
    cell_rows: CellRows,
    tool_accs: list[tuple[str, _tools.ToolAcc]],
    budget: BudgetStatus | None,
) -> CustomerUsage:
    """One customer's view from its cells (``(session, key, row)``) and tool accumulators."""
    total = _fields.zeros()
    by: dict[str, dict[str, list[Any]]] = {"model": {}, "agent": {}, "session": {}}
    tool_llm: dict[str, list[Any]] = {}
    for session, (model, _provider, agent, tool, _customer), row in cell_rows:
        total[:] = map(add, total, row)
        for dim, key in (("model", model), ("agent", agent), ("session", session)):
            if key is not None:
                acc_row(by[dim], key, row)
        if tool is not None:
            acc_row(tool_llm, tool, row)
    accs = dict(tool_accs)
    names = sorted(set(accs) | set(tool_llm))
    return CustomerUsage(
        customer_id=customer_id,
        usage=Usage.from_row(total),
        by_model={k: Usage.from_row(v) for k, v in by["model"].items()},
        by_agent={k: Usage.from_row(v) for k, v in by["agent"].items()},
        by_session={k: Usage.from_row(v) for k, v in by["session"].items()},
        tools={t: _tools.build(t, accs.get(t), tool_llm.get(t)) for t in names},
        budget=budget,
    )


def snapshot(cells: CellRows, tools: ToolRows, customer_tools: ToolRows | None = None) -> Snapshot:
    """A full snapshot from copied cells and tool accumulators (per session, and per
    customer in ``customer_tools``)."""
    total = _fields.zeros()
    by: dict[str, dict[Any, list[Any]]] = {
        "model": {},
        "provider": {},
        "session": {},
        "agent": {},
        "customer": {},
    }
    tool_llm: dict[tuple[str | None, str], list[Any]] = {}
    ctool_llm: dict[tuple[str, str], list[Any]] = {}
    out_cells = []
    for session, (model, provider, agent, tool, customer), row in cells:
        total[:] = map(add, total, row)
        for dim, key in (
            ("model", model),
            ("provider", provider),
            ("session", session),
            ("agent", agent),
            ("customer", customer),
        ):
            if key is not None:
                acc_row(by[dim], key, row)
        if tool is not None:
            acc_row(tool_llm, (session, tool), row)
            if customer is not None:
                acc_row(ctool_llm, (customer, tool), row)
        out_cells.append(
            UsageCell(
                model=model,
                provider=provider,
                session_id=session,
                agent_id=agent,
                tool=tool,
                customer_id=customer,
                usage=Usage.from_row(row),
            )
        )
    accs = {(s, t): a for s, t, a in tools}
    categories = {t: a.category for (_, t), a in accs.items() if a.category}
    per_session_tool: list[tuple[str | None, ToolStats]] = []
    for pair in sorted(set(accs) | set(tool_llm), key=lambda k: (k[0] or "", k[1])):
        stats = _tools.build(
            pair[1], accs.get(pair), tool_llm.get(pair), categories.get(pair[1], "")
        )
        per_session_tool.append((pair[0], stats))
    grouped_tool: dict[str, list[ToolStats]] = {}
    by_session_tool: dict[str, dict[str, ToolStats]] = {}
    for session, st in per_session_tool:
        grouped_tool.setdefault(st.tool, []).append(st)
        if session is not None:
            by_session_tool.setdefault(session, {})[st.tool] = st
    by_tool = {t: merge_stats(t, lst, categories.get(t, "")) for t, lst in grouped_tool.items()}
    caccs = {(c, t): a for c, t, a in customer_tools or () if c is not None}
    by_customer_tool: dict[str, dict[str, ToolStats]] = {}
    for cpair in sorted(set(caccs) | set(ctool_llm)):
        by_customer_tool.setdefault(cpair[0], {})[cpair[1]] = _tools.build(
            cpair[1], caccs.get(cpair), ctool_llm.get(cpair), categories.get(cpair[1], "")
        )
    grouped_cat: dict[str, list[ToolStats]] = {}
    for st in by_tool.values():
        if st.category:
            grouped_cat.setdefault(st.category, []).append(st)
    return Snapshot(
        taken_at=datetime.now(UTC),
        totals=Usage.from_row(total),
        by_model={k: Usage.from_row(v) for k, v in by["model"].items()},
        by_provider={k: Usage.from_row(v) for k, v in by["provider"].items()},
        by_session={k: Usage.from_row(v) for k, v in by["session"].items()},
        by_agent={k: Usage.from_row(v) for k, v in by["agent"].items()},
        by_customer={k: Usage.from_row(v) for k, v in by["customer"].items()},
        by_tool=by_tool,
        by_category={c: merge_stats(c, lst, c) for c, lst in grouped_cat.items()},
        by_session_tool=by_session_tool,
        cells=tuple(out_cells),
        session_tool_stats=tuple(per_session_tool),
        by_customer_tool=by_customer_tool,
    )


def spend_of(rows: Iterable[list[Any]], tool_calls: int) -> tuple[int, int, int, int, int, int]:
    """Budget spend (tokens, input, output, cost, llm calls, tool calls) of usage rows."""
    tot = _fields.zeros()
    for r in rows:
        tot[:] = map(add, tot, r)
    i = _IDX
    inp, out = int(tot[i["input_tokens"]]), int(tot[i["output_tokens"]])
    return (
        inp + out + int(tot[i["embedding_tokens"]]),
        inp,
        out,
        int(tot[i["cost_micros"]]),
        int(tot[i["llm_calls"]]),
        tool_calls,
    )
