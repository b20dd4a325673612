"""Engine behaviour: recovery, exact status, divergence and corruption policies, orphans."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio

import eventwf
from eventwf.model.codec import decode_event
from tests.wfkit import TestAgent, event_data, event_types, flip_last_byte, virtual_wall


@pytest.fixture
def db(any_db: str) -> str:
    """These engine tests run on both backends (conftest ``any_db``, specs/postgres.md)."""
    return any_db

executed: list[str] = []


class Pipeline(eventwf.AgentWorkflow[TestAgent]):
    """fetch -> sleep 1 h -> wait for 'go' -> store."""

    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        data = await step.do("fetch", lambda: executed.append("fetch") or event.payload["n"])
        await step.sleep("cool-down", "1 hour")
        go = await step.wait_for_event("approval", type="go", timeout="1 day")
        return await step.do("store", lambda: executed.append("store") or data + go.payload)


def _open(db: str, **kw: Any) -> Any:
    kw.setdefault("agents", [TestAgent])
    kw.setdefault("workflows", {"PIPE": Pipeline})
    kw.setdefault("wall_clock", virtual_wall)
    return eventwf.open_engine(db, **kw)


async def _status(agent: TestAgent, wid: str, name: str = "PIPE") -> str:
    return (await agent.get_workflow_status(name, wid)).status


async def test_status_is_exact_through_a_run(db: str) -> None:  # W1
    executed.clear()
    async with _open(db) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        wid = await agent.run_workflow("PIPE", {"n": 1})
        assert await _status(agent, wid) == "queued"
        await trio.sleep(1)
        assert await _status(agent, wid) == "waiting"  # sleeping
        await trio.sleep(3600)
        assert await _status(agent, wid) == "waiting"  # waiting for the event
        await agent.send_workflow_event("PIPE", wid, {"type": "go", "payload": 2})
        info = await engine.wait_workflow(wid)
        assert info.status == "complete" and info.completed_at is not None
        assert (await agent.get_workflow_status("PIPE", wid)).output == 3


async def test_reopen_resumes_mid_sleep_and_never_reruns_logged_steps(db: str) -> None:
    """R1, R2, R5."""
    executed.clear()
    async with _open(db) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        wid = await agent.run_workflow("PIPE", {"n": 1})
        await trio.sleep(1800)  # half the sleep
    start = trio.current_time()
    async with _open(db) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        assert await _status(agent, wid) == "waiting"
        await trio.sleep(1799)
        wait_types = event_types(db, "wf:" + wid)
        assert "sleep.completed" not in wait_types  # not before the remaining half hour
        await trio.sleep(2)
        assert "sleep.completed" in event_types(db, "wf:" + wid)
        assert round(trio.current_time() - start) == 1801
    async with _open(db) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        await agent.send_workflow_event("PIPE", wid, {"type": "go", "payload": 5})
        info = await engine.wait_workflow(wid)
    assert info.status == "complete"
    assert executed == ["fetch", "store"]


class Changed(eventwf.AgentWorkflow[TestAgent]):
    """Same binding as Pipeline, but the second command is different."""

    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        await step.do("fetch", lambda: executed.append("fetch") or 1)
        await step.do("not-a-sleep", lambda: executed.append("diverged") or 2)
        return 0


async def test_divergence_pauses_with_error_and_resumes_after_fix(db: str) -> None:  # R3
    executed.clear()
    async with _open(db) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        wid = await agent.run_workflow("PIPE", {"n": 1})
        await trio.sleep(10)
    async with _open(db, workflows={"PIPE": Changed}) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        with pytest.raises(eventwf.NonDeterminismError) as err:
            await engine.wait_workflow(wid)
        info = await agent.get_workflow(wid)
        assert info is not None and info.status == "paused"
        assert info.error_name == "NonDeterminismError"
        message = str(err.value)
        assert wid in message and "command #1" in message
        assert "step.sleep('cool-down')" in message and "step.do('not-a-sleep')" in message
        assert executed == ["fetch"]  # nothing of the diverging code ran
        ((_, data),) = event_data(db, "workflow.blocked")
        assert decode_event("workflow.blocked", data).seq == 1  # type: ignore[attr-defined]
    async with _open(db) as engine:  # the code is fixed: resume replays it
        agent = await engine.get_agent(TestAgent, "a")
        assert await _status(agent, wid) == "paused"
        await agent.resume_workflow(wid)
        await trio.sleep(3600)
        await agent.send_workflow_event("PIPE", wid, {"type": "go", "payload": 1})
        info = await engine.wait_workflow(wid)
    assert info.status == "complete" and info.error_name is None
    assert executed == ["fetch", "store"]


class EarlyReturn(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        return "done early"


async def test_returning_before_the_logged_history_is_a_divergence(db: str) -> None:  # R4
    async with _open(db) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        wid = await agent.run_workflow("PIPE", {"n": 1})
        await trio.sleep(10)
    async with _open(db, workflows={"PIPE": EarlyReturn}) as engine:
        with pytest.raises(eventwf.NonDeterminismError, match="run\\(\\) returned"):
            await engine.wait_workflow(wid)


async def test_corrupt_event_quarantines_only_its_workflow(db: str) -> None:  # R7
    executed.clear()
    async with _open(db) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        bad = await agent.run_workflow("PIPE", {"n": 1}, id="bad")
        good = await agent.run_workflow("PIPE", {"n": 2}, id="good")
        await trio.sleep(10)
    # flip a byte in 'bad''s first step result
    position, damaged = flip_last_byte(db, "wf:bad", "step.succeeded")
    async with _open(db) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        with pytest.raises(eventwf.CorruptLogError) as err:
            await engine.wait_workflow(bad)
        assert err.value.position == position
        info = await agent.get_workflow(bad)
        assert info is not None and info.status == "unknown"
        assert info.error_name == "CorruptLogError" and str(position) in (info.error_message or "")
        await trio.sleep(3600)
        await agent.send_workflow_event("PIPE", good, {"type": "go", "payload": 1})
        assert (await engine.wait_workflow(good)).status == "complete"
        with pytest.raises(eventwf.EventwfError):
            await agent.send_workflow_event("PIPE", bad, {"type": "go"})
    # the bad bytes were never rewritten
    assert (position, damaged) in event_data(db, "step.succeeded")


async def test_orphans_are_left_alone_and_reported(db: str, caplog: pytest.LogCaptureFixture
                                                   ) -> None:  # W4
    async with _open(db) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        await agent.run_workflow("PIPE", {"n": 1})
        await agent.run_workflow("PIPE", {"n": 2})
        await trio.sleep(10)
    before = event_types(db)
    caplog.set_level(logging.WARNING, logger="eventwf")
    async with _open(db, workflows={"RENAMED": Pipeline}) as engine:
        await trio.sleep(7200)
    assert event_types(db) == before  # untouched
    warnings = [r.getMessage() for r in caplog.records if "unknown binding" in r.getMessage()]
    assert warnings == [
        "Found 2 workflow(s) referencing unknown binding 'PIPE' (2 active); they are left "
        "untouched. If you renamed the binding, call: "
        "agent.migrate_workflow_binding('PIPE', 'RENAMED')"]


async def test_get_agent_returns_one_object_per_name(db: str) -> None:
    async with _open(db) as engine:
        a1 = await engine.get_agent(TestAgent, "x")
        a2 = await engine.get_agent(TestAgent, "x")
        b = await engine.get_agent(TestAgent, "y")
        assert a1 is a2 and a1 is not b
        assert a1.name == "x" and a1.state == {"count": 0}
        with pytest.raises(ValueError, match="not registered"):
            await engine.get_agent(eventwf.Agent, "x")
        with pytest.raises(ValueError, match="agent name"):
            await engine.get_agent(TestAgent, "")


@pytest.mark.sqlite_only  # several engines share a PostgreSQL log (tests/test_pg_multi.py)
async def test_a_second_engine_on_the_same_file_is_refused(db: str) -> None:  # L11
    async with _open(db):
        with pytest.raises(eventwf.LogLockedError, match="pid"):
            async with _open(db):
                pass
    async with _open(db):  # released on close
        pass


async def test_wait_workflow_timeout_and_unknown_id(db: str) -> None:
    async with _open(db) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        wid = await agent.run_workflow("PIPE", {"n": 1})
        with pytest.raises(eventwf.WorkflowTimeoutError, match="waiting"):
            await engine.wait_workflow(wid, timeout="1 minute")
        with pytest.raises(eventwf.WorkflowNotFoundError):
            await engine.wait_workflow("nope")


async def test_memory_log_works_without_a_file() -> None:
    async with eventwf.open_engine(":memory:", agents=[TestAgent],
                                   workflows={"PIPE": Pipeline}) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        wid = await agent.run_workflow("PIPE", {"n": 1})
        await trio.sleep(3601)
        await agent.send_workflow_event("PIPE", wid, {"type": "go", "payload": 1})
        assert (await engine.wait_workflow(wid)).status == "complete"


def test_registration_errors() -> None:
    async def main(**kw: Any) -> None:
        async with eventwf.open_engine(":memory:", **kw):
            pass

    with pytest.raises(ValueError, match="AgentWorkflow subclass"):
        trio.run(lambda: main(workflows={"X": int}))
    with pytest.raises(ValueError, match="Agent subclasses"):
        trio.run(lambda: main(agents=[object]))
    with pytest.raises(ValueError, match="binding name"):
        trio.run(lambda: main(workflows={"": Pipeline}))
