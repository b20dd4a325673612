"""Nothing one agent or workflow does stops the engine (guarantees.md G20, log.md L6b)."""

from __future__ import annotations

from typing import Any

import pytest
import trio

import eventwf
from tests.wfkit import virtual_wall


class Moody(eventwf.Agent):
    """An agent whose on_start raises while ``failing`` is set."""

    initial_state: Any = {}
    failing = False
    hang = False  # on_workflow_complete never returns (so its delivery is never marked)
    completed: list[str] = []

    async def on_start(self) -> None:
        if Moody.failing:
            raise RuntimeError("on_start is not ready")

    async def on_workflow_complete(self, workflow_name: str, workflow_id: str,
                                   result: Any) -> None:
        if Moody.hang:
            await trio.sleep_forever()
        Moody.completed.append(workflow_id)


class Other(eventwf.Agent):
    initial_state: Any = {}


class Quick(eventwf.AgentWorkflow[Any]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        await step.sleep("nap", "1 second")
        return await step.do("work", lambda: "done")


def _open(db: str) -> Any:
    return eventwf.open_engine(db, agents=[Moody, Other], workflows=[Quick],
                               wall_clock=virtual_wall)


async def test_an_agent_whose_on_start_raises_delays_its_workflows_and_stops_nothing(
        db: str) -> None:
    Moody.failing, Moody.completed = False, []
    async with _open(db) as engine:
        moody = await engine.get_agent(Moody, "m")
        wid = await moody.run_workflow("Quick")
        await trio.sleep(0.5)  # it sleeps, hibernated or not
    Moody.failing = True  # the next engine cannot load the agent for a while
    async with _open(db) as engine:
        other = await engine.get_agent(Other, "o")
        busy = await other.run_workflow("Quick")
        assert (await engine.wait_workflow(busy)).status == "complete"  # the engine serves
        with pytest.raises(eventwf.WorkflowTimeoutError):
            await engine.wait_workflow(wid, timeout=30)  # its agent cannot load meanwhile
        Moody.failing = False  # on_start works again: the run is retried, backing off
        assert (await engine.wait_workflow(wid, timeout=120)).status == "complete"
    assert Moody.completed == [wid]


async def test_an_agent_that_cannot_load_for_its_callbacks_stops_nothing(db: str) -> None:
    Moody.failing, Moody.hang, Moody.completed = False, True, []
    async with _open(db) as engine:
        moody = await engine.get_agent(Moody, "m")
        wid = await moody.run_workflow("Quick")
        assert (await engine.wait_workflow(wid)).status == "complete"
        await trio.sleep(1)  # its callback hangs: logged, not delivered
    Moody.failing, Moody.hang = True, False  # the agent cannot start for a while
    async with _open(db) as engine:
        other = await engine.get_agent(Other, "o")
        busy = await other.run_workflow("Quick")
        assert (await engine.wait_workflow(busy)).status == "complete"  # the engine serves
        await trio.sleep(30)
        assert Moody.completed == []
        Moody.failing = False
        await trio.sleep(120)  # the load is retried, backing off; the callback is delivered
    assert Moody.completed == [wid]
