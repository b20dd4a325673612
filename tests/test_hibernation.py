"""Idle workflows hibernate: no coroutine while they wait, replayed from the log on wake."""

from __future__ import annotations

from typing import Any

import trio

import eventwf
from tests.wfkit import TestAgent, event_types, virtual_wall

ran: list[str] = []


class Napper(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        await step.do("before", lambda: ran.append("before"))
        await self.report_progress("about to wait")
        if event.payload == "event":
            got = await step.wait_for_event("wake", type="wake", timeout="1 day")
            result = got.payload
        elif event.payload == "timeout":
            try:
                await step.wait_for_event("wake", type="wake", timeout="2 hours")
            except eventwf.WorkflowTimeoutError:
                result = "timed out"
        else:
            await step.sleep("nap", event.payload or "1 hour")
            result = "rested"
        await step.do("after", lambda: ran.append("after"))
        return result


def _open(db: str, **kw: Any) -> Any:
    return eventwf.open_engine(db, agents=[TestAgent], workflows=[Napper],
                               wall_clock=virtual_wall, **kw)


async def test_a_long_sleep_drops_the_coroutine_and_replays_on_wake(db: str) -> None:
    ran.clear()
    async with _open(db) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        wid = await agent.run_workflow("Napper")
        await trio.sleep(60)
        stats = engine.statistics()
        assert (stats.live_workflows, stats.hibernations) == (0, 1)
        assert (await agent.get_workflow(wid)).status == "waiting"  # type: ignore[union-attr]
        info = await engine.wait_workflow(wid)
    assert info.status == "complete"
    assert ran == ["before", "after"]  # logged steps never run again
    progress = [c for c in agent.callbacks if c[0] == "progress"]
    # the code before the wait ran again on wake, but its progress report (history the run
    # had already made) was not sent again (replay.md R13; it was sent twice before)
    assert len(progress) == 1


async def test_an_event_wakes_a_hibernated_waiter_at_once(db: str) -> None:
    async with _open(db) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        wid = await agent.run_workflow("Napper", "event")
        await trio.sleep(600)
        assert engine.statistics().live_workflows == 0
        start = trio.current_time()
        await agent.send_workflow_event("Napper", wid, {"type": "wake", "payload": "hi"})
        info = await engine.wait_workflow(wid)
        assert trio.current_time() - start < 1
        assert (await agent.get_workflow_status("Napper", wid)).output == "hi"
    assert info.status == "complete"


async def test_a_hibernated_wait_still_times_out(db: str) -> None:
    async with _open(db) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        wid = await agent.run_workflow("Napper", "timeout")
        await engine.wait_workflow(wid)
        assert (await agent.get_workflow_status("Napper", wid)).output == "timed out"
    assert "wait.timed_out" in event_types(db, "wf:" + wid)


async def test_short_waits_stay_live_until_the_cap(db: str) -> None:
    async with _open(db, hibernate_after=60, max_live_workflows=2) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        ids = [await agent.run_workflow("Napper", 10) for _ in range(5)]
        await trio.sleep(1)
        stats = engine.statistics()
        assert stats.live_workflows <= 3 and stats.hibernations >= 2
        for wid in ids:
            assert (await engine.wait_workflow(wid)).status == "complete"


async def test_reopening_does_not_replay_sleepers_until_they_wake(db: str) -> None:
    async with _open(db) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        ids = [await agent.run_workflow("Napper", "2 hours") for _ in range(20)]
        await trio.sleep(60)
    async with _open(db) as engine:
        await trio.sleep(1)
        assert engine.statistics().live_workflows == 0
        for wid in ids:
            assert (await engine.wait_workflow(wid)).status == "complete"


async def test_pause_resume_and_terminate_reach_hibernated_workflows(db: str) -> None:
    async with _open(db) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        paused = await agent.run_workflow("Napper", "1 hour")
        doomed = await agent.run_workflow("Napper", "1 hour")
        await trio.sleep(600)
        await agent.pause_workflow(paused)
        await agent.terminate_workflow(doomed)
        await trio.sleep(7200)
        assert (await agent.get_workflow(paused)).status == "paused"  # type: ignore[union-attr]
        await agent.resume_workflow(paused)
        resumed_at = trio.current_time()
        info = await engine.wait_workflow(paused)
        assert round(trio.current_time() - resumed_at) == 3000  # the 50 minutes left
        assert info.status == "complete"
        assert (await engine.wait_workflow(doomed)).status == "terminated"


async def test_hibernation_can_be_switched_off(db: str) -> None:
    async with _open(db, hibernate_after=None) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        wid = await agent.run_workflow("Napper")
        await trio.sleep(60)
        assert engine.statistics().live_workflows == 1
        await engine.wait_workflow(wid)
        assert engine.statistics().hibernations == 0


class Broadcaster(TestAgent):
    sent: list[Any] = []

    async def broadcast(self, message: Any, exclude: Any = ()) -> None:
        Broadcaster.sent.append(message)
        await super().broadcast(message, exclude)


class Announcer(eventwf.AgentWorkflow[Broadcaster]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        await self.broadcast_to_clients({"stage": "before"})
        await step.sleep("nap", "1 hour")
        await self.broadcast_to_clients({"stage": "after"})
        return "done"


async def test_r13_reports_of_history_already_run_are_not_sent_again(db: str) -> None:
    Broadcaster.sent = []
    async with eventwf.open_engine(db, agents=[Broadcaster], workflows=[Announcer],
                                   wall_clock=virtual_wall) as engine:
        agent = await engine.get_agent(Broadcaster, "a")
        wid = await agent.run_workflow("Announcer")
        await trio.sleep(60)
        assert engine.statistics().hibernations == 1
        assert (await engine.wait_workflow(wid)).status == "complete"  # replayed on wake
    assert Broadcaster.sent == [{"stage": "before"}, {"stage": "after"}]  # each once
