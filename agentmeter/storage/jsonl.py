"""JSON Lines: a sink that appends one event per line, and the readers of that format.

Each line is a :class:`~agentmeter.UsageEvent` as JSON (``timestamp`` in ISO-8601
UTC), so ``UsageEvent.model_validate_json(line)`` reads it back. The same format
is used for the SQL sink's spill file (events kept on disk while the database is
unavailable or the queue is full).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..models import EVENT_FIELDS, RawEvent, UsageEvent
from ._writer import BackgroundWriter

__all__ = ["JSONLSink", "append_lines", "raw_from_json", "raw_to_json", "read_jsonl"]

_TS = EVENT_FIELDS.index("timestamp")
_PATH = EVENT_FIELDS.index("scope_path")


def raw_to_json(raw: RawEvent) -> str:
    """One raw event tuple as one JSON line (without the newline)."""
    values: dict[str, Any] = dict(zip(EVENT_FIELDS, raw, strict=True))
    values["timestamp"] = datetime.fromtimestamp(raw[_TS], UTC).isoformat()
    values["scope_path"] = list(raw[_PATH] or ())
    return json.dumps(values, default=str, separators=(",", ":"))


def raw_from_json(line: str) -> RawEvent:
    """Parse a line written by :func:`raw_to_json` (or a ``UsageEvent`` JSON) to a raw tuple."""
    values = json.loads(line)
    if not isinstance(values, dict):
        raise ValueError("a JSONL event must be a JSON object")
    ts = values.get("timestamp")
    if isinstance(ts, str):
        parsed = datetime.fromisoformat(ts)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        values["timestamp"] = parsed.timestamp()
    fields = UsageEvent.model_fields
    out = []
    for name in EVENT_FIELDS:
        v = values[name] if name in values else fields[name].default
        if name == "scope_path":
            v = tuple(v or ())
        out.append(v)
    if not isinstance(out[0], str) or not isinstance(out[1], int | float):
        raise ValueError("a JSONL event needs a call_id and a timestamp")
    return tuple(out)


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[UsageEvent]:
    """Read the events of a JSONL file (blank lines skipped).

    Raises:
        ValueError: naming the line number of a malformed line.
    """
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield UsageEvent.from_raw(raw_from_json(line))
            except ValueError as exc:
                raise ValueError(f"{path}:{n}: malformed event: {exc}") from None


def append_lines(path: str | os.PathLike[str], raws: Iterable[RawEvent]) -> int:
    """Append events to a JSONL file in one write; returns how many were written."""
    lines = [raw_to_json(r) for r in raws]
    if not lines:
        return 0
    data = ("\n".join(lines) + "\n").encode("utf-8")
    # O_APPEND: concurrent appenders (threads, processes) never interleave within a write.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
    finally:
        os.close(fd)
    return len(lines)


class JSONLSink(BackgroundWriter):
    """Append every event to a JSON Lines file, in batches on a background thread.

    ``tracker.add_sink(JSONLSink("usage.jsonl"))``. Same queueing, flushing, exit
    and backpressure behaviour as :class:`~agentmeter.storage.SQLSink`; when the
    queue stays full (the disk is stuck), the recording thread appends the event
    to the file itself rather than dropping it.

    Args:
        path: The file (created if missing, appended to otherwise).
        batch_size, flush_interval, max_queue, block_timeout: see :class:`BackgroundWriter`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        batch_size: int = 2000,
        flush_interval: float = 0.2,
        max_queue: int = 100_000,
        block_timeout: float = 1.0,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file_lock = threading.Lock()
        super().__init__(
            name=f"agentmeter-jsonl:{self.path.name}",
            batch_size=batch_size,
            flush_interval=flush_interval,
            max_queue=max_queue,
            block_timeout=block_timeout,
        )

    def _write(self, batch: list[RawEvent]) -> int:
        with self._file_lock:
            return append_lines(self.path, batch)

    def _overflow(self, raws: list[RawEvent], reason: str) -> int:
        with self._file_lock:
            return append_lines(self.path, raws)

    def __repr__(self) -> str:
        return f"JSONLSink({str(self.path)!r})"
