"""A live application with the console mounted (specs/console.md CN11-CN14), for tests.

``python -m tests.console_app DB`` opens an engine on ``DB``, starts one workflow
waiting for approval (``wf-approve``), serves ``eventwf.serve(..., console=True,
console_controls=True)`` on a free port, prints its URL and runs until SIGINT. The
browser test drives it from outside (Playwright's sync API cannot run inside trio).
"""

from __future__ import annotations

import signal
import sys
from typing import Any

import trio

import eventwf
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


WORKFLOWS = {"Approval": Approval, "Waiter": Waiter}


async def _main(db: str) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with eventwf.open_engine(db, agents=[TestAgent], workflows=WORKFLOWS) as engine:
            alice = await engine.get_agent(TestAgent, "alice")
            await alice.run_workflow("Approval", {"order": 7}, id="wf-approve")
            async with trio.open_nursery() as nursery:
                server = await nursery.start(
                    lambda task_status: eventwf.serve(engine, "127.0.0.1", 0, console=True,
                                                      console_controls=True,
                                                      task_status=task_status))
                print(f"http://127.0.0.1:{server.port}/", flush=True)
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break


if __name__ == "__main__":
    trio.run(_main, sys.argv[1])
