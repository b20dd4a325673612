"""A live application with the console mounted (specs/console.md CN11-CN19), for tests.

``python -m tests.console_app DB`` opens an engine on ``DB``, starts the workflows of
:data:`STARTED` (each waiting: for an approval, a ``go`` event, or the ``tick`` events
that let ``wf-live`` take its next step), serves ``eventwf.serve(..., console=True,
console_controls=True, console_prefix="/ops")`` on a free port behind an
``authenticate`` hook (console requests need the header ``x-console-token: TOKEN``),
prints the console's URL and runs until SIGINT. The browser test drives it from outside
(Playwright's sync API cannot run inside trio).
"""

from __future__ import annotations

import signal
import sys
from typing import Any

import trio

import eventwf
from eventwf.server.front import HttpRequest
from tests.wfkit import TestAgent


class Approval(eventwf.AgentWorkflow[TestAgent]):
    """Waits for an approval and returns its metadata."""

    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        return await self.wait_for_approval(step)


class Waiter(eventwf.AgentWorkflow[TestAgent]):
    """Waits for a ``go`` event and returns its payload."""

    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        received = await step.wait_for_event("go", type="go", timeout="1 day")
        return received.payload


class Live(eventwf.AgentWorkflow[TestAgent]):
    """Three steps, each after a ``tick`` event: its timeline grows while a page shows it."""

    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        for n in range(3):
            await step.wait_for_event(f"tick-{n}", type="tick", timeout="1 day")
            await step.do(f"step-{n}", lambda n=n: {"step": n})
        return "done"


WORKFLOWS = {"Approval": Approval, "Waiter": Waiter, "Live": Live}
TOKEN = "let-me-in"
PREFIX = "/ops"
# id -> (binding, metadata): the workflows the application starts
STARTED = {
    "wf-approve": ("Approval", {"team": "a", "priority": 1}),
    "wf-reject": ("Approval", {"team": "b", "priority": 1}),
    "wf-pause": ("Waiter", {"team": "a", "priority": 2}),
    "wf-term": ("Waiter", {"team": "b", "priority": "2"}),
    "wf-live": ("Live", {"team": "c"}),
}


def authenticate(request: object) -> bool:
    """WebSocket clients pass; console requests need the token header."""
    if not isinstance(request, HttpRequest):
        return True
    return request.header(b"x-console-token") == TOKEN


async def _main(db: str) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with eventwf.open_engine(db, agents=[TestAgent], workflows=WORKFLOWS) as engine:
            alice = await engine.get_agent(TestAgent, "alice")
            for workflow_id, (binding, metadata) in STARTED.items():
                await alice.run_workflow(binding, {"order": workflow_id}, id=workflow_id,
                                         metadata=metadata)
            async with trio.open_nursery() as nursery:
                server = await nursery.start(
                    lambda task_status: eventwf.serve(
                        engine, "127.0.0.1", 0, authenticate=authenticate, console=True,
                        console_controls=True, console_prefix=PREFIX, task_status=task_status))
                print(f"http://127.0.0.1:{server.port}{PREFIX}/", flush=True)
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break


if __name__ == "__main__":
    trio.run(_main, sys.argv[1])
