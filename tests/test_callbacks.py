"""Agent callbacks, reports and approvals (specs/agents.md C1-C7)."""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

import pytest
import trio

import eventwf
from tests.wfkit import TestAgent, event_types, virtual_wall


def _open(db: str, *workflows: type[eventwf.AgentWorkflow[Any]], agent: type = TestAgent) -> Any:
    return eventwf.open_engine(db, agents=[agent], workflows=list(workflows),
                               wall_clock=virtual_wall)


class Reports(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        await self.report_progress({"percent": 0.25})
        await step.send_event({"kind": "custom"})
        await step.report_error("soft problem")
        await self.report_progress({"percent": 1.0})
        await step.report_complete({"reported": True})
        return {"returned": True}


async def test_callbacks_arrive_once_in_order(db: str) -> None:  # C1, C2, C3, C5
    async with _open(db, Reports) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        wid = await agent.run_workflow("Reports")
        info = await engine.wait_workflow(wid)
        await trio.sleep(1)
        assert info.status == "complete"
        assert agent.callbacks == [
            ("progress", "Reports", wid, {"percent": 0.25}),
            ("event", "Reports", wid, {"kind": "custom"}),
            ("error", "Reports", wid, "soft problem"),
            ("progress", "Reports", wid, {"percent": 1.0}),
            ("complete", "Reports", wid, {"reported": True}),
        ]


class Returns(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        return await step.do("x", lambda: event.payload)


class Raises(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        if event.payload == "report first":
            await step.report_error("reported")
        raise RuntimeError("kaput")


async def test_complete_gets_the_return_value_and_errors_come_once(db: str) -> None:  # C2, C3
    async with _open(db, Returns, Raises) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        ok = await agent.run_workflow("Returns", [1, 2])
        bad = await agent.run_workflow("Raises")
        reported = await agent.run_workflow("Raises", "report first")
        for wid in (ok, bad, reported):
            await engine.wait_workflow(wid)
        await trio.sleep(1)
    kinds = sorted((c[0], c[2], str(c[3])) for c in agent.callbacks)
    assert kinds == sorted([("complete", ok, "[1, 2]"), ("error", bad, "kaput"),
                            ("error", reported, "reported")])


class TwiceComplete(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        await step.report_complete(1)
        try:
            await step.report_complete(2)
        except eventwf.EventwfError as exc:
            return str(exc)
        return None


async def test_report_complete_once_per_run(db: str) -> None:  # C2
    async with _open(db, TwiceComplete) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        wid = await agent.run_workflow("TwiceComplete")
        await engine.wait_workflow(wid)
        await trio.sleep(1)
        status = await agent.get_workflow_status("TwiceComplete", wid)
    assert "once per run" in status.output
    assert [c[3] for c in agent.callbacks if c[0] == "complete"] == [1]


class Approval(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        timeout = event.payload
        if timeout:
            return await self.wait_for_approval(step, timeout=timeout)
        return await self.wait_for_approval(step)


async def test_approval_returns_metadata(db: str) -> None:  # C7
    async with _open(db, Approval) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        wid = await agent.run_workflow("Approval")
        await trio.sleep(5)
        assert (await agent.get_workflow(wid)).status == "waiting"  # type: ignore[union-attr]
        await agent.approve_workflow(wid, reason="ok", metadata={"by": "alice"})
        await engine.wait_workflow(wid)
        assert (await agent.get_workflow_status("Approval", wid)).output == {"by": "alice"}


async def test_rejection_reports_and_raises(db: str) -> None:  # C7, C3
    async with _open(db, Approval) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        wid = await agent.run_workflow("Approval")
        await agent.reject_workflow(wid, reason="too expensive")
        info = await engine.wait_workflow(wid)
        await trio.sleep(1)
    assert info.status == "errored"
    assert info.error_name == "WorkflowRejectedError"
    assert info.error_message == "Workflow rejected: too expensive"
    assert [c for c in agent.callbacks if c[0] == "error"] == [
        ("error", "Approval", wid, "too expensive")]  # once: the auto report is suppressed


async def test_rejection_without_reason_and_timeout(db: str) -> None:  # C7
    async with _open(db, Approval) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        rejected = await agent.run_workflow("Approval")
        late = await agent.run_workflow("Approval", "1 hour")
        await agent.reject_workflow(rejected)
        info = await engine.wait_workflow(rejected)
        assert info.error_message == "Workflow rejected"
        late_info = await engine.wait_workflow(late)
        await trio.sleep(1)
    assert late_info.error_name == "WorkflowTimeoutError"
    assert ("error", "Approval", rejected, "Workflow rejected") in agent.callbacks


def test_rejected_error_fields() -> None:
    err = eventwf.WorkflowRejectedError("nope", "wf_1")
    assert (err.reason, err.workflow_id, str(err)) == ("nope", "wf_1", "Workflow rejected: nope")
    assert str(eventwf.WorkflowRejectedError()) == "Workflow rejected"


class RaisingAgent(TestAgent):
    async def on_workflow_complete(self, workflow_name: str, workflow_id: str, r: Any) -> None:
        self.callbacks.append(("complete", workflow_name, workflow_id, r))
        raise ValueError("hook bug")


class ForRaising(eventwf.AgentWorkflow[RaisingAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        return event.payload


async def test_raising_hook_is_logged_and_the_engine_goes_on(
        db: str, caplog: pytest.LogCaptureFixture) -> None:  # C6
    caplog.set_level(logging.ERROR, logger="eventwf")
    async with _open(db, ForRaising, agent=RaisingAgent) as engine:
        agent = await engine.get_agent(RaisingAgent, "r")
        first = await agent.run_workflow("ForRaising", 1)
        await engine.wait_workflow(first)
        await trio.sleep(1)
        second = await agent.run_workflow("ForRaising", 2)
        await engine.wait_workflow(second)
        await trio.sleep(1)
    assert [c[3] for c in agent.callbacks] == [1, 2]
    logged = [r.getMessage() for r in caplog.records if "hook" not in r.getMessage()]
    assert any(first in m and "on_workflow_complete" in m for m in logged)


class DelayedAgent(TestAgent):
    """Its hook takes an hour, so a crash can land while callbacks are pending."""

    delivered: list[Any] = []

    async def on_workflow_complete(self, workflow_name: str, workflow_id: str, r: Any) -> None:
        await trio.sleep(3600)
        DelayedAgent.delivered.append(r)


class ForDelayed(eventwf.AgentWorkflow[DelayedAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        return event.payload


async def test_callbacks_due_at_a_crash_are_delivered_after_restart_once(db: str) -> None:  # C4
    DelayedAgent.delivered = []
    async with _open(db, ForDelayed, agent=DelayedAgent) as engine:
        agent = await engine.get_agent(DelayedAgent, "d")
        for n in range(3):
            await agent.run_workflow("ForDelayed", n, id=f"w{n}")
        for n in range(3):
            await engine.wait_workflow(f"w{n}")
        await trio.sleep(3600 + 1)  # the first hook finished; the others are pending
    assert DelayedAgent.delivered == [0]
    async with _open(db, ForDelayed, agent=DelayedAgent):
        await trio.sleep(3 * 3600 + 10)  # nobody asks for the agent: recovery loads it
    assert DelayedAgent.delivered == [0, 1, 2]
    async with _open(db, ForDelayed, agent=DelayedAgent):
        await trio.sleep(3 * 3600 + 10)
    assert DelayedAgent.delivered == [0, 1, 2]  # never twice from the log
    assert event_types(db).count("callback.delivered") == 3


class StateSteps(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        await step.merge_agent_state({"merged": 1})
        await step.update_agent_state({"replaced": True})
        await step.merge_agent_state({"more": 2})
        await step.reset_agent_state()
        await step.merge_agent_state({"final": 3})
        return None


async def test_durable_state_helpers_run_once_in_the_step_transaction(db: str) -> None:  # A5
    async with _open(db, StateSteps) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        wid = await agent.run_workflow("StateSteps")
        await engine.wait_workflow(wid)
        assert agent.state == {"count": 0, "final": 3}
        assert [s for s, _ in agent.states] == [
            {"count": 0, "merged": 1}, {"replaced": True}, {"replaced": True, "more": 2},
            {"count": 0}, {"count": 0, "final": 3}]
        assert {src for _, src in agent.states} == {"server"}
    with sqlite3.connect(db) as conn:  # each state event shares its step's transaction time
        rows = conn.execute("SELECT stream, type, time_us FROM events ORDER BY position").fetchall()
    conn.close()
    steps = [r for r in rows if r[1] == "step.succeeded"]
    states = [r for r in rows if r[1].startswith("agent.state")]
    assert len(steps) == 5 and len(states) == 5  # each in its step's commit
    async with _open(db, StateSteps) as engine:  # folded state is read back, not recomputed
        again = await engine.get_agent(TestAgent, "a")
        assert again.state == {"count": 0, "final": 3}
        assert again.states == []


class MergeIntoList(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        await step.update_agent_state([1, 2])
        try:
            await step.merge_agent_state({"x": 1})
        except eventwf.EventwfError as exc:
            return str(exc)
        return None


async def test_merge_into_a_non_dict_state_is_refused(db: str) -> None:  # A5
    async with _open(db, MergeIntoList) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        wid = await agent.run_workflow("MergeIntoList")
        await engine.wait_workflow(wid)
        out = (await agent.get_workflow_status("MergeIntoList", wid)).output
        assert "needs a dict state" in out and agent.state == [1, 2]


class UsesAgent(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        await self.agent.set_state({"count": self.agent.state["count"] + 1})
        await self.broadcast_to_clients({"hello": self.workflow_id})
        return [self.workflow_id, self.workflow_name, self.agent.name]


async def test_workflow_sees_its_agent_and_names(db: str) -> None:  # A6
    async with _open(db, UsesAgent) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        wid = await agent.run_workflow("UsesAgent")
        await engine.wait_workflow(wid)
        assert (await agent.get_workflow_status("UsesAgent", wid)).output == [wid, "UsesAgent",
                                                                             "a"]
        assert agent.state == {"count": 1}


class QuietAgent(eventwf.Agent):
    """Overrides only ``on_workflow_error``: its completions and events are no-ops."""

    errors: list[str] = []

    async def on_workflow_error(self, workflow_name: str, workflow_id: str, error: str) -> None:
        QuietAgent.errors.append(workflow_id)


class ForQuiet(eventwf.AgentWorkflow[QuietAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        if event.payload == "fail":
            raise RuntimeError("kaput")
        await step.send_event("ignored")
        return event.payload


def _cursor(engine: Any) -> tuple[int, int]:
    summary = engine.runtime.store.load_agent("QuietAgent", "q")
    return summary.last_callback, summary.delivered_through


async def test_no_op_callbacks_share_one_delivery_mark(db: str) -> None:  # C1, C4
    QuietAgent.errors = []
    async with _open(db, ForQuiet, agent=QuietAgent) as engine:
        agent = await engine.get_agent(QuietAgent, "q")
        async with trio.open_nursery() as nursery:  # 5 runs: their callbacks queue together
            for n in range(5):
                nursery.start_soon(agent.run_workflow, "ForQuiet", n)
        await trio.sleep(10)
        last, delivered = _cursor(engine)
        assert last == delivered > 0  # every one delivered, the cursor at the last
        marks = event_types(db).count("callback.delivered")
        assert 1 <= marks < 10  # 10 no-op callbacks (5 events, 5 completions)
        await agent.run_workflow("ForQuiet", "fail", id="bad")  # a real hook: marked alone
        await trio.sleep(10)
        assert QuietAgent.errors == ["bad"]
        last, delivered = _cursor(engine)
        assert last == delivered
    assert event_types(db).count("callback.delivered") == marks + 1
