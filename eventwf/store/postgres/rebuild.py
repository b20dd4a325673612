"""Fold a PostgreSQL log into its projections (a new projection shape, damaged rows).

One checked pass in position order (``log.checked_rows``): each row is verified against
its stream's chain, decoded and applied to its stream's summary; a row that fails
quarantines its own stream, and the pass goes on (as the SQLite fold does). The whole
result replaces the tables in one transaction. On PostgreSQL the projections are written
in the transaction of the events that change them, so they never lag the log; this runs
when their shape changed or a row fails its check.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from eventwf.errors import CorruptLogError, TransitionError
from eventwf.model.agent_fold import AgentSummary, apply_agent, quarantine_agent
from eventwf.model.codec import decode_event
from eventwf.model.events import Recorded, parse_stream
from eventwf.model.workflow_fold import WorkflowSummary, apply_workflow, quarantine
from eventwf.store.postgres import projections as proj
from eventwf.store.postgres.log import CheckedRow, checked_rows
from eventwf.store.postgres.sql import Conn
from eventwf.store.rows import agent_row, workflow_row

__all__ = ["Folded", "fold_log", "rebuild_projections"]


@dataclass
class Folded:
    """Summaries rebuilt from the log, and every row that could not be applied."""

    workflows: dict[str, WorkflowSummary] = field(default_factory=dict)
    agents: dict[tuple[str, str], AgentSummary] = field(default_factory=dict)
    problems: list[tuple[int, str]] = field(default_factory=list)
    head: int = 0


def fold_log(conn: Conn, genesis: bytes) -> Folded:
    """Every row verified, decoded and applied; a bad row quarantines its stream."""
    out = Folded()
    broken: set[str] = set()
    for row in checked_rows(conn, genesis):
        out.head = row.position
        if row.stream in broken:
            continue
        try:
            _apply(out, row)
        except (CorruptLogError, TransitionError) as exc:
            broken.add(row.stream)
            _quarantine(out, row, exc)
    return out


def _apply(out: Folded, row: CheckedRow) -> None:
    if row.problem is not None:
        raise CorruptLogError(f"event at log position {row.position}: {row.problem}",
                              position=row.position)
    kind, key, name = parse_stream(row.stream)
    if kind not in ("wf", "agent"):
        raise CorruptLogError(f"event at log position {row.position} is on unknown stream "
                              f"{row.stream!r}", position=row.position)
    event = decode_event(row.type, row.data, position=row.position)
    rec = Recorded(row.position, row.stream, row.stream_position, row.time_us, event)
    if kind == "wf":
        out.workflows[key] = apply_workflow(out.workflows.get(key), rec)
    else:
        out.agents[key, name] = apply_agent(out.agents.get((key, name)), rec)


def _quarantine(out: Folded, row: CheckedRow, exc: CorruptLogError | TransitionError) -> None:
    message = str(exc)
    if isinstance(exc, TransitionError):
        message = f"event at log position {row.position} cannot apply: {exc}"
    out.problems.append((row.position, message))
    kind, key, name = parse_stream(row.stream)
    if kind == "wf":
        out.workflows[key] = quarantine(out.workflows.get(key), row.stream, row.position,
                                        message, row.time_us)
    elif kind == "agent":
        out.agents[key, name] = quarantine_agent(out.agents.get((key, name)), key, name,
                                                 row.position)


def rebuild_projections(conn: Conn, genesis: bytes) -> Folded:
    """Replace both projection tables with a fold of the log, in one transaction, while
    other engines may be writing (PG9e): the tables are locked against writes first, then
    the log is folded from one snapshot taken after that, so a commit either landed before
    (folded) or writes its rows after (from its own summaries, which include it)."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        # EXCLUSIVE: reads go on; writers wait. Taken before any query, so the snapshot
        # of the fold below is taken after every earlier projection writer committed.
        conn.execute("LOCK TABLE eventwf.workflows, eventwf.agents IN EXCLUSIVE MODE")
        folded = fold_log(conn, genesis)
        conn.execute("DELETE FROM eventwf.workflows")
        conn.execute("DELETE FROM eventwf.agents")
        proj.write_workflows(conn, [workflow_row(s) for s in folded.workflows.values()])
        proj.write_agents(conn, [agent_row(s) for s in folded.agents.values()])
    return folded
