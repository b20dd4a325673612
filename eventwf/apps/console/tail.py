"""The log's tail, filtered by stream, event type, agent or workflow, and followed live.

Theory of operation (specs/console.md CN7, CN16). A tail is a window of the log read in
bounded batches through the log tool (``LogSource.reader`` for the whole log,
``stream_views`` for one stream), each row checked against the one before it, and
turned into the log tool's own row records (``row_record``, what ``eventwf log PATH
tail --json`` prints). Two questions, both bounded by :data:`SCAN` rows per request:

- the newest ``count`` matching events (``after`` absent): windows are read backwards
  from the head until ``count`` rows match or :data:`SCAN` rows were read;
- what matched since position ``after`` (the live tail): rows ``after < position`` are
  read forwards, at most :data:`SCAN` of them, and the answer says how far it read
  (``next_after``), so the page's next poll starts there and reads nothing twice.

The last record of every answer is ``{"record": "tail", ...}``: the head, the filter, the
rows read and ``next_after``. A stream filter (``stream``, or ``workflow``/``agent``,
which name their streams) reads that stream's rows only, through its index.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import islice
from typing import Any

from eventwf.logtool.render import row_record
from eventwf.logtool.rowview import RowView
from eventwf.logtool.source import LogSource
from eventwf.model.events import agent_stream, workflow_stream

__all__ = ["MAX_TAIL", "SCAN", "TailFilter", "parse_filter", "tail"]

MAX_TAIL = 500  # events a tail shows at most
SCAN = 20_000  # rows one request reads at most, however rare the matches
_WINDOW = 1000  # rows read per backward window


class BadFilter(ValueError):
    """A tail filter the console cannot use (a 400 naming it)."""


@dataclass(frozen=True)
class TailFilter:
    """Which rows a tail shows: one stream (or any), one event type (or any)."""

    stream: str | None = None
    type: str | None = None

    def matches(self, item: RowView) -> bool:
        return self.type is None or item.row.type == self.type

    def query(self) -> dict[str, str]:
        return {k: v for k, v in (("stream", self.stream), ("type", self.type)) if v}


def parse_filter(query: Mapping[str, str]) -> TailFilter:
    """The filter of ``stream``, ``workflow`` (an id), ``agent`` (``Class/name``) and
    ``type``; at most one of the first three (each names one stream)."""
    streams = []
    if query.get("stream"):
        streams.append(query["stream"])
    if query.get("workflow"):
        streams.append(workflow_stream(query["workflow"]))
    if query.get("agent"):
        agent_class, slash, name = query["agent"].partition("/")
        if not slash or not agent_class or not name:
            raise BadFilter(f"agent={query['agent']!r} is not Class/name")
        streams.append(agent_stream(agent_class, name))
    if len(streams) > 1:
        raise BadFilter(f"stream, workflow and agent each name a stream: give one, not "
                        f"{', '.join(map(repr, streams))}")
    return TailFilter(streams[0] if streams else None, query.get("type") or None)


def _backwards(log: LogSource, flt: TailFilter, head: int, first: int = _WINDOW
               ) -> Iterator[list[RowView]]:
    """Windows of rows, newest window first (each in log order), at most SCAN rows; the
    first window holds ``first`` rows (all a tail without a type filter needs)."""
    window = first
    if flt.stream is None:
        high = head
        while high > 0 and head - high < SCAN:
            low = max(high - window, 0, head - SCAN)
            window = _WINDOW
            yield list(log.reader(low).read(until=high))
            high = low
        return
    top = log.stream_head(flt.stream)
    high = top + 1  # versions [low, high) of the stream
    while high > 0 and top + 1 - high < SCAN:
        low = max(high - window, 0, top + 1 - SCAN)
        window = _WINDOW
        views = log.stream_views(flt.stream, from_version=low, until=head)
        yield [v for v in islice(views, high - low) if v.row.stream_position < high]
        high = low


def _forwards(log: LogSource, flt: TailFilter, after: int, until: int) -> Iterator[RowView]:
    """Rows after ``after`` up to ``until``, in log order. A stream's are found by reading
    its windows backwards from its end to the first row at or before ``after``."""
    if flt.stream is None:
        yield from log.reader(after).read(until=until)
        return
    newer: list[RowView] = []
    for window in _backwards(log, flt, until):
        newer = [v for v in window if v.row.position > after] + newer
        if not window or window[0].row.position <= after:
            break
    yield from newer


def tail(log: LogSource, flt: TailFilter, count: int, after: int | None) -> list[dict[str, Any]]:
    """Row records in log order (the newest ``count`` matches, or every match after
    ``after``, at most ``count``), then the ``tail`` record (see the module docstring)."""
    count = max(1, min(count, MAX_TAIL))
    head = log.head()
    found: list[RowView] = []
    scanned = 0
    if after is None:
        for window in _backwards(log, flt, head, count if flt.type is None else _WINDOW):
            scanned += len(window)
            found = [v for v in window if flt.matches(v)][-(count - len(found)):] + found
            if len(found) >= count:
                break
        next_after = head
    else:
        next_after = max(after, 0)
        until = min(head, next_after + SCAN) if flt.stream is None else head
        for item in _forwards(log, flt, next_after, until):
            scanned += 1
            if flt.matches(item):
                found.append(item)
            next_after = item.row.position
            if len(found) >= count or scanned >= SCAN:
                break
        else:  # read all there was up to ``until``
            next_after = max(next_after, until)
    records = [row_record(v) for v in found]
    records.append({"record": "tail", "head": head, "count": count, "after": after,
                    "next_after": next_after, "scanned": scanned, "limit": SCAN,
                    "filter": flt.query()})
    return records
