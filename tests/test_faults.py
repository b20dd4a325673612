"""Named fault points and recovery from storage errors (specs/guarantees.md G-rules)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import trio

import eventwf
from eventwf import faults
from eventwf.errors import StorageError
from eventwf.model import events as ev
from eventwf.model.codec import encode_event, event_type
from eventwf.store.interface import PendingRow
from eventwf.store.sqlite import SQLiteStore
from tests.wfkit import TestAgent, event_types, virtual_wall


@pytest.fixture(autouse=True)
def _disarm() -> Iterator[None]:
    faults.disarm()
    yield
    faults.disarm()


def _row(stream: str, version: int, event: ev.Event) -> PendingRow:
    return PendingRow(stream, version, 1, event_type(event), encode_event(event))


def test_arming_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="unknown fault point 'nowhere'"):
        faults.arm("nowhere", 1, "kill")
    with pytest.raises(ValueError, match="count 0"):
        faults.arm("append.after_commit", 0, "kill")
    with pytest.raises(ValueError, match="action 'explode'"):
        faults.arm("append.after_commit", 1, "explode")


def test_io_error_before_commit_lands_nothing_and_the_next_commit_works(db: str) -> None:
    store = SQLiteStore(db)
    faults.arm("append.before_commit", 1, "raise")
    with pytest.raises(StorageError, match="injected before COMMIT") as err:
        store.commit([_row("wf:a", 0, ev.WorkflowStarted("W", "A", "a"))])
    assert not err.value.fatal
    assert store.head == 0
    assert store.commit([_row("wf:a", 0, ev.WorkflowStarted("W", "A", "a"))]) == [1]
    store.close()


def test_error_after_a_durable_commit_is_reconciled_as_committed(db: str) -> None:  # L10
    store = SQLiteStore(db)
    faults.arm("append.after_commit", 1, "raise")
    assert store.commit([_row("wf:a", 0, ev.WorkflowStarted("W", "A", "a"))]) == [1]
    assert store.head == 1
    assert store.commit([_row("wf:a", 1, ev.WorkflowRunning())]) == [2]
    store.close()


ran: list[str] = []


class TwoSteps(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        a = await step.do("a", lambda: ran.append("a") or 1)
        b = await step.do("b", lambda: ran.append("b") or 2)
        return a + b


async def test_a_run_whose_append_fails_is_retried_once_storage_works(db: str) -> None:
    ran.clear()
    async with eventwf.open_engine(db, agents=[TestAgent], workflows=[TwoSteps],
                                   wall_clock=virtual_wall) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        wid = await agent.run_workflow("TwoSteps")
        faults.arm("append.before_commit", 2, "raise")  # step a's outcome fails to commit
        info = await engine.wait_workflow(wid)
        await trio.sleep(1)
    assert info.status == "complete"
    assert ran == ["a", "a", "b"]  # a ran again (its outcome never committed), b once
    assert event_types(db, "wf:" + wid).count("step.succeeded") == 2


class Flapping(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        return await step.do("x", lambda: ran.append("x") or 7)


async def test_injected_step_failure_counts_as_an_attempt(db: str) -> None:
    ran.clear()
    faults.arm("step.after_call", 1, "raise")
    async with eventwf.open_engine(db, agents=[TestAgent], workflows=[Flapping],
                                   wall_clock=virtual_wall) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        wid = await agent.run_workflow("Flapping")
        info = await engine.wait_workflow(wid)
    assert info.status == "complete" and ran == ["x", "x"]
    assert event_types(db, "wf:" + wid).count("step.attempt_failed") == 1


async def test_callback_delivery_mark_is_retried_not_redelivered(db: str) -> None:
    async with eventwf.open_engine(db, agents=[TestAgent], workflows=[Flapping],
                                   wall_clock=virtual_wall) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        wid = await agent.run_workflow("Flapping")
        await engine.wait_workflow(wid)
        faults.arm("append.before_commit", 1, "raise")  # the next append: the delivery mark
        await trio.sleep(5)
        assert [c[0] for c in agent.callbacks] == ["complete"]
    assert event_types(db).count("callback.delivered") == 1


async def test_hits_are_counted_while_armed(db: str) -> None:
    faults.arm("open.after_recover", 99, "raise")
    async with eventwf.open_engine(db, agents=[TestAgent], workflows=[Flapping],
                                   wall_clock=virtual_wall) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        await engine.wait_workflow(await agent.run_workflow("Flapping"))
    counts = faults.hits()
    assert counts["open.after_recover"] == 1
    assert counts["step.before_call"] == counts["step.after_call"] == 1
    assert counts["append.before_commit"] == counts["append.after_commit"] >= 4
