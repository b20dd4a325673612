"""The trio host for one workflow run: feeds the replay machine and carries out decisions.

A runner is started with the machine already fed from the log (synchronously, so no
commit can slip between the read and the live feed). Every append it makes is fenced
with its epoch: once the engine replaces it (pause, restart, terminate) nothing it still
had queued can land. Control flow that must not be caught by user code (stop, diverge)
uses BaseException subclasses.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import trio

from eventwf.errors import (
    AgentMovedError,
    EventwfError,
    NonDeterminismError,
    StorageError,
    TransitionError,
)
from eventwf.model.codec import encode_value
from eventwf.model.events import (
    CallbackScheduled,
    Event,
    Recorded,
    WorkflowBlocked,
    WorkflowCompleted,
    WorkflowErrored,
    WorkflowPaused,
    WorkflowRunning,
    WorkflowWaiting,
    agent_stream,
    workflow_stream,
)
from eventwf.model.failures import error_info
from eventwf.model.replay import Execute, ReplayMachine, describe_command
from eventwf.model.status import RUNNABLE
from eventwf.model.types import WorkflowEvent
from eventwf.model.values import utc_from_us
from eventwf.model.workflow_fold import WorkflowSummary
from eventwf.runtime.clock import Clock
from eventwf.runtime.command import Command, CommandScope
from eventwf.runtime.fingerprint import code_fingerprint, restamp, stamped
from eventwf.runtime.signals import Diverged, Hibernate, Stopped, StorageFault, signal_in
from eventwf.runtime.steps import AgentWorkflowStep
from eventwf.runtime.tasks import RunTask, TaskTree
from eventwf.runtime.telemetry import NULL_RUN_TRACE, RunTrace, StepCounters, Telemetry

__all__ = ["Command", "Diverged", "Hibernate", "RunHost", "Stopped", "StorageFault",
           "WorkflowRunner"]

logger = logging.getLogger("eventwf")


class RunHost(Protocol):
    """What a run may ask of the engine (``runs.RunServices`` provides it)."""

    @property
    def clock(self) -> Clock: ...
    @property
    def telemetry(self) -> Telemetry: ...
    @property
    def counters(self) -> StepCounters: ...
    async def append(self, items: Sequence[tuple[str, Event]], *,
                     fence: tuple[str, int]) -> list[Recorded]: ...
    def submit(self, items: Sequence[tuple[str, Event]], *, fence: tuple[str, int]) -> None: ...
    def summary(self, workflow_id: str) -> WorkflowSummary | None: ...
    def epoch(self, workflow_id: str) -> int: ...
    def workflow_class(self, binding: str) -> type[Any] | None: ...
    async def agent(self, agent_class: str, name: str) -> Any: ...
    def should_hibernate(self, until_us: int) -> bool: ...
    def hibernated(self, runner: WorkflowRunner) -> None: ...
    def stalled(self, runner: WorkflowRunner, error: Exception) -> None: ...
    def crashed(self, runner: WorkflowRunner, error: Exception) -> None: ...
    def finished(self, runner: WorkflowRunner) -> None: ...
    async def deliver_progress(self, agent: Any, workflow_name: str, workflow_id: str,
                               progress: Any) -> None: ...
    def state_items(self, agent: Any, action: str, value: Any,
                    workflow_id: str) -> list[tuple[str, Event]]: ...
    async def state_committed(self, agent: Any) -> None: ...


class WorkflowRunner:
    """Runs ``AgentWorkflow.run`` for one workflow and incarnation (``epoch``)."""

    def __init__(self, host: RunHost, summary: WorkflowSummary, epoch: int,
                 history: list[Recorded]) -> None:
        self.host = host
        self.workflow_id = summary.workflow_id
        self.epoch = epoch
        self.stream = workflow_stream(summary.workflow_id)
        self.agent_stream = agent_stream(summary.agent_class, summary.agent_name)
        self.machine = ReplayMachine(summary.workflow_id, summary.workflow_name)
        cls = host.workflow_class(summary.workflow_name)
        self.code = "" if cls is None else code_fingerprint(cls)  # stamped on waits (R16)
        # its last event was logged by other code: a wait it reaches again is restamped
        self._restamp = bool(history) and restamp(history[-1].event, self.code)
        for rec in history:
            self.machine.feed(rec)
        self.replayed_commands = self.machine.commands  # logged before this execution
        self.trace: RunTrace = NULL_RUN_TRACE  # this execution's spans (runtime/telemetry.py)
        self.cancel_scope = trio.CancelScope()
        self._mail = trio.Event()
        self.tasks = TaskTree(self._tasks_changed)
        self._next_seq = self.machine.commands
        self._stopping = False
        self.finishing = False  # it appended its own final event and is about to return
        self.agent: Any = None

    @property
    def summary(self) -> WorkflowSummary:
        summary = self.host.summary(self.workflow_id)
        assert summary is not None
        return summary

    @property
    def workflow_name(self) -> str:
        return self.summary.workflow_name

    @property
    def clock(self) -> Clock:
        return self.host.clock

    @property
    def run(self) -> int:
        return self.summary.run

    @property
    def counters(self) -> StepCounters:
        return self.host.counters

    # -- feeding from the engine ---------------------------------------------------------

    def feed(self, rec: Recorded) -> None:
        self.machine.feed(rec)

    def notify_mail(self) -> None:
        self._mail.set()
        self._mail = trio.Event()

    def cancel(self) -> None:
        self._stopping = True
        self.cancel_scope.cancel()

    # -- primitives for the step API ------------------------------------------------------

    async def append(self, items: Sequence[tuple[str, Event]]) -> list[Recorded]:
        """Append fenced by this runner's epoch, then stop here if a pause is pending."""
        records = await self.write(items)
        await self.step_boundary()
        return records

    async def write(self, items: Sequence[tuple[str, Event]]) -> list[Recorded]:
        """Append as this incarnation; refused because it was replaced or stopped: stop."""
        try:
            return await self.host.append(stamped(items, self.code),
                                          fence=(self.workflow_id, self.epoch))
        except AgentMovedError as exc:  # another engine owns the workflow now (PG9a)
            self._stopping = True
            raise Stopped() from exc
        except StorageError as exc:
            self._stopping = True
            raise StorageFault(exc) from exc
        except TransitionError as exc:
            current = self.host.summary(self.workflow_id)
            replaced = self.host.epoch(self.workflow_id) != self.epoch
            if replaced or current is None or current.status not in RUNNABLE:
                self._stopping = True
                raise Stopped() from exc
            raise

    async def step_boundary(self) -> None:
        if self._stopping:
            raise Stopped()
        if self.summary.status == "waitingForPause":
            await self.write([(self.stream, WorkflowPaused())])
            self._stopping = True
            raise Stopped()

    def command(self, kind: str, name: str | None) -> CommandScope:
        """One durable command, (kind, name): the block gets it with its replay decision;
        each task of the run issues one at a time (S11)."""
        return CommandScope(self, kind, name)

    async def begin(self, kind: str, name: str | None) -> Command:
        """Start durable command (kind, name) in the calling task: stop, diverge, or get
        the decision."""
        node = self.tasks.current()
        if node is None:
            raise EventwfError(
                f"workflow {self.workflow_id!r} called {describe_command(kind, name)} from a "
                "task that is not part of its run: call durable steps from run() or from "
                "tasks it starts in its own nurseries, not from a step callable")
        if node.command is not None:
            raise EventwfError(
                f"workflow {self.workflow_id!r} called {describe_command(kind, name)} while "
                f"{node.command} is still running in the same task: a step callable cannot "
                "call durable steps; to run steps concurrently, start them as tasks in a "
                "nursery inside run()")
        await self.step_boundary()
        try:
            decision, seq, index = self.machine.issue(kind, name, node.path)
        except NonDeterminismError as exc:
            self._stopping = True
            raise Diverged(exc) from None
        node.command = describe_command(kind, name)
        if decision.__class__ is Execute:  # a cancelled task begins no new work (R14)
            try:
                await trio.lowlevel.checkpoint_if_cancelled()
            except BaseException:
                node.command = None
                raise
        return Command(self, node, kind, name, decision, seq, index)

    def end(self, cmd: Command) -> None:
        cmd.node.command = None
        if self.tasks.live > 1:
            self._settle()

    def allocate(self) -> int:
        """The next command number, for a new command whose first event is queued now."""
        seq = self._next_seq
        self._next_seq = seq + 1
        return seq

    def others_busy(self, node: RunTask) -> bool:
        tasks = self.tasks
        return tasks.live > 1 and any(n.busy for n in tasks.members if n is not node)

    def _tasks_changed(self) -> None:
        """A task of the run exited (from trio's instrument, outside any task)."""
        if self.tasks.live > 0:
            self._settle()

    def _settle(self) -> None:
        """If every task of a concurrent run now only waits, log ``WorkflowWaiting`` (queued
        at once, so it takes its place in log order before any wake that follows)."""
        if self._stopping or not self.tasks.quiet():
            return
        summary = self.host.summary(self.workflow_id)
        seq = self.tasks.idle_seq()
        if summary is None or summary.status != "running" or seq is None:
            return
        self.submit([(self.stream, WorkflowWaiting(seq))])

    def submit(self, items: Sequence[tuple[str, Event]]) -> None:
        self.host.submit(stamped(items, self.code), fence=(self.workflow_id, self.epoch))

    def _hibernatable(self, waits: bool) -> bool:
        """One task, one pending timer or wait in the summary: it can be woken from there."""
        if self.tasks.live != 1:
            return False
        summary = self.host.summary(self.workflow_id)
        if summary is None or len(summary.pending) != 1:
            return False
        return summary.wait_type is not None if waits else summary.wake_at_us is not None

    async def wait_for_mail(self, until_us: int, seq: int) -> None:
        """Wait for an event to arrive (or hibernate until one does, or ``until_us``)."""
        node = self._idle(seq)
        try:
            if self.host.should_hibernate(until_us) and self._hibernatable(waits=True):
                raise Hibernate()
            await self._mail.wait()
        finally:
            if node is not None:
                node.idle = None

    async def idle_until(self, wall_us: int, at_most_us: int, seq: int) -> None:
        """A durable timer: sleep, or hibernate and be replayed when it fires."""
        node = self._idle(seq)
        try:
            until = min(wall_us, self.clock.now_us() + max(at_most_us, 0))
            if self.host.should_hibernate(until) and self._hibernatable(waits=False):
                raise Hibernate()
            await self.clock.sleep_until_wall(wall_us, at_most_us=at_most_us)
        finally:
            if node is not None:
                node.idle = None

    def _idle(self, seq: int) -> RunTask | None:
        """The calling task waits durably on command ``seq`` now."""
        node = self.tasks.current()
        if node is not None:
            node.idle = seq
            if self.tasks.live > 1:
                self._settle()
        return node

    async def waiting_again(self, seq: int) -> None:
        """A timer or wait resumes after a resume: the status goes back to ``waiting``
        (in a concurrent run, once every task waits: ``_settle``). A sleeper replayed
        because its code changed logs that it waits again under this code (R16)."""
        status = self.summary.status
        if self.tasks.live == 1 and (status == "running" or self._restamp):
            self._restamp = False
            await self.append([(self.stream, WorkflowWaiting(seq))])

    def agent_state_items(self, action: str, value: Any) -> list[tuple[str, Event]]:
        return self.host.state_items(self.agent, action, value, self.workflow_id)

    async def agent_state_committed(self) -> None:
        """The agent's state changed by this run: tell the agent (not on a replay check)."""
        await self.host.state_committed(self.agent)

    async def report_progress(self, progress: Any) -> None:
        """``on_workflow_progress`` of the agent (not logged): not while the run replays
        history it already ran (R13), nor on a replay check."""
        if not self.machine.replaying:
            await self.host.deliver_progress(self.agent, self.workflow_name,
                                             self.workflow_id, progress)

    async def broadcast(self, message: Any) -> None:
        """A message to every client of the agent (not logged), not while replaying (R13)."""
        if not self.machine.replaying:
            await self.agent.broadcast(message)

    # -- the run -------------------------------------------------------------------------

    async def main(self) -> None:
        """This execution of the run: its outcome (``complete``, ``errored``,
        ``diverged``, ``stopped``, ``hibernated``, ``stalled`` or ``crashed``) ends its span."""
        self.trace = self.host.telemetry.run(self)
        outcome = "stopped"  # paused at a boundary, replaced, or the engine closed
        try:
            with self.cancel_scope:
                try:
                    outcome = await self._main()
                except Stopped:
                    pass  # paused at a boundary or replaced: the log already says so
                except StorageFault as fault:
                    outcome = "stalled"
                    self.on_stalled(fault.error)
                except Hibernate:
                    outcome = "hibernated"
                    self.host.hibernated(self)
                except Exception as exc:  # the engine's own failure, not the workflow's
                    outcome = "crashed"
                    self.on_crashed(exc)
        finally:
            self.trace.end(outcome)
            self.host.finished(self)

    def on_stalled(self, error: Exception) -> None:
        """The run cannot go on for now: the engine retries it later."""
        self.host.stalled(self, error)

    def on_crashed(self, error: Exception) -> None:
        """The run failed in the engine's own code: the engine quarantines it."""
        self.host.crashed(self, error)

    async def _main(self) -> str:
        summary = self.summary
        if summary.status == "queued":
            await self.write([(self.stream, WorkflowRunning())])
        cls = self.host.workflow_class(summary.workflow_name)
        start = self.machine.start
        if cls is None or start is None:
            raise EventwfError(f"workflow {self.workflow_id!r} cannot run: no binding or start")
        try:
            self.agent = await self.host.agent(summary.agent_class, summary.agent_name)
        except Exception as exc:  # on_start raised, or the agent is quarantined: later
            self._stopping = True
            raise StorageFault(exc) from exc
        event = WorkflowEvent(payload=start.params, instance_id=self.workflow_id,
                              timestamp=utc_from_us(self.machine.start_time_us))
        try:
            output = await self._run_code(cls, event)
        except Diverged as diverged:
            await self.on_diverged(diverged.error)
            return "diverged"
        except NonDeterminismError as exc:
            await self.on_diverged(exc)
            return "diverged"
        except Exception as exc:  # the workflow failed: log it, report it once
            if self._stopping:
                raise Stopped() from exc
            await self.on_errored(exc)
            return "errored"
        return await self.on_completed(output)

    async def _run_code(self, cls: type[Any], event: WorkflowEvent) -> Any:
        """``run`` itself, in this task (the run's root task, R14); a group raised from a
        nursery of its tasks that holds an engine signal becomes that signal."""
        self.tasks.enter()
        try:
            instance = cls()
            instance._eventwf_bind(self)
            try:
                output = await instance.run(event, AgentWorkflowStep(self))
            except BaseExceptionGroup as group:
                signal = signal_in(group)
                if signal is None:
                    raise
                raise signal from group
            if self._stopping:
                raise Stopped()
            self.machine.finish()
            return output
        finally:
            self.tasks.leave()

    async def on_diverged(self, error: NonDeterminismError) -> None:
        """Pause the workflow and tell its agent (``on_workflow_error``), once per
        divergence: the callback is scheduled in the same append as ``WorkflowBlocked``."""
        logger.warning("%s; the workflow is paused until resumed", error)
        self._stopping = True
        info = error_info(error, with_traceback=False)
        await self.write([
            (self.stream, WorkflowBlocked(self.machine.position, info)),
            (self.agent_stream, CallbackScheduled(
                "error", self.workflow_name, self.workflow_id, info.message)),
        ])

    async def on_errored(self, exc: Exception) -> None:
        logger.debug("workflow %s errored", self.workflow_id, exc_info=exc)
        info = error_info(exc)  # a group from run's nursery: its errors' own messages (R14)
        items: list[tuple[str, Event]] = [(self.stream, WorkflowErrored(info))]
        if not self.machine.error_reported:
            items.append((self.agent_stream, CallbackScheduled(
                "error", self.workflow_name, self.workflow_id, info.message)))
        self.finishing = True
        await self.write(items)

    async def on_completed(self, output: Any) -> str:
        """Log the workflow's end; ``complete``, or ``errored`` for an output that cannot
        be logged."""
        try:
            encode_value(output, f"the return value of workflow {self.workflow_id!r}")
        except ValueError as exc:  # includes PayloadTooLargeError
            await self.on_errored(exc)
            return "errored"
        items: list[tuple[str, Event]] = [(self.stream, WorkflowCompleted(output))]
        if not self.machine.complete_reported:
            items.append((self.agent_stream, CallbackScheduled(
                "complete", self.workflow_name, self.workflow_id, output)))
        self.finishing = True
        await self.write(items)
        return "complete"
