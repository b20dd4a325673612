"""JSON Merge Patch of agent state (specs/agents.md A5a, issue 16 item 2): RFC 7396 with
every case of its Appendix A, applied as of the commit so concurrent patches compose."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

import eventwf
from eventwf.model.merge_patch import merge_patch
from tests.wfkit import event_types, virtual_wall

# RFC 7396 Appendix A: (original, patch, result), every row.
APPENDIX_A = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("original", "patch", "result"), APPENDIX_A)
def test_rfc7396_appendix_a(original: Any, patch: Any, result: Any) -> None:
    before = copy.deepcopy((original, patch))
    assert merge_patch(original, patch) == result
    assert (original, patch) == before  # inputs untouched


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from("abcd"), inner, max_size=4),
    max_leaves=12,
)


@given(JSON, JSON)
def test_merge_patch_properties(target: Any, patch: Any) -> None:
    before = copy.deepcopy((target, patch))
    result = merge_patch(target, patch)
    assert (target, patch) == before
    assert merge_patch(result, patch) == result  # applying a patch twice changes nothing
    if isinstance(patch, dict):
        base = target if isinstance(target, dict) else {}
        assert isinstance(result, dict)
        for key in set(base) - set(patch):
            assert result[key] == base[key]  # what the patch does not name stays
        for key, value in patch.items():
            if value is None:
                assert key not in result
            elif not isinstance(value, dict):
                assert result[key] == value
    else:
        assert result == patch


class Board(eventwf.Agent):
    initial_state: Any = {"tasks": {}, "title": "board"}

    def __init__(self) -> None:
        self.updates: list[Any] = []

    async def on_state_update(self, state: Any, source: str) -> None:
        self.updates.append(state)


class PatchTogether(eventwf.AgentWorkflow[Board]):
    """Every run wakes in the same instant, so their patches share one group commit."""

    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        await step.sleep("together", 1)
        await step.patch_agent_state({"tasks": {self.workflow_id: {"status": "done"}}})
        await step.sleep("later", "1 day")
        await step.patch_agent_state({"tasks": {self.workflow_id: {"status": None,
                                                                    "archived": True}}})
        return "patched"


class MergeTogether(eventwf.AgentWorkflow[Board]):
    """The same with the shallow merge, which loses all but one task (why patch exists)."""

    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        await step.sleep("together", 1)
        await step.merge_agent_state({"tasks": {self.workflow_id: {"status": "done"}}})
        return "merged"


class PatchNone(eventwf.AgentWorkflow[Board]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        try:
            await step.patch_agent_state(None)
        except ValueError as exc:
            return str(exc)
        return "accepted"


def _open(db: str) -> Any:
    return eventwf.open_engine(db, agents=[Board], workflows=[PatchTogether, MergeTogether,
                                                              PatchNone],
                               wall_clock=virtual_wall)


async def test_concurrent_patches_of_different_keys_all_survive_a_restart(db: str) -> None:
    ids = [f"p{i}" for i in range(10)]
    async with _open(db) as engine:
        agent = await engine.get_agent(Board, "b")
        for wid in ids:
            await agent.run_workflow(PatchTogether, id=wid)
        await _until_state(agent, lambda s: len(s["tasks"]) == 10)
        assert agent.state == {"title": "board",
                               "tasks": {wid: {"status": "done"} for wid in ids}}
    # closed while every workflow sleeps "later": the reopen replays the first patch
    async with _open(db) as engine:
        agent = await engine.get_agent(Board, "b")
        assert agent.state["tasks"] == {wid: {"status": "done"} for wid in ids}
        for wid in ids:
            await engine.wait_workflow(wid)
            assert (await agent.get_workflow_status("PatchTogether", wid)).output == "patched"
        assert agent.state == {"title": "board",
                               "tasks": {wid: {"archived": True} for wid in ids}}
    assert event_types(db, "agent:Board/b").count("agent.state_patched") == 20  # once each


async def test_the_shallow_merge_loses_concurrent_tasks_the_patch_keeps(db: str) -> None:
    async with _open(db) as engine:
        agent = await engine.get_agent(Board, "m")
        for i in range(3):
            await agent.run_workflow(MergeTogether, id=f"m{i}")
        for i in range(3):
            await engine.wait_workflow(f"m{i}")
        assert len(agent.state["tasks"]) == 1  # each shallow merge replaced "tasks"


async def test_a_none_patch_is_refused_and_logs_nothing(db: str) -> None:
    async with _open(db) as engine:
        agent = await engine.get_agent(Board, "n")
        await agent.run_workflow(PatchNone, id="none")
        await engine.wait_workflow("none")
        message = (await agent.get_workflow_status("PatchNone", "none")).output
        assert "patch_agent_state takes a merge patch, got None" in message
        with pytest.raises(ValueError, match="got None"):
            await agent.patch_state(None)
        with pytest.raises(ValueError, match="not a str"):
            await agent.patch_state({1: "x"})
        assert agent.state == Board.initial_state
    assert "agent.state_patched" not in event_types(db, "agent:Board/n")


async def test_agent_patch_state_outside_a_workflow(db: str) -> None:
    async with _open(db) as engine:
        agent = await engine.get_agent(Board, "a")
        await agent.patch_state({"tasks": {"t1": {"n": 1}}, "title": None})
        assert agent.state == {"tasks": {"t1": {"n": 1}}}
        assert agent.updates == [{"tasks": {"t1": {"n": 1}}}]  # on_state_update called
        await agent.set_state([1, 2])  # not an object: an object patch starts from {}
        await agent.patch_state({"a": "b", "c": None})
        assert agent.state == {"a": "b"}
        await agent.patch_state(["replaced"])  # a non-object patch replaces the state
        assert agent.state == ["replaced"]
        with pytest.raises(eventwf.PayloadTooLargeError):
            await agent.patch_state({"big": "x" * (1024 * 1024)})
        assert agent.state == ["replaced"]
    async with _open(db) as engine:  # the projection holds the patched state
        agent = await engine.get_agent(Board, "a")
        assert agent.state == ["replaced"]
    assert event_types(db, "agent:Board/a").count("agent.state_patched") == 3


async def _until_state(agent: Any, ready: Any) -> None:
    with trio.fail_after(60):  # under MockClock: polls cost no real time
        while not ready(agent.state):
            await trio.sleep(0.01)
