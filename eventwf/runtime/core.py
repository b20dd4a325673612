"""The engine's heart: folds in memory, the writer, runners and agent hosts, and recovery.

Theory of operation: the writer commits and then calls :meth:`Core.install` (the new
folds) and :meth:`Core.published` (the records, in log order). Publishing feeds live
runners, wakes waiters, pushes agent state and schedules callbacks, and starts or stops
runners on status transitions: a workflow that becomes ``queued`` gets a new runner (with
a new epoch, which fences any older one); one that becomes paused, terminated or finished
loses its runner. Nothing here calls user code synchronously.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

import trio

from eventwf.errors import CorruptLogError, EventwfError
from eventwf.model.agent_fold import AgentSummary, apply_agent, quarantine_agent
from eventwf.model.codec import json_value
from eventwf.model.events import (
    AgentCreated,
    AgentStateMerged,
    AgentStateReset,
    AgentStateSet,
    CallbackScheduled,
    Event,
    EventReceived,
    Recorded,
    agent_stream,
    parse_stream,
    workflow_stream,
)
from eventwf.model.workflow_fold import TERMINAL, WorkflowSummary, quarantine
from eventwf.runtime.agent_host import AgentHost, state_items
from eventwf.runtime.check import CheckRunner
from eventwf.runtime.clock import Clock
from eventwf.runtime.runner import WorkflowRunner
from eventwf.runtime.timers import Wakeups
from eventwf.runtime.writer import Writer
from eventwf.store.interface import LogStore

__all__ = ["Core"]

logger = logging.getLogger("eventwf")
_STOPPED = TERMINAL | {"paused", "unknown"}
_RUNNABLE = frozenset({"queued", "running", "waiting", "waitingForPause"})


class Core:
    """Owns the store, the writer, the in-memory folds and every task of the engine."""

    def __init__(
        self,
        store: LogStore,
        clock: Clock,
        nursery: trio.Nursery,
        agent_classes: dict[str, type[Any]],
        workflow_classes: dict[str, type[Any]],
        *,
        check: bool = False,
        hibernate_after: float | None = 60.0,
        max_live_workflows: int = 10_000,
    ) -> None:
        self.store = store
        self.clock = clock
        self.nursery = nursery
        self.agent_classes = agent_classes
        self.workflow_classes = workflow_classes
        self.writer = Writer(store, clock, self)
        self._workflows: dict[str, WorkflowSummary] = {}
        self._agents: dict[tuple[str, str], AgentSummary] = {}
        self._epochs: dict[str, int] = {}
        self._runners: dict[str, WorkflowRunner] = {}
        self._watchers: dict[str, trio.Event] = {}
        self._hosts: dict[tuple[str, str], AgentHost] = {}
        self._creating: dict[tuple[str, str], trio.Event] = {}
        self._transitions: list[tuple[str, WorkflowSummary | None, WorkflowSummary]] = []
        self._agents_before: dict[tuple[str, str], AgentSummary | None] = {}
        self._storage_failures: dict[str, int] = {}
        self.closing = False
        self._hibernate_after_us = None if hibernate_after is None else int(hibernate_after * 1e6)
        self._max_live = max_live_workflows
        self.wakeups = Wakeups(clock, self._wake)
        self.hibernated = 0
        self.check = check  # replay-only: runners stop where the log ends; no hooks run
        self.checks: list[CheckRunner] = []

    # -- Registry (for the writer) --------------------------------------------------------

    def workflow_summary(self, workflow_id: str) -> WorkflowSummary | None:
        summary = self._workflows.get(workflow_id)
        if summary is None:
            summary = self.store.load_workflow(workflow_id)
            if summary is not None:
                self._workflows[workflow_id] = summary
        return summary

    def agent_summary(self, agent_class: str, name: str) -> AgentSummary | None:
        summary = self._agents.get((agent_class, name))
        if summary is None:
            summary = self.store.load_agent(agent_class, name)
            if summary is not None:
                self._agents[agent_class, name] = summary
        return summary

    def remember(self, summary: WorkflowSummary) -> None:
        self._workflows[summary.workflow_id] = summary

    def replace_agent(self, summary: AgentSummary) -> None:
        """A summary no event changes (a quarantine): memory and projection."""
        self._agents[summary.agent_class, summary.name] = summary
        self.store.write_projections(agents=[summary])

    def runner_epoch(self, workflow_id: str) -> int:
        return self._epochs.get(workflow_id, 0)

    def install(
        self, workflows: dict[str, WorkflowSummary], agents: dict[tuple[str, str], AgentSummary]
    ) -> None:
        for workflow_id, summary in workflows.items():
            self._transitions.append((workflow_id, self._workflows.get(workflow_id), summary))
            self._workflows[workflow_id] = summary
        for key in agents:  # each state pushed must be the state at its own position
            self._agents_before[key] = self._agents.get(key)
        self._agents.update(agents)

    def published(self, records: list[Recorded]) -> None:
        """Route committed records (in log order), then act on status transitions.

        Runs inside the writer task after a commit: an error while routing one record
        quarantines that record's workflow (or agent) and never reaches the writer."""
        for rec in records:
            try:
                self._route(rec)
            except Exception as exc:
                self._routing_failed(rec, exc)
        self._agents_before.clear()
        transitions, self._transitions = self._transitions, []
        for workflow_id, old, new in transitions:
            try:
                self._transition(workflow_id, old, new)
            except Exception as exc:
                self._workflow_failed(workflow_id, exc, None)

    def _route(self, rec: Recorded) -> None:
        kind, key, name = parse_stream(rec.stream)
        if kind == "wf":
            runner = self._runners.get(key)
            if runner is not None:
                runner.feed(rec)
                if isinstance(rec.event, EventReceived):
                    runner.notify_mail()
            elif isinstance(rec.event, EventReceived):
                self._event_for_sleeper(key, rec.event.event_type)
        elif kind == "agent":
            self._agent_record(key, name, rec)

    def _routing_failed(self, rec: Recorded, exc: Exception) -> None:
        kind, key, name = parse_stream(rec.stream)
        if kind == "wf":
            self._workflow_failed(key, exc, rec.position)
            return
        logger.error("agent %s/%s: routing the event at log position %d failed: %r; the "
                     "agent is quarantined", key, name, rec.position, exc, exc_info=exc)
        summary = self.agent_summary(key, name)
        if summary is not None:
            self.replace_agent(quarantine_agent(summary, key, name, rec.position))

    def _workflow_failed(self, workflow_id: str, exc: Exception, position: int | None) -> None:
        """Quarantine a workflow whose replay (or runner) failed; the engine goes on."""
        runner = self._runners.pop(workflow_id, None)
        if runner is not None:
            runner.cancel()
        summary = self.workflow_summary(workflow_id)
        if summary is None:
            logger.error("workflow %s failed before it had a summary: %r", workflow_id, exc)
            return
        if not isinstance(exc, CorruptLogError):
            where = "" if position is None else f" at log position {position}"
            exc = CorruptLogError(f"replaying workflow {workflow_id!r} failed{where}: "
                                  f"{type(exc).__name__}: {exc}", position=position)
        self.quarantine(summary, exc)

    def _agent_record(self, agent_class: str, name: str, rec: Recorded) -> None:
        host = self._hosts.get((agent_class, name))
        event = rec.event
        if host is None:
            if isinstance(event, CallbackScheduled) and agent_class in self.agent_classes:
                self.spawn(lambda: self.load_agent(agent_class, name), f"load {rec.stream}")
            return
        if isinstance(event, AgentStateSet | AgentStateMerged | AgentStateReset):
            before = self._agents_before.get((agent_class, name))
            at_record = apply_agent(before, rec) if before is not None else None
            self._agents_before[agent_class, name] = at_record
            state = at_record.state if at_record is not None else self.agent_state(host)
            host.push_state(state, rec.position)
        elif isinstance(event, CallbackScheduled):
            host.schedule(rec)

    async def load_agent(self, agent_class: str, name: str) -> None:
        """Load an agent that owes callbacks; while that fails, retry (backing off)."""
        delay = 0.5
        while True:
            try:
                await self.agent_object(agent_class, name)
                return
            except CorruptLogError as exc:
                logger.error("agent %s/%s cannot be loaded: %s", agent_class, name, exc)
                return  # quarantined: nothing will change that while the engine runs
            except Exception:
                logger.exception("agent %s/%s could not be loaded to deliver its callbacks; "
                                 "retrying in %.1f s", agent_class, name, delay)
            await trio.sleep(delay)
            delay = min(delay * 2, 60.0)

    def _transition(self, workflow_id: str, old: WorkflowSummary | None,
                    new: WorkflowSummary) -> None:
        if old is None or old.status != new.status or old.run != new.run:
            watcher = self._watchers.pop(workflow_id, None)
            if watcher is not None:
                watcher.set()
        runner = self._runners.get(workflow_id)
        restarted = old is None or old.run != new.run or old.status != "queued"
        if new.status == "queued" and restarted:
            if runner is not None:
                runner.cancel()
            self.start_runner(new)
        elif new.status in _STOPPED and runner is not None and not runner.finishing:
            runner.cancel()

    # -- runners -------------------------------------------------------------------------

    def start_runner(self, summary: WorkflowSummary) -> bool:
        """Replay a workflow's history and start its task; False if it cannot run here."""
        if self.closing or summary.workflow_name not in self.workflow_classes:
            return False
        if summary.agent_class not in self.agent_classes:
            logger.warning("workflow %s needs agent class %s, which is not registered; it is "
                           "left untouched", summary.workflow_id, summary.agent_class)
            return False
        try:
            history = self.store.read_stream(workflow_stream(summary.workflow_id),
                                             summary.started_at)
        except CorruptLogError as exc:
            self.quarantine(summary, exc)
            return False
        epoch = self._epochs.get(summary.workflow_id, 0) + 1
        self._epochs[summary.workflow_id] = epoch
        runner_class = CheckRunner if self.check else WorkflowRunner
        try:
            runner = runner_class(self, summary, epoch, history)
        except CorruptLogError as exc:  # its history breaks the log rules (replay.md R12)
            self.quarantine(summary, exc)
            return False
        if isinstance(runner, CheckRunner):
            self.checks.append(runner)
        self._runners[summary.workflow_id] = runner
        self.nursery.start_soon(runner.main, name=f"eventwf workflow {summary.workflow_id}")
        return True

    def ensure_runner(self, summary: WorkflowSummary) -> None:
        if summary.workflow_id not in self._runners:
            self.start_runner(summary)

    def runner_storage_failed(self, runner: WorkflowRunner, error: Exception) -> None:
        """Retry a run that could not go on (its append failed in storage, its agent could
        not be loaded), backing off up to a minute."""
        failures = self._storage_failures.get(runner.workflow_id, 0) + 1
        self._storage_failures[runner.workflow_id] = failures
        delay = min(60.0, 0.5 * 2 ** (failures - 1))
        logger.error("workflow %s stopped: %s; retrying in %.1f s", runner.workflow_id, error,
                     delay)
        self.spawn(functools.partial(self._retry_run, runner.workflow_id, delay),
                   f"retry {runner.workflow_id}")

    def runner_crashed(self, runner: WorkflowRunner, error: Exception) -> None:
        """A run failed in the engine's own code: quarantine it; the others go on (L6b)."""
        logger.error("workflow %s: its run failed in the engine: %r", runner.workflow_id,
                     error, exc_info=error)
        if self._runners.get(runner.workflow_id) is runner:
            self._workflow_failed(runner.workflow_id, error, None)

    async def _retry_run(self, workflow_id: str, delay: float) -> None:
        await trio.sleep(delay)
        summary = self.workflow_summary(workflow_id)
        if summary is not None and summary.status in _RUNNABLE:
            self.ensure_runner(summary)

    # -- hibernation ---------------------------------------------------------------------

    def should_hibernate(self, until_us: int) -> bool:
        """Drop a waiting run's coroutine if the wait is long or too many are alive."""
        if self._hibernate_after_us is None:
            return False
        if len(self._runners) > self._max_live:
            return True
        return until_us - self.clock.now_us() >= self._hibernate_after_us

    def runner_hibernated(self, runner: WorkflowRunner) -> None:
        self.hibernated += 1
        summary = self.workflow_summary(runner.workflow_id)
        if summary is not None:
            self.schedule_wake(summary)

    def schedule_wake(self, summary: WorkflowSummary) -> None:
        if summary.wake_at_us is not None:  # never later than the timer's own length
            fire = min(summary.wake_at_us, self.clock.now_us() + summary.wake_span_us)
            self.wakeups.schedule(summary.workflow_id, fire)

    def _wake(self, workflow_id: str) -> None:
        summary = self.workflow_summary(workflow_id)
        if summary is not None and summary.status == "waiting":
            self.ensure_runner(summary)

    def _event_for_sleeper(self, workflow_id: str, event_type: str) -> None:
        summary = self._workflows.get(workflow_id)
        if summary is not None and summary.status == "waiting" and \
                summary.wait_type == event_type:
            self.start_runner(summary)

    @property
    def hibernation(self) -> bool:
        return self._hibernate_after_us is not None

    def runner_finished(self, runner: WorkflowRunner) -> None:
        if self._runners.get(runner.workflow_id) is runner:
            del self._runners[runner.workflow_id]

    def quarantine(self, summary: WorkflowSummary, exc: CorruptLogError) -> None:
        """Stop serving one workflow whose log cannot be read; the bytes stay as they are."""
        position = exc.position if exc.position is not None else -1
        bad = quarantine(summary, workflow_stream(summary.workflow_id), position, str(exc),
                         self.clock.now_us())
        self._workflows[summary.workflow_id] = bad
        self.store.write_projections([bad])
        logger.error("workflow %s is quarantined: %s", summary.workflow_id, exc)
        watcher = self._watchers.pop(summary.workflow_id, None)
        if watcher is not None:
            watcher.set()

    async def wait_for_change(self, workflow_id: str) -> None:
        event = self._watchers.get(workflow_id)
        if event is None:
            event = self._watchers[workflow_id] = trio.Event()
        await event.wait()

    # -- what runners need ---------------------------------------------------------------

    async def append(
        self, items: Sequence[tuple[str, Event]], *, fence: tuple[str, int] | None = None
    ) -> list[Recorded]:
        return await self.writer.append(items, fence=fence)

    def workflow_class(self, binding: str) -> type[Any] | None:
        return self.workflow_classes.get(binding)

    def spawn(self, fn: Callable[[], Awaitable[None]], name: str) -> None:
        """Run ``fn`` as an engine task; its failure is logged, never the engine's end."""
        if not self.closing:
            self.nursery.start_soon(self._guarded, fn, name, name=name)

    @staticmethod
    async def _guarded(fn: Callable[[], Awaitable[None]], name: str) -> None:
        try:
            await fn()
        except Exception:
            logger.exception("engine task %r failed; the engine goes on", name)

    async def deliver_progress(
        self, agent: Any, workflow_name: str, workflow_id: str, progress: Any
    ) -> None:
        if not self.check:
            await self.host(agent).progress(workflow_name, workflow_id, progress)

    # -- agents --------------------------------------------------------------------------

    def host(self, agent: Any) -> AgentHost:
        host = getattr(agent, "_eventwf_host", None)
        if not isinstance(host, AgentHost):
            raise EventwfError(
                f"{type(agent).__name__} instance is not attached to an engine; get agents "
                "with engine.get_agent(cls, name)")
        return host

    def agent_state(self, host: AgentHost) -> Any:
        summary = self.agent_summary(host.agent_class, host.name)
        if summary is None or not summary.has_state:
            return host.initial_state
        return summary.state

    async def agent_object(self, agent_class: str, name: str) -> Any:
        """The one live object for (class, name), created and logged on first use."""
        key = (agent_class, name)
        while True:
            host = self._hosts.get(key)
            if host is not None:
                return host.agent
            creating = self._creating.get(key)
            if creating is None:
                break
            await creating.wait()
        cls = self.agent_classes.get(agent_class)
        if cls is None:
            raise EventwfError(f"agent class {agent_class!r} is not registered with this engine")
        self._creating[key] = done = trio.Event()
        try:
            return await self._create_agent(cls, agent_class, name)
        finally:
            del self._creating[key]
            done.set()

    async def _create_agent(self, cls: type[Any], agent_class: str, name: str) -> Any:
        initial = json_value(getattr(cls, "initial_state", None), f"{agent_class}.initial_state")
        summary = self.agent_summary(agent_class, name)
        stream = agent_stream(agent_class, name)
        if summary is None:
            await self.append([(stream, AgentCreated(agent_class, name))])
        elif summary.corrupt_position is not None:
            raise CorruptLogError(
                f"agent {agent_class}/{name} has a corrupt event at log position "
                f"{summary.corrupt_position}", position=summary.corrupt_position)
        agent = cls()
        host = AgentHost(agent, agent_class, name, initial, self.append, self.spawn)
        agent._eventwf_host = host
        agent._eventwf_core = self
        self._hosts[agent_class, name] = host
        try:
            await agent.on_start()
        except BaseException:
            del self._hosts[agent_class, name]
            raise
        summary = self.agent_summary(agent_class, name)
        if summary is not None and summary.callbacks_pending:
            for rec in self.store.read_stream(stream, after_position=summary.delivered_through):
                if isinstance(rec.event, CallbackScheduled):
                    host.schedule(rec)
        return agent

    def evict_idle_agents(self, agent_class: str, *, keep: Collection[str] = ()) -> set[str]:
        """Drop the live objects of the idle agents of one class; return the names still live.

        Internal: a host that bounds its agents in memory (the demo) calls it. Idle means not
        in ``keep``, no client, no callback queued, being delivered or logged undelivered, no
        live run of its workflows, not being created. The next use loads it again (A8).
        """
        busy = {runner.agent_stream for runner in self._runners.values()}
        live: set[str] = set()
        for (cls, name), host in list(self._hosts.items()):
            if cls != agent_class:
                continue
            summary = self.agent_summary(cls, name)
            if (name in keep or not host.idle or host.stream in busy or (cls, name) in
                    self._creating or (summary is not None and summary.callbacks_pending)):
                live.add(name)
            else:
                del self._hosts[cls, name]
                self._agents.pop((cls, name), None)  # the projection holds the same summary
        return live

    def agent_state_items(
        self, agent: Any, action: str, value: Any, workflow_id: str | None
    ) -> list[tuple[str, Event]]:
        """The events for a state change; checked against the current state first."""
        host = self.host(agent)
        return state_items(host, self.agent_summary(host.agent_class, host.name), action,
                           value, workflow_id)

    async def agent_state_committed(self, agent: Any) -> None:
        """Tell the agent its state changed (from a workflow); a raising hook is logged."""
        if self.check or not self.host(agent).state_update_hooked():
            return
        try:
            await agent.on_state_update(agent.state, "server")
        except Exception:
            logger.exception("on_state_update of agent %s raised", self.host(agent).stream)
