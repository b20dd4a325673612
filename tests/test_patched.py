"""Versioning with ``step.patched`` (specs/replay.md R15, Temporal's rule).

A workflow started under old code and caught mid-flight by a deploy: where its history
already passed the patched point, it replays the old path (``patched`` is False and logs
nothing); where it reaches the point as new progress, it takes the new path and the
marker is logged. Removing the call later skips the markers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

import eventwf
from eventwf.testing import check_crashes
from tests.wfkit import TestAgent, event_types, virtual_wall

RAN: list[str] = []


def _body(name: str) -> Any:
    def body() -> str:
        RAN.append(name)
        return name

    return body


class V1(eventwf.AgentWorkflow[TestAgent]):
    """The first release: a, a day's sleep, b, another day's sleep, c."""

    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        out = [await step.do("a", _body("a"))]
        await step.sleep("first", "1 day")
        out.append(await step.do("b", _body("b")))
        await step.sleep("second", "1 day")
        out.append(await step.do("c", _body("c")))
        return out


class V2(eventwf.AgentWorkflow[TestAgent]):
    """b changed to b2 behind a patch."""

    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        out = [await step.do("a", _body("a"))]
        await step.sleep("first", "1 day")
        if await step.patched("use-b2"):
            out.append(await step.do("b2", _body("b2")))
        else:
            out.append(await step.do("b", _body("b")))
        await step.sleep("second", "1 day")
        out.append(await step.do("c", _body("c")))
        return out


class V3(eventwf.AgentWorkflow[TestAgent]):
    """Every old run ended: the old path and the patch call are gone."""

    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        out = [await step.do("a", _body("a"))]
        await step.sleep("first", "1 day")
        out.append(await step.do("b2", _body("b2")))
        await step.sleep("second", "1 day")
        out.append(await step.do("c", _body("c")))
        return out


class Unpatched(eventwf.AgentWorkflow[TestAgent]):
    """b changed to b2 without a patch: old runs past that point diverge."""

    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        return await V3.run(self, event, step)  # type: ignore[arg-type]



@pytest.fixture
def db(any_db: str) -> str:
    """These engine tests run on both backends (conftest ``any_db``, specs/postgres.md)."""
    return any_db


def _open(db: str, code: type[eventwf.AgentWorkflow[Any]]) -> Any:
    return eventwf.open_engine(db, agents=[TestAgent], workflows={"Flow": code},
                               wall_clock=virtual_wall)


async def _start(db: str, code: type[eventwf.AgentWorkflow[Any]], hours: float) -> str:
    """Start a run under ``code`` and close the engine ``hours`` later."""
    async with _open(db, code) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        wid = await agent.run_workflow("Flow")
        await trio.sleep(hours * 3600)
    return wid


async def _finish(db: str, code: type[eventwf.AgentWorkflow[Any]], wid: str) -> Any:
    async with _open(db, code) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        info = await engine.wait_workflow(wid)
        assert info.status == "complete", info
        return (await agent.get_workflow_status("Flow", wid)).output


async def test_a_new_run_takes_the_new_path_and_logs_the_marker(db: str) -> None:
    RAN.clear()
    wid = await _start(db, V2, 0.1)
    assert await _finish(db, V2, wid) == ["a", "b2", "c"]
    assert RAN == ["a", "b2", "c"]
    assert event_types(db, f"wf:{wid}").count("step.succeeded") == 4  # a, marker, b2, c


async def test_an_old_run_past_the_point_keeps_the_old_path(db: str) -> None:
    RAN.clear()
    wid = await _start(db, V1, 36)  # b ran under V1; now in the second sleep
    assert RAN == ["a", "b"]
    assert await _finish(db, V2, wid) == ["a", "b", "c"]
    assert RAN == ["a", "b", "c"]  # nothing ran twice, b2 never ran
    assert event_types(db, f"wf:{wid}").count("step.succeeded") == 3  # no marker logged


async def test_an_old_run_before_the_point_takes_the_new_path(db: str) -> None:
    RAN.clear()
    wid = await _start(db, V1, 12)  # in the first sleep: b not reached yet
    assert await _finish(db, V2, wid) == ["a", "b2", "c"]
    assert RAN == ["a", "b2", "c"]


async def test_removing_the_call_later_skips_the_markers(db: str) -> None:
    RAN.clear()
    wid = await _start(db, V2, 36)  # the marker and b2 are logged
    assert await _finish(db, V3, wid) == ["a", "b2", "c"]
    assert RAN == ["a", "b2", "c"]


async def test_without_a_patch_an_old_run_diverges(db: str) -> None:
    wid = await _start(db, V1, 36)
    async with _open(db, Unpatched) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        await trio.sleep(2 * 86400)
        info = await agent.get_workflow(wid)
    assert info is not None and info.status == "paused", info
    assert info.error_name == "NonDeterminismError"
    assert "step.patched()" in str(info.error_message)


async def test_check_replay_understands_patches(tmp_path: Path) -> None:
    old = str(tmp_path / "old.db")
    await _start(old, V1, 36)
    kwargs: dict[str, Any] = {"agents": [TestAgent]}
    [ok] = await eventwf.check_replay(old, workflows={"Flow": V2}, **kwargs)
    assert ok.verdict == "ok", ok
    [bad] = await eventwf.check_replay(old, workflows={"Flow": Unpatched}, **kwargs)
    assert bad.verdict == "diverged", bad


class BadPatch(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        try:
            await step.patched("")
        except ValueError as exc:
            return str(exc)
        return "accepted"


async def test_a_bad_patch_id_is_refused_before_anything_is_logged(db: str) -> None:
    async with _open(db, BadPatch) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        wid = await agent.run_workflow("Flow")
        await engine.wait_workflow(wid)
        output = (await agent.get_workflow_status("Flow", wid)).output
    assert "patch id" in output, output
    assert "step.succeeded" not in event_types(db, f"wf:{wid}")


@pytest.mark.parametrize("code", [V2, V3])
def test_a_crash_at_every_event_of_a_patched_run_gives_the_same_outcome(
        code: type[eventwf.AgentWorkflow[Any]], tmp_path: Path) -> None:
    outcome = check_crashes(code, TestAgent, directory=tmp_path)
    assert [o.output for o in outcome.values()] == [["a", "b2", "c"]]
