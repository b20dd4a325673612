"""The contract between the step API and the runner hosting a workflow, and the step
context that step callables can read (``eventwf.step_context()``)."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from typing import Any, Protocol

import msgspec

from eventwf.errors import EventwfError
from eventwf.model.events import Event, Recorded
from eventwf.model.replay import Decision, ReplayMachine
from eventwf.runtime.clock import Clock
from eventwf.runtime.telemetry import RunTrace, StepCounters

__all__ = ["CURRENT_STEP", "CommandInfo", "StepContext", "StepHost", "step_context"]


class StepContext(msgspec.Struct, frozen=True):
    """Where a ``step.do`` callable is running: read it with ``eventwf.step_context()``.

    ``seq`` is the step's place among the durable commands of its task (for a run that
    starts no tasks, its command number); ``task`` names the run's task that called it:
    ``()`` for ``run`` itself, ``(k,)`` for the k-th task ``run`` started (replay.md R14).
    """

    workflow_id: str
    run: int
    seq: int
    name: str
    attempt: int
    task: tuple[int, ...] = ()

    @property
    def idempotency_key(self) -> str:
        """The same on every attempt and every replay of this step, and different for
        every other step: pass it to external services to make effects happen once."""
        where = f"{'.'.join(map(str, self.task))}:{self.seq}" if self.task else str(self.seq)
        return f"{self.workflow_id}/{self.run}/{where}/{self.name}"


CURRENT_STEP: ContextVar[StepContext | None] = ContextVar("eventwf_step", default=None)


def step_context() -> StepContext:
    """The step whose callable is running now; ``EventwfError`` outside one."""
    current = CURRENT_STEP.get()
    if current is None:
        raise EventwfError("step_context() is only available inside a step.do callable")
    return current


class CommandInfo(Protocol):
    """One durable command in progress (``runner.Command``)."""

    decision: Decision
    index: int

    @property
    def seq(self) -> int:
        """Its number: a new command gets the next one on first read, so read it only to
        build the event appended at once."""
    @property
    def task(self) -> tuple[int, ...]: ...
    @property
    def concurrent(self) -> bool: ...


class StepHost(Protocol):
    """What the step API needs from the runner hosting the workflow."""

    workflow_id: str
    stream: str
    agent_stream: str
    machine: ReplayMachine
    trace: RunTrace  # this run execution's spans (a no-op without telemetry)

    @property
    def clock(self) -> Clock: ...
    @property
    def counters(self) -> StepCounters: ...
    @property
    def workflow_name(self) -> str: ...
    @property
    def run(self) -> int: ...
    def command(self, kind: str, name: str | None
                ) -> AbstractAsyncContextManager[CommandInfo]:
        """One durable command: the block gets it with its replay decision."""
    async def append(self, items: Sequence[tuple[str, Event]]) -> list[Recorded]: ...
    async def wait_for_mail(self, until_us: int, seq: int) -> None: ...
    async def idle_until(self, wall_us: int, at_most_us: int, seq: int) -> None: ...
    async def waiting_again(self, seq: int) -> None: ...
    def agent_state_items(self, action: str, value: Any) -> list[tuple[str, Event]]: ...
    async def agent_state_committed(self) -> None: ...
