"""Parallel steps (specs/replay.md R14): durable steps from several tasks of ``run`` at once.

Each command is logged once, with the task that issued it; replay matches commands per task
by name and occurrence, so a replay may interleave the tasks differently from the first run;
a crash between them resumes only the unfinished ones.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import trio

import eventwf
from eventwf import Retries
from eventwf.model.events import StepSucceeded
from eventwf.store import copy_log_prefix, open_store
from tests.wfkit import TestAgent, virtual_wall

RAN: list[str] = []  # step bodies, in the order they ran
DELAYS: dict[str, float] = {}  # seconds each fetch takes on the current run



@pytest.fixture
def db(any_db: str) -> str:
    """These engine tests run on both backends (conftest ``any_db``, specs/postgres.md)."""
    return any_db


def _engine(db: str, *workflows: type[eventwf.AgentWorkflow[Any]]) -> Any:
    return eventwf.open_engine(db, agents=[TestAgent], workflows=list(workflows),
                               wall_clock=virtual_wall)


def _fresh(delays: dict[str, float]) -> None:
    """A new test: no body has run; each fetch named in ``delays`` takes that long."""
    RAN.clear()
    DELAYS.clear()
    DELAYS.update(delays)


def _fetch(name: str) -> Any:
    async def body() -> str:
        RAN.append(name)
        await trio.sleep(DELAYS.get(name, 1))
        return f"{name} fetched"

    return body


class FanOut(eventwf.AgentWorkflow[TestAgent]):
    """Ten fetches at once, then a long sleep (which hibernates: its wake replays them)."""

    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        pages: list[Any] = [None] * 10

        async def fetch(i: int) -> None:
            pages[i] = await step.do(f"fetch-{i}", _fetch(f"fetch-{i}"))

        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(fetch, i)
        await step.sleep("cool down", "2 days")
        return pages


def _steps(db: str, wid: str) -> list[StepSucceeded]:
    store = open_store(db, readonly=True)  # a SQLite file or a PostgreSQL URL
    try:
        history = store.read_stream(f"wf:{wid}")
    finally:
        store.close()
    return [r.event for r in history if isinstance(r.event, StepSucceeded)]


async def test_ten_fetches_run_at_once_and_are_logged_once_each(db: str) -> None:
    _fresh({f"fetch-{i}": 10 - i for i in range(10)})  # they finish in reverse order
    async with _engine(db, FanOut) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        start = trio.current_time()
        wid = await agent.run_workflow(FanOut)
        await trio.sleep(11)
        assert sorted(RAN) == sorted(f"fetch-{i}" for i in range(10))  # all ten started
        assert trio.current_time() - start < 20  # together: ten seconds, not 55
        info = await engine.wait_workflow(wid)
        status = await agent.get_workflow_status(FanOut, wid)
    assert info.status == "complete", info
    assert status.output == [f"fetch-{i} fetched" for i in range(10)]
    assert len(RAN) == 10  # the wake after the sleep replayed them: none ran again
    steps = _steps(db, wid)
    assert sorted(s.name for s in steps if s.name) == sorted(f"fetch-{i}" for i in range(10))
    assert [s.name for s in steps] == [f"fetch-{i}" for i in reversed(range(10))]  # log order
    assert sorted(s.task for s in steps) == [(i,) for i in range(10)]  # each its own task
    assert [s.seq for s in steps] == list(range(10))  # numbered in log order


async def test_a_crash_between_them_resumes_only_the_unfinished(tmp_path: Path) -> None:
    full, cut = str(tmp_path / "full.db"), str(tmp_path / "cut.db")
    _fresh({f"fetch-{i}": 1 + i for i in range(10)})
    async with _engine(full, FanOut) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        wid = await agent.run_workflow(FanOut, id="fan")
        assert (await engine.wait_workflow(wid)).status == "complete"
    with sqlite3.connect(full) as conn:  # cut right after the fourth fetch was logged
        positions = [p for (p,) in conn.execute(
            "SELECT position FROM events WHERE type = 'step.succeeded' ORDER BY position")]
    conn.close()
    copy_log_prefix(full, cut, positions[3])
    RAN.clear()
    async with _engine(cut, FanOut) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        info = await engine.wait_workflow("fan")
        output = (await agent.get_workflow_status(FanOut, "fan")).output
    assert info.status == "complete", info
    assert output == [f"fetch-{i} fetched" for i in range(10)]
    assert sorted(RAN) == sorted(f"fetch-{i}" for i in range(4, 10))  # only the unfinished


class Racing(eventwf.AgentWorkflow[TestAgent]):
    """A failing step cancels its siblings; the error keeps its own message."""

    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        def boom() -> None:
            RAN.append("boom")
            raise ValueError("card declined")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(step.do, "slow", _fetch("slow"))
            nursery.start_soon(step.sleep, "nap", "1 hour")
            nursery.start_soon(lambda: step.do("boom", boom, retries=Retries(limit=0)))


async def test_a_failing_branch_cancels_the_others_and_keeps_its_message(db: str) -> None:
    _fresh({"slow": 100})
    async with _engine(db, Racing) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        wid = await agent.run_workflow(Racing)
        info = await engine.wait_workflow(wid)
        status = await agent.get_workflow_status(Racing, wid)
    assert info.status == "errored", info
    assert "card declined" in str(status.error), status.error
    assert sorted(RAN) == ["boom", "slow"]


class TwoWaiters(eventwf.AgentWorkflow[TestAgent]):
    """Two tasks wait for the same event type; a third one works meanwhile."""

    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        got: dict[str, Any] = {}

        async def wait(name: str) -> None:
            got[name] = (await step.wait_for_event(name, type="ping")).payload

        async def work() -> None:
            got["work"] = await step.do("work", _fetch("work"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait, "left")
            nursery.start_soon(wait, "right")
            nursery.start_soon(work)
        return sorted([got["left"], got["right"]]), got["work"]


async def test_concurrent_waits_of_one_type_each_take_one_event(db: str) -> None:
    _fresh({"work": 60})
    async with _engine(db, TwoWaiters) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        wid = await agent.run_workflow(TwoWaiters)
        await trio.sleep(1)
        # a step still runs: the run is running, though two of its tasks wait
        assert (await agent.get_workflow(wid)).status == "running"
        await trio.sleep(60)
        # now every task waits: the run is waiting
        assert (await agent.get_workflow(wid)).status == "waiting"
        for payload in (1, 2):
            await agent.send_workflow_event(TwoWaiters, wid, {"type": "ping", "payload": payload})
        info = await engine.wait_workflow(wid)
        output = (await agent.get_workflow_status(TwoWaiters, wid)).output
    assert info.status == "complete", info
    assert output == [[1, 2], "work fetched"]


class Sleepers(eventwf.AgentWorkflow[TestAgent]):
    """Two long sleeps at once, then one step."""

    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(step.sleep, "short", "1 day")
            nursery.start_soon(step.sleep, "long", "3 days")
        return await step.do("after", lambda: trio.current_time())


async def test_concurrent_sleeps_survive_a_restart_and_end_on_time(db: str) -> None:
    async with _engine(db, Sleepers) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        wid = await agent.run_workflow(Sleepers)
        start = trio.current_time()
        await trio.sleep(2 * 86400)
        assert (await agent.get_workflow(wid)).status == "waiting"
    async with _engine(db, Sleepers) as engine:  # reopened after the short sleep ended
        agent = await engine.get_agent(TestAgent, "a")
        info = await engine.wait_workflow(wid)
        ended = (await agent.get_workflow_status(Sleepers, wid)).output
    assert info.status == "complete", info
    assert 3 * 86400 <= ended - start < 3 * 86400 + 60  # the long sleep kept its deadline


class FanOutChanged(eventwf.AgentWorkflow[TestAgent]):
    """FanOut's binding with one fetch renamed: not the same set of commands."""

    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        async with trio.open_nursery() as nursery:
            for i in range(10):
                name = "renamed" if i == 3 else f"fetch-{i}"
                nursery.start_soon(step.do, name, _fetch(name))
        await step.sleep("cool down", "2 days")


