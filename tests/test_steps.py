"""Step semantics (specs/replay.md S1-S12), run through the real engine under MockClock."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio

import eventwf
from eventwf import Retries
from eventwf.model.events import StepFailed
from eventwf.store import open_store
from tests.wfkit import TestAgent, event_types, virtual_wall


@pytest.fixture
def db(any_db: str) -> str:
    """These engine tests run on both backends (conftest ``any_db``, specs/postgres.md)."""
    return any_db

calls: list[str] = []


def _engine(db: str, *workflows: type[eventwf.AgentWorkflow[Any]]) -> Any:
    return eventwf.open_engine(db, agents=[TestAgent], workflows=list(workflows),
                               wall_clock=virtual_wall)


async def _run(db: str, workflow: type[eventwf.AgentWorkflow[Any]], params: Any = None
               ) -> eventwf.WorkflowInfo:
    async with _engine(db, workflow) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        wid = await agent.run_workflow(workflow.__name__, params)
        return await engine.wait_workflow(wid)


class Flaky(eventwf.AgentWorkflow[TestAgent]):
    """Fails twice, then succeeds; records attempt times."""

    times: list[float] = []

    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        attempts = {"n": 0}

        def body() -> str:
            attempts["n"] += 1
            Flaky.times.append(trio.current_time())
            if attempts["n"] < 3:
                raise ConnectionError(f"try {attempts['n']}")
            return "ok"

        retries = Retries(**event.payload) if event.payload else None
        return await step.do("flaky", body, retries=retries)


async def test_retries_with_exponential_backoff_then_success(db: str) -> None:  # S2
    Flaky.times = []
    info = await _run(db, Flaky, {"limit": 5, "delay": "10 seconds", "backoff": "exponential"})
    assert info.status == "complete"
    gaps = [round(b - a) for a, b in zip(Flaky.times, Flaky.times[1:], strict=False)]
    assert gaps == [10, 20]
    assert event_types(db).count("step.attempt_failed") == 2
    assert event_types(db).count("step.retrying") == 2


@pytest.mark.parametrize(("backoff", "gaps"), [("constant", [3, 3]), ("linear", [3, 6]),
                                               ("exponential", [3, 6])])
async def test_backoff_kinds(db: str, backoff: str, gaps: list[int]) -> None:  # S2
    Flaky.times = []
    await _run(db, Flaky, {"limit": 2, "delay": 3, "backoff": backoff})
    assert [round(b - a) for a, b in zip(Flaky.times, Flaky.times[1:], strict=False)] == gaps


async def test_limit_counts_retries_not_attempts(db: str) -> None:  # S2
    Flaky.times = []
    info = await _run(db, Flaky, {"limit": 1, "delay": 1, "backoff": "constant"})
    assert len(Flaky.times) == 2  # limit 1 = 2 attempts, both fail
    assert info.status == "errored"
    assert info.error_name == "ConnectionError"
    assert info.error_message == "try 2"


class AlwaysFails(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        def boom() -> None:
            calls.append("boom")
            raise KeyError("missing")

        try:
            await step.do("boom", boom, retries=Retries(limit=0))
        except KeyError as exc:
            return {"caught": type(exc).__name__, "args": list(exc.args)}
        return None


async def test_final_failure_is_raised_into_run_and_again_on_replay(db: str) -> None:  # S5, R2
    calls.clear()
    info = await _run(db, AlwaysFails)
    assert info.status == "complete"
    async with _engine(db, AlwaysFails) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        status = await agent.get_workflow_status("AlwaysFails", info.workflow_id)
    assert status.output == {"caught": "KeyError", "args": ["missing"]}
    assert calls == ["boom"]
    assert event_types(db).count("step.failed") == 1


class NonRetryable(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        def stop() -> None:
            calls.append("stop")
            raise eventwf.NonRetryableError("no point")

        await step.do("stop", stop)


async def test_non_retryable_error_stops_at_first_attempt(db: str) -> None:  # S4
    calls.clear()
    info = await _run(db, NonRetryable)
    assert calls == ["stop"]
    assert info.status == "errored"
    assert (info.error_name, info.error_message) == ("NonRetryableError", "no point")


class SlowStep(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        async def slow() -> None:
            calls.append("slow")
            await trio.sleep(60)

        try:
            await step.do("slow", slow, timeout="5 seconds", retries=Retries(limit=1, delay=1))
        except eventwf.WorkflowTimeoutError as exc:
            return str(exc)
        return None


async def test_timeout_bounds_each_attempt_and_counts_as_failure(db: str) -> None:  # S3
    calls.clear()
    start = trio.current_time()
    info = await _run(db, SlowStep)
    assert info.status == "complete"
    assert calls == ["slow", "slow"]
    assert round(trio.current_time() - start) == 11  # 5 s, 1 s back-off, 5 s


class Duplicates(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        counter = iter(range(100))
        a = await step.do("same", lambda: next(counter))
        b = await step.do("same", lambda: next(counter))
        return [a, b]


async def test_duplicate_names_are_separate_steps(db: str) -> None:  # S6
    info = await _run(db, Duplicates)
    async with _engine(db, Duplicates) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        status = await agent.get_workflow_status("Duplicates", info.workflow_id)
    assert status.output == [0, 1]


class Sleeper(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        await step.sleep("week", "7 days")
        await step.sleep("short", timedelta(seconds=5))
        await step.sleep_until("past", datetime(2000, 1, 1, tzinfo=UTC))
        return (await step.now()).isoformat()


async def test_seven_day_sleep_takes_no_real_time(db: str) -> None:  # S7, W5
    start = trio.current_time()
    info = await _run(db, Sleeper)
    assert info.status == "complete"
    assert round(trio.current_time() - start) == 7 * 86400 + 5
    assert event_types(db).count("sleep.completed") == 3


class Waiter(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        first = await step.wait_for_event("first", type="go")
        second = await step.wait_for_event("second", type="go")
        try:
            await step.wait_for_event("never", type="nothing", timeout="1 hour")
        except eventwf.WorkflowTimeoutError:
            timed_out = True
        return [first.payload, second.payload, first.type, timed_out]


async def test_events_sent_before_the_wait_are_buffered_fifo(db: str) -> None:  # S8
    async with _engine(db, Waiter) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        wid = await agent.run_workflow("Waiter")
        await agent.send_workflow_event("Waiter", wid, {"type": "go", "payload": 1})
        await agent.send_workflow_event("Waiter", wid, {"type": "go", "payload": 2})
        await agent.send_workflow_event("Waiter", wid, {"type": "nothing-else", "payload": 3})
        info = await engine.wait_workflow(wid)
        status = await agent.get_workflow_status("Waiter", wid)
    assert info.status == "complete"
    assert status.output == [1, 2, "go", True]


class TimesOut(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        try:
            await step.wait_for_event("w", type="late", timeout=10)
        except eventwf.WorkflowTimeoutError:
            pass
        got = await step.wait_for_event("w2", type="late")
        return got.payload


async def test_timed_out_wait_does_not_take_a_later_event(db: str) -> None:  # S8
    async with _engine(db, TimesOut) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        wid = await agent.run_workflow("TimesOut")
        await trio.sleep(20)
        await agent.send_workflow_event("TimesOut", wid, {"type": "late", "payload": "x"})
        await engine.wait_workflow(wid)
        assert (await agent.get_workflow_status("TimesOut", wid)).output == "x"


class Deterministic(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        now = await step.now()
        r = await step.random()
        u = await step.uuid4()
        await step.wait_for_event("hold", type="go")
        return [now.isoformat(), r, str(u), isinstance(u, uuid.UUID)]


async def test_now_random_uuid_are_logged_and_replayed(db: str) -> None:  # S9
    async with _engine(db, Deterministic) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        wid = await agent.run_workflow("Deterministic")
        await trio.sleep(1)
    async with _engine(db, Deterministic) as engine:  # replay serves the logged values
        agent = await engine.get_agent(TestAgent, "a")
        await trio.sleep(3600)
        await agent.send_workflow_event("Deterministic", wid, {"type": "go"})
        await engine.wait_workflow(wid)
        out = (await agent.get_workflow_status("Deterministic", wid)).output
    types = event_types(db, "wf:" + wid)
    assert types.count("step.succeeded") == 3
    assert out[3] is True
    assert 0 <= out[1] < 1
    logged = datetime.fromisoformat(out[0])
    assert logged.tzinfo is not None


class Concurrent(eventwf.AgentWorkflow[TestAgent]):
    """Issue 17 replaced "one at a time" (S11): tasks of run may run steps concurrently
    (tests/test_parallel.py); what stays refused is a step callable calling a step."""

    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        errors: list[str] = []

        async def nested() -> int:
            try:
                await step.do("b", lambda: 2)
            except eventwf.EventwfError as exc:
                errors.append(str(exc))
            return 1

        async def spawns_inside() -> int:
            async def inner() -> None:
                try:
                    await step.sleep("c", 1)
                except eventwf.EventwfError as exc:
                    errors.append(str(exc))

            async with trio.open_nursery() as nursery:  # a nursery inside a step callable
                nursery.start_soon(inner)
            return 2

        await step.do("a", nested)
        await step.do("d", spawns_inside)
        return errors


async def test_a_step_callable_cannot_call_durable_steps(db: str) -> None:  # S11
    info = await _run(db, Concurrent)
    async with _engine(db, Concurrent) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        out = (await agent.get_workflow_status("Concurrent", info.workflow_id)).output
    assert len(out) == 2, out
    assert "while step.do('a') is still running in the same task" in out[0]
    assert "a step callable cannot call durable steps" in out[0]
    assert "from a task that is not part of its run" in out[1]


class ReturnsTuple(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        value = await step.do("t", lambda: (1, 2))
        return type(value).__name__


async def test_first_run_sees_the_value_replays_will_see(db: str) -> None:  # S1
    info = await _run(db, ReturnsTuple)
    async with _engine(db, ReturnsTuple) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        assert (await agent.get_workflow_status("ReturnsTuple", info.workflow_id)).output == "list"


class AsyncAndAwaitable(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        async def fetch() -> int:
            await trio.sleep(0)
            return 5

        a = await step.do("async", fetch)
        b = await step.do("lambda-coroutine", lambda: fetch())
        return a + b


async def test_async_callables_and_returned_awaitables(db: str) -> None:  # S1
    info = await _run(db, AsyncAndAwaitable)
    assert info.status == "complete"


class Oversize(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        def big() -> bytes:
            calls.append("big")
            return b"x" * (1024 * 1024 + 1)

        try:
            await step.do("big", big)
        except eventwf.PayloadTooLargeError as exc:
            return str(exc)
        return None


async def test_oversize_step_result_is_refused_without_retry(db: str) -> None:  # S4
    calls.clear()
    info = await _run(db, Oversize)
    async with _engine(db, Oversize) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        out = (await agent.get_workflow_status("Oversize", info.workflow_id)).output
    assert calls == ["big"]
    assert "1 MiB" in out


class TooDeep(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        def deep() -> Any:
            calls.append("deep")
            value: Any = 1
            for _ in range(200):
                value = {"v": value}
            return value

        try:
            await step.do("deep", deep)
        except ValueError as exc:
            return str(exc)
        return None


async def test_a_step_result_nested_too_deep_is_refused_without_retry(db: str) -> None:  # S4
    # a value logged fine must decode on every replay, from any stack depth (events.md E6)
    calls.clear()
    info = await _run(db, TooDeep)
    async with _engine(db, TooDeep) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        out = (await agent.get_workflow_status("TooDeep", info.workflow_id)).output
    assert calls == ["deep"]
    assert "nested deeper than 128 levels" in out


class BadInputs(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        messages = []
        attempts: list[Any] = [
            lambda: step.do("", lambda: 1),
            lambda: step.do("x" * 257, lambda: 1),
            lambda: step.do("bad\nname", lambda: 1),
            lambda: step.do("ok", 42),
            lambda: step.do("ok", lambda: 1, timeout=0),
            lambda: step.do("ok", lambda: 1, timeout="3 fortnights"),
            lambda: step.sleep("s", -1),
            lambda: step.sleep("s", "1 year"),
            lambda: step.sleep("s", True),
            lambda: step.sleep_until("s", datetime(2030, 1, 1)),
            lambda: step.wait_for_event("w", type=""),
            lambda: step.merge_agent_state([1]),
        ]
        for make in attempts:
            try:
                await make()
            except ValueError as exc:
                messages.append(str(exc))
        return messages


async def test_bad_inputs_raise_value_errors_naming_the_value(db: str) -> None:  # S10
    info = await _run(db, BadInputs)
    async with _engine(db, BadInputs) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        out = (await agent.get_workflow_status("BadInputs", info.workflow_id)).output
    assert len(out) == 12
    assert "'3 fortnights'" in out[5] and "'1 year'" in out[7] and "timezone-aware" in out[9]
    assert event_types(db, "wf:" + info.workflow_id) == [
        "workflow.started", "workflow.running", "workflow.completed"]


def test_retries_validated_on_construction() -> None:  # S10
    with pytest.raises(ValueError, match="backoff 'fast'"):
        Retries(backoff="fast")
    with pytest.raises(ValueError, match="limit -1"):
        Retries(limit=-1)
    with pytest.raises(ValueError, match="'soon'"):
        Retries(delay="soon")
    assert Retries().delay_after(3) == 40


class Keyed(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        seen: list[str] = []

        def flaky() -> str:
            context = eventwf.step_context()
            seen.append(context.idempotency_key)
            if context.attempt == 1:
                raise ConnectionError("again")
            return context.idempotency_key

        first = await step.do("charge", flaky, retries=Retries(limit=1, delay=1))
        second = await step.do("charge", lambda: eventwf.step_context().idempotency_key)
        return [first, second, seen]


async def test_steps_expose_a_stable_idempotency_key(db: str) -> None:
    info = await _run(db, Keyed)
    async with _engine(db, Keyed) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        first, second, seen = (await agent.get_workflow_status("Keyed", info.workflow_id)).output
    assert seen == [first, first]  # the same key on every attempt
    assert first == f"{info.workflow_id}/1/0/charge" and second == f"{info.workflow_id}/1/1/charge"
    with pytest.raises(eventwf.EventwfError, match="only available inside"):
        eventwf.step_context()



class Unprintable(eventwf.AgentWorkflow[TestAgent]):
    """A step fails with text no store holds as is: a NUL, a lone surrogate (as
    ``os.fsdecode`` makes from a file name that is not UTF-8); then the run waits, so a
    reopened engine replays the failure from the log."""

    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        def fail() -> None:
            raise LookupError({"nul": "bad\x00byte", "surrogate": "bad\udc80name"}[event.payload])

        try:
            await step.do("fail", fail, retries=Retries(limit=0))
        except LookupError as exc:
            seen = [type(exc).__name__, str(exc)]
        await step.wait_for_event("hold", type="go")
        return seen


@pytest.mark.parametrize(("kind", "text"), [("nul", ["bad\x00byte", "bad\\x00byte"]),
                                            ("surrogate", ["bad\\udc80name"] * 2)])
async def test_a_failure_whose_text_no_store_holds_is_logged_escaped(
        db: str, kind: str, text: list[str]) -> None:
    """Before, on PostgreSQL a NUL made every commit of the failure fail (the workflow
    retried it forever), and on both backends a lone surrogate made the workflow corrupt.
    Now each is logged as its escape, alike on both; a replay rebuilds the same class."""
    first, logged = text  # what the step raised and caught; what the log holds
    async with _engine(db, Unprintable) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        wid = await agent.run_workflow("Unprintable", kind)
        await trio.sleep(1)
    async with _engine(db, Unprintable) as engine:  # the run replays the logged failure
        agent = await engine.get_agent(TestAgent, "a")
        await agent.send_workflow_event("Unprintable", wid, {"type": "go"})
        info = await engine.wait_workflow(wid)
        status = await agent.get_workflow_status("Unprintable", wid)
    assert info.status == "complete", info
    # the class survives the replay; a NUL comes back from the logged args as raised
    assert status.output == ["LookupError", first if kind == "nul" else logged]
    assert logged in event_data_text(db, wid)


def event_data_text(db: str, wid: str) -> str:
    """The logged failure's text (decoded, whatever the backend)."""
    store = open_store(db, readonly=True)
    try:
        return next(str(r.event.error.message) for r in store.read_stream("wf:" + wid)
                    if isinstance(r.event, StepFailed))
    finally:
        store.close()
