"""``open_engine``: the durable engine on one log file, as an async context manager."""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from eventwf import faults
from eventwf.agent import Agent, apply_request
from eventwf.errors import (
    CorruptLogError,
    NonDeterminismError,
    WorkflowNotFoundError,
    WorkflowTimeoutError,
)
from eventwf.model.codec import json_value
from eventwf.model.types import WorkflowInfo
from eventwf.model.values import check_agent_name, check_binding_name, parse_duration
from eventwf.model.workflow_fold import WorkflowSummary
from eventwf.runtime import tracking as _tracking
from eventwf.runtime.check import CheckRunners, ReplayCheck
from eventwf.runtime.clock import Clock
from eventwf.runtime.follower import serve_postgres_following
from eventwf.runtime.inbox import serve_postgres_inbox
from eventwf.runtime.notifications import wait_real
from eventwf.runtime.recovery import recover, recover_for_check
from eventwf.runtime.remote_waits import INTERVAL, RemoteWaits
from eventwf.runtime.runner import WorkflowRunner
from eventwf.runtime.runs import RunFactory
from eventwf.runtime.runtime import Runtime
from eventwf.runtime.scratch import ScratchStore
from eventwf.runtime.takeover import Takeover
from eventwf.runtime.telemetry import NULL_TELEMETRY, EngineStatistics, Telemetry, open_telemetry
from eventwf.store import LogStore, copy_log, is_url, open_store
from eventwf.store.location import LogLocation
from eventwf.workflow import AgentWorkflow

__all__ = ["Engine", "EngineStatistics", "ReplayCheck", "check_replay", "open_engine"]

if TYPE_CHECKING:  # only for the annotations: opentelemetry is imported when it is used
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

A = TypeVar("A", bound=Agent)
T = TypeVar("T")
FOLLOW_WAIT = 1.0  # seconds a wait for another engine's workflow lasts before looking again


