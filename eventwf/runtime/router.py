"""Where committed records go: the writer's side of the runtime (``writer.Registry``).

Theory of operation: after each commit the writer installs the new summaries and then
publishes the records, in log order. A workflow's record goes to its run (or wakes it), an
agent's to its host (state pushes, callbacks); then each workflow whose summary changed
gets or loses its run. Routing runs inside the writer task, so an error while routing one
record quarantines that record's workflow (or agent) and never reaches the writer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from eventwf.model.agent_fold import AgentSummary
from eventwf.model.events import Recorded, parse_stream, workflow_stream
from eventwf.model.workflow_fold import WorkflowSummary
from eventwf.runtime.agents import Agents
from eventwf.runtime.hibernation import Hibernation
from eventwf.runtime.runs import Runs
from eventwf.runtime.summaries import AgentKey, Summaries, Transition

__all__ = ["Router"]

logger = logging.getLogger("eventwf")


class Router:
    def __init__(self, summaries: Summaries, runs: Runs, agents: Agents,
                 hibernation: Hibernation) -> None:
        self._summaries = summaries
        self._runs = runs
        self._agents = agents
        self._hibernation = hibernation
        self._transitions: list[Transition] = []
        self._agents_before: dict[AgentKey, AgentSummary | None] = {}

    # -- what the writer asks while it stages a batch ------------------------------------

    def workflow_summary(self, workflow_id: str) -> WorkflowSummary | None:
        return self._summaries.workflow(workflow_id)

    def agent_summary(self, agent_class: str, name: str) -> AgentSummary | None:
        return self._summaries.agent(agent_class, name)

    def runner_epoch(self, workflow_id: str) -> int:
        return self._runs.epoch(workflow_id)

    def forget(self, streams: Sequence[str]) -> None:
        """Summaries of ``streams`` are read again from the log (another engine's claim
        or appends moved them)."""
        for stream in streams:
            kind, key, name = parse_stream(stream)
            if kind == "wf":
                self._summaries.forget_workflow(key)
            elif kind == "agent":
                self._summaries.forget_agent((key, name))

    # -- after a commit ------------------------------------------------------------------

    def install(self, workflows: dict[str, WorkflowSummary],
                agents: dict[AgentKey, AgentSummary]) -> None:
        self._transitions, self._agents_before = self._summaries.install(workflows, agents)

    def published(self, records: list[Recorded]) -> None:
        """Route committed records (in log order), then act on status transitions."""
        for rec in records:
            try:
                self._route(rec)
            except Exception as exc:
                self._failed(rec, exc)
        self._agents_before = {}
        transitions, self._transitions = self._transitions, []
        fresh = _queued_records(records, transitions)
        for workflow_id, old, new in transitions:
            try:
                self._runs.transition(workflow_id, old, new, fresh.get(workflow_id, ()))
            except Exception as exc:
                self._runs.failed(workflow_id, exc, None)

    def _route(self, rec: Recorded) -> None:
        kind, key, name = parse_stream(rec.stream)
        if kind == "wf":
            self._runs.feed(key, rec, self._hibernation)
        elif kind == "agent":
            before = self._agents_before.get((key, name))
            self._agents_before[key, name] = self._agents.record(key, name, rec, before)

    def _failed(self, rec: Recorded, exc: Exception) -> None:
        kind, key, name = parse_stream(rec.stream)
        if kind == "wf":
            self._runs.failed(key, exc, rec.position)
            return
        logger.error("agent %s/%s: routing the event at log position %d failed: %r; the "
                     "agent is quarantined", key, name, rec.position, exc, exc_info=exc)
        self._agents.quarantine(key, name, rec.position)


def _queued_records(records: list[Recorded], transitions: list[Transition]
                    ) -> dict[str, list[Recorded]]:
    """The records of each workflow that became ``queued`` in this commit (its new run
    replays them without reading its stream back)."""
    streams = {workflow_stream(workflow_id): workflow_id
               for workflow_id, _, new in transitions if new.status == "queued"}
    out: dict[str, list[Recorded]] = {}
    if streams:
        for rec in records:
            workflow_id = streams.get(rec.stream)
            if workflow_id is not None:
                out.setdefault(workflow_id, []).append(rec)
    return out