@pytest.mark.sqlite_only  # check_replay copies a SQLite log (a URL is refused)
async def test_check_replay_takes_any_order_and_finds_a_changed_set(db: str) -> None:
    _fresh({f"fetch-{i}": 10 - i for i in range(10)})
    async with _engine(db, FanOut) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        wid = await agent.run_workflow(FanOut)
        await trio.sleep(60)
        assert (await agent.get_workflow(wid)).status == "waiting"
    DELAYS.clear()  # a replay in another order: the machine matches per task, not globally
    [ok] = await eventwf.check_replay(db, agents=[TestAgent], workflows=[FanOut])
    assert ok.verdict == "ok", ok
    [bad] = await eventwf.check_replay(db, agents=[TestAgent],
                                       workflows={"FanOut": FanOutChanged})
    assert bad.verdict == "diverged", bad
    assert "renamed" in str(bad.message), bad.message


class Race(eventwf.AgentWorkflow[TestAgent]):
    """An approval races a deadline; the winner cancels the loser (Promise.race)."""

    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        got: list[Any] = []
        async with trio.open_nursery() as nursery:
            async def approval() -> None:
                got.append((await step.wait_for_event("approval", type="ok")).payload)
                nursery.cancel_scope.cancel()

            async def deadline() -> None:
                await step.sleep("deadline", "1 hour")
                got.append("late")
                nursery.cancel_scope.cancel()

            nursery.start_soon(approval)
            nursery.start_soon(deadline)
        after = await step.do("after", lambda: 5)
        await step.sleep("long", "2 days")
        return got, after


