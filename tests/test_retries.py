"""``Retries.max_delay`` and ``Retries.jitter`` (specs/replay.md S2a), under MockClock."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
import trio

import eventwf
from eventwf import Retries
from tests.wfkit import TestAgent, virtual_wall

times: list[float] = []


class Failing(eventwf.AgentWorkflow[TestAgent]):
    """Fails ``fails`` times, then succeeds; records the time of each attempt."""

    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        fails, policy = event.payload["fails"], event.payload["retries"]

        def body() -> str:
            times.append(trio.current_time())
            if len(times) <= fails:
                raise ConnectionError(f"try {len(times)}")
            return "ok"

        return await step.do("flaky", body, retries=Retries(**policy))


def _open(db: str) -> Any:
    return eventwf.open_engine(db, agents=[TestAgent], workflows=[Failing],
                               wall_clock=virtual_wall)


def _gaps() -> list[float]:
    return [round(b - a, 3) for a, b in zip(times, times[1:], strict=False)]


async def test_s2a_max_delay_caps_each_delay(db: str) -> None:
    times.clear()
    async with _open(db) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        wid = await agent.run_workflow("Failing", {"fails": 4, "retries": {
            "limit": 5, "delay": 10, "backoff": "exponential", "max_delay": "25 seconds"}})
        assert (await engine.wait_workflow(wid)).status == "complete"
    assert _gaps() == [10, 20, 25, 25]


async def test_s2a_jitter_is_drawn_once_and_the_logged_time_is_kept(
        db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    draws: list[float] = []

    def draw() -> float:
        draws.append(0.5)
        return 0.5

    monkeypatch.setattr(random, "random", draw)
    times.clear()
    payload = {"fails": 1, "retries": {"limit": 1, "delay": 100, "backoff": "constant",
                                       "jitter": 0.5}}
    async with _open(db) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        wid = await agent.run_workflow("Failing", payload)
        await trio.sleep(10)  # in the back-off: the engine closes here
    async with _open(db) as engine:
        assert (await engine.wait_workflow(wid)).status == "complete"
    assert draws == [0.5]  # the restart waited for the logged time, drawing nothing
    assert _gaps() == [75]  # 100 shortened by 0.5 * 0.5 of it


async def test_s2a_jitter_spreads_delays_below_the_cap(db: str) -> None:
    times.clear()
    async with _open(db) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        wid = await agent.run_workflow("Failing", {"fails": 5, "retries": {
            "limit": 5, "delay": 8, "backoff": "exponential", "max_delay": 30,
            "jitter": 1}})
        assert (await engine.wait_workflow(wid)).status == "complete"
    caps = [8, 16, 30, 30, 30]
    assert all(0 <= gap <= cap for gap, cap in zip(_gaps(), caps, strict=True))


def test_s2a_delay_after_caps_then_takes_the_jitter_off() -> None:
    policy = Retries(delay=10, backoff="exponential", max_delay=25, jitter=0.5)
    assert [policy.delay_after(k) for k in (1, 2, 3, 4)] == [10, 20, 25, 25]
    assert policy.delay_after(3, 1.0) == 12.5
    assert policy.delay_after(1, 0.5) == 7.5
    assert Retries(delay=10, backoff="exponential").delay_after(2000) > 0  # no overflow


@pytest.mark.parametrize(("field", "value", "shown"), [
    ("max_delay", 0, "Retries.max_delay 0"),
    ("max_delay", "soon", "Retries.max_delay 'soon'"),
    ("max_delay", -1, "Retries.max_delay -1"),
    ("jitter", 1.5, "Retries.jitter 1.5"),
    ("jitter", -0.1, "Retries.jitter -0.1"),
    ("jitter", True, "Retries.jitter True"),
    ("jitter", "0.5", "Retries.jitter '0.5'"),
    ("jitter", math.nan, "Retries.jitter nan"),
])
def test_s2a_invalid_values_are_named(field: str, value: Any, shown: str) -> None:
    with pytest.raises(ValueError, match=shown.replace(".", r"\.")):
        Retries(**{field: value})
