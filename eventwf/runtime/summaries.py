"""The folds in memory: each workflow's and each agent's summary, over the projections.

The writer installs the summaries of every commit (after the commit); everyone else reads
them here, and a summary not in memory is loaded from its projection row. On PostgreSQL
the writer commits in a worker thread: a row loaded while a commit is in flight may
already hold that commit (the load waits for the store's lock, so it reads after the
commit), so the commit's install does not take it for the state before it. A finished
workflow's summary is not kept (its projection row says the same), so memory grows with
the live work, not with the history. Who waits for a workflow to change (``wait_workflow``)
waits here, and is woken when its status or run changes or it is quarantined.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import trio

from eventwf.model.agent_fold import AgentSummary
from eventwf.model.workflow_fold import WorkflowSummary
from eventwf.store.interface import LogStore

__all__ = ["AgentKey", "Summaries", "Transition"]

AgentKey = tuple[str, str]  # (agent class, agent name)
Transition = tuple[str, WorkflowSummary | None, WorkflowSummary]  # (id, before, after)


class Summaries:
    def __init__(self, store: LogStore) -> None:
        self._store = store
        self._workflows: dict[str, WorkflowSummary] = {}
        self._agents: dict[AgentKey, AgentSummary] = {}
        self._watchers: dict[str, _Watch] = {}
        self._absent: set[str] = set()  # ids generated here and not yet started (``born``)
        # whether a commit of this engine is in flight (the runtime wires the writer's)
        self.in_flight: Callable[[], bool] = lambda: False
        # loaded while a commit was in flight: maybe already after it (see the docstring)
        self._loaded_in_flight: set[str] = set()
        self._agents_loaded_in_flight: set[AgentKey] = set()

    def workflow(self, workflow_id: str) -> WorkflowSummary | None:
        summary = self._workflows.get(workflow_id)
        if summary is None and workflow_id not in self._absent:
            in_flight = self.in_flight()
            summary = self._store.load_workflow(workflow_id)
            if summary is not None and not summary.finished:
                self._workflows[workflow_id] = summary
                if in_flight:
                    self._loaded_in_flight.add(workflow_id)
        return summary

    def born(self, workflow_id: str) -> None:
        """``workflow_id`` was just generated here (random, so no log holds it): until
        ``unborn`` or a commit installs its summary, it is known absent without a read."""
        self._absent.add(workflow_id)

    def unborn(self, workflow_id: str) -> None:
        """The start of a ``born`` id is over (committed or refused): read it as usual."""
        self._absent.discard(workflow_id)

    def cached_workflow(self, workflow_id: str) -> WorkflowSummary | None:
        """The summary if it is in memory (every unfinished one that was used is)."""
        return self._workflows.get(workflow_id)

    def agent(self, agent_class: str, name: str) -> AgentSummary | None:
        summary = self._agents.get((agent_class, name))
        if summary is None:
            in_flight = self.in_flight()
            summary = self._store.load_agent(agent_class, name)
            if summary is not None:
                self._agents[agent_class, name] = summary
                if in_flight:
                    self._agents_loaded_in_flight.add((agent_class, name))
        return summary

    def remember(self, summary: WorkflowSummary) -> None:
        if not summary.finished:
            self._workflows[summary.workflow_id] = summary

    def forget_workflow(self, workflow_id: str) -> None:
        """Drop a workflow's summary from memory (read again from its projection)."""
        self._workflows.pop(workflow_id, None)

    def forget_where(self, agent: Callable[[str, str], bool],
                     keep: Collection[AgentKey] = ()) -> None:
        """Drop the summaries of the agents ``agent`` selects and of their workflows (a
        shard this engine lost or gained: another engine wrote them meanwhile), except the
        agents in ``keep``: their clients are followed on from the version they saw."""
        dropped = {k: s for k, s in self._workflows.items() if agent(s.agent_class, s.agent_name)}
        self._workflows = {k: s for k, s in self._workflows.items() if k not in dropped}
        self._agents = {k: s for k, s in self._agents.items() if k in keep or not agent(*k)}
        for workflow_id, summary in dropped.items():
            self._changed(workflow_id, summary)  # its waiters look again (it moved away)

    def forget_agent(self, key: AgentKey) -> None:
        """Drop an agent's summary from memory (its projection holds the same)."""
        self._agents.pop(key, None)

    def install(self, workflows: dict[str, WorkflowSummary], agents: dict[AgentKey, AgentSummary],
                *, commit: bool = True
                ) -> tuple[list[Transition], dict[AgentKey, AgentSummary | None]]:
        """Take a commit's summaries (``commit`` false: another engine's, as followed);
        the workflows' transitions and the agents' summaries as they were before it (each
        state pushed must be the state at its own position)."""
        transitions: list[Transition] = []
        early: set[str] = set()
        early_agents: set[AgentKey] = set()
        if commit:  # this engine's commit: what was loaded while it was in flight
            early, self._loaded_in_flight = self._loaded_in_flight, set()
            early_agents, self._agents_loaded_in_flight = self._agents_loaded_in_flight, set()
        for workflow_id, summary in workflows.items():
            # a row loaded during this commit may be this commit's: the state before is
            # unknown then, as for a workflow not in memory
            before = None if workflow_id in early else self._workflows.get(workflow_id)
            self._absent.discard(workflow_id)
            transitions.append((workflow_id, before, summary))
            if summary.finished:
                self._workflows.pop(workflow_id, None)
            else:
                self._workflows[workflow_id] = summary
            if before is None or before.status != summary.status or before.run != summary.run:
                self._changed(workflow_id, summary)
        agents_before = {key: None if key in early_agents else self._agents.get(key)
                         for key in agents}
        self._agents.update(agents)
        return transitions, agents_before

    def replace_workflow(self, summary: WorkflowSummary) -> None:
        """A summary no event changes (a quarantine): memory, projection, and waiters."""
        self._workflows[summary.workflow_id] = summary
        self._store.write_projections([summary])
        self._changed(summary.workflow_id, summary)

    def replace_agent(self, summary: AgentSummary) -> None:
        """An agent summary no event changes (a quarantine): memory and projection."""
        self._agents[summary.agent_class, summary.name] = summary
        self._store.write_projections(agents=[summary])

    async def wait_for_change(self, workflow_id: str) -> WorkflowSummary:
        """Wait until the workflow's status or run changes (or it is quarantined); the
        summary that change installed (a finished one is no longer in memory: the waiter
        need not read it back from its projection)."""
        watch = self._watchers.get(workflow_id)
        if watch is None:
            watch = self._watchers[workflow_id] = _Watch()
        await watch.event.wait()
        assert watch.summary is not None
        return watch.summary

    def _changed(self, workflow_id: str, summary: WorkflowSummary) -> None:
        watch = self._watchers.pop(workflow_id, None)
        if watch is not None:
            watch.summary = summary
            watch.event.set()


class _Watch:
    """Who waits for one workflow to change, and the summary that woke them."""

    __slots__ = ("event", "summary")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.summary: WorkflowSummary | None = None
