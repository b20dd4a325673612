"""Counting step bodies: which ``step.do`` bodies ran, by workflow, name and occurrence.

The crash checks must tell a body that ran again after its outcome was logged (a broken
guarantee) from one that ran again because the crash came before its commit (allowed: a
body runs at least once). :func:`counting` wraps a workflow class so that every
``step.do`` body records ``(workflow id, step name, occurrence)`` in a
:class:`StepLedger` each time it is called, with no change to the user's code. The
occurrence is the 1-based count of ``step.do(name, ...)`` calls of that name in one
task of one execution of ``run``, the order the engine matches them in (API.md "Steps are
identified by name plus occurrence"; per task of the run, replay.md R14).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, cast

import trio

from eventwf.model.types import WorkflowEvent
from eventwf.runtime.stephost import CURRENT_STEP
from eventwf.runtime.steps import AgentWorkflowStep
from eventwf.workflow import AgentWorkflow

__all__ = ["CountingStep", "StepKey", "StepLedger", "counting", "counting_bindings"]


class StepKey(NamedTuple):
    """One step of one workflow: its name, which call of that name it is (from 1) in the
    run's task that made it, and that task's path (``()``: ``run`` itself)."""

    workflow_id: str
    name: str
    occurrence: int
    task: tuple[int, ...] = ()


class StepLedger:
    """Every execution of a ``step.do`` body, in the order they ran."""

    def __init__(self) -> None:
        self.executions: list[StepKey] = []

    def record(self, key: StepKey) -> None:
        self.executions.append(key)

    def clear(self) -> None:
        self.executions.clear()

    def counts(self) -> Counter[StepKey]:
        """How many times each step's body ran (attempts of a retried step add up)."""
        return Counter(self.executions)


class CountingStep:
    """The ``step`` a counted workflow's ``run`` receives: the engine's own, except that
    ``do`` records each call of its body in the ledger. Everything else is forwarded."""

    def __init__(self, step: AgentWorkflowStep, ledger: StepLedger, workflow_id: str) -> None:
        self._step = step
        self._ledger = ledger
        self._workflow_id = workflow_id
        self._occurrences: Counter[tuple[trio.lowlevel.Task, str]] = Counter()

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._step, attribute)

    async def do(self, name: str, fn: Callable[[], Any], **options: Any) -> Any:
        """``step.do``, with the body counted each time the engine calls it."""
        caller = (trio.lowlevel.current_task(), name)  # concurrent tasks count apart
        self._occurrences[caller] += 1
        occurrence, workflow_id, ledger = self._occurrences[caller], self._workflow_id, self._ledger

        def body() -> Any:
            ledger.record(StepKey(workflow_id, name, occurrence, _task()))
            return fn()  # an async fn returns its awaitable; the engine awaits it

        return await self._step.do(name, body, **options)


def _task() -> tuple[int, ...]:
    """The run task whose step body runs now (``()`` when the body is called outside a
    step, as a broken engine might)."""
    current = CURRENT_STEP.get()
    return current.task if current is not None else ()


def counting(cls: type[AgentWorkflow[Any]], ledger: StepLedger) -> type[AgentWorkflow[Any]]:
    """A subclass of ``cls`` (same name) whose ``run`` gets a :class:`CountingStep`."""
    base = cls

    async def run(self: AgentWorkflow[Any], event: WorkflowEvent, step: AgentWorkflowStep
                  ) -> Any:
        counted = CountingStep(step, ledger, self.workflow_id)
        return await base.run(self, event, cast(AgentWorkflowStep, counted))

    namespace = {"run": run, "__module__": cls.__module__, "__qualname__": cls.__qualname__,
                 "__doc__": cls.__doc__}
    return cast(type[AgentWorkflow[Any]], type(cls.__name__, (cls,), namespace))


def counting_bindings(workflows: Mapping[str, type[AgentWorkflow[Any]]], ledger: StepLedger
                      ) -> dict[str, type[AgentWorkflow[Any]]]:
    """Each binding mapped to the counting subclass of its workflow class."""
    return {binding: counting(cls, ledger) for binding, cls in workflows.items()}
