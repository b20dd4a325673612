"""One engine's runtime, wired: the store, the writer, and the parts that act on commits.

``Summaries`` keeps the folds in memory, ``Agents`` the live agents, ``Runs`` the live runs
of workflows, ``Hibernation`` the idle ones, and ``Router`` takes each commit from the
writer to them. Each part gets only the collaborators it needs; this class makes them, in
dependency order, and spawns the engine's tasks (a failure of one is logged, never the
engine's end).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from eventwf.model.events import Event, Recorded
from eventwf.runtime.agent_host import AgentHost
from eventwf.runtime.agents import Agents
from eventwf.runtime.clock import Clock
from eventwf.runtime.follower import Follower
from eventwf.runtime.hibernation import Hibernation
from eventwf.runtime.inbox import Inbox
from eventwf.runtime.ownership import Ownership
from eventwf.runtime.remote_waits import RemoteWaits
from eventwf.runtime.router import Router
from eventwf.runtime.runner import WorkflowRunner
from eventwf.runtime.runs import RunFactory, Runs, RunServices
from eventwf.runtime.summaries import Summaries
from eventwf.runtime.telemetry import NULL_TELEMETRY, EngineStatistics, StepCounters, Telemetry
from eventwf.runtime.writer import Writer
from eventwf.store.interface import LogStore
from eventwf.store.location import LogLocation

__all__ = ["Runtime"]

logger = logging.getLogger("eventwf")


class Runtime:
    def __init__(
        self,
        store: LogStore,
        clock: Clock,
        nursery: trio.Nursery,
        agent_classes: dict[str, type[Any]],
        workflow_classes: dict[str, type[Any]],
        *,
        factory: RunFactory = WorkflowRunner,
        hibernate_after: float | None = 60.0,
        max_live_workflows: int = 10_000,
        telemetry: Telemetry = NULL_TELEMETRY,
        lease_ttl: float = 15.0,
    ) -> None:
        self.store = store
        self.clock = clock
        self.agent_classes = agent_classes
        self.workflow_classes = workflow_classes
        self._nursery = nursery
        self.closing = False
        self.summaries = Summaries(store)
        self.ownership = Ownership(store.sharding, lease_ttl)
        self.runs = Runs(store, self.summaries, clock, nursery, self.spawn, factory,
                         workflow_classes, agent_classes)
        self.hibernation = Hibernation(clock, self.summaries, lambda: len(self.runs),
                                       self.runs.ensure, hibernate_after=hibernate_after,
                                       max_live=max_live_workflows)
        self.agents = Agents(self._bind, agent_classes, self.summaries, store, self.append,
                             self.spawn)
        self.runs.ownership = self.agents.ownership = self.ownership
        if not self.ownership.everything:  # the follower tells owned agents from others
            self.agents.owns = self.ownership.owns
        self.router = Router(self.summaries, self.runs, self.agents, self.hibernation)
        self.writer = Writer(store, clock, self.router, telemetry, self.ownership)
        self.summaries.in_flight = lambda: self.writer.in_flight is not None
        self.counters = StepCounters()
        self.follower: Follower | None = None  # PostgreSQL: other writers' agent states
        self.location: LogLocation | None = None  # open_engine's, to reopen the log read-only
        self.inbox: Inbox | None = None  # PostgreSQL: requests to and from other engines
        self.remote_waits: RemoteWaits | None = None  # PostgreSQL: other engines' workflows
        self.telemetry = telemetry
        self.runs.host = RunServices(clock, self.writer, self.summaries, self.runs,
                                     self.agents, self.hibernation, workflow_classes,
                                     telemetry=telemetry, counters=self.counters)
        telemetry.watch(self.statistics, store.path)

    def _bind(self, agent: Any, host: AgentHost) -> None:
        agent._eventwf_bind(host, self)  # the attach point of eventwf.Agent

    async def append(self, items: Sequence[tuple[str, Event]], *,
                     fence: tuple[str, int] | None = None) -> list[Recorded]:
        """Append ``items`` atomically and wait for the commit (``Writer.append``)."""
        return await self.writer.append(items, fence=fence)

    def spawn(self, fn: Callable[[], Awaitable[None]], name: str) -> None:
        """Run ``fn`` as an engine task; its failure is logged, never the engine's end."""
        if not self.closing:
            self._nursery.start_soon(self._guarded, fn, name, name=name)

    @staticmethod
    async def _guarded(fn: Callable[[], Awaitable[None]], name: str) -> None:
        try:
            await fn()
        except Exception:
            logger.exception("engine task %r failed; the engine goes on", name)

    def statistics(self) -> EngineStatistics:
        """The engine's figures now (``Engine.statistics``; the metrics read them too)."""
        counters, writer, hibernation = self.counters, self.writer, self.hibernation
        return EngineStatistics(
            commits=writer.commits, events=writer.events, head=self.store.head,
            live_workflows=len(self.runs), live_agents=len(self.agents),
            hibernations=hibernation.count, steps_completed=counters.steps_completed,
            steps_failed=counters.steps_failed, attempts_failed=counters.attempts_failed,
            hibernated_workflows=hibernation.asleep(self.runs.is_live),
            pending_timers=len(hibernation.wakeups), writer_queue_depth=writer.queue_depth,
            websocket_clients=self.agents.clients())

    def close(self) -> None:
        """No new task or run from now on (the engine is closing); its figures are no
        longer reported."""
        self.closing = self.runs.closing = True
        self.telemetry.close()
