"""The testing kit, eventwf.testing (specs/testing.md TK1-TK8)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eventwf
from eventwf.errors import ReplayCheckError, UnexpectedStatusError
from eventwf.runtime.steps import AgentWorkflowStep
from eventwf.testing import (
    CrashReplay,
    Outcome,
    Start,
    StepKey,
    TestEngine,
    approval,
    check_crashes,
    check_determinism,
    open_test_engine,
    wait_for_status,
)
from tests.wfkit import TestAgent

RAN: list[str] = []   # step bodies that ran
FLAKY: list[int] = []  # attempts of the flaky body


def _flaky() -> str:
    FLAKY.append(1)
    if len(FLAKY) < 3:
        raise ConnectionError("down")
    return "fetched"


class Order(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        label = await step.do("label", lambda: RAN.append("label") or "L-1")
        fetched = await step.do("fetch", _flaky,
                                retries=eventwf.Retries(limit=5, delay="10 seconds"))
        await step.sleep("pickup", "7 days")
        by = await self.wait_for_approval(step, timeout="30 days")
        await step.merge_agent_state({"last": label})
        return {"label": label, "fetched": fetched, "by": by, "n": event.payload["n"]}


class Broken(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        await step.do("boom", _raise)


def _raise() -> None:
    raise eventwf.NonRetryableError("no stock")


OPTIONS: dict[str, Any] = {"agents": [TestAgent], "workflows": [Order, Broken]}


def _reset() -> None:
    RAN.clear()
    FLAKY.clear()


# -- the engine, a restart, a status -------------------------------------------------------

async def test_a_restart_mid_sleep_waits_only_what_is_left(tmp_path: Path) -> None:  # TK1, TK2
    _reset()
    async with open_test_engine(tmp_path / "t.db", **OPTIONS) as tester:
        agent = await tester.get_agent(TestAgent, "a")
        wid = await agent.run_workflow("Order", {"n": 1})
        await trio.sleep(3 * 86400)  # three days into the seven
        await tester.restart()
        assert tester.opens == 2
        before = trio.current_time()
        agent = await tester.get_agent(TestAgent, "a")  # the new engine's agent
        await tester.wait_for_status(wid, "waiting")
        await trio.sleep(4 * 86400 - 120)  # not yet at the approval
        assert (await agent.get_workflow(wid)).status == "waiting"  # type: ignore[union-attr]
        await agent.approve_workflow(wid, metadata={"by": "bo"})
        info = await wait_for_status(agent, wid, "complete")
        assert 4 * 86400 - 200 < trio.current_time() - before < 4 * 86400 + 200
    assert info.status == "complete"
    assert RAN == ["label"]  # logged before the restart: not run again


async def test_wait_for_status_names_the_status_it_saw_instead(tmp_path: Path) -> None:  # TK3
    async with open_test_engine(tmp_path / "t.db", **OPTIONS) as tester:
        agent = await tester.get_agent(TestAgent, "a")
        wid = await agent.run_workflow("Broken")
        with pytest.raises(UnexpectedStatusError,
                           match=r"'errored', not 'complete'.*NonRetryableError: no stock") as e:
            await wait_for_status(tester.engine, wid, "complete")
        assert (e.value.seen, e.value.expected) == ("errored", "complete")
        assert isinstance(e.value, AssertionError)
        with pytest.raises(ValueError, match="invalid status 'done'"):
            await wait_for_status(agent, wid, "done")
        with pytest.raises(eventwf.WorkflowNotFoundError, match="'nope'"):
            await wait_for_status(agent, "nope", "complete")
        other = await agent.run_workflow("Order", {"n": 2})
        with pytest.raises(eventwf.WorkflowTimeoutError, match="did not reach 'complete'.*"
                           "'waiting'"):
            await wait_for_status(agent, other, "complete", timeout="1 day")


async def test_the_fixture_engine_opens_around_the_test(eventwf_engine: TestEngine) -> None:  # TK4
    assert eventwf_engine.opens == 1  # the plugin opened it (no agents: nothing registered)
    with pytest.raises(ValueError, match="not registered"):
        await eventwf_engine.get_agent(TestAgent, "a")
    await eventwf_engine.restart()
    assert eventwf_engine.opens == 2
    with pytest.raises(ValueError, match="':memory:'"):
        await TestEngine(":memory:", {}).restart()


# -- crashes ---------------------------------------------------------------------------------

def test_a_crash_after_every_event_recovers_the_same_outcome(tmp_path: Path) -> None:  # TK5
    start = Start("Order", {"n": 3}, id="o-1", events=[approval({"by": "cy"})])
    with CrashReplay(TestAgent, [Order], [start], directory=tmp_path, before_run=_reset) as r:
        assert r.reference() == {"o-1": Outcome("complete", {
            "label": "L-1", "fetched": "fetched", "by": {"by": "cy"}, "n": 3}, None)}
        assert r.ledger.counts()[StepKey("o-1", "label", 1)] == 1
        assert r.crash_everywhere() == r.events > 10
        assert not list(tmp_path.glob("crash-*"))  # passed positions leave no file


def test_check_crashes_takes_a_module_and_an_error_outcome() -> None:  # TK5
    outcome = check_crashes(sys.modules[__name__], TestAgent, binding="Broken")
    assert outcome == {"wf-1": Outcome("errored", None, "no stock")}


@pytest.fixture(scope="module")
def replay() -> Iterator[CrashReplay]:
    with CrashReplay(TestAgent, [Order], [Start("Order", {"n": 4}, events=[approval()])],
                     before_run=_reset) as shared:
        yield shared
    assert not Path(shared.directory).exists()  # removed: every check passed


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_hypothesis_chooses_the_crash_positions(replay: CrashReplay,
                                                data: st.DataObject) -> None:  # TK6
    position = data.draw(replay.positions())
    assert replay.crash_at(position) == replay.reference()


def test_a_step_body_run_again_after_its_outcome_was_logged_fails(  # TK5
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    start = Start("Order", {"n": 5}, id="o-5", events=[approval()])
    replay = CrashReplay(TestAgent, [Order], [start], directory=tmp_path, before_run=_reset)
    replay.reference()
    do = AgentWorkflowStep.do

    async def runs_bodies_on_replay(self: Any, name: str, fn: Any, **kw: Any) -> Any:
        if name == "label":
            fn()  # an engine that broke G2: the body runs although its outcome is logged
        return await do(self, name, fn, **kw)

    monkeypatch.setattr(AgentWorkflowStep, "do", runs_bodies_on_replay)
    with pytest.raises(ReplayCheckError, match=r"crash after event \d+ of \d+: the body of "
                       r"step 'label' \(occurrence 1\) of workflow 'o-5' ran again.*kept at"):
        replay.crash_everywhere()
    assert replay.failed and list(tmp_path.glob("crash-*/eventwf.db"))


COUNTER: list[int] = []


class Counts(eventwf.AgentWorkflow[TestAgent]):
    """Not deterministic: its output counts how often run() began (outside any step)."""

    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        COUNTER.append(1)
        await step.sleep("nap", "1 hour")
        return len(COUNTER)


class Renames(eventwf.AgentWorkflow[TestAgent]):
    """Not deterministic: its step's name depends on how often run() began."""

    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        COUNTER.append(1)
        await step.do(f"step-{len(COUNTER)}", lambda: 1)
        await step.sleep("nap", "1 hour")


