"""A small end-to-end run on a SQLite file: ``python -m eventwf example``.

An agent starts a workflow that fetches (failing once, then retrying), reports progress,
sleeps durably, waits for a human approval, updates the agent's state and completes.
Run it twice on the same file: the second run starts a new task beside the first.
"""

from __future__ import annotations

from typing import Any

import trio

from eventwf.agent import Agent
from eventwf.engine import open_engine
from eventwf.model.types import Retries
from eventwf.workflow import AgentWorkflow

_attempts: dict[str, int] = {}


class TaskAgent(Agent):
    initial_state: Any = {"tasks": {}}

    def __init__(self) -> None:
        self.needs_approval = trio.Event()

    async def on_workflow_progress(self, workflow_name: str, workflow_id: str,
                                   progress: Any) -> None:
        print(f"  progress  {workflow_id}: {progress}")
        if progress.get("step") == "approval":
            self.needs_approval.set()

    async def on_workflow_complete(self, workflow_name: str, workflow_id: str,
                                   result: Any) -> None:
        print(f"  complete  {workflow_id}: {result}")

    async def on_workflow_error(self, workflow_name: str, workflow_id: str, error: str) -> None:
        print(f"  error     {workflow_id}: {error}")

    async def on_state_update(self, state: Any, source: str) -> None:
        print(f"  state     {state}")


class TaskWorkflow(AgentWorkflow[TaskAgent]):
    async def run(self, event: Any, step: Any) -> Any:
        task = event.payload["task"]

        async def fetch() -> dict[str, Any]:
            _attempts[self.workflow_id] = _attempts.get(self.workflow_id, 0) + 1
            if _attempts[self.workflow_id] == 1:
                raise ConnectionError("upstream timed out (the retry will succeed)")
            return {"task": task, "words": len(task.split())}

        data = await step.do("fetch", fetch, retries=Retries(limit=3, delay="1 second"))
        await self.report_progress({"step": "fetch", "percent": 0.5})
        await step.sleep("cool-down", "1 second")
        await self.report_progress({"step": "approval", "percent": 0.75})
        approval = await self.wait_for_approval(step, timeout="1 minute")
        await step.patch_agent_state({"tasks": {self.workflow_id: "done"}})  # RFC 7396
        await step.report_complete({"data": data, "approved_by": approval})
        return data


async def _run(path: str) -> None:
    async with open_engine(path, agents=[TaskAgent], workflows=[TaskWorkflow]) as engine:
        agent = await engine.get_agent(TaskAgent, "demo-user")
        workflow_id = await agent.run_workflow("TaskWorkflow", {"task": "write the report"},
                                               metadata={"priority": "high"})
        print(f"started {workflow_id} (log: {path})")
        await agent.needs_approval.wait()
        await trio.sleep(0.1)
        status = await agent.get_workflow_status("TaskWorkflow", workflow_id)
        print(f"status while it waits for approval: {status.status}")
        await agent.approve_workflow(workflow_id, reason="looks good", metadata={"by": "alice"})
        info = await engine.wait_workflow(workflow_id, timeout="30 seconds")
        await trio.sleep(0.1)  # let the completion callback print
        print(f"finished: {info.status}; tracked workflows: "
              f"{(await agent.get_workflows()).total}; log head: {engine.statistics().head}")
        print("events of this workflow:")
        for rec in engine.runtime.store.read_stream("wf:" + workflow_id):
            print(f"  #{rec.position:<4} {type(rec.event).__name__}")


def main(path: str) -> None:
    trio.run(_run, path)
