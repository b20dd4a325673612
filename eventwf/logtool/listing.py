"""``streams``, ``show``, ``tail`` and ``tail --follow``: what is in the log, as it happens.

Every listing reads in bounded batches; ``--follow`` polls with fresh short queries, so a
running engine is never blocked and the WAL can always be checkpointed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from eventwf.model.events import parse_stream

from .render import Output, compact_text, event_details, iso, row_record
from .rowview import RowView
from .source import LogSource, NotFound

__all__ = ["RowPrinter", "follow", "print_row", "resolve_stream", "show", "streams", "tail"]

_KIND_RANGES = {None: ("", "\U0010ffff"), "wf": ("wf:", "wf;"), "agent": ("agent:", "agent;")}


def _stream_chunks(log: LogSource, kind: str | None, batch: int = 500
                   ) -> Iterator[list[tuple[Any, ...]]]:
    low, high = _KIND_RANGES[kind]
    last = ""
    while True:
        rows = log.stream_summaries(last, low, high, batch)
        if rows:
            yield rows
        if len(rows) < batch:
            return
        last = rows[-1][0]


def _statuses(log: LogSource, rows: Sequence[tuple[Any, ...]]) -> dict[str, tuple[str, str]]:
    ids = [row[0][3:] for row in rows if row[0].startswith("wf:")]
    found = log.workflow_statuses(ids)
    return {str(wid): (str(status), str(name)) for wid, status, name in found}


def streams(log: LogSource, out: Output, *, kind: str | None = None) -> int:
    """Every stream with its event count, first/last position and time (V5)."""
    counts = {"wf": 0, "agent": 0, "other": 0}
    widths: list[int] | None = None
    for rows in _stream_chunks(log, kind):
        statuses = _statuses(log, rows)
        records = [_stream_record(row, statuses) for row in rows]
        for record in records:
            counts[record["kind"]] += 1
        if out.json:
            for record in records:
                out.record(record)
            continue
        cells = [_stream_cells(record) for record in records]
        if widths is None:
            headers = ["STREAM", "EVENTS", "FIRST", "LAST", "FIRST TIME", "LAST TIME", "STATUS"]
            widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
            out.stream_table(widths, headers)
        for cell in cells:
            out.stream_table(widths, cell)
    if not out.json:
        total = sum(counts.values())
        out.line(f"{total:,} stream(s): {counts['wf']:,} workflow, {counts['agent']:,} agent"
                 + (f", {counts['other']:,} other" if counts["other"] else ""))
    return 0


def _stream_record(row: tuple[Any, ...], statuses: dict[str, tuple[str, str]]
                   ) -> dict[str, Any]:
    stream, count, first, last, first_us, last_us, top = row
    kind, key, _ = parse_stream(stream)
    record: dict[str, Any] = {
        "stream": stream, "kind": kind, "events": count,
        "first_position": first, "last_position": last,
        "first_time_us": first_us, "first_time": iso(first_us),
        "last_time_us": last_us, "last_time": iso(last_us),
        "versions_contiguous": top == count - 1,
    }
    if kind == "wf" and key in statuses:
        record["status"], record["workflow_name"] = statuses[key]
    return record


def _stream_cells(record: dict[str, Any]) -> list[str]:
    status = record.get("status", "")
    if "workflow_name" in record:
        status = f"{status} ({record['workflow_name']})"
    if not record["versions_contiguous"]:
        status = (status + " " if status else "") + "!! versions have gaps: run verify"
    return [record["stream"], f"{record['events']:,}", str(record["first_position"]),
            str(record["last_position"]), record["first_time"], record["last_time"], status]


def resolve_stream(log: LogSource, name: str) -> str:
    """A stream name from ``wf:ID``, ``agent:Class/name``, a workflow id or ``Class/name``."""
    candidates = [name] if name.startswith(("wf:", "agent:")) else ["wf:" + name]
    if "/" in name and not name.startswith(("wf:", "agent:")):
        candidates.append("agent:" + name)
    for stream in candidates:
        if log.stream_head(stream) >= 0:
            return stream
    raise NotFound(f"no stream {' or '.join(map(repr, candidates))} in {log.path}; "
                    "`streams` lists them")


class RowPrinter:
    """Prints rows as a streamed table (or JSON lines); remembers if any row had a problem."""

    def __init__(self, out: Output, *, full: bool, with_stream: bool, head: int) -> None:
        self.out = out
        self.full = full
        self.with_stream = with_stream
        self.damaged = 0
        pos = max(len(str(head)), len("POSITION"))
        self.widths = [pos, 7, 24, 19] if not with_stream else [pos, 21, 24, 19]
        self.header_done = False

    def __call__(self, item: RowView) -> None:
        self.damaged += item.problem is not None
        if self.out.json:
            self.out.record(row_record(item))
            return
        cells = print_row(item, self.full, self.with_stream)
        self.widths = [max(w, len(c)) for w, c in zip(self.widths, cells, strict=False)]
        if not self.header_done:
            second = "STREAM" if self.with_stream else "VERSION"
            self.out.stream_table(self.widths, ["POSITION", second, "TIME", "TYPE", "DETAILS"])
            self.header_done = True
        self.out.stream_table(self.widths, cells)


def print_row(item: RowView, full: bool, with_stream: bool) -> list[str]:
    row = item.row
    limit = None if full else 60
    details = event_details(item.event, limit) if item.event is not None else ""
    if item.problem is not None:
        details = f"!! {compact_text(item.problem, None if full else 120)}  {details}".rstrip()
    second = row.stream if with_stream else str(row.stream_position)
    return [str(row.position), second, iso(row.time_us), row.type, details]


def show(log: LogSource, out: Output, name: str, *, full: bool = False,
         from_version: int = 0) -> int:
    """Every event of one stream, decoded and checked (V6)."""
    stream = resolve_stream(log, name)
    printer = RowPrinter(out, full=full, with_stream=False, head=log.head())
    for item in log.stream_views(stream, from_version=from_version):
        printer(item)
    return _damage_status(out, printer)


def _damage_status(out: Output, printer: RowPrinter) -> int:
    if printer.damaged:
        if not out.json:
            out.line(f"!! {printer.damaged} row(s) above are damaged; run `verify` for the "
                     "whole log")
        return 1
    return 0


def tail(log: LogSource, out: Output, *, count: int = 20, full: bool = False,
         stream: str | None = None) -> tuple[int, int, RowPrinter]:
    """The last ``count`` events (of one stream): (exit status, last position, printer)."""
    head = log.head()
    printer = RowPrinter(out, full=full, with_stream=stream is None, head=head)
    if stream is None:
        for item in log.reader(max(head - count, 0)).read(until=head):
            printer(item)
    else:
        top = log.stream_head(stream)
        for item in log.stream_views(stream, from_version=max(top - count + 1, 0), until=head):
            printer(item)
    return _damage_status(out, printer), head, printer


async def follow(log: LogSource, out: Output, after: int, *, stream: str | None = None,
                 full: bool = False, interval: float = 0.5,
                 stop: Callable[[], bool] | None = None,
                 printer: RowPrinter | None = None) -> int:
    """Print every event appended after ``after`` as it is committed, until ``stop()``.

    Each poll is a fresh, short query (nothing is held open between polls), and every new
    row is checked against the hash of the row before it (of its stream on PostgreSQL,
    which reads in commit-horizon order and is woken by the engines' notifications:
    ``LogSource.following``). ``printer`` continues the table that ``tail`` began.
    """
    if printer is None:
        printer = RowPrinter(out, full=full, with_stream=stream is None, head=log.head())
    async with log.following(after) as source:
        while True:
            for item in source.read():
                if stream is None or item.row.stream == stream:
                    printer(item)
            out.flush()
            if stop is not None and stop():
                return 1 if printer.damaged else 0
            await source.wait(interval)