def test_another_outcome_or_a_divergence_after_a_crash_fails(tmp_path: Path) -> None:  # TK5
    with pytest.raises(ReplayCheckError, match=r"workflow 'wf-1' ended Outcome\(status='complete"
                       r"', output=1.*instead of Outcome\(status='complete', output=2"):
        check_crashes(Counts, TestAgent, before_run=COUNTER.clear, directory=tmp_path / "a")
    with pytest.raises(ReplayCheckError, match=r"NonDeterminismError.*'step-1'.*kept at"):
        check_crashes(Renames, TestAgent, before_run=COUNTER.clear, directory=tmp_path / "b")


# -- determinism -----------------------------------------------------------------------------

class Order2(eventwf.AgentWorkflow[TestAgent]):
    """Order, changed: a new step where the log has the label."""

    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        await step.do("price", lambda: 10)


async def test_check_determinism_replays_finished_and_unfinished_workflows(  # TK7
        tmp_path: Path) -> None:
    _reset()
    db = tmp_path / "t.db"
    async with open_test_engine(db, **OPTIONS) as tester:
        agent = await tester.get_agent(TestAgent, "a")
        done = await agent.run_workflow("Order", {"n": 6}, id="done")
        await agent.approve_workflow(done)
        await wait_for_status(agent, done, "complete")
        await agent.run_workflow("Order", {"n": 7}, id="open")
        await wait_for_status(agent, "open", "waiting")
    verdicts = await check_determinism(db, finished=["done"], **OPTIONS)
    assert [(v.workflow_id, v.verdict) for v in verdicts] == [("open", "ok"), ("done", "ok")]
    changed = {"agents": [TestAgent], "workflows": {"Order": Order2}}
    with pytest.raises(ReplayCheckError, match=r"(?s)2 of 2 workflow\(s\).*'open' \(Order\): "
                       r"diverged.*'done' \(Order\): diverged"):
        await check_determinism(db, finished=["done"], **changed)
    with pytest.raises(ValueError, match="'open' has not finished"):
        await check_determinism(db, finished=["open"], **OPTIONS)


# -- the pytest plugin -----------------------------------------------------------------------

USER_TEST = '''
import pytest, trio, eventwf
from eventwf.testing import wait_for_status

class Shop(eventwf.Agent):
    pass

class Nap(eventwf.AgentWorkflow[Shop]):
    async def run(self, event, step):
        await step.sleep("nap", "30 days")
        return "rested"

@pytest.fixture
def eventwf_options():
    return {"agents": [Shop], "workflows": [Nap]}

async def test_restart(eventwf_engine, eventwf_clock):
    shop = await eventwf_engine.get_agent(Shop, "s")
    wid = await shop.run_workflow("Nap")
    await trio.sleep(86400)
    await eventwf_engine.restart()
    await wait_for_status(eventwf_engine, wid, "complete")
    assert 30 * 86400 - 5 < eventwf_clock.current_time() < 30 * 86400 + 5

@pytest.mark.eventwf
async def test_marked():
    await trio.sleep(10**9)

async def test_not_ours():
    pass
'''


def test_the_plugin_runs_only_the_tests_that_ask_for_it(tmp_path: Path) -> None:  # TK4, TK8
    (tmp_path / "test_user.py").write_text(USER_TEST)
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "test_user.py"], capture_output=True, text=True, cwd=tmp_path,
                         timeout=120)
    # the unmarked async test is left to pytest, which does not run async tests itself
    assert "FAILED test_user.py::test_not_ours" in out.stdout, out.stdout + out.stderr
    assert "async def functions are not natively supported" in out.stdout
    assert "1 failed, 2 passed" in out.stdout
    probe = ("import sys, eventwf_pytest; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('eventwf', 'trio')))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True, cwd=tmp_path).stdout
    assert loaded.strip() == "[]"
