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

__all__ = ["CURRENT_STEP", "StepContext", "StepHost", "step_context"]


class StepContext(msgspec.Struct, frozen=True):
    """Where a ``step.do`` callable is running: read it with ``eventwf.step_context()``."""

    workflow_id: str
    run: int
    seq: int
    name: str
    attempt: int

    @property
    def idempotency_key(self) -> str:
        """The same on every attempt and every replay of this step, and different for
        every other step: pass it to external services to make effects happen once."""
        return f"{self.workflow_id}/{self.run}/{self.seq}/{self.name}"


CURRENT_STEP: ContextVar[StepContext | None] = ContextVar("eventwf_step", default=None)


def step_context() -> StepContext:
    """The step whose callable is running now; ``EventwfError`` outside one."""
    current = CURRENT_STEP.get()
    if current is None:
        raise EventwfError("step_context() is only available inside a step.do callable")
    return current


class StepHost(Protocol):
    """What the step API needs from the runner hosting the workflow."""

    workflow_id: str
    stream: str
    agent_stream: str
    machine: ReplayMachine

    @property
    def clock(self) -> Clock: ...
    @property
    def workflow_name(self) -> str: ...
    @property
    def run(self) -> int: ...
    def command(self, kind: str, name: str | None) -> AbstractAsyncContextManager[Decision]:
        """One durable command: its replay decision for the block, which is the command."""
    async def append(self, items: Sequence[tuple[str, Event]]) -> list[Recorded]: ...
    async def wait_for_mail(self, until_us: int) -> None: ...
    async def idle_until(self, wall_us: int, at_most_us: int) -> None: ...
    async def waiting_again(self, seq: int) -> None: ...
    def agent_state_items(self, action: str, value: Any) -> list[tuple[str, Event]]: ...
    async def agent_state_committed(self) -> None: ...