async def test_a_race_cancels_the_loser_and_replays_after_a_restart(db: str) -> None:
    async with _engine(db, Race) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        wid = await agent.run_workflow(Race)
        await trio.sleep(10)
        await agent.send_workflow_event(Race, wid, {"type": "ok", "payload": "yes"})
        await trio.sleep(100)
        assert (await agent.get_workflow(wid)).status == "waiting"
    async with _engine(db, Race) as engine:  # the loser's timer is still in the log
        agent = await engine.get_agent(TestAgent, "a")
        info = await engine.wait_workflow(wid)
        output = (await agent.get_workflow_status(Race, wid)).output
    assert info.status == "complete", info
    assert output == [["yes"], 5]


class Mixed(eventwf.AgentWorkflow[TestAgent]):
    """Three tasks: a long step, a retried step and a sleep, then one more step."""

    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        attempts = {"n": 0}

        def flaky() -> str:
            attempts["n"] += 1
            RAN.append("flaky")
            if attempts["n"] < 2:
                raise ConnectionError("once")
            return "flaky ok"

        out: dict[str, Any] = {}

        async def long() -> None:
            out["long"] = await step.do("long", _fetch("long"))

        async def retried() -> None:
            out["retried"] = await step.do("retried", flaky, retries=Retries(
                limit=3, delay="1 minute", backoff="constant"))

        async def nap() -> None:
            await step.sleep("nap", "1 hour")
            out["nap"] = "slept"

        async with trio.open_nursery() as nursery:
            nursery.start_soon(long)
            nursery.start_soon(retried)
            nursery.start_soon(nap)
        out["after"] = await step.do("after", _fetch("after"))
        return out


EXPECTED = {"long": "long fetched", "retried": "flaky ok", "nap": "slept",
            "after": "after fetched"}


async def test_pause_and_resume_in_the_middle_of_a_fan_out(db: str) -> None:
    _fresh({"long": 30})
    async with _engine(db, Mixed) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        wid = await agent.run_workflow(Mixed)
        await trio.sleep(5)  # long runs, retried backs off, nap sleeps
        await agent.pause_workflow(wid)
        await trio.sleep(3600 * 3)  # paused: nothing moves on
        info = await agent.get_workflow(wid)
        assert info is not None and info.status == "paused", info
        await agent.resume_workflow(wid)
        info = await engine.wait_workflow(wid)
        output = (await agent.get_workflow_status(Mixed, wid)).output
    assert info.status == "complete", info
    assert output == EXPECTED
    assert RAN.count("after") == 1


@pytest.mark.parametrize("action", ["terminate", "restart"])
async def test_terminate_and_restart_in_the_middle_of_a_fan_out(db: str, action: str) -> None:
    _fresh({"long": 30})
    async with _engine(db, Mixed) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        wid = await agent.run_workflow(Mixed)
        await trio.sleep(5)
        if action == "terminate":
            await agent.terminate_workflow(wid)
            await trio.sleep(3600 * 3)
            info = await agent.get_workflow(wid)
            assert info is not None and info.status == "terminated", info
            assert "after" not in RAN
            return
        await agent.restart_workflow(wid)
        info = await engine.wait_workflow(wid)
        output = (await agent.get_workflow_status(Mixed, wid)).output
    assert info.status == "complete", info
    assert output == EXPECTED
