"""One task board: ``DemoAgent`` (its state maps task id to task) and ``DemoTask``.

Each task is a durable workflow: three steps of (simulated) work with a real durable
sleep after each, a human approval gate, then a last step. Its progress is written into
the agent's state with ``step.merge_agent_state``, so every open tab sees it, and a
restarted demo shows it and carries on where it was. A shallow merge of
``{task_id: task}`` changes one task without touching the others, so concurrent
workflows never overwrite each other.

A board runs at most ``MAX_ACTIVE`` tasks at once and holds at most ``MAX_TASKS``
(specs/demo.md M4-M6). The state cannot decide that: a card appears only with the
workflow's first step, long after its start returned. The tracking records can (a start
writes its record in the same commit), plus the starts still in flight, which each call
reserves before it awaits its start.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from eventwf.agent import Agent, callable
from eventwf.errors import WorkflowRejectedError, WorkflowTimeoutError
from eventwf.model.values import new_workflow_id, shorten
from eventwf.workflow import AgentWorkflow

__all__ = ["MAX_ACTIVE", "MAX_TASKS", "MAX_TITLE", "DemoAgent", "DemoTask"]

logger = logging.getLogger("eventwf")
STAGES = ["Collect sources", "Analyse", "Draft report", "Approval", "Publish"]
MAX_TITLE = 120
MAX_ACTIVE = 25  # tasks in progress on one board
MAX_TASKS = 200  # tasks on one board, finished ones included: its state stays far below 1 MiB
ACTIVE = ["queued", "running", "waiting", "waitingForPause", "paused"]


class DemoAgent(Agent):
    """A task board; its state is ``{task_id: task}``."""

    initial_state: Any = {}
    step_seconds: float = 1.5  # the durable sleep after each step (the CLI may change it)

    def __init__(self) -> None:
        super().__init__()
        self._starting: set[str] = set()  # tasks admitted whose start has not returned yet
        self._deciding = trio.Lock()

    @callable
    async def start_task(self, title: str) -> str:
        """Start a task workflow; its card appears with the workflow's first state write."""
        if not isinstance(title, str) or not 0 < len(title.strip()) <= MAX_TITLE:
            raise ValueError(f"a task needs a title of 1-{MAX_TITLE} characters")
        task_id = new_workflow_id()
        async with self._admitted(task_id, new=True):
            await self.run_workflow("DemoTask", {"title": title.strip(),
                                                 "seconds": self.step_seconds}, id=task_id)
        return task_id

    @callable
    async def approve(self, task_id: str) -> None:
        self._waiting(task_id)
        await self.approve_workflow(task_id, reason="Approved in the browser")

    @callable
    async def reject(self, task_id: str) -> None:
        self._waiting(task_id)
        await self.reject_workflow(task_id, reason="Rejected in the browser")

    @callable
    async def run_again(self, task_id: str) -> None:
        """Restart a rejected or expired task from its first step."""
        task = self._task(task_id)
        if task is None or task["status"] not in ("rejected", "expired"):
            raise ValueError("only a rejected or expired task can run again")
        async with self._admitted(task_id, new=False):
            await self.restart_workflow(task_id)

    @asynccontextmanager
    async def _admitted(self, task_id: str, *, new: bool) -> AsyncIterator[None]:
        """Admit one more active task, or raise ``ValueError``; hold its place meanwhile.

        One decision at a time. It counts each task once, by id: the tracked unfinished
        workflows plus the starts in flight, the latter read before the query, so a start
        that returns during the query is in one or the other.
        """
        async with self._deciding:
            starting = set(self._starting)
            page = await self.get_workflows(status=ACTIVE, limit=100)
            active = starting | {info.workflow_id for info in page.workflows}
            if not new and task_id in active:
                raise ValueError("this task is already running again")
            if page.next_cursor is not None or len(active) >= MAX_ACTIVE:
                raise ValueError(f"{MAX_ACTIVE} tasks are already in progress; finish some first")
            if new and len(active | set(self.state)) >= MAX_TASKS:
                raise ValueError(f"this board holds {MAX_TASKS} tasks, its limit; start new "
                                 "ones on another board (?board=name)")
            self._starting.add(task_id)
        try:
            yield
        finally:
            self._starting.discard(task_id)

    def _task(self, task_id: object) -> dict[str, Any] | None:
        if not isinstance(task_id, str):
            raise ValueError(f"no task {shorten(task_id, 60)}")
        task: dict[str, Any] | None = self.state.get(task_id)
        return task

    def _waiting(self, task_id: object) -> None:
        task = self._task(task_id)
        if task is None or task["status"] != "waiting":
            raise ValueError("this task is not waiting for approval")

    async def on_workflow_error(self, workflow_name: str, workflow_id: str, error: str) -> None:
        if "rejected" not in error.lower():  # a rejection is reported as an error too
            logger.warning("task %s failed: %s", workflow_id, error)


def _work(stage: str, title: str) -> dict[str, Any]:
    """The (simulated) work of one step; its result is logged once and never recomputed."""
    words = len(title.split())
    if stage == "collect":
        return {"detail": f"Found {words + random.randint(3, 9)} sources"}
    if stage == "analyse":
        return {"detail": f"{random.randint(8, 24)} findings, {random.randint(2, 5)} themes"}
    if stage == "draft":
        return {"detail": f"Draft of {random.randint(6, 14) * 100} words is ready"}
    return {"detail": f"Published “{title}”"}


class DemoTask(AgentWorkflow[DemoAgent]):
    async def run(self, event: Any, step: Any) -> dict[str, Any]:
        pace = float(event.payload["seconds"])
        task: dict[str, Any] = {
            "id": self.workflow_id, "title": event.payload["title"], "status": "running",
            "stage": 0, "stages": STAGES, "progress": 0, "detail": "Starting",
            "created": (await step.now()).isoformat(), "finished": None,
        }
        await self._show(step, task)
        for i, stage in enumerate(("collect", "analyse", "draft")):
            result = await step.do(stage, lambda stage=stage: _work(stage, task["title"]))
            await step.sleep(f"{stage}: wait", pace)
            await self._show(step, task, stage=i + 1, progress=25 * (i + 1), **result)
        await self._show(step, task, status="waiting", detail="Waiting for approval")
        try:
            await self.wait_for_approval(step, timeout="7 days")
        except WorkflowRejectedError as exc:
            await self._finish(step, task, "rejected", exc.reason or "Rejected")
            return {"approved": False}
        except WorkflowTimeoutError:
            await self._finish(step, task, "expired", "Nobody approved it within 7 days")
            return {"approved": False}
        await self._show(step, task, status="running", stage=4, progress=85,
                         detail="Approved; publishing")
        result = await step.do("publish", lambda: _work("publish", task["title"]))
        await step.sleep("publish: wait", pace)
        await self._finish(step, task, "done", result["detail"], stage=5, progress=100)
        return {"approved": True}

    async def _show(self, step: Any, task: dict[str, Any], **changes: Any) -> None:
        task.update(changes)
        await step.merge_agent_state({self.workflow_id: dict(task)})

    async def _finish(self, step: Any, task: dict[str, Any], status: str, detail: str,
                      **changes: Any) -> None:
        finished = (await step.now()).isoformat()
        await self._show(step, task, status=status, detail=detail, finished=finished, **changes)
