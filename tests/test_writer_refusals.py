"""When the writer answers a refused append (runtime/writer.py): once the batch it was
refused in is settled, so its caller finds in memory what refused it. With the commit in
a worker thread (PostgreSQL) the refusal used to reach its caller while the batch was
still being committed: a run refused by a terminate staged just before its completion
found its workflow still running in memory and quarantined it as an engine failure.

A store that commits in a thread and holds each commit until the test releases it, and a
registry of summaries in a dict, drive the real writer on trio's real clock (a MockClock
keeps commits inline)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest
import trio
import trio.testing

from eventwf.errors import TransitionError
from eventwf.model.agent_fold import AgentSummary
from eventwf.model.events import (
    AgentCreated,
    Event,
    Recorded,
    WorkflowCompleted,
    WorkflowRunning,
    WorkflowStarted,
    WorkflowTerminated,
)
from eventwf.model.workflow_fold import WorkflowSummary, apply_workflow
from eventwf.runtime.clock import Clock
from eventwf.runtime.writer import Writer
from eventwf.store.interface import PendingRow


class HeldStore:
    """Commits in the writer's worker thread, each one held until :meth:`release`."""

    commits_in_thread = True

    def __init__(self) -> None:
        self.head = 0
        self.entered = threading.Semaphore(0)  # one release per commit that waits
        self._passes = threading.Semaphore(0)

    def commit(self, rows: Sequence[PendingRow], *, project: Any, consumes: Any) -> list[int]:
        self.entered.release()
        assert self._passes.acquire(timeout=30), "the test never released the commit"
        positions = list(range(self.head + 1, self.head + 1 + len(rows)))
        project(positions)
        self.head += len(rows)
        return positions

    def release(self) -> None:
        self._passes.release()


class Summaries:
    """The writer's registry: summaries in a dict, installed as the writer says."""

    def __init__(self, running: WorkflowSummary) -> None:
        self.workflows = {running.workflow_id: running}

    def workflow_summary(self, workflow_id: str) -> WorkflowSummary | None:
        return self.workflows.get(workflow_id)

    def agent_summary(self, agent_class: str, name: str) -> AgentSummary | None:
        return None

    def runner_epoch(self, workflow_id: str) -> int:
        return 1

    def install(self, workflows: dict[str, WorkflowSummary],
                agents: dict[tuple[str, str], AgentSummary]) -> None:
        self.workflows.update(workflows)

    def published(self, records: list[Recorded]) -> None:
        pass

    def forget(self, streams: Sequence[str]) -> None:
        pass


def _running(workflow_id: str) -> WorkflowSummary:
    stream = f"wf:{workflow_id}"
    started = apply_workflow(None, Recorded(-2, stream, 0, 1, WorkflowStarted("W", "A", "a")))
    return apply_workflow(started, Recorded(-1, stream, 1, 2, WorkflowRunning()))


async def _wait_in_thread(semaphore: threading.Semaphore) -> None:
    assert await trio.to_thread.run_sync(semaphore.acquire, True, 30)


@pytest.mark.realtime
async def test_a_refusal_is_answered_once_the_batch_that_caused_it_is_installed() -> None:
    store = HeldStore()
    registry = Summaries(_running("w1"))
    writer = Writer(store, Clock(), registry)  # type: ignore[arg-type]
    answers: dict[str, object] = {}

    async def append(name: str, stream: str, event: Event, fence: tuple[str, int] | None
                     ) -> None:
        try:
            await writer.append([(stream, event)], fence=fence)
            answers[name] = "committed"
        except TransitionError:  # what the caller finds in memory as it learns of it
            answers[name] = ("refused", registry.workflows["w1"].status)

    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        nursery.start_soon(append, "first", "agent:A/a", AgentCreated("A", "a"), None)
        await _wait_in_thread(store.entered)  # the first batch commits; the rest queue
        nursery.start_soon(append, "terminate", "wf:w1", WorkflowTerminated(), None)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(append, "complete", "wf:w1", WorkflowCompleted("out"), ("w1", 1))
        await trio.testing.wait_all_tasks_blocked()
        store.release()
        await _wait_in_thread(store.entered)  # the terminate's batch, the run's refused
        await trio.testing.wait_all_tasks_blocked()
        early = dict(answers)  # asserted below, once every commit is released
        store.release()
        while len(answers) < 3:
            await trio.sleep(0.001)
        nursery.cancel_scope.cancel()
    assert early == {"first": "committed"}  # nobody learns of a batch in flight
    assert answers == {"first": "committed", "terminate": "committed",
                       "complete": ("refused", "terminated")}