class Engine:
    """A running engine; get it from ``open_engine`` (never construct it yourself)."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    @property
    def path(self) -> str:
        """Where the log lives (its home path for a file: symlinks resolved)."""
        return self._rt.store.path

    @property
    def runtime(self) -> Runtime:
        """The engine's machinery, for eventwf's own server and apps (no stability
        promise: not part of the API)."""
        return self._rt

    async def get_agent(self, cls: type[A], name: str) -> A:
        """The one ``cls`` instance named ``name`` (created, and logged, on first use)."""
        registered = self._rt.agent_classes.get(getattr(cls, "__name__", ""))
        if registered is not cls:
            raise ValueError(f"agent class {cls!r} is not registered with this engine; pass it "
                             "in open_engine(agents=[...])")
        agent = await self._rt.agents.object(cls.__name__, check_agent_name(name))
        assert isinstance(agent, cls)
        return agent

    async def wait_workflow(self, workflow_id: str, timeout: Any = None) -> WorkflowInfo:
        """Wait until the workflow is complete, errored or terminated.

        Raises ``NonDeterminismError`` if it is blocked on a divergence, ``CorruptLogError``
        if it is quarantined and ``WorkflowTimeoutError`` after ``timeout``.
        """
        seconds = None if timeout is None else parse_duration(timeout, what="timeout")
        deadline = trio.current_time() + seconds if seconds is not None else float("inf")
        with trio.move_on_at(deadline):
            s = self._rt.summaries.workflow(workflow_id)
            while True:
                if s is None:
                    raise WorkflowNotFoundError(f"no workflow {workflow_id!r} in {self.path}")
                if s.finished:
                    return _tracking.info(s)
                if s.status == "unknown":
                    raise CorruptLogError(s.error_message or "corrupt log",
                                          position=s.corrupt_position)
                if s.status == "paused" and s.error_name == "NonDeterminismError":
                    raise NonDeterminismError(s.error_message)
                s = await self._wait_change(s, workflow_id)
        s = self._rt.summaries.workflow(workflow_id)
        raise WorkflowTimeoutError(f"workflow {workflow_id!r} did not finish within {seconds:g} "
                                   f"seconds (status {s.status if s else 'unknown'})")

    async def _wait_change(self, seen: WorkflowSummary, workflow_id: str
                           ) -> WorkflowSummary | None:
        """The workflow once it may have changed: at its next commit here; on PostgreSQL,
        for a workflow another engine runs (or that may move meanwhile, PG15), once the
        shared projections show it changed, read again from them."""
        rt = self._rt
        if rt.remote_waits is None:  # one engine writes the log: every change is a commit here
            changed = await rt.summaries.wait_for_change(workflow_id)
            # a finished summary leaves memory: take the one that woke us, unread
            return changed if changed.finished else rt.summaries.workflow(workflow_id)
        agent_class, agent_name = seen.agent_class, seen.agent_name
        left = rt.ownership.left(agent_class, agent_name)
        if left > INTERVAL:
            # Owned here: every change is a commit here until the lease's own deadline
            # (and losing the shard wakes the wait).
            woke: list[WorkflowSummary] = []

            async def change() -> None:
                woke.append(await rt.summaries.wait_for_change(workflow_id))
            await wait_real(change, left)
            if woke and woke[0].finished:
                return woke[0]
        else:  # another engine commits it: one read for every such wait (remote_waits.py)
            await rt.remote_waits.changed(workflow_id, (seen.status, seen.run), FOLLOW_WAIT)
        if not rt.ownership.owns(agent_class, agent_name):
            rt.summaries.forget_workflow(workflow_id)
        return rt.summaries.workflow(workflow_id)

    def statistics(self) -> EngineStatistics:
        """The engine's figures now, for monitoring without OpenTelemetry: counts since
        open (commits, events, steps completed and failed, failed attempts, hibernations)
        and what is live now (workflows, hibernated workflows, pending timers, the writer's
        queue, agents, WebSocket clients). The OpenTelemetry metrics report the same
        figures (docs/guides/observability.md)."""
        return self._rt.statistics()


def _agent_classes(agents: Sequence[type[Agent]]) -> dict[str, type[Any]]:
    out: dict[str, type[Any]] = {}
    for cls in agents:
        if not isinstance(cls, type) or not issubclass(cls, Agent):
            raise ValueError(f"agents must be Agent subclasses, got {cls!r}")
        if cls.__name__ in out and out[cls.__name__] is not cls:
            raise ValueError(f"two agent classes are named {cls.__name__!r}; agents are "
                             "addressed by class name")
        # fail at open, not when the engine itself loads an agent (a callback, a resume)
        json_value(getattr(cls, "initial_state", None), f"{cls.__name__}.initial_state")
        out[cls.__name__] = cls
    return out


def _workflow_classes(
    workflows: Mapping[str, type[AgentWorkflow[Any]]] | Sequence[type[AgentWorkflow[Any]]],
) -> dict[str, type[Any]]:
    pairs = (list(workflows.items()) if isinstance(workflows, Mapping)
             else [(getattr(cls, "__name__", ""), cls) for cls in workflows])
    out: dict[str, type[Any]] = {}
    for binding, cls in pairs:
        check_binding_name(binding)
        if not isinstance(cls, type) or not issubclass(cls, AgentWorkflow):
            raise ValueError(f"workflow binding {binding!r} must map to an AgentWorkflow "
                             f"subclass, got {cls!r}")
        if binding in out:
            raise ValueError(f"workflow binding {binding!r} is registered twice")
        out[binding] = cls
    return out


@asynccontextmanager
async def open_engine(
    path: str | os.PathLike[str] = "eventwf.db",
    *,
    agents: Sequence[type[Agent]] = (),
    workflows: Mapping[str, type[AgentWorkflow[Any]]] | Sequence[type[AgentWorkflow[Any]]] = (),
    synchronous: str = "FULL",
    wall_clock: Callable[[], float] | None = None,
    hibernate_after: float | None = 60.0,
    max_live_workflows: int = 10_000,
    telemetry: bool | None = None,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    lease_ttl: float = 15.0,
) -> AsyncIterator[Engine]:
    """Open (or create) the log at ``path``, resume unfinished workflows, and serve.

    Leaving the block stops every workflow cleanly; they resume on the next open. An
    error raised inside the block comes out as itself (not wrapped in exception groups).
    ``synchronous="NORMAL"`` trades durability under power loss for speed (opt-in).
    ``wall_clock`` (epoch seconds) is read once, to anchor trio's clock to wall time; by
    default ``time.time``, and under a ``MockClock`` every engine of one ``trio.run`` shares
    one anchor, so wall time follows the mock clock across reopens (``clock.py``).
    A workflow that waits at least ``hibernate_after`` seconds (or while more than
    ``max_live_workflows`` runs are in memory) drops its coroutine and is replayed from
    the log when its timer fires or its event arrives; ``None`` keeps every run in memory.
    ``telemetry`` chooses OpenTelemetry spans and metrics once, here: ``True`` (or a
    ``tracer_provider``/``meter_provider`` given) turns them on, ``False`` off, and the
    default ``None`` on only if the program already set a global OpenTelemetry SDK
    provider; off, nothing of ``opentelemetry`` is imported
    (docs/guides/observability.md).
    ``lease_ttl`` (seconds) matters when several engines share a PostgreSQL database:
    an engine that dies leaves its agents for at most this long before another engine
    takes them over and resumes their workflows (specs/postgres.md PG12).
    """
    _check_lease_ttl(lease_ttl)
    if hibernate_after is not None:
        parse_duration(hibernate_after, what="hibernate_after")
    if isinstance(max_live_workflows, bool) or not isinstance(max_live_workflows, int) or \
            max_live_workflows < 1:
        raise ValueError(f"invalid max_live_workflows {max_live_workflows!r}: must be an int >= 1")
    hooks = open_telemetry(telemetry, tracer_provider, meter_provider)
    async with _as_raised(_running(path, agents, workflows, synchronous, wall_clock,
                                   hibernate_after=hibernate_after,
                                   max_live_workflows=max_live_workflows, telemetry=hooks,
                                   lease_ttl=lease_ttl)) as rt:
        yield Engine(rt)


@asynccontextmanager
async def _as_raised(manager: AbstractAsyncContextManager[T]) -> AsyncIterator[T]:
    """``manager``, except that an error raised inside the block comes out as itself.

    The engine's nurseries would wrap it in exception groups (with the cancellations it
    caused); the API promises the error the block raised (API.md "Engine"). A group that
    holds anything else comes out as it is.
    """
    body_error: BaseException | None = None
    try:
        async with manager as value:
            try:
                yield value
            except BaseException as exc:
                body_error = exc
                raise
    except BaseExceptionGroup as group:
        if body_error is not None and _only(group, body_error):
            raise body_error from body_error.__cause__  # as the block raised it
        raise


def _check_lease_ttl(lease_ttl: object) -> None:
    if isinstance(lease_ttl, bool) or not isinstance(lease_ttl, int | float) or \
            not math.isfinite(lease_ttl) or not 0.1 <= lease_ttl <= 86_400:
        raise ValueError(f"invalid lease_ttl {lease_ttl!r}: must be a number of seconds "
                         "from 0.1 to 86400")


def _only(group: BaseExceptionGroup[BaseException], error: BaseException) -> bool:
    """Whether ``group`` holds nothing but ``error`` (and the cancellations it caused)."""
    for leaf in _leaves(group):
        if leaf is not error and not isinstance(leaf, trio.Cancelled):
            return False
    return True


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


@asynccontextmanager
async def _running(
    path: str | os.PathLike[str],
    agents: Sequence[type[Agent]],
    workflows: Mapping[str, type[AgentWorkflow[Any]]] | Sequence[type[AgentWorkflow[Any]]],
    synchronous: str,
    wall_clock: Callable[[], float] | None,
    *,
    factory: RunFactory = WorkflowRunner,
    recovery: Callable[[Runtime], int] = recover,
    hibernate_after: float | None = 60.0,
    max_live_workflows: int = 10_000,
    telemetry: Telemetry = NULL_TELEMETRY,
    lease_ttl: float = 15.0,
    opener: Callable[[], LogStore] | None = None,
) -> AsyncIterator[Runtime]:
    agent_classes = _agent_classes(agents)
    workflow_classes = _workflow_classes(workflows)
    store = open_store(path, synchronous=synchronous) if opener is None else opener()
    takeover: Takeover | None = None
    try:
        async with trio.open_nursery() as outer:  # the writer outlives every other task
            async with trio.open_nursery() as nursery:
                rt = Runtime(store, Clock(wall_clock), nursery, agent_classes, workflow_classes,
                             factory=factory, hibernate_after=hibernate_after,
                             max_live_workflows=max_live_workflows, telemetry=telemetry,
                             lease_ttl=lease_ttl)
                rt.location = LogLocation(os.fspath(path))
                takeover = Takeover(rt)
                await outer.start(rt.writer.run)
                if is_url(os.fspath(path)):  # several engines may write it: follow the others
                    await _start_postgres_services(rt, nursery, os.fspath(path))
                recovery(rt)
                takeover.start()
                nursery.start_soon(takeover.serve, name="eventwf shard leases")
                faults.hit("open.after_recover")
                try:
                    yield rt
                finally:
                    rt.close()
                    nursery.cancel_scope.cancel()
            with trio.CancelScope(shield=True):  # a clean close keeps what the tasks queued
                await rt.writer.flush_pending()
            outer.cancel_scope.cancel()
    finally:
        if takeover is not None:
            takeover.close()  # its leases go at once (also when the block raised)
        store.close()


async def _start_postgres_services(rt: Runtime, nursery: trio.Nursery, url: str) -> None:
    """Start what an engine on a PostgreSQL log needs beside the writer, because other
    engines write the same log (specs/postgres.md): the follower (their agents' states to
    this engine's clients, PG18), the inbox (requests to the agents this engine owns, PG15)
    and the waits on workflows that other engines run (PG15)."""
    rt.follower = await nursery.start(serve_postgres_following, rt.writer, rt.agents, url)
    rt.inbox = await nursery.start(serve_postgres_inbox, rt.agents, rt.ownership, url,
                                   apply_request)
    rt.remote_waits = RemoteWaits(rt.store.workflow_statuses)
    await nursery.start(rt.remote_waits.serve)


async def check_replay(
    path: str | os.PathLike[str],
    *,
    agents: Sequence[type[Agent]] = (),
    workflows: Mapping[str, type[AgentWorkflow[Any]]] | Sequence[type[AgentWorkflow[Any]]] = (),
    timeout: float = 60.0,
) -> list[ReplayCheck]:
    """Replay every unfinished workflow of a log against this code, without writing to it.

    The log (which may be in use by a running engine) is copied first; each workflow's
    logged commands are replayed and the replay stops where the log ends, so no step
    runs. Returns one verdict per unfinished workflow, in creation order. A PostgreSQL
    log is not copied: it is replayed in place through a read-only session, and what the
    replay writes is kept in memory (``runtime/scratch.py`` says why).
    """
    where = os.fspath(path)
    if is_url(where):
        return await _check(where, agents, workflows, timeout,
                            lambda: ScratchStore(open_store(where, readonly=True)))
    with tempfile.TemporaryDirectory(prefix="eventwf-check-") as tmp:
        copy = os.path.join(tmp, "check.db")
        copy_log(where, copy)
        return await _check(copy, agents, workflows, timeout, None)


async def _check(
    path: str,
    agents: Sequence[type[Agent]],
    workflows: Mapping[str, type[AgentWorkflow[Any]]] | Sequence[type[AgentWorkflow[Any]]],
    timeout: float,
    opener: Callable[[], LogStore] | None,
) -> list[ReplayCheck]:
    """The verdicts of a replay-only run on the log at ``path`` (or that ``opener`` opens)."""
    checks = CheckRunners()
    async with _running(path, agents, workflows, "NORMAL", time.time, factory=checks.factory,
                        recovery=recover_for_check, hibernate_after=None,
                        opener=opener) as rt:
        with trio.move_on_after(timeout):
            while not checks.done():
                await trio.sleep(0.01)
        verdicts = checks.verdicts()
        out = []
        for s in rt.store.unfinished_workflows():
            verdict = verdicts.get(s.workflow_id)
            if verdict is None:
                verdict = _no_run_verdict(rt, s)
            out.append(verdict)
        return out


def _no_run_verdict(rt: Runtime, s: Any) -> ReplayCheck:
    if s.status == "unknown":
        return ReplayCheck(s.workflow_id, s.workflow_name, s.status, "corrupt", 0,
                           s.error_message)
    if s.workflow_name not in rt.workflow_classes:
        return ReplayCheck(s.workflow_id, s.workflow_name, s.status, "orphan", 0,
                           f"binding {s.workflow_name!r} is not registered")
    if s.agent_class not in rt.agent_classes:
        return ReplayCheck(s.workflow_id, s.workflow_name, s.status, "orphan", 0,
                           f"agent class {s.agent_class!r} is not registered")
    return ReplayCheck(s.workflow_id, s.workflow_name, s.status, "error", 0,
                       "the replay did not finish within the timeout")
