"""The runs of workflows: which are live, and how each is started, fenced, fed and stopped.

Theory of operation: a run is one trio task (a ``WorkflowRunner``) with a replay machine
built from the workflow's stream. Starting one gives it a new *epoch*; every append it
makes carries its epoch, and the writer refuses one from a replaced run (pause, restart,
terminate). Committed records of a workflow are fed to its live run. A workflow that
becomes ``queued`` (started, resumed, restarted) gets a new run; one that becomes paused,
terminated, finished or quarantined loses it. A run that cannot go on for now (storage
failed, its agent could not be loaded) is retried, backing off; one that fails in the
engine's own code, or whose history replay refuses, is quarantined, alone (log.md L6b).
Which class runs a workflow is the ``factory``'s choice: a replay-only check injects one
that stops where the log ends.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import msgspec
import trio

from eventwf.errors import CorruptLogError, StorageError, StreamsTakenError
from eventwf.model.codec import decode_event, encode_event, event_type
from eventwf.model.events import (
    Event,
    EventReceived,
    Recorded,
    WorkflowStarted,
    parse_stream,
    workflow_stream,
)
from eventwf.model.status import RUNNABLE, STOPPED
from eventwf.model.workflow_fold import WorkflowSummary, quarantine
from eventwf.runtime.agents import Agents
from eventwf.runtime.clock import Clock
from eventwf.runtime.hibernation import Hibernation
from eventwf.runtime.ownership import Ownership
from eventwf.runtime.runner import RunHost, WorkflowRunner
from eventwf.runtime.summaries import Summaries
from eventwf.runtime.telemetry import NULL_TELEMETRY, StepCounters, Telemetry
from eventwf.runtime.writer import Writer
from eventwf.store.interface import LogStore

__all__ = ["RunFactory", "RunServices", "Runs"]

logger = logging.getLogger("eventwf")

RunFactory = Callable[[RunHost, WorkflowSummary, int, list[Recorded]], WorkflowRunner]
Spawn = Callable[[Callable[[], Awaitable[None]], str], None]


class Runs:
    def __init__(self, store: LogStore, summaries: Summaries, clock: Clock,
                 nursery: trio.Nursery, spawn: Spawn, factory: RunFactory,
                 workflow_classes: Mapping[str, type[Any]],
                 agent_classes: Mapping[str, type[Any]]) -> None:
        self._store = store
        self._summaries = summaries
        self._clock = clock
        self._nursery = nursery
        self._spawn = spawn
        self._factory = factory
        self._workflow_classes = workflow_classes
        self._agent_classes = agent_classes
        self._live: dict[str, WorkflowRunner] = {}
        self._epochs: dict[str, int] = {}
        self._failures: dict[str, int] = {}
        self.host: RunHost | None = None  # what the runs ask of the engine (set once wired)
        self.closing = False
        self.ownership = Ownership(None, 0.0)  # several engines: set once wired

    def __len__(self) -> int:
        return len(self._live)

    def epoch(self, workflow_id: str) -> int:
        return self._epochs.get(workflow_id, 0)

    def is_live(self, workflow_id: str) -> bool:
        return workflow_id in self._live

    def agent_streams(self) -> set[str]:
        """The agent streams whose workflows have a live run."""
        return {runner.agent_stream for runner in self._live.values()}

    # -- starting and stopping -----------------------------------------------------------

    def start(self, summary: WorkflowSummary, fresh: Sequence[Recorded] = ()) -> bool:
        """Replay a workflow's history and start its run; False if it cannot run here.
        ``fresh``: the workflow's records of the commit just published, in log order."""
        if self.closing or summary.workflow_name not in self._workflow_classes:
            return False
        if summary.agent_class not in self._agent_classes:
            logger.warning("workflow %s needs agent class %s, which is not registered; it is "
                           "left untouched", summary.workflow_id, summary.agent_class)
            return False
        if not self.ownership.everything:
            claimed = self._claimed(summary)
            if claimed is None:
                return False
            summary = claimed
        assert self.host is not None
        try:
            history = self._history(summary, fresh)
            epoch = self._epochs[summary.workflow_id] = self.epoch(summary.workflow_id) + 1
            runner = self._factory(self.host, summary, epoch, history)
        except CorruptLogError as exc:  # unreadable, or a history replay refuses (R12)
            self.quarantine(summary, exc)
            return False
        self._live[summary.workflow_id] = runner
        self._nursery.start_soon(runner.main, name=f"eventwf workflow {summary.workflow_id}")
        return True

    def _claimed(self, summary: WorkflowSummary) -> WorkflowSummary | None:
        """The summary once this engine may replay the workflow (it owns the agent and has
        claimed the stream, PG13: read again after the claim); None if it may not."""
        ownership = self.ownership
        agent = (summary.agent_class, summary.agent_name)
        if not ownership.owns(*agent):
            return None
        stream = workflow_stream(summary.workflow_id)
        shard = ownership.shard(*agent)
        if not ownership.needs_claim(stream, shard):
            return summary
        try:
            ownership.claim([(stream, shard)], self._clock.now_us())
        except StreamsTakenError:
            logger.warning("workflow %s was taken by another engine", summary.workflow_id)
            ownership.on_lost({shard})
            return None
        except StorageError as exc:
            logger.error("workflow %s cannot be claimed now: %s", summary.workflow_id, exc)
            return None
        self._summaries.forget_workflow(summary.workflow_id)
        again = self._summaries.workflow(summary.workflow_id)
        return None if again is None or again.finished else again

    def drop_where(self, agent: Callable[[str, str], bool]) -> None:
        """Stop the runs of the agents ``agent`` selects, logging nothing (another engine
        owns them now); their appends in flight are refused by the writer."""
        for workflow_id, runner in list(self._live.items()):
            _, agent_class, name = parse_stream(runner.agent_stream)
            if agent(agent_class, name):
                del self._live[workflow_id]
                self._epochs[workflow_id] = self.epoch(workflow_id) + 1
                runner.cancel()

    def _history(self, summary: WorkflowSummary, fresh: Sequence[Recorded]) -> list[Recorded]:
        """The run's records from its ``WorkflowStarted`` on: from the commit just published
        when it holds all of them (a workflow started in it: no read of a stream known to
        hold nothing more), else from the log."""
        if fresh and fresh[0].stream_position <= summary.started_at \
                and fresh[-1].stream_position == summary.head:
            return [_own(rec) for rec in fresh if rec.stream_position >= summary.started_at]
        return self._store.read_stream(workflow_stream(summary.workflow_id),
                                       summary.started_at)

    def ensure(self, summary: WorkflowSummary) -> None:
        if summary.workflow_id not in self._live:
            self.start(summary)

    def finished(self, runner: WorkflowRunner) -> None:
        if self._live.get(runner.workflow_id) is runner:
            del self._live[runner.workflow_id]

    def stalled(self, runner: WorkflowRunner, error: Exception) -> None:
        """Retry a run that could not go on (its append failed in storage, its agent could
        not be loaded), backing off up to a minute."""
        failures = self._failures[runner.workflow_id] = self._failures.get(
            runner.workflow_id, 0) + 1
        delay = min(60.0, 0.5 * 2 ** (failures - 1))
        logger.error("workflow %s stopped: %s; retrying in %.1f s", runner.workflow_id, error,
                     delay)
        self._spawn(functools.partial(self._retry, runner.workflow_id, delay),
                    f"retry {runner.workflow_id}")

    async def _retry(self, workflow_id: str, delay: float) -> None:
        await trio.sleep(delay)
        summary = self._summaries.workflow(workflow_id)
        if summary is not None and summary.status in RUNNABLE:
            self.ensure(summary)

    def crashed(self, runner: WorkflowRunner, error: Exception) -> None:
        """A run failed in the engine's own code: quarantine it; the others go on (L6b)."""
        logger.error("workflow %s: its run failed in the engine: %r", runner.workflow_id,
                     error, exc_info=error)
        if self._live.get(runner.workflow_id) is runner:
            self.failed(runner.workflow_id, error, None)

    # -- committed records ---------------------------------------------------------------

    def feed(self, workflow_id: str, rec: Recorded, hibernation: Hibernation) -> None:
        """A committed record of a workflow: to its live run, or a wake-up if it waits."""
        runner = self._live.get(workflow_id)
        if runner is not None:
            runner.feed(rec)
            if isinstance(rec.event, EventReceived):
                runner.notify_mail()
        elif isinstance(rec.event, EventReceived):
            hibernation.event_arrived(workflow_id, rec.event.event_type)

    def transition(self, workflow_id: str, old: WorkflowSummary | None,
                   new: WorkflowSummary, fresh: Sequence[Recorded] = ()) -> None:
        """A workflow's summary changed: start a new run, or stop the one it has.
        ``fresh``: its records of the commit that changed it (see ``start``)."""
        runner = self._live.get(workflow_id)
        restarted = old is None or old.run != new.run or old.status != "queued"
        if new.status == "queued" and restarted:
            if runner is not None:
                runner.cancel()
            self.start(new, fresh)
        elif new.status in STOPPED and runner is not None and not runner.finishing:
            runner.cancel()

    # -- quarantine ----------------------------------------------------------------------

    def failed(self, workflow_id: str, exc: Exception, position: int | None) -> None:
        """Quarantine a workflow whose replay (or run) failed; the engine goes on."""
        runner = self._live.pop(workflow_id, None)
        if runner is not None:
            runner.cancel()
        summary = self._summaries.workflow(workflow_id)
        if summary is None:
            logger.error("workflow %s failed before it had a summary: %r", workflow_id, exc)
            return
        if not isinstance(exc, CorruptLogError):
            where = "" if position is None else f" at log position {position}"
            exc = CorruptLogError(f"replaying workflow {workflow_id!r} failed{where}: "
                                  f"{type(exc).__name__}: {exc}", position=position)
        self.quarantine(summary, exc)

    def quarantine(self, summary: WorkflowSummary, exc: CorruptLogError) -> None:
        """Stop serving one workflow whose log cannot be read; the bytes stay as they are."""
        position = exc.position if exc.position is not None else -1
        bad = quarantine(summary, workflow_stream(summary.workflow_id), position, str(exc),
                         self._clock.now_us())
        self._summaries.replace_workflow(bad)
        logger.error("workflow %s is quarantined: %s", summary.workflow_id, exc)


