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

from eventwf.errors import EventwfError, NonDeterminismError, StorageError, TransitionError
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
from eventwf.model.replay import Decision, ReplayMachine, describe_command
from eventwf.model.status import RUNNABLE
from eventwf.model.types import WorkflowEvent
from eventwf.model.values import utc_from_us
from eventwf.model.workflow_fold import WorkflowSummary
from eventwf.runtime.clock import Clock
from eventwf.runtime.steps import AgentWorkflowStep

__all__ = ["Diverged", "Hibernate", "RunHost", "Stopped", "StorageFault", "WorkflowRunner"]

logger = logging.getLogger("eventwf")


class Stopped(BaseException):
    """The run must stop here (paused at a step boundary, or replaced)."""


class Hibernate(BaseException):
    """The run waits long enough to drop its coroutine; the engine replays it on wake."""


class Diverged(BaseException):
    """Replay contradicted the log; carries the ``NonDeterminismError`` to record."""

    def __init__(self, error: NonDeterminismError) -> None:
        super().__init__(str(error))
        self.error = error


class StorageFault(BaseException):
    """The run cannot go on for now (an append failed in storage, its agent could not be
    loaded): it stops and is retried later, backing off."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class RunHost(Protocol):
    """What a run may ask of the engine (``runs.RunServices`` provides it)."""

    @property
    def clock(self) -> Clock: ...
    async def append(self, items: Sequence[tuple[str, Event]], *,
                     fence: tuple[str, int]) -> list[Recorded]: ...
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


class _CommandScope:
    """``async with runner.command(kind, name) as decision``: begin, then end whatever
    happens (a class, not a generator: it runs once per durable step)."""

    __slots__ = ("_kind", "_name", "_runner")

    def __init__(self, runner: WorkflowRunner, kind: str, name: str | None) -> None:
        self._runner, self._kind, self._name = runner, kind, name

    async def __aenter__(self) -> Decision:
        return await self._runner.begin(self._kind, self._name)

    async def __aexit__(self, *exc_info: object) -> None:
        self._runner.end()


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
        for rec in history:
            self.machine.feed(rec)
        self.cancel_scope = trio.CancelScope()
        self._mail = trio.Event()
        self._busy: str | None = None
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
            return await self.host.append(items, fence=(self.workflow_id, self.epoch))
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

    def command(self, kind: str, name: str | None) -> _CommandScope:
        """One durable command, (kind, name): the block gets its replay decision; a
        second command while one runs is refused (S11)."""
        return _CommandScope(self, kind, name)

    async def begin(self, kind: str, name: str | None) -> Decision:
        """Start durable command (kind, name): stop, diverge, or get the decision."""
        if self._busy is not None:
            raise EventwfError(
                f"workflow {self.workflow_id!r} called {describe_command(kind, name)} while "
                f"{self._busy} is still running; await durable steps one at a time"
            )
        await self.step_boundary()
        try:
            decision = self.machine.next(kind, name)
        except NonDeterminismError as exc:
            self._stopping = True
            raise Diverged(exc) from None
        self._busy = describe_command(kind, name)
        return decision

    def end(self) -> None:
        self._busy = None

    async def wait_for_mail(self, until_us: int) -> None:
        """Wait for an event to arrive (or hibernate until one does, or ``until_us``)."""
        if self.host.should_hibernate(until_us):
            raise Hibernate()
        await self._mail.wait()

    async def idle_until(self, wall_us: int, at_most_us: int) -> None:
        """A durable timer: sleep, or hibernate and be replayed when it fires."""
        until = min(wall_us, self.clock.now_us() + max(at_most_us, 0))
        if self.host.should_hibernate(until):
            raise Hibernate()
        await self.clock.sleep_until_wall(wall_us, at_most_us=at_most_us)

    async def waiting_again(self, seq: int) -> None:
        """A timer or wait resumes after a resume: the status goes back to ``waiting``."""
        if self.summary.status == "running":
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
        try:
            with self.cancel_scope:
                try:
                    await self._main()
                except Stopped:
                    pass  # paused at a boundary or replaced: the log already says so
                except StorageFault as fault:
                    self.on_stalled(fault.error)
                except Hibernate:
                    self.host.hibernated(self)
                except Exception as exc:  # the engine's own failure, not the workflow's
                    self.on_crashed(exc)
        finally:
            self.host.finished(self)

    def on_stalled(self, error: Exception) -> None:
        """The run cannot go on for now: the engine retries it later."""
        self.host.stalled(self, error)

    def on_crashed(self, error: Exception) -> None:
        """The run failed in the engine's own code: the engine quarantines it."""
        self.host.crashed(self, error)

    async def _main(self) -> None:
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
        step = AgentWorkflowStep(self)
        try:
            instance = cls()
            instance._eventwf_bind(self)
            output = await instance.run(event, step)
            if self._stopping:
                raise Stopped()
            self.machine.finish()
        except Diverged as diverged:
            await self.on_diverged(diverged.error)
            return
        except NonDeterminismError as exc:
            await self.on_diverged(exc)
            return
        except Exception as exc:  # the workflow failed: log it, report it once
            if self._stopping:
                raise Stopped() from exc
            await self.on_errored(exc)
            return
        await self.on_completed(output)

    async def on_diverged(self, error: NonDeterminismError) -> None:
        logger.warning("%s; the workflow is paused until resumed", error)
        self._stopping = True
        await self.write([(self.stream, WorkflowBlocked(self.machine.position,
                                           error_info(error, with_traceback=False)))])

    async def on_errored(self, exc: Exception) -> None:
        logger.debug("workflow %s errored", self.workflow_id, exc_info=exc)
        items: list[tuple[str, Event]] = [(self.stream, WorkflowErrored(error_info(exc)))]
        if not self.machine.error_reported:
            items.append((self.agent_stream, CallbackScheduled(
                "error", self.workflow_name, self.workflow_id, str(exc))))
        self.finishing = True
        await self.write(items)

    async def on_completed(self, output: Any) -> None:
        try:
            encode_value(output, f"the return value of workflow {self.workflow_id!r}")
        except ValueError as exc:  # includes PayloadTooLargeError
            await self.on_errored(exc)
            return
        items: list[tuple[str, Event]] = [(self.stream, WorkflowCompleted(output))]
        if not self.machine.complete_reported:
            items.append((self.agent_stream, CallbackScheduled(
                "complete", self.workflow_name, self.workflow_id, output)))
        self.finishing = True
        await self.write(items)
