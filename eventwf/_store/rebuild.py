"""Fold the whole log into projections: used on open when projections lag the log, by
``rebuild-projections`` and by ``verify`` (which compares the result with the tables)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from .._events import parse_stream
from .._fold import (
    AgentSummary,
    WorkflowSummary,
    apply_agent,
    apply_workflow,
    quarantine,
    quarantine_agent,
)
from ..errors import CorruptLogError, TransitionError
from .log import decode_row, scan

__all__ = ["Folded", "fold_log"]


@dataclass
class Folded:
    """Summaries rebuilt from the log, and every row that could not be applied."""

    workflows: dict[str, WorkflowSummary] = field(default_factory=dict)
    agents: dict[tuple[str, str], AgentSummary] = field(default_factory=dict)
    problems: list[tuple[int, str]] = field(default_factory=list)
    head: int = 0
    events: int = 0


def fold_log(conn: sqlite3.Connection, genesis: bytes) -> Folded:
    """One streaming pass: verify each row, decode it and apply it to its stream's fold.

    A row that fails quarantines its own stream only; the pass goes on with the rest.
    """
    out = Folded()
    for item in scan(conn, genesis):
        row = item.row
        out.head, out.events = row.position, out.events + 1
        kind, key, name = parse_stream(row.stream)
        if _quarantined(out, kind, key, name):
            continue  # its first bad row is already reported; later ones add nothing
        try:
            if item.problem is not None:
                raise CorruptLogError(f"event at log position {row.position}: {item.problem}",
                                      position=row.position)
            rec = decode_row(row)
            if kind == "wf":
                out.workflows[key] = apply_workflow(out.workflows.get(key), rec)
            elif kind == "agent":
                out.agents[key, name] = apply_agent(out.agents.get((key, name)), rec)
            else:
                raise CorruptLogError(f"event at log position {row.position} is on unknown "
                                      f"stream {row.stream!r}", position=row.position)
        except (CorruptLogError, TransitionError) as exc:
            message = str(exc)
            if isinstance(exc, TransitionError):
                message = f"event at log position {row.position} cannot apply: {exc}"
            out.problems.append((row.position, message))
            if kind == "wf":
                out.workflows[key] = quarantine(out.workflows.get(key), row.stream, row.position,
                                                message, row.time_us)
            elif kind == "agent":
                out.agents[key, name] = quarantine_agent(out.agents.get((key, name)), key, name,
                                                         row.position)
    return out


def _quarantined(out: Folded, kind: str, key: str, name: str) -> bool:
    if kind == "wf":
        summary = out.workflows.get(key)
        return summary is not None and summary.status == "unknown"
    if kind == "agent":
        agent = out.agents.get((key, name))
        return agent is not None and agent.corrupt_position is not None
    return False
