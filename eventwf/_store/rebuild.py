"""Fold the whole log into projections: used on open when projections lag the log, by
``rebuild-projections`` and by ``verify`` (which compares the result with the tables)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

import msgspec

from .._codec import decode_event
from .._events import Recorded, parse_stream
from .._fold import (
    AgentSummary,
    WorkflowSummary,
    advances_only_head,
    apply_agent,
    apply_workflow,
    quarantine,
    quarantine_agent,
)
from ..errors import CorruptLogError, TransitionError
from .log import checked_batches

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
    bad: set[str] = set()  # quarantined streams: their later rows add nothing
    workflows, agents = out.workflows, out.agents
    kinds: dict[str, tuple[str, str, str]] = {}  # parse_stream, once per stream
    heads: dict[str, int] = {}  # versions of head-only events not yet folded in
    position = events = 0
    for rows in checked_batches(conn, genesis):
        events += len(rows)
        for raw, problem in rows:
            position, stream, version, time_us, type_name, data, _ = raw
            if stream in bad:
                continue
            parsed = kinds.get(stream)
            if parsed is None:
                parsed = kinds[stream] = parse_stream(stream)
            kind, key, name = parsed
            try:
                if problem is not None:
                    raise CorruptLogError(f"event at log position {position}: {problem}",
                                          position=position)
                event = decode_event(type_name, data, position=position)
                if kind == "wf":
                    summary = workflows.get(key)
                    if advances_only_head(summary, event.__class__):
                        heads[key] = version
                    else:
                        rec = Recorded(position, stream, version, time_us, event)
                        workflows[key] = apply_workflow(summary, rec)
                elif kind == "agent":
                    rec = Recorded(position, stream, version, time_us, event)
                    agents[key, name] = apply_agent(agents.get((key, name)), rec)
                else:
                    raise CorruptLogError(f"event at log position {position} is on unknown "
                                          f"stream {stream!r}", position=position)
            except (CorruptLogError, TransitionError) as exc:
                bad.add(stream)
                _quarantine(out, position, time_us, stream, exc)
    for key, version in heads.items():
        summary = workflows[key]
        if version > summary.head:
            workflows[key] = msgspec.structs.replace(summary, head=version)
    out.head, out.events = position, events
    return out


def _quarantine(out: Folded, position: int, time_us: int, stream: str,
                exc: CorruptLogError | TransitionError) -> None:
    message = str(exc)
    if isinstance(exc, TransitionError):
        message = f"event at log position {position} cannot apply: {exc}"
    out.problems.append((position, message))
    kind, key, name = parse_stream(stream)
    if kind == "wf":
        out.workflows[key] = quarantine(out.workflows.get(key), stream, position, message,
                                        time_us)
    elif kind == "agent":
        out.agents[key, name] = quarantine_agent(out.agents.get((key, name)), key, name,
                                                 position)
