"""``export`` (every event as JSON lines) and ``rebuild-projections`` (V17, V18).

``rebuild-projections`` is the tool's only writer. It opens the log the way the engine
does (``SQLiteStore(path)``: the writer lock, so it refuses a log an engine has open) and
replaces the ``workflows`` and ``agents`` tables with a fold of the log in one
transaction; the ``events`` table is never written.
"""

from __future__ import annotations

from typing import Any

from eventwf.errors import CorruptLogError, LogLockedError, SchemaVersionError, StorageError
from eventwf.store.sqlite import SQLiteStore
from eventwf.store.sqlite.anchor import read_anchor

from .render import Output, row_record
from .rowview import RowView
from .source import LogSource, ToolError
from .verify import anchor_problem

__all__ = ["FORMATS", "export", "rebuild_projections"]

FORMATS = ("jsonl", "golden")


def _record(item: RowView, fmt: str) -> dict[str, Any]:
    if fmt == "golden":  # tests/golden.py's history format: replayable as a fresh log
        if item.event is None:
            raise ToolError(f"event at position {item.row.position} does not decode, so it "
                            f"cannot be exported as a golden history: {item.problem}")
        return {"stream": item.row.stream, "time_us": item.row.time_us, "event": item.event}
    return row_record(item, complete=True)


def export(log: LogSource, out: Output, *, fmt: str = "jsonl", stream: str | None = None,
           after: int = 0, until: int | None = None) -> int:
    """Every event (of one stream, in a position range) as one JSON object per line.

    ``jsonl`` rows hold the place, time, type and decoded event of each row, and its
    stored data (base64 msgpack) and hash, so nothing is lost. ``golden`` lines hold JSON
    values only (bytes become base64 strings). Returns 1 if a row was damaged (it is still
    exported, with its ``problem``).
    """
    damaged = 0
    if stream is None:
        items = log.reader(after).read(until)
    else:
        items = (item for item in log.stream_views(stream, until=until)
                 if item.row.position > after)
    for item in items:
        damaged += item.problem is not None
        out.record(_record(item, fmt))
    return 1 if damaged else 0


def _check_anchor(path: str, force: bool) -> None:
    """Refuse to rebuild over a cut or rewritten tail: closing the Store re-anchors the log."""
    with LogSource(path) as log:
        head = log.head()
        try:
            anchor = read_anchor(log.home)
        except ValueError:
            anchor = None
        problem = None if anchor is None else anchor_problem(anchor, log.conn, head)
    if problem is not None and not force:
        raise ToolError(f"{path}: {problem.message}. Rebuilding would re-anchor the log at "
                        "its current head and hide that; run `verify`, and pass --force to "
                        "rebuild anyway")


def rebuild_projections(path: str, out: Output, *, force: bool = False) -> int:
    """Replace the projection tables with a fold of the log; 1 if rows were damaged."""
    _check_anchor(path, force)  # also refuses anything that is not an eventwf log
    try:
        store = SQLiteStore(path)
    except LogLockedError as exc:
        raise ToolError(f"cannot rebuild the projections: {exc}") from exc
    except (SchemaVersionError, StorageError, CorruptLogError) as exc:
        raise ToolError(f"cannot open {path} for writing: {exc}") from exc
    try:
        before = store.projected_through()
        folded = store.rebuild_projections()
    finally:
        store.close()
    if out.json:
        out.record({"record": "rebuilt", "path": path, "events": folded.events,
                    "head": folded.head, "projected_through_before": before,
                    "workflows": len(folded.workflows), "agents": len(folded.agents),
                    "problems": [{"position": p, "message": m} for p, m in folded.problems]})
    else:
        out.line(f"rebuilt the projections of {path} from {folded.events:,} event(s): "
                 f"{len(folded.workflows):,} workflow(s), {len(folded.agents):,} agent(s); "
                 f"projected through {folded.head:,} (was {before:,})")
        for position, message in folded.problems:
            out.line(f"!! position {position}: {message} (its stream is quarantined)")
    return 1 if folded.problems else 0
