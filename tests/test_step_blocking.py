"""A sync step callable that holds the event loop past its timeout is warned about (S12)."""

from __future__ import annotations

import logging
import types
from typing import Any

import pytest
import trio

import eventwf
from eventwf.runtime import attempts
from tests.wfkit import TestAgent, virtual_wall


class _RealClock:
    """Stands in for ``time`` in eventwf.runtime.attempts: the real clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now


clock = _RealClock()


class Blocking(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        seconds, fail = event.payload

        def body() -> str:
            clock.now += seconds  # as if it held the loop this long
            if fail:
                raise eventwf.NonRetryableError("gave up")
            return "done"

        async def patient() -> str:
            await trio.sleep(3600)  # trio's clock: not a blocked loop
            return "late"

        if seconds is None:
            return await step.do("patient", patient, timeout="1 second")
        return await step.do("crunch", body, timeout="1 second")


@pytest.fixture(autouse=True)
def _real_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(attempts, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))


async def _run(db: str, params: Any) -> eventwf.WorkflowInfo:
    async with eventwf.open_engine(db, agents=[TestAgent], workflows=[Blocking],
                                   wall_clock=virtual_wall) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        wid = await agent.run_workflow("Blocking", params)
        return await engine.wait_workflow(wid)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "eventwf" and r.levelno == logging.WARNING and "blocked" in
            r.getMessage()]


async def test_s12_a_sync_step_past_its_timeout_is_warned_about(
        db: str, caplog: pytest.LogCaptureFixture) -> None:
    info = await _run(db, [2.5, False])
    assert info.status == "complete"  # the result is kept
    [message] = _warnings(caplog)
    assert "step 'crunch'" in message and "2.5 seconds" in message
    assert "timeout of 1 seconds" in message and "trio.to_thread.run_sync" in message


async def test_s12_a_sync_step_that_blocks_then_raises_is_warned_about(
        db: str, caplog: pytest.LogCaptureFixture) -> None:
    assert (await _run(db, [3, True])).status == "errored"
    assert len(_warnings(caplog)) == 1


async def test_s12_no_warning_within_the_timeout_or_for_async_waits(
        db: str, caplog: pytest.LogCaptureFixture) -> None:
    assert (await _run(db, [0.5, False])).status == "complete"
    info = await _run(db.replace(".db", "-2.db"), [None, False])
    assert info.error_name == "WorkflowTimeoutError"  # it timed out, it did not block
    assert _warnings(caplog) == []
