"""A sleeper whose code changed is checked when the log is opened (replay.md R16)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import trio

import eventwf
from eventwf.model.events import EventReceived, SleepStarted
from eventwf.runtime.fingerprint import code_fingerprint, matches, restamp
from tests.wfkit import TestAgent, event_types, virtual_wall

WEEK = 7 * 24 * 3600
runs: list[str] = []


class Sleeper(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        runs.append("v1")
        await step.do("before", lambda: 1)
        await step.sleep("nap", "1 week")
        return "rested"


class SleeperRenamedStep(eventwf.AgentWorkflow[TestAgent]):
    """The new code: the first step got another name (a divergence at command 0)."""

    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        runs.append("v2")
        await step.do("first", lambda: 1)
        await step.sleep("nap", "1 week")
        return "rested"


class SleeperNewTail(eventwf.AgentWorkflow[TestAgent]):
    """Other code that still issues the logged commands (a step added after the sleep)."""

    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        runs.append("v3")
        await step.do("before", lambda: 1)
        await step.sleep("nap", "1 week")
        await step.do("after", lambda: 2)
        return "rested"


def _open(db: str, cls: type[Any]) -> Any:
    return eventwf.open_engine(db, agents=[TestAgent], workflows={"Sleeper": cls},
                               wall_clock=virtual_wall)


async def _hibernated_sleeper(db: str) -> str:
    async with _open(db, Sleeper) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        wid = await agent.run_workflow("Sleeper")
        await trio.sleep(60)
        assert engine.statistics().hibernations == 1
    return wid


async def test_r15_unchanged_code_leaves_sleepers_asleep_on_open(db: str) -> None:
    runs.clear()
    wid = await _hibernated_sleeper(db)
    assert runs == ["v1"]
    async with _open(db, Sleeper) as engine:
        await trio.sleep(1)
        assert runs == ["v1"]  # not replayed on open
        assert engine.statistics().live_workflows == 0
        agent = await engine.get_agent(TestAgent, "a")
        assert (await agent.get_workflow(wid)).status == "waiting"  # type: ignore[union-attr]


async def test_r15_a_diverged_sleeper_is_paused_on_open_and_reported(db: str) -> None:
    runs.clear()
    wid = await _hibernated_sleeper(db)
    opened_at = trio.current_time()
    async with _open(db, SleeperRenamedStep) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        with pytest.raises(eventwf.NonDeterminismError, match="'before'"):
            await engine.wait_workflow(wid)
        assert trio.current_time() - opened_at < 60  # found on open, not in a week
        await trio.sleep(1)  # the callback is delivered after the commit
        info = await agent.get_workflow(wid)
        assert info is not None
        assert (info.status, info.error_name) == ("paused", "NonDeterminismError")
        errors = [c for c in agent.callbacks if c[0] == "error"]
        assert errors == [("error", "Sleeper", wid, info.error_message)]
    assert runs == ["v1", "v2"]


async def test_r15_each_divergence_is_reported_once(db: str) -> None:
    runs.clear()
    wid = await _hibernated_sleeper(db)
    async with _open(db, SleeperRenamedStep) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        with pytest.raises(eventwf.NonDeterminismError):
            await engine.wait_workflow(wid)
        await trio.sleep(1)
        assert len([c for c in agent.callbacks if c[0] == "error"]) == 1
    async with _open(db, SleeperRenamedStep) as engine:  # still paused: no new divergence
        agent = await engine.get_agent(TestAgent, "a")
        await trio.sleep(1)
        assert [c for c in agent.callbacks if c[0] == "error"] == []
        await agent.resume_workflow(wid)  # the code was not fixed: it diverges again
        with pytest.raises(eventwf.NonDeterminismError):
            await engine.wait_workflow(wid)
        await trio.sleep(1)
        assert len([c for c in agent.callbacks if c[0] == "error"]) == 1
    assert runs == ["v1", "v2", "v2"]


async def test_r15_changed_code_that_agrees_with_the_log_goes_back_to_sleep(db: str) -> None:
    runs.clear()
    wid = await _hibernated_sleeper(db)
    async with _open(db, SleeperNewTail) as engine:
        await trio.sleep(1)
        assert runs == ["v1", "v3"]  # checked once, by a replay
        assert engine.statistics().live_workflows == 0  # hibernated again
        agent = await engine.get_agent(TestAgent, "a")
        assert (await agent.get_workflow(wid)).status == "waiting"  # type: ignore[union-attr]
    async with _open(db, SleeperNewTail) as engine:  # checked against this code already
        await trio.sleep(1)
        assert runs == ["v1", "v3"]
        assert (await engine.wait_workflow(wid)).status == "complete"
    assert runs == ["v1", "v3", "v3"]
    assert event_types(db, "wf:" + wid).count("workflow.waiting") == 1  # the restamp


def test_r15_the_fingerprint_names_the_code_not_the_class() -> None:
    class Same(eventwf.AgentWorkflow[TestAgent]):
        async def run(self, event: eventwf.WorkflowEvent,
                      step: eventwf.AgentWorkflowStep) -> Any:
            # a comment and a blank line do not count

            runs.append("v1")
            await step.do("before", lambda: 1)
            await step.sleep("nap", "1 week")
            return "rested"

    assert code_fingerprint(Same) == code_fingerprint(Sleeper)
    assert code_fingerprint(SleeperRenamedStep) != code_fingerprint(Sleeper)
    assert code_fingerprint(SleeperNewTail) != code_fingerprint(Sleeper)

    class WithHelper(Sleeper):
        def helper(self) -> str:
            return "changed"

    assert code_fingerprint(WithHelper) != code_fingerprint(Sleeper)


def test_r15_an_unstamped_wait_matches_no_code() -> None:
    code = code_fingerprint(Sleeper)
    assert matches(SleepStarted(1, "nap", 0, 0, code=code), code)
    assert not matches(SleepStarted(1, "nap", 0, 0), code)  # a log from before R16
    assert restamp(SleepStarted(1, "nap", 0, 0), code)
    assert not restamp(SleepStarted(1, "nap", 0, 0, code=code), code)
    assert not restamp(EventReceived("wake"), code)  # an event's wake takes it, no restamp


class Waiter(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        got = await step.wait_for_event("wake", type="wake", timeout="1 week")
        return got.payload


async def test_r15_a_woken_waiter_logs_no_extra_wait(db: str) -> None:
    async with eventwf.open_engine(db, agents=[TestAgent], workflows=[Waiter],
                                   wall_clock=virtual_wall) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        wid = await agent.run_workflow("Waiter")
        await trio.sleep(120)
        assert engine.statistics().hibernations == 1
        await agent.send_workflow_event("Waiter", wid, {"type": "wake", "payload": 7})
        assert (await engine.wait_workflow(wid)).status == "complete"
    assert event_types(db, "wf:" + wid) == [
        "workflow.started", "workflow.running", "wait.started", "event.received",
        "event.consumed", "workflow.completed"]


_PROBE = """
import eventwf
from eventwf.runtime.fingerprint import code_fingerprint
class W(eventwf.AgentWorkflow):
    async def run(self, event, step):
        if event.payload in {"a", "b", "c", "d", "e", "f"}:
            return 1
print(code_fingerprint(W))
"""


def test_r15_the_fingerprint_is_the_same_in_every_process() -> None:
    seen = {subprocess.run([sys.executable, "-c", _PROBE], check=True, capture_output=True,
                           text=True, env={"PYTHONHASHSEED": seed}).stdout
            for seed in ("1", "2", "3")}
    assert len(seen) == 1
