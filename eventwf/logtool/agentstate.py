"""``agent CLASS NAME [--at POSITION]``: an agent's state now, or as of a log position (V9).

Only that agent's events with position <= N are read (in batches) and folded with the
engine's own ``apply_agent``, so the answer is what the engine would have served then.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import msgspec

from eventwf.errors import TransitionError
from eventwf.model.agent_fold import AgentSummary, apply_agent
from eventwf.model.codec import event_type
from eventwf.model.events import (
    AgentStateMerged,
    AgentStatePatched,
    AgentStateReset,
    AgentStateSet,
    CallbackScheduled,
    Recorded,
    agent_stream,
)

from .render import Output, compact, iso, to_json
from .source import LogSource, NotFound

__all__ = ["AgentAt", "agent", "fold_agent"]

_STATE_EVENTS = (AgentStateSet, AgentStateMerged, AgentStatePatched, AgentStateReset)
OUTBOX_SHOWN = 50  # the newest scheduled callbacks kept for ``outbox``


@dataclass
class AgentAt:
    """An agent folded up to a log position, with its state changes."""

    agent_class: str
    name: str
    at: int
    summary: AgentSummary | None = None
    created: Recorded | None = None
    changes: list[tuple[Recorded, Any]] = field(default_factory=list)
    problem: tuple[int, str] | None = None
    first_position: int | None = None  # the stream's first event, even if after ``at``
    callbacks: deque[Recorded] = field(default_factory=lambda: deque(maxlen=OUTBOX_SHOWN))
    scheduled: int = 0  # callbacks scheduled up to ``at``


def fold_agent(log: LogSource, agent_class: str, name: str, at: int) -> AgentAt:
    stream = agent_stream(agent_class, name)
    result = AgentAt(agent_class, name, at)
    first = log.first_position(stream)
    if first is None:
        raise NotFound(f"no agent {agent_class}/{name} in {log.path} (no stream {stream!r}); "
                        "`streams --kind agent` lists them")
    result.first_position = first
    for item in log.stream_views(stream, until=at):
        rec = item.recorded()
        if item.problem is not None or rec is None:
            result.problem = (item.row.position, item.problem or "does not decode")
            break
        try:
            result.summary = apply_agent(result.summary, rec)
        except TransitionError as exc:
            result.problem = (item.row.position, f"the engine's fold refuses it: {exc}")
            break
        if result.created is None:
            result.created = rec
        if isinstance(rec.event, _STATE_EVENTS):
            result.changes.append((rec, result.summary.state))
        elif isinstance(rec.event, CallbackScheduled):
            result.callbacks.append(rec)
            result.scheduled += 1
    return result


def _time_at(log: LogSource, position: int) -> int | None:
    return log.time_at(position)


def agent(log: LogSource, out: Output, agent_class: str, name: str, *, at: int | None = None,
          history: bool = False, outbox: bool = False) -> int:
    """The agent as of ``at`` (default: the head); ``history`` adds its state changes,
    ``outbox`` (JSON only) its newest scheduled callbacks, each marked delivered or not
    by the agent's delivery cursor (``delivered_through``) as of ``at``."""
    head = log.head()
    position = head if at is None or at > head else at
    result = fold_agent(log, agent_class, name, position)
    time_us = _time_at(log, position)
    if out.json:
        _json(result, out, head, time_us, history)
        if outbox:
            _outbox(result, out)
    else:
        _text(result, out, head, time_us, history, clamped=at is not None and at > head)
    return 1 if result.problem is not None or result.summary is None else 0


def _state_source(result: AgentAt) -> tuple[Recorded, Any] | None:
    return result.changes[-1] if result.changes else None


def _text(result: AgentAt, out: Output, head: int, time_us: int | None, history: bool,
          clamped: bool) -> None:
    who = f"{result.agent_class}/{result.name}"
    note = " (past the head: showing the head)" if clamped else ""
    out.line(f"agent {who} as of log position {result.at}{note} · {iso(time_us)} · "
             f"log head {head}")
    s = result.summary
    if s is None:
        out.line(f"!! agent {who} does not exist yet at position {result.at}; it is created at "
                 f"position {result.first_position}")
    else:
        created = result.created
        assert created is not None
        out.line(f"created   position {created.position} · {iso(created.time_us)}")
        source = _state_source(result)
        if source is None:
            out.line(f"state     {result.agent_class}.initial_state: no state change is logged "
                     f"up to position {result.at}, so the engine serves the class's current "
                     "initial_state (which is not in the log)")
        else:
            rec, _ = source
            by = getattr(rec.event, "workflow_id", None)
            out.line(f"state     set at position {rec.position} by {event_type(rec.event)}"
                     + (f" (workflow {by})" if by else "") + f" · {iso(rec.time_us)}")
            for text in msgspec.json.format(to_json(s.state), indent=2).decode().splitlines():
                out.line(text)  # each line escaped on its own: the indentation stays
        pending = "pending" if s.callbacks_pending else "none pending"
        out.line(f"callbacks last scheduled at position {s.last_callback} · delivered through "
                 f"{s.delivered_through} · {pending}")
        out.line(f"changes   {len(result.changes)} state change(s) up to position {result.at}"
                 + ("" if history else " (--history lists them)"))
    if history and result.changes:
        out.table(["POSITION", "TIME", "EVENT", "WORKFLOW", "STATE AFTER"],
                  [[str(rec.position), iso(rec.time_us), event_type(rec.event),
                    getattr(rec.event, "workflow_id", None) or "-", compact(state)]
                   for rec, state in result.changes], indent="  ")
    if result.problem is not None:
        out.line(f"!! stopped at log position {result.problem[0]}: {result.problem[1]}")


def _json(result: AgentAt, out: Output, head: int, time_us: int | None, history: bool) -> None:
    s = result.summary
    source = _state_source(result)
    out.record({
        "record": "agent", "agent_class": result.agent_class, "name": result.name,
        "at": result.at, "at_time_us": time_us, "at_time": iso(time_us), "head": head,
        "exists": s is not None, "created_position": result.first_position,
        "has_state": s is not None and s.has_state,
        "state": s.state if s is not None and s.has_state else None,
        "state_position": None if source is None else source[0].position,
        "initial_state": s is not None and not s.has_state,
        "last_callback": None if s is None else s.last_callback,
        "delivered_through": None if s is None else s.delivered_through,
        "callbacks_pending": s is not None and s.callbacks_pending,
        "state_changes": len(result.changes),
        "problem": None if result.problem is None else
        {"position": result.problem[0], "problem": result.problem[1]},
    })
    if history:
        for rec, state in result.changes:
            out.record({"record": "change", "position": rec.position, "time_us": rec.time_us,
                        "time": iso(rec.time_us), "type": event_type(rec.event),
                        "workflow_id": getattr(rec.event, "workflow_id", None),
                        "state": state})


def _outbox(result: AgentAt, out: Output) -> None:
    delivered = 0 if result.summary is None else result.summary.delivered_through
    out.record({"record": "outbox", "scheduled": result.scheduled,
                "shown": len(result.callbacks), "delivered_through": delivered})
    for rec in result.callbacks:
        event = rec.event
        assert isinstance(event, CallbackScheduled)
        out.record({"record": "callback", "position": rec.position, "time_us": rec.time_us,
                    "time": iso(rec.time_us), "kind": event.kind,
                    "workflow_name": event.workflow_name, "workflow_id": event.workflow_id,
                    "value": event.value, "delivered": rec.position <= delivered})
