"""The engine as a trio user expects it (issue 16 items 3-4; API.md "Engine")."""

from __future__ import annotations

import functools
from typing import Any

import pytest
import trio

import eventwf
from tests.wfkit import TestAgent, event_types


class Napper(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        await step.sleep("nap", "1 hour")
        return await step.now()


def _open(db: str) -> Any:
    return eventwf.open_engine(db, agents=[TestAgent], workflows=[Napper])


async def test_an_error_inside_the_block_comes_out_as_itself(db: str) -> None:
    with pytest.raises(KeyError, match="raised in the body") as caught:
        async with _open(db) as engine:
            agent = await engine.get_agent(TestAgent, "a")
            await agent.run_workflow("Napper")
            raise KeyError("raised in the body")
    assert type(caught.value) is KeyError  # not an ExceptionGroup, twice nested
    async with _open(db) as engine:  # and the log is left as a clean close leaves it
        assert engine.statistics().head > 0


async def test_a_cancellation_of_the_block_is_not_wrapped_either(db: str) -> None:
    with trio.move_on_after(5) as scope:
        async with _open(db):
            await trio.sleep_forever()
    assert scope.cancelled_caught


async def test_a_reopen_in_one_run_follows_the_mock_clock_with_no_argument(db: str) -> None:
    # no wall_clock=: under MockClock every engine of this trio.run shares one anchor
    async with _open(db) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        wid = await agent.run_workflow("Napper")
        started = (await agent.get_workflow(wid)).created_at  # type: ignore[union-attr]
        await trio.sleep(1800)  # half the nap, then a restart
    async with _open(db) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        before = trio.current_time()
        info = await engine.wait_workflow(wid)
        waited = trio.current_time() - before
        status = await agent.get_workflow_status("Napper", wid)
    assert info.status == "complete"
    assert 1799 <= waited <= 1801  # only what was left of the hour
    assert 3599 <= (status.output - started).total_seconds() <= 3601


async def test_run_workflow_takes_the_class_and_an_idempotent_start(db: str) -> None:
    async with _open(db) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        other = await engine.get_agent(TestAgent, "b")
        wid = await agent.run_workflow(Napper, id="nap-1")  # the class, not its name
        assert (await agent.get_workflow(wid)).workflow_name == "Napper"  # type: ignore[union-attr]
        assert await agent.run_workflow("Napper", id="nap-1", if_exists="return") == "nap-1"
        with pytest.raises(eventwf.DuplicateWorkflowError, match="already being tracked"):
            await agent.run_workflow("Napper", id="nap-1")
        with pytest.raises(eventwf.DuplicateWorkflowError, match="agent TestAgent/a"):
            await other.run_workflow("Napper", id="nap-1", if_exists="return")  # not its own
        with pytest.raises(ValueError, match="if_exists"):
            await agent.run_workflow("Napper", if_exists="maybe")  # type: ignore[arg-type]

        class Unregistered(eventwf.AgentWorkflow[TestAgent]):
            pass

        with pytest.raises(eventwf.UnknownWorkflowError, match="Unregistered"):
            await agent.run_workflow(Unregistered)
        async with trio.open_nursery() as nursery:  # ten concurrent idempotent starts
            for _ in range(10):
                nursery.start_soon(functools.partial(agent.run_workflow, Napper, id="nap-2",
                                                     if_exists="return"))
        assert event_types(db, "wf:nap-2").count("workflow.started") == 1