def _own(rec: Recorded) -> Recorded:
    """A record as a read of the log gives it: the start's params are the run's own
    (``run`` may change its ``event.payload``; the published record is shared)."""
    event = rec.event
    if event.__class__ is not WorkflowStarted:
        return rec
    copy = decode_event(event_type(event), encode_event(event), position=rec.position)
    return msgspec.structs.replace(rec, event=copy)


class RunServices:
    """What a run may ask of the engine (``runner.RunHost``), from the parts that answer."""

    def __init__(self, clock: Clock, writer: Writer, summaries: Summaries, runs: Runs,
                 agents: Agents, hibernation: Hibernation,
                 workflow_classes: Mapping[str, type[Any]], *,
                 telemetry: Telemetry = NULL_TELEMETRY,
                 counters: StepCounters | None = None) -> None:
        self.clock = clock
        self.telemetry = telemetry
        self.counters = StepCounters() if counters is None else counters
        self._writer = writer
        self._summaries = summaries
        self._runs = runs
        self._agents = agents
        self._hibernation = hibernation
        self._workflow_classes = workflow_classes

    async def append(self, items: Sequence[tuple[str, Event]], *,
                     fence: tuple[str, int]) -> list[Recorded]:
        return await self._writer.append(items, fence=fence)

    def submit(self, items: Sequence[tuple[str, Event]], *, fence: tuple[str, int]) -> None:
        self._writer.submit(items, fence=fence)

    def summary(self, workflow_id: str) -> WorkflowSummary | None:
        return self._summaries.workflow(workflow_id)

    def epoch(self, workflow_id: str) -> int:
        return self._runs.epoch(workflow_id)

    def workflow_class(self, binding: str) -> type[Any] | None:
        return self._workflow_classes.get(binding)

    async def agent(self, agent_class: str, name: str) -> Any:
        return await self._agents.object(agent_class, name)

    def should_hibernate(self, until_us: int) -> bool:
        return self._hibernation.should_hibernate(until_us)

    def hibernated(self, runner: WorkflowRunner) -> None:
        self._hibernation.hibernated(runner.workflow_id)

    def stalled(self, runner: WorkflowRunner, error: Exception) -> None:
        self._runs.stalled(runner, error)

    def crashed(self, runner: WorkflowRunner, error: Exception) -> None:
        self._runs.crashed(runner, error)

    def finished(self, runner: WorkflowRunner) -> None:
        self._runs.finished(runner)

    async def deliver_progress(self, agent: Any, workflow_name: str, workflow_id: str,
                               progress: Any) -> None:
        await self._agents.deliver_progress(agent, workflow_name, workflow_id, progress)

    def state_items(self, agent: Any, action: str, value: Any,
                    workflow_id: str) -> list[tuple[str, Event]]:
        return self._agents.state_items(agent, action, value, workflow_id)

    async def state_committed(self, agent: Any) -> None:
        await self._agents.state_committed(agent)
