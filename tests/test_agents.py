"""Agents: identity, state as a fold, set_state, broadcast (specs/agents.md A1-A4)."""

from __future__ import annotations

from typing import Any

import pytest
import trio

import eventwf
from tests.wfkit import event_types, virtual_wall


@pytest.fixture
def db(any_db: str) -> str:
    """These engine tests run on both backends (conftest ``any_db``, specs/postgres.md)."""
    return any_db


class Counter(eventwf.Agent):
    initial_state = {"n": 0, "tags": []}
    starts = 0

    def __init__(self) -> None:
        self.updates: list[tuple[Any, str]] = []

    async def on_start(self) -> None:
        Counter.starts += 1

    async def on_state_update(self, state: Any, source: str) -> None:
        self.updates.append((state, source))


def _open(db: str) -> Any:
    return eventwf.open_engine(db, agents=[Counter], wall_clock=virtual_wall)


async def test_state_starts_as_a_copy_of_initial_state(db: str) -> None:  # A2
    async with _open(db) as engine:
        a = await engine.get_agent(Counter, "a")
        b = await engine.get_agent(Counter, "b")
        assert a.state == {"n": 0, "tags": []}
        with pytest.raises(TypeError, match="read-only"):  # h19: state is a read-only view
            a.state["tags"].append("oops")  # mutating the returned value
        assert Counter.initial_state == {"n": 0, "tags": []}
        assert b.state == {"n": 0, "tags": []}  # each agent has its own copy


async def test_set_state_is_logged_then_notified_and_survives_reopen(db: str) -> None:  # A2, A3
    Counter.starts = 0
    async with _open(db) as engine:
        agent = await engine.get_agent(Counter, "a")
        await engine.get_agent(Counter, "a")
        assert Counter.starts == 1  # on_start once per engine
        await agent.set_state({"n": 1, "tags": ["x"]})
        await agent.set_state({"n": 2, "tags": ["x"]})
        assert agent.state == {"n": 2, "tags": ["x"]}
        assert agent.updates == [({"n": 1, "tags": ["x"]}, "server"),
                                 ({"n": 2, "tags": ["x"]}, "server")]
    assert event_types(db, "agent:Counter/a") == [
        "agent.created", "agent.state_set", "agent.state_set"]
    async with _open(db) as engine:
        agent = await engine.get_agent(Counter, "a")
        assert agent.state == {"n": 2, "tags": ["x"]}
        assert Counter.starts == 2


async def test_initial_state_changes_reach_agents_that_never_set_state(db: str) -> None:  # A2
    async with _open(db) as engine:
        await engine.get_agent(Counter, "fresh")
    old = Counter.initial_state
    Counter.initial_state = {"n": 100, "tags": []}
    try:
        async with _open(db) as engine:
            agent = await engine.get_agent(Counter, "fresh")
            assert agent.state == {"n": 100, "tags": []}
    finally:
        Counter.initial_state = old


async def test_bad_state_is_refused_before_logging(db: str) -> None:  # A3
    async with _open(db) as engine:
        agent = await engine.get_agent(Counter, "a")
        with pytest.raises(ValueError, match="cannot be logged"):
            await agent.set_state({"when": object()})
        with pytest.raises(eventwf.PayloadTooLargeError, match="1 MiB"):
            await agent.set_state("x" * (1024 * 1024 + 10))
    assert event_types(db, "agent:Counter/a") == ["agent.created"]


class Client:
    def __init__(self) -> None:
        self.states: list[tuple[Any, int]] = []
        self.messages: list[Any] = []

    def push_state(self, state: Any, position: int) -> None:
        self.states.append((state, position))

    def push_message(self, message: Any) -> None:
        self.messages.append(message)


async def test_broadcast_and_state_pushes_reach_clients(db: str) -> None:  # A3, A4
    async with _open(db) as engine:
        agent = await engine.get_agent(Counter, "a")
        one, two = Client(), Client()
        agent._host.connections.update({one, two})
        await agent.broadcast({"hello": 1})
        await agent.broadcast({"only": "two"}, exclude=[one])
        await agent.set_state({"n": 5, "tags": []})
        with pytest.raises(ValueError, match="JSON"):
            await agent.broadcast({"bad": object()})
        await trio.sleep(0)
    assert one.messages == [{"hello": 1}]
    assert two.messages == [{"hello": 1}, {"only": "two"}]
    assert [s for s, _ in one.states] == [{"n": 5, "tags": []}]
    assert one.states[0][1] == two.states[0][1] > 0  # the log position the state reflects


async def test_agents_not_attached_to_an_engine_say_so() -> None:
    loose = Counter()
    with pytest.raises(eventwf.EventwfError, match="not attached"):
        _ = loose.state


class MergeOnce(eventwf.AgentWorkflow[Counter]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        await step.sleep("together", 1)  # both runs wake, and merge, in one instant
        await step.merge_agent_state({event.payload: 9})


async def test_each_state_pushed_is_the_state_at_its_own_position(db: str) -> None:  # P4
    async with eventwf.open_engine(db, agents=[Counter], workflows=[MergeOnce],
                                   wall_clock=virtual_wall) as engine:
        agent = await engine.get_agent(Counter, "m")
        client = Client()
        agent._host.connections.add(client)
        for key in ("a", "b"):
            await agent.run_workflow("MergeOnce", key, id=key)
        for key in ("a", "b"):
            await engine.wait_workflow(key)
    (first, at_first), (second, at_second) = client.states
    assert at_second > at_first
    assert len(first) == 3 and second == {"n": 0, "tags": [], "a": 9, "b": 9}
