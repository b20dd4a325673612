"""One session of a crash check: open a log, start and feed its workflows, run them out.

The same session writes the reference log and finishes every crashed copy of it, so the
two are driven identically: each :class:`Start` is started unless the log already holds
it (``if_exists="return"``), each of its events is sent unless the log already received
one more of that type than the session has matched, and the mock clock runs until every
workflow is finished.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, NamedTuple

from eventwf.agent import Agent
from eventwf.engine import Engine
from eventwf.model.events import EventReceived, Recorded, StepFailed, StepSucceeded
from eventwf.store import open_store
from eventwf.testing.ledger import StepKey
from eventwf.workflow import AgentWorkflow

__all__ = ["Outcome", "Start", "approval", "bindings", "drive", "logged_steps", "stream_of"]


@dataclass(frozen=True)
class Start:
    """A workflow a crash check starts: its binding, params, id and the outside events
    (``{"type": ..., "payload": ...}``, an approval is ``approval(...)``) it is sent."""

    workflow: str
    params: Any = None
    id: str = "wf-1"
    events: Sequence[Mapping[str, Any]] = field(default_factory=tuple)


class Outcome(NamedTuple):
    """How a workflow ended: ``status``, ``output`` and ``error`` (``InstanceStatus``'s)."""

    status: str
    output: Any
    error: str | None


def approval(metadata: dict[str, Any] | None = None, *, approved: bool = True,
             reason: str | None = None) -> dict[str, Any]:
    """The event ``Agent.approve_workflow`` (or with ``approved=False``,
    ``reject_workflow``) sends, for :attr:`Start.events`."""
    payload: dict[str, Any] = {"approved": approved, "reason": reason}
    if approved:
        payload["metadata"] = metadata
    return {"type": "approval", "payload": payload}


def stream_of(workflow_id: str) -> str:
    return "wf:" + workflow_id


def _received(history: Sequence[Recorded]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for r in history:
        if isinstance(r.event, EventReceived):
            counts[r.event.event_type] += 1
    return counts


async def drive(engine: Engine, agent_class: type[Agent], agent_name: str,
                starts: Sequence[Start], timeout: Any) -> dict[str, Outcome]:
    """Start what the log lacks, send what it has not received, wait for every end."""
    agent = await engine.get_agent(agent_class, agent_name)
    store = engine.runtime.store
    for start in starts:
        await agent.run_workflow(start.workflow, start.params, id=start.id, if_exists="return")
        have = _received(store.read_stream(stream_of(start.id)))
        for event in start.events:
            if have[event["type"]] > 0:
                have[event["type"]] -= 1
            else:
                await agent.send_workflow_event(start.workflow, start.id, dict(event))
    outcomes: dict[str, Outcome] = {}
    for start in starts:
        info = await engine.wait_workflow(start.id, timeout=timeout)
        status = await agent.get_workflow_status(start.workflow, start.id)
        outcomes[start.id] = Outcome(info.status, status.output, status.error)
    return outcomes


def logged_steps(path: str | os.PathLike[str], workflow_ids: Sequence[str]
                 ) -> dict[StepKey, int]:
    """Every ``step.do`` whose outcome (success or final failure) the log holds, with the
    position of that event; occurrences are counted in command order, per task and name."""
    store = open_store(path, readonly=True)
    try:
        out: dict[StepKey, int] = {}
        for workflow_id in workflow_ids:
            # (command number, task, name, position)
            ends: list[tuple[int, tuple[int, ...], str, int]] = []
            for r in store.read_stream(stream_of(workflow_id)):
                event = r.event
                if isinstance(event, StepSucceeded | StepFailed) and event.kind == "do" \
                        and event.name is not None:
                    ends.append((event.seq, event.task, event.name, r.position))
            seen: Counter[tuple[tuple[int, ...], str]] = Counter()
            for _, task, name, position in sorted(ends):
                seen[task, name] += 1
                out[StepKey(workflow_id, name, seen[task, name], task)] = position
        return out
    finally:
        store.close()


def bindings(workflows: Any) -> dict[str, type[AgentWorkflow[Any]]]:
    """``workflows`` as a binding map: a class, a module (its own ``AgentWorkflow``
    subclasses), a list of classes (each under its name) or a mapping."""
    if isinstance(workflows, type):
        workflows = [workflows]
    elif isinstance(workflows, ModuleType):
        module = workflows.__name__
        workflows = [value for value in vars(workflows).values()
                     if isinstance(value, type) and issubclass(value, AgentWorkflow)
                     and value.__module__ == module]
        if not workflows:
            raise ValueError(f"module {module!r} defines no AgentWorkflow subclass")
    if isinstance(workflows, Mapping):
        return dict(workflows)
    return {cls.__name__: cls for cls in workflows}
