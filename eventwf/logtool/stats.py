"""``stats``: counts by event type and stream kind, sizes and append rates (V10).

Aggregates are computed by SQLite over position ranges of ``chunk`` rows, one short
query each, and summed here: memory is bounded by the number of event types, whatever
the size of the log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .render import Output, duration, iso
from .source import LogSource

__all__ = ["Stats", "collect", "stats"]

WINDOWS = (("day", 86_400), ("hour", 3_600), ("minute", 60))


@dataclass
class Tally:
    events: int = 0
    data_bytes: int = 0
    largest: int = 0
    streams: int = 0


@dataclass
class Stats:
    head: int = 0
    events: int = 0
    data_bytes: int = 0
    first_us: int | None = None
    last_us: int | None = None
    recent: dict[str, int] = field(default_factory=dict)  # events in the window before last_us
    by_type: dict[str, Tally] = field(default_factory=dict)
    by_kind: dict[str, Tally] = field(default_factory=dict)
    files: dict[str, int] = field(default_factory=dict)
    pages: dict[str, int] = field(default_factory=dict)
    workflows: dict[str, int] = field(default_factory=dict)
    agents: int = 0
    callbacks_pending: int = 0
    projected_through: str | None = None
    schema_version: str | None = None

    def rate(self, window: str | None = None) -> float | None:
        """Events per second over the whole span, or over the last day, hour or minute
        (a window longer than the log is cut to the log's span)."""
        if self.first_us is None or self.last_us is None or self.last_us <= self.first_us:
            return None
        span = (self.last_us - self.first_us) / 1e6
        if window is None:
            return self.events / span
        return self.recent.get(window, 0) / min(dict(WINDOWS)[window], span)


def _add(tally: Tally, count: int, data: int, largest: int, streams: int) -> None:
    tally.events += count
    tally.data_bytes += data
    tally.largest = max(tally.largest, largest)
    tally.streams += streams


def _scan(log: LogSource, result: Stats, chunk: int) -> None:
    last_us = log.time_at(result.head) or 0
    bounds = [last_us - seconds * 1_000_000 for _, seconds in WINDOWS]
    for low in range(0, result.head, chunk):
        rows = log.tally(bounds, low, low + chunk)
        for type_name, kind, count, data, largest, streams, first, latest, *recent in rows:
            _add(result.by_type.setdefault(type_name, Tally()), count, data or 0,
                 largest or 0, streams)
            _add(result.by_kind.setdefault(kind, Tally()), count, data or 0, largest or 0,
                 streams)
            result.events += count
            result.data_bytes += data or 0
            result.first_us = first if result.first_us is None else min(result.first_us, first)
            result.last_us = latest if result.last_us is None else max(result.last_us, latest)
            for (window, _), n in zip(WINDOWS, recent, strict=True):
                result.recent[window] = result.recent.get(window, 0) + (n or 0)


def _files(log: LogSource, result: Stats) -> None:
    result.files, result.pages = log.storage()


def _projections(log: LogSource, result: Stats) -> None:
    result.workflows, result.agents, result.callbacks_pending = log.projection_counts()
    result.projected_through = log.meta("projected_through")
    result.schema_version = log.meta("schema_version")


def collect(log: LogSource, *, chunk: int = 100_000) -> Stats:
    result = Stats(head=log.head())
    _scan(log, result, chunk)
    _files(log, result)
    _projections(log, result)
    return result


def stats(log: LogSource, out: Output, *, chunk: int = 100_000) -> int:
    result = collect(log, chunk=chunk)
    if out.json:
        out.record({"record": "stats", "path": log.path, **_json(result)})
    else:
        _text(log.path, result, out)
    return 0


def _json(s: Stats) -> dict[str, Any]:
    return {
        "events": s.events, "head": s.head, "data_bytes": s.data_bytes,
        "first_time_us": s.first_us, "first_time": iso(s.first_us),
        "last_time_us": s.last_us, "last_time": iso(s.last_us),
        "events_per_second": s.rate(),
        "recent": {w: {"events": s.recent.get(w, 0), "events_per_second": s.rate(w)}
                   for w, _ in WINDOWS},
        "by_type": {k: {"events": v.events, "data_bytes": v.data_bytes, "largest": v.largest}
                    for k, v in sorted(s.by_type.items())},
        "by_kind": {k: vars(v) for k, v in sorted(s.by_kind.items())},
        "files": s.files, "pages": s.pages, "workflows": s.workflows, "agents": s.agents,
        "callbacks_pending": s.callbacks_pending, "projected_through": s.projected_through,
        "schema_version": s.schema_version,
    }


def size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} GiB"


def _number(text: str | None) -> str:
    return f"{int(text):,}" if text is not None and text.isdigit() else str(text)


def _per_second(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}/s"


def _text(path: str, s: Stats, out: Output) -> None:
    span = None if s.first_us is None or s.last_us is None else s.last_us - s.first_us
    out.line(f"log          {path} (schema {s.schema_version})")
    out.line(f"events       {s.events:,} (last position {s.head:,})")
    out.line(f"time span    {iso(s.first_us)} -> {iso(s.last_us)} ({duration(span)})")
    recent = " · ".join(f"last {w}: {_per_second(s.rate(w))}" for w, _ in WINDOWS)
    out.line(f"append rate  {_per_second(s.rate())} over the span · {recent} "
             "(windows end at the last event)")
    files = ", ".join(f"{label} {size(n)}" for label, n in s.files.items())
    if s.pages:
        out.line(f"file         {size(sum(s.files.values()))}: {files} · "
                 f"{s.pages.get('page_count', 0):,} pages of {s.pages.get('page_size', 0):,} "
                 f"bytes ({s.pages.get('freelist_count', 0):,} free)")
    else:  # PostgreSQL: the sizes of its tables
        out.line(f"tables       {size(sum(s.files.values()))}: {files}")
    average = s.data_bytes / s.events if s.events else 0
    out.line(f"event data   {size(s.data_bytes)} (average {average:,.0f} B per event)")
    statuses = " · ".join(f"{status} {n:,}" for status, n in s.workflows.items())
    out.line(f"projections  workflows {sum(s.workflows.values()):,} ({statuses or 'none'}) · "
             f"agents {s.agents:,} ({s.callbacks_pending:,} with callbacks pending) · "
             f"projected through {_number(s.projected_through)}")
    out.line()
    out.line("by stream kind")
    _tally_table(out, s.by_kind, s.events, "KIND", streams=True)
    out.line("by event type")
    _tally_table(out, s.by_type, s.events, "TYPE", streams=False)


def _tally_table(out: Output, tallies: dict[str, Tally], total: int, label: str, *,
                 streams: bool) -> None:
    rows = []
    for key, t in sorted(tallies.items(), key=lambda kv: -kv[1].events):
        share = f"{100 * t.events / total:.1f}%" if total else "-"
        cells = [key, f"{t.events:,}", share, size(t.data_bytes),
                 f"{t.data_bytes / t.events:,.0f} B" if t.events else "-", size(t.largest)]
        if streams:
            cells.insert(1, f"{t.streams:,}")
        rows.append(cells)
    headers = [label, "EVENTS", "SHARE", "DATA", "AVERAGE", "LARGEST"]
    if streams:
        headers.insert(1, "STREAMS")
    out.table(headers, rows, indent="  ")
