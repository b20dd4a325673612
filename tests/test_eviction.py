"""Dropping idle agent objects (specs/agents.md A8): ``Agents.evict_idle``.

Internal, for hosts that bound how many agents they keep in memory (the demo's boards):
an agent nobody uses is dropped and loaded again from the log on its next use; one that
has a client, a live workflow run or a callback to deliver is never dropped.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

import eventwf
from tests.wfkit import TestAgent, event_types, virtual_wall


def _evict(engine: eventwf.Engine, keep: frozenset[str] | set[str] = frozenset()) -> set[str]:
    rt = engine.runtime
    return rt.agents.evict_idle("Board", keep, rt.runs.agent_streams())

gates: dict[str, trio.Event] = {}


class Board(TestAgent):
    """Counts its objects' starts and keeps every callback any object of it received."""

    __test__ = False
    starts: list[str] = []
    delivered: list[tuple[str, Any]] = []

    async def on_start(self) -> None:
        Board.starts.append(self.name)

    async def on_workflow_complete(self, workflow_name: str, workflow_id: str, r: Any) -> None:
        if "hook" in gates:
            await gates["hook"].wait()
        Board.delivered.append((workflow_id, r))


class Blocked(eventwf.AgentWorkflow[Board]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        async def blocked() -> str:
            await gates["step"].wait()
            return "stepped"
        return await step.do("blocked", blocked)


class Napper(eventwf.AgentWorkflow[Board]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        await step.sleep("nap", "1 hour")  # long enough to hibernate: its runner goes away
        await step.merge_agent_state({"napped": True})
        return "rested"


@pytest.fixture(autouse=True)
def _fresh() -> None:
    gates.clear()
    Board.starts = []
    Board.delivered = []


def _open(db: str) -> Any:
    return eventwf.open_engine(db, agents=[Board], workflows=[Blocked, Napper],
                               wall_clock=virtual_wall)


async def _until(condition: Any) -> None:
    with trio.fail_after(60):
        while not condition():
            await trio.sleep(0.01)


def _pending(engine: Any, name: str) -> bool:
    summary = engine.runtime.summaries.agent("Board", name)
    return summary is not None and summary.callbacks_pending


async def test_an_idle_agent_is_dropped_and_loaded_again_from_the_log(db: str) -> None:
    async with _open(db) as engine:
        agent = await engine.get_agent(Board, "a")
        await agent.set_state({"count": 5})
        events = len(event_types(db))
        assert engine.statistics().live_agents == 1
        assert _evict(engine) == set()
        assert engine.statistics().live_agents == 0
        again = await engine.get_agent(Board, "a")
        assert again is not agent and again.state == {"count": 5}
        assert Board.starts == ["a", "a"]  # on_start runs for each object (A8)
        assert len(event_types(db)) == events  # loading again logs nothing (no AgentCreated)
        assert await engine.get_agent(Board, "a") is again


async def test_an_agent_in_use_is_never_dropped(db: str) -> None:
    """A client, a name in ``keep``, a live workflow run, a callback being delivered or
    logged and not yet delivered: each keeps the object."""
    gates["step"], gates["hook"] = trio.Event(), trio.Event()
    async with _open(db) as engine:
        agent = await engine.get_agent(Board, "a")
        await engine.get_agent(Board, "b")
        client = object()
        agent._host.connections.add(client)
        assert _evict(engine, {"b"}) == {"a", "b"}
        agent._host.connections.discard(client)
        wid = await agent.run_workflow("Blocked")
        await trio.sleep(1)  # the run is inside its step
        assert _evict(engine) == {"a"}  # b was idle: dropped
        gates["step"].set()
        await _until(lambda: engine.runtime.summaries.workflow(wid).finished)
        await trio.sleep(1)  # the hook is running, and waits
        assert _pending(engine, "a") and Board.delivered == []
        assert _evict(engine) == {"a"}
        assert await engine.get_agent(Board, "a") is agent
        gates["hook"].set()
        await _until(lambda: not _pending(engine, "a"))
        assert Board.delivered == [(wid, "stepped")]
        assert _evict(engine) == set()
        assert engine.statistics().live_agents == 0


async def test_a_dropped_agent_is_loaded_again_for_its_workflows_and_callbacks(db: str) -> None:
    async with _open(db) as engine:
        agent = await engine.get_agent(Board, "a")
        wid = await agent.run_workflow("Napper")
        await trio.sleep(1)  # asleep and hibernated: nothing holds the agent
        assert _evict(engine) == set()
        info = await engine.wait_workflow(wid)
        assert info.status == "complete"
        await _until(lambda: Board.delivered == [(wid, "rested")])
        again = await engine.get_agent(Board, "a")
        assert again is not agent and again.state == {"count": 0, "napped": True}
        assert Board.starts == ["a", "a"]
        assert event_types(db, "agent:Board/a").count("agent.created") == 1
