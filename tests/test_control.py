"""Instance control through the public Agent API (specs/agents.md K1-K7, C7)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

import eventwf
from eventwf.errors import MailboxFullError
from tests.wfkit import TestAgent, count_events, event_types, virtual_wall

ran: list[str] = []
at: dict[str, float] = {}  # trio time at which each entry of `ran` was last recorded
FAIL = {"on": True}


def mark(what: str) -> str:
    ran.append(what)
    at[what] = trio.current_time()
    return what


class TwoSteps(eventwf.AgentWorkflow[TestAgent]):
    """Step 'a' takes 10 seconds, then step 'b' runs."""

    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        async def slow() -> int:
            mark("a")
            await trio.sleep(10)
            mark("a-done")
            return 1

        await step.do("a", slow)
        await step.do("b", lambda: mark("b"))
        return "two"


class Nap(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        await step.sleep("nap", "1 hour")
        await step.do("after", lambda: mark("after"))
        return event.payload


class Waiter(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        got = await step.wait_for_event("go", type="go", timeout="1 day")
        await step.do("got", lambda: mark("got"))
        return got.payload


class Again(eventwf.AgentWorkflow[TestAgent]):
    """Counts its runs, naps an hour, then takes a 'go' event if one comes within a minute."""

    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        count = await step.do("count", lambda: ran.count(mark("count")))
        await step.sleep("nap", "1 hour")
        try:
            got = (await step.wait_for_event("go", type="go", timeout="1 minute")).payload
        except eventwf.WorkflowTimeoutError:
            got = "timeout"
        return [count, got]


class Flaky(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        def attempt() -> str:
            mark("try")
            if FAIL["on"]:
                raise eventwf.NonRetryableError("boom")
            return "fixed"

        return await step.do("try", attempt)


class Approval(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        return await self.wait_for_approval(step, timeout="1 day")


BINDINGS: dict[str, Any] = {"TWO": TwoSteps, "NAP": Nap, "WAIT": Waiter, "AGAIN": Again,
                            "FLAKY": Flaky, "APPROVAL": Approval}


@asynccontextmanager
async def _agent(db: str) -> AsyncIterator[tuple[Any, TestAgent]]:
    ran.clear()
    at.clear()
    FAIL["on"] = True
    async with eventwf.open_engine(db, agents=[TestAgent], workflows=BINDINGS,
                                   wall_clock=virtual_wall) as engine:
        yield engine, await engine.get_agent(TestAgent, "a")
        await trio.sleep(1)  # let runners settle, so no test depends on close races


async def _status(agent: TestAgent, wid: str) -> str:
    info = await agent.get_workflow(wid)
    assert info is not None
    return info.status


# -- K1 ---------------------------------------------------------------------------------------


async def test_control_and_answers_need_this_agents_tracking_record(db: str) -> None:
    async with _agent(db) as (engine, agent):  # K1, C7
        other = await engine.get_agent(TestAgent, "b")
        await other.run_workflow("WAIT", id="theirs")
        await agent.run_workflow("APPROVAL", id="untracked")
        assert await agent.delete_workflow("untracked")
        await trio.sleep(1)
        before = count_events(db)
        calls = [agent.terminate_workflow, agent.pause_workflow, agent.resume_workflow,
                 agent.restart_workflow, agent.approve_workflow, agent.reject_workflow]
        for wid in ["nope", "theirs", "untracked"]:
            for call in calls:
                with pytest.raises(eventwf.WorkflowNotFoundError, match=wid):
                    await call(wid)
        assert count_events(db) == before
        assert await _status(other, "theirs") == "waiting"


async def test_approve_answers_a_tracked_wait_for_approval(db: str) -> None:
    async with _agent(db) as (engine, agent):  # C7
        wid = await agent.run_workflow("APPROVAL")
        await agent.approve_workflow(wid, reason="ok", metadata={"by": "me"})
        assert (await engine.wait_workflow(wid)).status == "complete"
        assert (await agent.get_workflow_status("APPROVAL", wid)).output == {"by": "me"}


# -- K2: terminate ------------------------------------------------------------------------------


async def test_terminate_is_immediate_and_nothing_more_runs(db: str) -> None:
    async with _agent(db) as (engine, agent):  # K2
        busy = await agent.run_workflow("TWO")
        sleeping = await agent.run_workflow("NAP")
        await trio.sleep(1)
        assert (await _status(agent, busy), await _status(agent, sleeping)) == ("running",
                                                                                "waiting")
        for wid in [busy, sleeping]:
            await agent.terminate_workflow(wid)
            assert await _status(agent, wid) == "terminated"
            assert (await agent.get_workflow(wid)).completed_at is not None  # type: ignore
        await trio.sleep(7200)
        assert ran == ["a"]  # the step in flight was cut short; 'b' and 'after' never ran
        assert (await engine.wait_workflow(busy)).status == "terminated"
        assert (await agent.get_workflow_status("NAP", sleeping)).status == "terminated"


async def test_terminating_a_finished_workflow_raises_saying_so(db: str) -> None:
    async with _agent(db) as (engine, agent):  # K2
        done = await agent.run_workflow("NAP")
        failed = await agent.run_workflow("FLAKY")
        stopped = await agent.run_workflow("NAP")
        await agent.terminate_workflow(stopped)
        await trio.sleep(3601)
        before = count_events(db)
        for wid, word in [(done, "complete"), (failed, "errored"), (stopped, "terminated")]:
            with pytest.raises(eventwf.EventwfError, match=f"already {word}") as err:
                await agent.terminate_workflow(wid)
            assert not isinstance(err.value, eventwf.WorkflowNotFoundError)
            assert await _status(agent, wid) == word
        assert count_events(db) == before


# -- K3: pause ---------------------------------------------------------------------------------


async def test_pausing_a_running_step_waits_for_it_then_pauses(db: str) -> None:
    async with _agent(db) as (engine, agent):  # K3, K4
        wid = await agent.run_workflow("TWO")
        await trio.sleep(1)
        await agent.pause_workflow(wid)
        assert await _status(agent, wid) == "waitingForPause"
        before = count_events(db)
        await agent.pause_workflow(wid)  # a pending pause again: nothing
        assert count_events(db) == before
        await trio.sleep(8)
        assert (await _status(agent, wid), ran) == ("waitingForPause", ["a"])
        await trio.sleep(2)
        assert (await _status(agent, wid), ran) == ("paused", ["a", "a-done"])
        await trio.sleep(3600)
        assert ran == ["a", "a-done"]  # 'b' waits for the resume
        await agent.resume_workflow(wid)
        assert (await engine.wait_workflow(wid)).status == "complete"
        assert ran == ["a", "a-done", "b"]  # 'a' was served from the log


async def test_pausing_a_waiting_workflow_is_immediate_and_pausing_again_does_nothing(
        db: str) -> None:
    async with _agent(db) as (engine, agent):  # K3
        wid = await agent.run_workflow("NAP")
        await trio.sleep(1)
        await agent.pause_workflow(wid)
        assert await _status(agent, wid) == "paused"
        before = count_events(db)
        await agent.pause_workflow(wid)
        assert count_events(db) == before
        await trio.sleep(7200)
        assert ran == [] and await _status(agent, wid) == "paused"


async def test_pausing_a_queued_workflow_stops_it_before_it_sleeps(db: str) -> None:
    """K3: a queued workflow pauses at once. Its runner may already have asked to start, so
    the pause can land as a pending one; either way it is paused before the sleep ends."""
    async with _agent(db) as (engine, agent):
        wid = await agent.run_workflow("NAP")
        await agent.pause_workflow(wid)
        assert await _status(agent, wid) in ("paused", "waitingForPause")
        await trio.sleep(0.001)
        assert await _status(agent, wid) == "paused"
        await trio.sleep(7200)
        assert ran == [] and "sleep.completed" not in event_types(db, "wf:" + wid)


async def test_pausing_or_resuming_a_finished_workflow_raises(db: str) -> None:
    async with _agent(db) as (engine, agent):  # K3, K4
        done = await agent.run_workflow("NAP")
        stopped = await agent.run_workflow("WAIT")
        await agent.terminate_workflow(stopped)
        await trio.sleep(3601)
        for wid, word in [(done, "complete"), (stopped, "terminated")]:
            for call in [agent.pause_workflow, agent.resume_workflow]:
                with pytest.raises(eventwf.EventwfError, match=word) as err:
                    await call(wid)
                assert not isinstance(err.value, eventwf.WorkflowNotFoundError)


# -- K4: resume --------------------------------------------------------------------------------


async def test_resume_cancels_a_pending_pause(db: str) -> None:
    async with _agent(db) as (engine, agent):  # K4
        wid = await agent.run_workflow("TWO")
        await trio.sleep(1)
        await agent.pause_workflow(wid)
        await agent.resume_workflow(wid)
        assert await _status(agent, wid) == "running"
        assert (await engine.wait_workflow(wid)).status == "complete"
        assert ran == ["a", "a-done", "b"]
        assert "workflow.paused" not in event_types(db, "wf:" + wid)


async def test_resuming_an_active_workflow_does_nothing(db: str) -> None:
    async with _agent(db) as (engine, agent):  # K4
        wid = await agent.run_workflow("NAP")
        await trio.sleep(1)
        before = count_events(db)
        await agent.resume_workflow(wid)
        assert count_events(db) == before and await _status(agent, wid) == "waiting"


async def test_a_sleep_paused_for_five_hours_ends_fifty_minutes_after_resume(db: str) -> None:
    async with _agent(db) as (engine, agent):  # K4, R5
        wid = await agent.run_workflow("NAP")
        await trio.sleep(600)
        await agent.pause_workflow(wid)
        await trio.sleep(5 * 3600)
        assert ran == []
        resumed = trio.current_time()
        await agent.resume_workflow(wid)
        assert (await engine.wait_workflow(wid)).status == "complete"
        assert round(at["after"] - resumed) == 50 * 60


async def test_a_resumed_sleep_or_wait_reports_waiting(db: str) -> None:
    async with _agent(db) as (engine, agent):  # K4, W1
        sleeping = await agent.run_workflow("NAP")
        waiting = await agent.run_workflow("WAIT")
        await trio.sleep(600)
        for wid in [sleeping, waiting]:
            await agent.pause_workflow(wid)
            await agent.resume_workflow(wid)
        await trio.sleep(60)
        assert [await _status(agent, sleeping), await _status(agent, waiting)] == [
            "waiting", "waiting"]


async def test_a_sleep_paused_twice_is_extended_by_both_pauses(db: str) -> None:
    async with _agent(db) as (engine, agent):  # K3, K4
        wid = await agent.run_workflow("NAP")
        start = trio.current_time()
        await trio.sleep(600)
        await agent.pause_workflow(wid)
        await trio.sleep(3600)
        await agent.resume_workflow(wid)
        await trio.sleep(600)
        await agent.pause_workflow(wid)
        paused_at_once = await _status(agent, wid)
        await trio.sleep(7200)
        await agent.resume_workflow(wid)
        await engine.wait_workflow(wid)
        assert (paused_at_once, round(at["after"] - start)) == ("paused", 3600 + 3600 + 7200)


async def test_events_sent_while_paused_are_consumed_after_resume(db: str) -> None:
    async with _agent(db) as (engine, agent):  # K4, K7
        wid = await agent.run_workflow("WAIT")
        await trio.sleep(1)
        await agent.pause_workflow(wid)
        await agent.send_workflow_event("WAIT", wid, {"type": "go", "payload": 7})
        await trio.sleep(3600)
        assert ran == [] and await _status(agent, wid) == "paused"
        await agent.resume_workflow(wid)
        assert (await engine.wait_workflow(wid)).status == "complete"
        assert (await agent.get_workflow_status("WAIT", wid)).output == 7


# -- K5: restart -------------------------------------------------------------------------------


async def test_restart_runs_from_the_start_with_a_cleared_mailbox(db: str) -> None:
    async with _agent(db) as (engine, agent):  # K5
        wid = await agent.run_workflow("AGAIN", metadata={"m": 1})
        created = (await agent.get_workflow(wid)).created_at  # type: ignore[union-attr]
        await trio.sleep(10)
        await agent.send_workflow_event("AGAIN", wid, {"type": "go", "payload": "old"})
        await agent.restart_workflow(wid)
        info = await agent.get_workflow(wid)
        assert info is not None and info.status == "queued" and info.metadata == {"m": 1}
        assert (info.created_at - created).total_seconds() == 10  # reset_tracking: moved to now
        assert (await engine.wait_workflow(wid)).status == "complete"
        assert ran == ["count", "count"]  # the previous run's step was not served
        assert (await agent.get_workflow_status("AGAIN", wid)).output == [2, "timeout"]


async def test_restart_without_reset_tracking_keeps_created_at_and_reruns_a_complete_one(
        db: str) -> None:
    async with _agent(db) as (engine, agent):  # K5
        wid = await agent.run_workflow("NAP", {"p": 1})
        before = await engine.wait_workflow(wid)
        await agent.restart_workflow(wid, reset_tracking=False)
        info = await agent.get_workflow(wid)
        assert info is not None and info.completed_at is None
        assert info.created_at == before.created_at
        assert (await engine.wait_workflow(wid)).status == "complete"
        assert ran == ["after", "after"]
        assert (await agent.get_workflow_status("NAP", wid)).output == {"p": 1}  # same params


async def test_restarting_mid_step_abandons_the_old_run(db: str) -> None:
    async with _agent(db) as (engine, agent):  # K5
        wid = await agent.run_workflow("TWO")
        await trio.sleep(5)
        await agent.restart_workflow(wid)
        assert (await engine.wait_workflow(wid)).status == "complete"
        assert ran == ["a", "a", "a-done", "b"]
        assert round(at["a-done"] - at["a"]) == 10  # the second 'a' ran in full


async def test_restarting_an_errored_workflow_runs_it_again(db: str) -> None:
    async with _agent(db) as (engine, agent):  # K5, K6
        wid = await agent.run_workflow("FLAKY")
        assert (await engine.wait_workflow(wid)).status == "errored"
        status = await agent.get_workflow_status("FLAKY", wid)
        assert (status.status, status.error, status.output) == ("errored", "boom", None)
        FAIL["on"] = False
        await agent.restart_workflow(wid)
        info = await engine.wait_workflow(wid)
        assert (info.status, info.error_name, info.error_message) == ("complete", None, None)
        status = await agent.get_workflow_status("FLAKY", wid)
        assert (status.status, status.error, status.output) == ("complete", None, "fixed")
        assert ran == ["try", "try"]


# -- K6: status --------------------------------------------------------------------------------


async def test_get_workflow_status_checks_binding_and_id_but_not_tracking(db: str) -> None:
    async with _agent(db) as (engine, agent):  # K6
        wid = await agent.run_workflow("NAP")
        await trio.sleep(1)
        status = await agent.get_workflow_status("NAP", wid)
        assert (status.status, status.error, status.output) == ("waiting", None, None)
        assert await agent.delete_workflow(wid)
        assert (await agent.get_workflow_status("NAP", wid)).status == "waiting"
        with pytest.raises(eventwf.WorkflowNotFoundError):
            await agent.get_workflow_status("NAP", "nope")
        with pytest.raises(eventwf.WorkflowNotFoundError):
            await agent.get_workflow_status("WAIT", wid)  # registered, but another binding
        with pytest.raises(eventwf.UnknownWorkflowError, match="'MISSING'"):
            await agent.get_workflow_status("MISSING", wid)


# -- K7: events --------------------------------------------------------------------------------


async def test_send_workflow_event_needs_no_tracking_record(db: str) -> None:
    async with _agent(db) as (engine, agent):  # K7
        wid = await agent.run_workflow("WAIT")
        assert await agent.delete_workflow(wid)
        await agent.send_workflow_event("WAIT", wid, {"type": "go", "payload": [1, "x"]})
        assert (await engine.wait_workflow(wid)).status == "complete"
        assert (await agent.get_workflow_status("WAIT", wid)).output == [1, "x"]
        with pytest.raises(eventwf.EventwfError, match="complete") as err:
            await agent.send_workflow_event("WAIT", wid, {"type": "go"})
        assert not isinstance(err.value, eventwf.WorkflowNotFoundError)
        with pytest.raises(eventwf.WorkflowNotFoundError):
            await agent.send_workflow_event("WAIT", "nope", {"type": "go"})
        with pytest.raises(eventwf.UnknownWorkflowError):
            await agent.send_workflow_event("MISSING", wid, {"type": "go"})


@pytest.mark.parametrize("event", [
    "go", None, ["go"], {}, {"payload": 1}, {"type": 1}, {"type": ""}, {"type": "a\nb"},
    {"type": "x" * 257}, {"type": "go", "payload": 1, "extra": 2}, {"type": "go", "payload": {1j}},
], ids=repr)
async def test_malformed_events_raise_value_error(db: str, event: Any) -> None:
    async with _agent(db) as (engine, agent):  # K7
        wid = await agent.run_workflow("WAIT")
        await trio.sleep(1)
        before = count_events(db)
        with pytest.raises(ValueError):
            await agent.send_workflow_event("WAIT", wid, event)
        assert count_events(db) == before


async def test_oversize_payload_raises_payload_too_large(db: str) -> None:
    async with _agent(db) as (engine, agent):  # K7
        wid = await agent.run_workflow("WAIT")
        with pytest.raises(eventwf.PayloadTooLargeError, match="1 MiB"):
            await agent.send_workflow_event("WAIT", wid, {"type": "go",
                                                          "payload": "x" * (1024 * 1024 + 1)})
        assert "event.received" not in event_types(db, "wf:" + wid)


async def test_the_1001st_undelivered_event_is_refused(db: str) -> None:
    async with _agent(db) as (engine, agent):  # K7
        wid = await agent.run_workflow("WAIT")
        for i in range(1000):
            await agent.send_workflow_event("WAIT", wid, {"type": "other", "payload": i})
        with pytest.raises(eventwf.EventwfError, match="1000"):
            await agent.send_workflow_event("WAIT", wid, {"type": "other", "payload": 1000})
        assert event_types(db, "wf:" + wid).count("event.received") == 1000


async def test_concurrent_senders_never_pass_the_mailbox_limit_together(db: str) -> None:
    # K7: the limit is decided where the append is decided (the writer), so 3,000 sends
    # racing from one instant cannot all pass a check made before any of them committed
    async with _agent(db) as (engine, agent):
        wid = await agent.run_workflow("WAIT")
        outcomes: list[str] = []

        async def send(i: int) -> None:
            try:
                await agent.send_workflow_event("WAIT", wid, {"type": "other", "payload": i})
                outcomes.append("ok")
            except MailboxFullError as exc:
                assert "limit 1000" in str(exc)
                outcomes.append("full")

        async with trio.open_nursery() as nursery:
            for i in range(3000):
                nursery.start_soon(send, i)
        assert outcomes.count("ok") == 1000 and outcomes.count("full") == 2000
        assert event_types(db, "wf:" + wid).count("event.received") == 1000
