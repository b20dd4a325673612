"""Engines for tests: open one, restart it mid-test, wait for a workflow's status.

Under ``trio.testing.MockClock`` every engine of one ``trio.run`` anchors its wall time
to the same instant (``runtime/clock.py``), so a restart with :class:`TestEngine` follows
the mock clock with no argument: a timer resumed after the restart waits only what is
left. :func:`virtual_wall` is for what spans several ``trio.run`` calls (each starts its
mock clock at 0 again): a fixed epoch plus the mock clock's reading.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, TypeVar

import trio

from eventwf.agent import Agent
from eventwf.engine import Engine, open_engine
from eventwf.errors import UnexpectedStatusError, WorkflowNotFoundError, WorkflowTimeoutError
from eventwf.model.status import STATUSES, TERMINAL
from eventwf.model.types import WorkflowInfo
from eventwf.model.values import parse_duration
from eventwf.model.workflow_fold import WorkflowSummary
from eventwf.runtime.runtime import Runtime
from eventwf.runtime.tracking import info

__all__ = ["VIRTUAL_EPOCH", "TestEngine", "open_test_engine", "virtual_wall", "wait_for_status"]

A = TypeVar("A", bound=Agent)

# 2027-01-15T08:00:00Z: the wall time at mock time 0, the same in every run of a test.
VIRTUAL_EPOCH = 1_800_000_000.0


def virtual_wall() -> float:
    """Wall time (epoch seconds) that follows the mock clock from :data:`VIRTUAL_EPOCH`.

    Pass it as ``open_engine(wall_clock=virtual_wall)`` where runs must agree on wall time
    across several ``trio.run`` calls; within one run no argument is needed.
    """
    return VIRTUAL_EPOCH + trio.current_time()


class TestEngine:
    """An engine on one log file that a test may close and reopen (:meth:`restart`).

    Get one from :func:`open_test_engine` or the pytest fixture ``eventwf_engine``. It
    forwards ``get_agent``, ``wait_workflow`` and ``statistics`` to the engine open now;
    agent objects belong to the engine that made them, so get them again after a restart.
    """

    __test__ = False  # a helper, not a test class pytest should collect

    def __init__(self, path: str | os.PathLike[str], options: Mapping[str, Any]) -> None:
        self.path = os.fspath(path)
        self.options = dict(options)
        self.opens = 0
        self._engine: Engine | None = None
        self._stack: AsyncExitStack | None = None

    @property
    def engine(self) -> Engine:
        """The engine open now (``RuntimeError`` between a close and the next open)."""
        if self._engine is None:
            raise RuntimeError(f"the test engine on {self.path} is not open")
        return self._engine

    async def open(self) -> Engine:
        """Open the log (recovering it, as any open does) and return the engine."""
        if self._engine is not None:
            raise RuntimeError(f"the test engine on {self.path} is already open")
        stack = AsyncExitStack()
        self._engine = await stack.enter_async_context(open_engine(self.path, **self.options))
        self._stack = stack
        self.opens += 1
        return self._engine

    async def close(self) -> None:
        """Close the engine: its workflows stop at their next checkpoint, as in a crash."""
        stack, self._stack, self._engine = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    async def restart(self) -> Engine:
        """Close and reopen the same log, from the task that opened it (trio requires
        that its nurseries close in the order they opened: not from inside a nursery the
        test opened after the engine). Returns the new engine."""
        if self.path == ":memory:":
            raise ValueError("a ':memory:' log does not survive a restart; give a file path")
        await self.close()
        return await self.open()

    async def get_agent(self, cls: type[A], name: str) -> A:
        """``Engine.get_agent`` on the engine open now."""
        return await self.engine.get_agent(cls, name)

    async def wait_workflow(self, workflow_id: str, timeout: Any = None) -> WorkflowInfo:
        """``Engine.wait_workflow`` on the engine open now."""
        return await self.engine.wait_workflow(workflow_id, timeout)

    async def wait_for_status(self, workflow_id: str, status: str, *,
                              timeout: Any = None) -> WorkflowInfo:
        """:func:`wait_for_status` on the engine open now."""
        return await wait_for_status(self, workflow_id, status, timeout=timeout)


@asynccontextmanager
async def open_test_engine(path: str | os.PathLike[str], **options: Any
                           ) -> AsyncIterator[TestEngine]:
    """A :class:`TestEngine` on ``path``, open for the block (``options`` go to
    ``open_engine``: ``agents``, ``workflows``, ...) and closed after it."""
    tester = TestEngine(path, options)
    await tester.open()
    try:
        yield tester
    finally:
        await tester.close()


def _runtime(target: Engine | Agent | TestEngine) -> Runtime:
    if isinstance(target, TestEngine):
        return target.engine.runtime
    if isinstance(target, Engine):
        return target.runtime
    if isinstance(target, Agent):
        runtime = target._eventwf_runtime
        if runtime is None:
            raise RuntimeError(f"{type(target).__name__} was not made by an engine; get it with "
                               "engine.get_agent")
        return runtime
    raise TypeError(f"wait_for_status takes an engine, a TestEngine or an agent, not {target!r}")


def _settled(s: WorkflowSummary) -> bool:
    """Whether the workflow's status cannot change without someone acting on it."""
    return (s.status in TERMINAL or s.status == "unknown"
            or (s.status == "paused" and s.error_name == "NonDeterminismError"))


async def wait_for_status(target: Engine | Agent | TestEngine, workflow_id: str, status: str,
                          *, timeout: Any = None) -> WorkflowInfo:
    """Wait until the workflow's status is ``status`` and return its ``WorkflowInfo``.

    Fails at once with :class:`~eventwf.errors.UnexpectedStatusError` (an
    ``AssertionError``) naming the status seen and its error when the workflow settles in
    another status instead: complete, errored or terminated, quarantined (``unknown``),
    or paused on a ``NonDeterminismError``. ``timeout`` (a duration; None waits for ever)
    raises ``WorkflowTimeoutError`` naming the status at that time. ``target`` is the
    engine, a :class:`TestEngine` or one of the engine's agents.
    """
    if status not in STATUSES:
        raise ValueError(f"invalid status {status!r}: use one of {', '.join(STATUSES)}")
    seconds = None if timeout is None else parse_duration(timeout, what="timeout")
    rt = _runtime(target)
    with trio.move_on_after(float("inf") if seconds is None else seconds):
        while True:
            s = rt.summaries.workflow(workflow_id)
            if s is None:
                raise WorkflowNotFoundError(f"no workflow {workflow_id!r} in {rt.store.path}")
            if s.status == status:
                return info(s)
            if _settled(s):
                why = f" ({s.error_name}: {s.error_message})" if s.error_name else ""
                raise UnexpectedStatusError(
                    f"workflow {workflow_id!r} is {s.status!r}, not {status!r}, and will not "
                    f"change by itself{why}", workflow_id=workflow_id, expected=status,
                    seen=s.status)
            await rt.summaries.wait_for_change(workflow_id)
    s = rt.summaries.workflow(workflow_id)
    raise WorkflowTimeoutError(f"workflow {workflow_id!r} did not reach {status!r} within "
                               f"{seconds:g} seconds (status {s.status if s else 'unknown'!r})")
