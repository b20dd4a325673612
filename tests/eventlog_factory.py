"""Workflows, a log written by the real engine, and engine factories for the
tools/eventlog tests (tests/test_eventlog*.py).

``python -m tools.eventlog PATH check MODULE:FACTORY`` imports a factory from here: a dict,
or a callable (sync or async) returning one, of ``open_engine`` keyword arguments with at
least ``agents`` and ``workflows``.
"""

from __future__ import annotations

from typing import Any

import trio

import eventwf
from eventwf import Retries
from tests import golden
from tests.wfkit import TestAgent, virtual_wall

FAILURES: dict[str, int] = {}  # workflow id -> failed attempts so far


def _flaky(workflow_id: str, fails: int) -> Any:
    def fetch() -> dict[str, Any]:
        FAILURES[workflow_id] = FAILURES.get(workflow_id, 0) + 1
        if FAILURES[workflow_id] <= fails:
            raise ConnectionError(f"upstream timed out (attempt {FAILURES[workflow_id]})")
        return {"rows": 3, "blob": b"\x00\x01"}

    return fetch


def _broken() -> None:
    raise ValueError("bad input")


class Job(eventwf.AgentWorkflow[TestAgent]):
    """fetch (fails twice) -> sleep 1 h -> wait 'never' (times out) -> wait 'go' -> merge."""

    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        if event.payload == "fail":
            await step.do("broken", _broken, retries=Retries(limit=1, delay="1 second"))
        data = await step.do("fetch", _flaky(self.workflow_id, 2),
                             retries=Retries(limit=3, delay="2 seconds"))
        await step.sleep("nap", "1 hour")
        try:
            await step.wait_for_event("never", type="never", timeout="1 minute")
        except eventwf.WorkflowTimeoutError:
            pass
        go = await step.wait_for_event("go", type="go", timeout="1 day")
        await step.merge_agent_state({"count": 1})
        return {"data": data, "go": go.payload}


class JobChanged(eventwf.AgentWorkflow[TestAgent]):
    """A later version of Job whose second command is another step: it diverges."""

    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        await step.do("fetch", _flaky(self.workflow_id, 0))
        await step.do("not-a-nap", lambda: 1)
        return None


def jobs() -> dict[str, Any]:
    """The code that wrote the log (other open_engine arguments are ignored by check)."""
    return {"agents": [TestAgent], "workflows": {"Job": Job}, "wall_clock": virtual_wall}


def jobs_changed() -> dict[str, Any]:
    return {"agents": [TestAgent], "workflows": {"Job": JobChanged}}


def golden_engine() -> dict[str, Any]:
    """Today's code for the golden histories (binding ORDER)."""
    return {"agents": [golden.ShopAgent], "workflows": {"ORDER": golden.Order}}


async def golden_engine_async() -> dict[str, Any]:
    return golden_engine()


OTHER_BINDING: dict[str, Any] = {"agents": [golden.ShopAgent],
                                 "workflows": {"OTHER": golden.Order}}
NO_AGENTS: dict[str, Any] = {"workflows": {"ORDER": golden.Order}}
NOT_A_DICT = [golden.Order]


GO_PAYLOAD = {"ok": True, "raw": b"\xff\x00"}


async def write_log(path: str) -> None:
    """The log the eventwf-log tests read: every kind of step, status change and outcome.

    job-1 retries twice, sleeps, times out a wait, takes 'go', merges state, completes;
    job-fail errors; job-ctl is paused, resumed, restarted and terminated; job-live is
    left asleep, then a reopen with JobChanged blocks it on a divergence as the log is
    opened (replay.md R16), and alice's on_workflow_error is called for it.
    Run it under ``MockClock(autojump_threshold=0)``.
    """
    FAILURES.clear()
    async with eventwf.open_engine(path, agents=[TestAgent], workflows={"Job": Job},
                                   wall_clock=virtual_wall) as engine:
        alice = await engine.get_agent(TestAgent, "alice")
        one = await alice.run_workflow("Job", {"n": 1}, id="job-1", metadata={"team": "a"})
        await trio.sleep(3600 + 60 + 10)  # back-offs, the nap, the wait that times out
        await alice.send_workflow_event("Job", one, {"type": "go", "payload": GO_PAYLOAD})
        await engine.wait_workflow(one)
        await engine.wait_workflow(await alice.run_workflow("Job", "fail", id="job-fail"))
        ctl = await alice.run_workflow("Job", {"n": 3}, id="job-ctl")
        for action in (alice.pause_workflow, alice.resume_workflow, alice.restart_workflow,
                       alice.terminate_workflow):
            await trio.sleep(30)
            await action(ctl)
        await alice.run_workflow("Job", {"n": 4}, id="job-live")
        await trio.sleep(30)
        await alice.set_state({"count": 5})
    async with eventwf.open_engine(path, agents=[TestAgent], workflows={"Job": JobChanged},
                                   wall_clock=virtual_wall):
        await trio.sleep(3600)  # job-live replays on open, diverges, is blocked, reported
